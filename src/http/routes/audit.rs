//! `GET /api/audit` (operators): who changed what, newest first (SPEC §16).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Object;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::paging::{PageQuery, Paged};
use crate::domain::audit::Action;
use crate::domain::text::check_text;
use crate::http::errors::ProblemDoc as Problem;
use crate::http::openapi::string_enum;
use crate::http::{ApiError, AppState};
use crate::store::audit::{self, Filter};

/// One state-changing action.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub(crate) struct AuditEntryView {
    id: i64,
    at: DateTime<Utc>,
    /// `key:<prefix>` (an API key, never the key itself), `cli:<user>` (the command line)
    /// or `open` (`auth.required = false`).
    actor: String,
    /// The customer of a customer's key; null for operators.
    customer_id: Option<Uuid>,
    #[schema(schema_with = action)]
    action: String,
    /// `<resource>:<id>` (`dead_letter:42`, `webhook_endpoint:…`, `key:msk_…`), or the
    /// collection (`dead_letters`) for an action on all of it.
    target: String,
    /// The request's `X-Request-Id`; null from the command line.
    request_id: Option<String>,
    /// A count, a URL or a name that the entry needs to be read; null when it needs none.
    detail: Option<String>,
}

fn action() -> Object {
    string_enum(
        "AuditAction",
        Action::ALL.map(Action::as_str),
        "What was done: `<resource>.<verb>`.",
    )
}

impl From<entity::audit_log::Model> for AuditEntryView {
    fn from(m: entity::audit_log::Model) -> Self {
        AuditEntryView {
            id: m.id,
            at: m.at,
            actor: m.actor,
            customer_id: m.customer_id,
            action: m.action,
            target: m.target,
            request_id: m.request_id,
            detail: m.detail,
        }
    }
}

/// `?action=…&actor=…&target=…&since=…&until=…`: each narrows the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action (`dead_letter.delete`, `key.create`, …).
    #[param(schema_with = action)]
    action: Option<String>,
    /// Only this actor, exactly (`key:msk_ab12cd34`).
    #[param(
        max_length = 200,
        pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"
    )] // = MAX_FILTER
    actor: Option<String>,
    /// Only this target, exactly (`dead_letter:42`).
    #[param(
        max_length = 200,
        pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"
    )] // = MAX_FILTER
    target: Option<String>,
    /// At or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
}

impl AuditQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        let action = match self.action.as_deref() {
            None => None,
            Some(name) => Some(Action::parse(name).ok_or_else(|| {
                ApiError::BadQuery(format!("action {name:?} is not an audited action"))
            })?),
        };
        Ok(Filter {
            action,
            actor: exact("actor", &self.actor)?,
            target: exact("target", &self.target)?,
            since: time("since", self.since.as_deref())?,
            until: time("until", self.until.as_deref())?,
        })
    }
}

/// The longest `actor` or `target` filter (as documented): no stored name is longer.
const MAX_FILTER: usize = 200;

fn exact(name: &str, text: &Option<String>) -> Result<Option<String>, ApiError> {
    match text {
        Some(t) if t.chars().count() > MAX_FILTER => Err(ApiError::BadQuery(format!(
            "{name} is longer than {MAX_FILTER} characters"
        ))),
        // No stored name has one, and PostgreSQL refuses NUL in a parameter.
        Some(t) if check_text(t).is_err() => Err(ApiError::BadQuery(format!(
            "{name} must not contain control characters"
        ))),
        _ => Ok(text.clone()),
    }
}

fn time(name: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::BadQuery(format!(
                    "{name} must be an RFC 3339 time (2026-12-06T10:00:00Z)"
                ))
            })
    })
    .transpose()
}

/// The audit log
///
/// Every state-changing action on dead letters, keys, customers, webhook endpoints and
/// addresses, newest first: who (a key's prefix), what, on what, when, and the request.
#[utoipa::path(
    get,
    path = "/api/audit",
    operation_id = "listAuditEntries",
    params(PageQuery, AuditQuery),
    responses(
        (status = 200, description = "One page of entries", body = Paged<AuditEntryView>),
        (status = 400, description = "`invalid-query`: a page, an action or a time that is not one", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    page: web::Query<PageQuery>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = page.page()?;
    let filter = query.filter()?;
    let rows = audit::list(&state.db, &filter, page).await?;
    Ok(Paged::<AuditEntryView>::answer(rows, page))
}
