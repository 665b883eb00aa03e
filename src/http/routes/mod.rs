//! The route table (SPEC §3).
//!
//! [`table`] lists every route: its path, who may call it, and its handler per method.
//! [`configure`] builds actix's resources from it, and the OpenAPI document
//! (`src/http/openapi/`) must describe exactly these routes (tests/it/openapi.rs fails
//! otherwise). To add a route: an entry here, a `#[utoipa::path]` beside its handler, and
//! the handler's name in the `paths(...)` list of `openapi::ApiDoc` (its path puts it in
//! one of the document's sections, `openapi/sections.rs`).

pub(crate) mod addresses;
pub(crate) mod audit;
pub(crate) mod body;
pub(crate) mod conversations;
pub(crate) mod dead_letters;
pub(crate) mod messages;
pub(crate) mod operations;
pub(crate) mod paging;
pub mod stats;
pub(crate) mod status;
pub(crate) mod twilio;
pub(crate) mod webhook_endpoints;

use actix_web::http::{header, Method};
use actix_web::middleware::from_fn;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder, ResponseError, Route};

use super::auth;
use super::errors::json_error;
use super::limits::limit_body;
use super::openapi;
use super::twilio::guard as twilio_guard;
use super::ui;
use super::{require_json_accept, ApiError, AppState};

pub use operations::{refresh_gauges_every, GaugeRefresh};

/// Who may call a route: the authentication guard its resource is wrapped in (SPEC §11,
/// §16); the scopes each accepts are decided in `http::auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No key needed: health, readiness, metrics, the API document.
    Open,
    /// Sending messages and managing a customer's own settings (webhook endpoints): a
    /// `send` key, or an operator's.
    Send,
    /// Reading conversations: a `read` or `send` key, scoped to its customer, or an
    /// operator's.
    Read,
    /// Operator routes (dead letters, stats, the audit log): an operator's `admin` key.
    Admin,
    /// A message's status: any key of its customer, or an operator's.
    Status,
    /// A provider's webhook: its signature when it has a secret, else a `webhook` key or
    /// an operator's.
    SmsWebhook,
    EmailWebhook,
    /// Twilio's webhooks: only Twilio's signature (`X-Twilio-Signature`), never a key.
    Twilio,
}

impl Guard {
    /// What the guard checks, when it takes keys.
    fn access(self) -> Option<auth::Access> {
        use auth::Access;
        match self {
            Guard::Open | Guard::Twilio => None,
            Guard::Send => Some(Access::Send),
            Guard::Read => Some(Access::Read),
            Guard::Admin => Some(Access::Admin),
            Guard::Status => Some(Access::Status),
            Guard::SmsWebhook => Some(Access::Webhook(auth::Provider::Sms)),
            Guard::EmailWebhook => Some(Access::Webhook(auth::Provider::Email)),
        }
    }

    /// The scopes a key may have to pass (any one of them); empty for open routes.
    pub fn scopes(self) -> Vec<&'static str> {
        self.access()
            .map(|access| access.scopes().0.iter().map(|s| s.as_str()).collect())
            .unwrap_or_default()
    }

    /// Whether the route takes API keys (and so answers 401 without a valid one).
    pub fn takes_keys(self) -> bool {
        !matches!(self, Guard::Open | Guard::Twilio)
    }

    /// Whether the route can be called with a provider's signature instead of a key.
    pub fn signed_webhook(self) -> bool {
        matches!(self, Guard::SmsWebhook | Guard::EmailWebhook)
    }
}

/// One path of the table with its handlers.
pub struct Endpoint {
    /// The full path, in actix's (and OpenAPI's) `{param}` syntax.
    pub path: &'static str,
    pub guard: Guard,
    routes: Vec<(Method, Route)>,
}

impl Endpoint {
    /// Whether the route is part of the JSON API (the `/api` scope, with its content
    /// negotiation and body rules). Twilio's webhooks are under `/api` but speak Twilio's
    /// format (form bodies, TwiML answers), so they are registered beside the scope.
    pub fn json_api(&self) -> bool {
        self.path.starts_with(API_SCOPE) && self.guard != Guard::Twilio
    }

    fn new(path: &'static str, guard: Guard) -> Self {
        Endpoint {
            path,
            guard,
            routes: Vec::new(),
        }
    }

    fn on<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let route = web::route().method(method.clone()).to(handler);
        self.routes.push((method, route));
        self
    }

    /// The methods this path answers; every other one is a 405.
    pub fn methods(&self) -> Vec<Method> {
        self.routes.iter().map(|(m, _)| m.clone()).collect()
    }

    /// Registers the resource at `path` (relative to the enclosing scope).
    fn register(self, cfg: &mut web::ServiceConfig, path: &str) {
        let allow = self
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut resource = web::resource(path).default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        }));
        for (_, route) in self.routes {
            resource = resource.route(route);
        }
        match (self.guard, self.guard.access()) {
            (_, Some(access)) => {
                cfg.service(resource.wrap(from_fn(move |req, next| auth::guard(req, next, access))))
            }
            (Guard::Twilio, None) => cfg.service(resource.wrap(from_fn(twilio_guard))),
            (_, None) => cfg.service(resource),
        };
    }
}

// The methods, short, for the table.
const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

/// The JSON API's scope: content negotiation (406) and body limits (415, 408) apply here.
pub const API_SCOPE: &str = "/api";

