//! The API contract: an OpenAPI 3.1 document served at `GET /openapi.json` (SPEC §12).
//!
//! It is generated from the code: each handler carries a `#[utoipa::path]` annotation
//! (its path, parameters, body and the answers it makes itself), the types the handlers
//! serialize derive `ToSchema`, the request bodies' rules are in [`bodies`] beside the
//! validation constants, and [`edge`] adds what the route table puts around every handler
//! (authentication, rate limits, content negotiation, body limits, connection-level
//! refusals). tests/it/openapi.rs checks the document against the route table and real
//! answers.

mod address_examples;
mod audit_examples;
mod bodies;
mod edge;

pub use edge::Served;
mod examples;
mod links;
mod sections;
mod webhook_examples;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::Value;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
use utoipa::OpenApi;

use super::routes::{
    self, addresses, audit, conversations, dead_letters, messages, operations, stats, status,
    twilio, webhook_endpoints,
};
use super::AppState;
use crate::domain::FieldError;
use crate::http::errors::ProblemDoc;

/// Every documented operation, one handler each: keep in step with `routes::table`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "messaging-server",
        description = "One API to send and receive SMS, MMS and email, grouped into conversations. \
            Requests are validated and queued (`202 Accepted`); workers store them and hand \
            outbound messages to the providers, with retries and a dead-letter queue.\n\n\
            Every answer carries `X-Request-Id`; errors are `application/problem+json` (RFC 9457)."
    ),
    paths(
        operations::healthz,
        operations::readyz,
        operations::metrics,
        document,
        messages::send_sms,
        messages::send_email,
        status::get,
        stats::get,
        messages::sms_webhook,
        messages::email_webhook,
        twilio::inbound_sms,
        twilio::status_callback,
        conversations::list,
        conversations::get,
        conversations::messages,
        webhook_endpoints::create,
        webhook_endpoints::list,
        webhook_endpoints::get,
        webhook_endpoints::update,
        webhook_endpoints::delete,
        webhook_endpoints::rotate_secret,
        webhook_endpoints::attempts,
        webhook_endpoints::replay,
        addresses::add,
        addresses::list,
        addresses::get,
        addresses::remove,
        audit::list,
        dead_letters::list,
        dead_letters::delete_all,
        dead_letters::replay_all,
        dead_letters::get,
        dead_letters::delete,
        dead_letters::replay,
    ),
    components(schemas(ProblemDoc, FieldError))
)]
struct ApiDoc;

/// A string whose values are fixed: the schema of a view's field that is stored as a
/// string but takes one of `values` (a `#[schema(schema_with = ...)]` function calls this;
/// the field's doc comment is not used then, hence `description`). Generated clients name
/// the enum after its object and `title`, else after the field, which can collide:
/// `Message` + `status` is `MessageStatus`, the status resource's name.
pub(crate) fn string_enum<const N: usize>(
    title: &str,
    values: [&'static str; N],
    description: &str,
) -> Object {
    ObjectBuilder::new()
        .title(Some(title))
        .schema_type(Type::String)
        .enum_values(Some(values))
        .description(Some(description))
        .build()
}

/// Free text as `domain::text::check_text` takes it, at most `max_length` characters
/// (nullable for an optional field); for `schema_with`, which leaves out the field's doc
/// comment, hence `description`.
pub(crate) fn plain_text(max_length: usize, nullable: bool, description: Option<&str>) -> Object {
    let text = ObjectBuilder::new()
        .max_length(Some(max_length))
        .pattern(Some(bodies::text_pattern()))
        .description(description);
    match nullable {
        true => text.schema_type(SchemaType::from_iter([Type::String, Type::Null])),
        false => text.schema_type(Type::String),
    }
    .build()
}

/// The document as served.
pub fn json() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    // utoipa fills `license` from Cargo.toml's, which names none: an empty name is invalid,
    // and the document does not invent a license the project has not chosen.
    if let Some(info) = doc["info"].as_object_mut() {
        info.remove("license");
    }
    // Relative: the server that served this document, wherever it runs.
    doc["servers"] = serde_json::json!([
        {"url": "/", "description": "The server this document was fetched from"}
    ]);
    reference_page_items(&mut doc);
    sections::add(&mut doc);
    bodies::add(&mut doc);
    edge::add(&mut doc, &routes::table());
    links::add(&mut doc);
    examples::add(&mut doc);
    doc
}

/// utoipa inlines a generic's argument: `Paged_Message`'s items become a `$ref` to
/// `Message`, so that each item type is one named schema (and none is left unused).
fn reference_page_items(doc: &mut Value) {
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has component schemas");
    let pages: Vec<(String, String)> = schemas
        .keys()
        .filter_map(|name| {
            let item = name.strip_prefix("Paged_")?;
            schemas
                .contains_key(item)
                .then(|| (name.clone(), item.to_string()))
        })
        .collect();
    for (page, item) in pages {
        schemas[&page]["properties"]["items"]["items"] =
            serde_json::json!({"$ref": format!("#/components/schemas/{item}")});
    }
}

/// The API document
///
/// This OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
pub async fn document(state: web::Data<AppState>) -> HttpResponse {
    let settings = &state.settings;
    let served = Served {
        keys_required: settings.auth.required,
        sms_signed: !settings.providers.sms.webhook_secret.is_empty(),
        email_signed: !settings.providers.email.webhook_secret.is_empty(),
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(served_bytes(served))
}

/// The document as a server with these settings enforces it, serialized once per kind of
/// server (a test process runs several).
fn served_bytes(served: Served) -> web::Bytes {
    static SERVED: OnceLock<Mutex<HashMap<Served, web::Bytes>>> = OnceLock::new();
    let mut cache = SERVED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache
        .entry(served)
        .or_insert_with(|| {
            let mut doc = json().clone();
            edge::secure_as_served(&mut doc, &routes::table(), served);
            web::Bytes::from(serde_json::to_vec(&doc).expect("serializes"))
        })
        .clone()
}
