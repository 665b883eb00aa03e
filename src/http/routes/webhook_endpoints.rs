//! Webhook endpoints (SPEC §15): a customer registers where its events are pushed, sees
//! each attempt, rotates the signing secret and replays what failed. Scoped like the read
//! API: another customer's endpoint is a 404, as an unknown id is.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, Object};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::JsonObject;
use super::paging::{PageQuery, Paged};
use crate::domain::audit::{target, Action};
use crate::domain::text::check_text;
use crate::domain::FieldError;
use crate::http::audit::Audit;
use crate::http::errors::ProblemDoc as Problem;
use crate::http::openapi::{plain_text, string_enum};
use crate::http::{ApiError, AppState, Caller};
use crate::store::{webhook_deliveries, webhook_endpoints};
use crate::webhooks::address::{check_url, MAX_URL_LENGTH};
use crate::webhooks::deliverer::message_id;
use crate::webhooks::EventType;

/// How long a rotated-out secret keeps signing beside the new one.
const ROTATION_GRACE_HOURS: i64 = 24;
const MAX_DESCRIPTION: usize = 500;

/// A new endpoint.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewWebhookEndpoint)]
pub(crate) struct NewEndpointBody {
    /// Where events are POSTed: an http:// or https:// URL on a public address.
    #[schema(
        max_length = 2048,
        format = "uri",
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$",
        example = "https://example.com/hooks/messaging"
    )]
    url: String,
    /// The event types to receive; empty or absent for all of them.
    #[serde(default)]
    #[schema(schema_with = event_types)]
    events: Vec<String>,
    #[schema(schema_with = description)]
    description: Option<String>,
}

fn description() -> Object {
    plain_text(MAX_DESCRIPTION, true, None)
}

fn changed_description() -> Object {
    plain_text(MAX_DESCRIPTION, true, Some("`null` removes it."))
}

/// A change to an endpoint: only the fields given change.
#[derive(Deserialize, ToSchema)]
#[schema(as = WebhookEndpointChange)]
pub(crate) struct ChangeBody {
    #[serde(default, deserialize_with = "given")]
    #[schema(max_length = 2048, format = "uri", pattern = r"^[^\x00-\x1F\x7F-\x9F]*$", value_type = String)]
    url: Option<String>,
    #[serde(default, deserialize_with = "given")]
    #[schema(schema_with = event_types)]
    events: Option<Vec<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = changed_description)]
    description: Option<Option<String>>,
    /// `true` enables it again (after the service disabled it, too) with a fresh start.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = bool)]
    enabled: Option<bool>,
}

/// A field that may be left out but not given as `null` (it cannot be removed).
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn event_types() -> utoipa::openapi::schema::Array {
    let names = EventType::ALL.map(EventType::as_str);
    ArrayBuilder::new()
        .items(string_enum(
            "WebhookEventType",
            names,
            "`message.received` (inbound stored), `message.sent` (accepted by the provider), `message.delivered` and `message.failed` (the provider's receipt), `message.dead_lettered` (delivery failed for good).",
        ))
        .max_items(Some(names.len()))
        .unique_items(true)
        .build()
}

/// A webhook endpoint (its secret is only shown when created or rotated).
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub(crate) struct EndpointView {
    id: Uuid,
    /// Whose events it receives.
    customer_id: Uuid,
    url: String,
    description: Option<String>,
    /// The types it receives; empty for all.
    #[schema(schema_with = event_types)]
    events: Vec<&'static str>,
    /// false when its customer disabled it, or the service did (see `disabled_reason`).
    enabled: bool,
    disabled_reason: Option<String>,
    /// Since when every attempt failed; null after a success.
    failing_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A webhook endpoint with its signing secret, shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpointWithSecret)]
pub(crate) struct WithSecret {
    #[serde(flatten)]
    #[schema(inline)]
    endpoint: EndpointView,
    /// `whsec_` + base64: verifies `webhook-signature` (Standard Webhooks).
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    secret: String,
}