/// Every route, in matching order (a literal path before a `{param}` that would match it).
pub fn table() -> Vec<Endpoint> {
    use Guard::*;
    vec![
        Endpoint::new("/healthz", Open).on(GET, operations::healthz),
        Endpoint::new("/readyz", Open).on(GET, operations::readyz),
        Endpoint::new("/metrics", Open).on(GET, operations::metrics),
        Endpoint::new("/openapi.json", Open).on(GET, openapi::document),
        Endpoint::new("/api/messages/sms", Send).on(POST, messages::send_sms),
        Endpoint::new("/api/messages/email", Send).on(POST, messages::send_email),
        // After the literal /api/messages/sms and /email, which a key can never spell.
        Endpoint::new("/api/messages/{idempotency_key}", Status).on(GET, status::get),
        Endpoint::new("/api/stats", Admin).on(GET, stats::get),
        Endpoint::new("/api/webhooks/sms", SmsWebhook).on(POST, messages::sms_webhook),
        Endpoint::new("/api/webhooks/email", EmailWebhook).on(POST, messages::email_webhook),
        Endpoint::new("/api/providers/twilio/sms", Twilio).on(POST, twilio::inbound_sms),
        Endpoint::new("/api/providers/twilio/status", Twilio).on(POST, twilio::status_callback),
        Endpoint::new("/api/conversations", Read).on(GET, conversations::list),
        Endpoint::new("/api/conversations/{id}", Read).on(GET, conversations::get),
        Endpoint::new("/api/conversations/{id}/messages", Read).on(GET, conversations::messages),
        Endpoint::new("/api/webhook-endpoints", Send)
            .on(GET, webhook_endpoints::list)
            .on(POST, webhook_endpoints::create),
        Endpoint::new("/api/webhook-endpoints/{id}", Send)
            .on(GET, webhook_endpoints::get)
            .on(PATCH, webhook_endpoints::update)
            .on(DELETE, webhook_endpoints::delete),
        Endpoint::new("/api/webhook-endpoints/{id}/rotate-secret", Send)
            .on(POST, webhook_endpoints::rotate_secret),
        Endpoint::new("/api/webhook-endpoints/{id}/attempts", Send)
            .on(GET, webhook_endpoints::attempts),
        Endpoint::new("/api/webhook-endpoints/{id}/replay", Send)
            .on(POST, webhook_endpoints::replay),
        Endpoint::new("/api/addresses", Send)
            .on(GET, addresses::list)
            .on(POST, addresses::add),
        Endpoint::new("/api/addresses/{id}", Send)
            .on(GET, addresses::get)
            .on(DELETE, addresses::remove),
        Endpoint::new("/api/audit", Admin).on(GET, audit::list),
        Endpoint::new("/api/dlq", Admin)
            .on(GET, dead_letters::list)
            .on(DELETE, dead_letters::delete_all),
        Endpoint::new("/api/dlq/replay", Admin).on(POST, dead_letters::replay_all),
        Endpoint::new("/api/dlq/{id}", Admin)
            .on(GET, dead_letters::get)
            .on(DELETE, dead_letters::delete),
        Endpoint::new("/api/dlq/{id}/replay", Admin).on(POST, dead_letters::replay),
    ]
}

pub fn configure(body_limit: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let json = web::JsonConfig::default()
            .limit(body_limit)
            .error_handler(move |err, req| {
                let body_timeout = req
                    .app_data::<web::Data<AppState>>()
                    .map(|state| state.settings.server.body_timeout);
                json_error(err, body_limit, body_timeout)
            });
        let query = web::QueryConfig::default().error_handler(|_, _| {
            ApiError::BadQuery("page and pageSize must be whole numbers".into()).into()
        });
        let path = web::PathConfig::default().error_handler(|_, _| {
            ApiError::BadQuery("the id must be a whole number".into()).into()
        });
        cfg.app_data(json).app_data(query).app_data(path);
        let (api, open): (Vec<_>, Vec<_>) = table().into_iter().partition(Endpoint::json_api);
        for endpoint in open {
            let path = endpoint.path;
            endpoint.register(cfg, path);
        }
        // The console's static files: a page for people, not part of the JSON API (nor of
        // its OpenAPI document).
        cfg.service(web::resource("/ui").route(web::get().to(ui::redirect)))
            .service(web::resource("/ui/").route(web::get().to(ui::index)))
            .service(web::resource("/ui/{file}").route(web::get().to(ui::asset)));
        cfg.service(
            web::scope(API_SCOPE)
                .wrap(from_fn(require_json_accept))
                .wrap(from_fn(limit_body))
                .configure(move |cfg| {
                    for endpoint in api {
                        let path = &endpoint.path[API_SCOPE.len()..];
                        endpoint.register(cfg, path);
                    }
                }),
        )
        .default_service(web::to(not_found));
    }
}

/// The worker role's routes: health, readiness and metrics only (it has no API).
pub fn configure_operations() -> impl FnOnce(&mut web::ServiceConfig) {
    |cfg| {
        for endpoint in table() {
            if matches!(endpoint.path, "/healthz" | "/readyz" | "/metrics") {
                let path = endpoint.path;
                endpoint.register(cfg, path);
            }
        }
        cfg.default_service(web::to(not_found));
    }
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("resource".into()))
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed.error_response();
    if let Ok(value) = header::HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}