impl From<entity::webhook_endpoints::Model> for EndpointView {
    fn from(e: entity::webhook_endpoints::Model) -> Self {
        EndpointView {
            id: e.id,
            customer_id: e.customer_id,
            url: e.url,
            description: e.description,
            events: EventType::load_set(&e.event_types)
                .into_iter()
                .map(EventType::as_str)
                .collect(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

fn with_secret(e: entity::webhook_endpoints::Model) -> WithSecret {
    let secret = e.secret.clone();
    WithSecret {
        endpoint: e.into(),
        secret,
    }
}

/// One call made to an endpoint.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookAttempt)]
pub(crate) struct AttemptView {
    id: i64,
    /// The `webhook-id` it carried (the same for every attempt of one event).
    webhook_id: String,
    #[schema(schema_with = event_type)]
    event_type: String,
    attempted_at: DateTime<Utc>,
    /// The endpoint's HTTP status; null when it did not answer.
    status_code: Option<i32>,
    latency_ms: i64,
    /// The start of its answer (at most 1 KiB).
    response: Option<String>,
    /// Why the attempt failed; null for a 2xx.
    error: Option<String>,
}

fn event_type() -> Object {
    string_enum(
        "WebhookEventType",
        EventType::ALL.map(EventType::as_str),
        "The event's type.",
    )
}

/// How many failed deliveries were made due again.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookReplay)]
pub(crate) struct Replayed {
    replayed: u64,
}

fn check_types(names: &[String], errors: &mut Vec<FieldError>) -> Vec<EventType> {
    let mut types = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match EventType::parse(name) {
            Some(t) if types.contains(&t) => errors.push(FieldError::new(
                format!("events[{i}]"),
                "is listed twice",
            )),
            Some(t) => types.push(t),
            None => errors.push(FieldError::new(
                format!("events[{i}]"),
                "must be one of message.received, message.sent, message.delivered, message.failed, message.dead_lettered",
            )),
        }
    }
    types
}

fn check_endpoint_url(state: &AppState, url: &str, errors: &mut Vec<FieldError>) {
    if let Err(why) = check_url(url, state.settings.webhooks.allow_private) {
        errors.push(FieldError::new("url", format!("the URL {why}")));
    }
}

fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) {
    let Some(description) = description else {
        return;
    };
    if description.chars().count() > MAX_DESCRIPTION {
        errors.push(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    } else if let Err(why) = check_text(description) {
        errors.push(FieldError::new("description", why));
    }
}

fn endpoint_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("webhook endpoint {id}")))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("webhook endpoint {id}"))
}

/// The id of an endpoint the caller may see; a 404 for another customer's, as for none.
async fn visible_endpoint(state: &AppState, caller: &Caller, id: &str) -> Result<Uuid, ApiError> {
    let id = endpoint_id(id)?;
    match webhook_endpoints::get(&state.db, caller.customer_scope(), id).await? {
        Some(_) => Ok(id),
        None => Err(not_found(id)),
    }
}

/// Register an endpoint
///
/// Events of the key's customer are POSTed to `url`, signed with the returned `secret`
/// (shown this once). The URL must be on a public address.
#[utoipa::path(
    post,
    path = "/api/webhook-endpoints",
    operation_id = "createWebhookEndpoint",
    request_body(content = NewEndpointBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered; `secret` is not shown again", body = WithSecret, headers(("Location" = String, description = "The endpoint"))),
        (status = 400, description = "`validation-failed` (with `errors`) or `malformed-json`", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: web::Json<JsonObject<NewEndpointBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner().into_inner();
    let mut errors = Vec::new();
    check_endpoint_url(&state, &body.url, &mut errors);
    let types = check_types(&body.events, &mut errors);
    check_description(body.description.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let new = webhook_endpoints::NewEndpoint {
        customer_id: caller.customer_id,
        url: body.url,
        description: body.description,
        types,
    };
    let created = webhook_endpoints::create(&state.db, new).await?;
    audit
        .record(
            Action::WebhookEndpointCreate,
            target::webhook_endpoint(created.id),
            Some(created.url.clone()),
        )
        .await;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/webhook-endpoints/{}", created.id)))
        .json(with_secret(created)))
}

/// List endpoints
///
/// Newest first. An admin key sees every customer's.
#[utoipa::path(
    get,
    path = "/api/webhook-endpoints",
    operation_id = "listWebhookEndpoints",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of endpoints", body = Paged<EndpointView>),
        (status = 400, description = "`invalid-query`", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let rows = webhook_endpoints::list(&state.db, caller.customer_scope(), page).await?;
    Ok(Paged::<EndpointView>::answer(rows, page))
}

/// One endpoint
#[utoipa::path(
    get,
    path = "/api/webhook-endpoints/{id}",
    operation_id = "getWebhookEndpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 404, description = "`not-found`: no such endpoint for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    let found = webhook_endpoints::get(&state.db, caller.customer_scope(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(EndpointView::from(found)))
}

/// Change an endpoint
///
/// URL, event types, description, or `enabled` (enabling one the service disabled gives it
/// a fresh start; its failed deliveries can then be replayed).
#[utoipa::path(
    patch,
    path = "/api/webhook-endpoints/{id}",
    operation_id = "updateWebhookEndpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = ChangeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The endpoint as changed", body = EndpointView),
        (status = 400, description = "`validation-failed` (with `errors`) or `malformed-json`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such endpoint for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    id: web::Path<String>,
    body: web::Json<JsonObject<ChangeBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    let body = body.into_inner().into_inner();
    let mut errors = Vec::new();
    if let Some(url) = &body.url {
        check_endpoint_url(&state, url, &mut errors);
    }
    let types = body
        .events
        .as_ref()
        .map(|names| check_types(names, &mut errors));
    check_description(
        body.description.as_ref().and_then(|d| d.as_deref()),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let change = webhook_endpoints::Change {
        url: body.url,
        description: body.description,
        types,
        enabled: body.enabled,
    };
    let changed = webhook_endpoints::update(&state.db, caller.customer_scope(), id, change)
        .await?
        .ok_or_else(|| not_found(id))?;
    audit
        .record(
            Action::WebhookEndpointUpdate,
            target::webhook_endpoint(id),
            None,
        )
        .await;
    Ok(HttpResponse::Ok().json(EndpointView::from(changed)))
}

/// Delete an endpoint
///
/// With its deliveries and attempts: nothing more is sent to it.
#[utoipa::path(
    delete,
    path = "/api/webhook-endpoints/{id}",
    operation_id = "deleteWebhookEndpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not-found`: no such endpoint for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    if !webhook_endpoints::delete(&state.writer, caller.customer_scope(), id).await? {
        return Err(not_found(id));
    }
    audit
        .record(
            Action::WebhookEndpointDelete,
            target::webhook_endpoint(id),
            None,
        )
        .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate the signing secret
///
/// Returns the new secret (shown this once). The old one keeps signing beside it for 24
/// hours (`webhook-signature` then carries both), so receivers can switch without losing
/// an event.
#[utoipa::path(
    post,
    path = "/api/webhook-endpoints/{id}/rotate-secret",
    operation_id = "rotateWebhookEndpointSecret",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = WithSecret),
        (status = 404, description = "`not-found`: no such endpoint for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&id)?;
    let grace = chrono::Duration::hours(ROTATION_GRACE_HOURS);
    let rotated = webhook_endpoints::rotate_secret(&state.db, caller.customer_scope(), id, grace)
        .await?
        .ok_or_else(|| not_found(id))?;
    audit
        .record(
            Action::WebhookEndpointRotateSecret,
            target::webhook_endpoint(id),
            None,
        )
        .await;
    Ok(HttpResponse::Ok().json(with_secret(rotated)))
}

/// An endpoint's attempts
///
/// Newest first: each call made, with the status it answered, how long it took and the
/// start of its answer.
#[utoipa::path(
    get,
    path = "/api/webhook-endpoints/{id}/attempts",
    operation_id = "listWebhookAttempts",
    params(("id" = String, Path, description = "The endpoint's id"), PageQuery),
    responses(
        (status = 200, description = "One page of attempts", body = Paged<AttemptView>),
        (status = 400, description = "`invalid-query`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such endpoint for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn attempts(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = visible_endpoint(&state, &caller, &id).await?;
    let page = query.page()?;
    let (items, total) = webhook_deliveries::attempts(&state.db, id, page).await?;
    let items = items
        .into_iter()
        .map(|(a, event_type)| AttemptView {
            id: a.id,
            webhook_id: message_id(a.delivery_id),
            event_type,
            attempted_at: a.attempted_at,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            response: a.response,
            error: a.error,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Paged::new(items, page, total)))
}

/// Replay failed deliveries
///
/// The endpoint's deliveries that failed for good are due again at once, with fresh
/// attempts (each keeps its `webhook-id`).
#[utoipa::path(
    post,
    path = "/api/webhook-endpoints/{id}/replay",
    operation_id = "replayWebhookDeliveries",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 202, description = "Due again", body = Replayed),
        (status = 404, description = "`not-found`: no such endpoint for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn replay(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = visible_endpoint(&state, &caller, &id).await?;
    let replayed = webhook_deliveries::replay_failed(&state.writer, id).await?;
    audit
        .record(
            Action::WebhookEndpointReplay,
            target::webhook_endpoint(id),
            Some(format!("{replayed} delivery(ies) due again")),
        )
        .await;
    Ok(HttpResponse::Accepted().json(Replayed { replayed }))
}

/// The longest URL an endpoint takes, for the schema (kept in step with the check).
const _: () = assert!(MAX_URL_LENGTH == 2048);
