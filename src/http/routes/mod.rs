//! The route table (SPEC §3).

mod conversations;
mod dead_letters;
mod messages;
mod operations;
mod paging;
pub mod stats;
mod status;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};

use super::auth;
use super::errors::json_error;
use super::limits::limit_body;
use super::ui;
use super::{require_json_accept, ApiError, AppState};

pub use operations::refresh_gauges_every;

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
        cfg.app_data(json)
            .app_data(query)
            .app_data(path)
            .service(resource("/healthz").route(web::get().to(operations::healthz)))
            .service(resource("/readyz").route(web::get().to(operations::readyz)))
            .service(resource("/metrics").route(web::get().to(operations::metrics)))
            .service(resource("/ui").route(web::get().to(ui::redirect)))
            .service(resource("/ui/").route(web::get().to(ui::index)))
            .service(resource("/ui/{file}").route(web::get().to(ui::asset)))
            .service(
                web::scope("/api")
                    .wrap(actix_web::middleware::from_fn(require_json_accept))
                    .wrap(actix_web::middleware::from_fn(limit_body))
                    .service(
                        resource("/messages/sms")
                            .wrap(from_fn(auth::send))
                            .route(web::post().to(messages::send_sms)),
                    )
                    .service(
                        resource("/messages/email")
                            .wrap(from_fn(auth::send))
                            .route(web::post().to(messages::send_email)),
                    )
                    .service(
                        resource("/messages/{idempotency_key}")
                            .wrap(from_fn(auth::status))
                            .route(web::get().to(status::get)),
                    )
                    .service(
                        resource("/stats")
                            .wrap(from_fn(auth::admin))
                            .route(web::get().to(stats::get)),
                    )
                    .service(
                        resource("/webhooks/sms")
                            .wrap(from_fn(auth::sms_webhook))
                            .route(web::post().to(messages::sms_webhook)),
                    )
                    .service(
                        resource("/webhooks/email")
                            .wrap(from_fn(auth::email_webhook))
                            .route(web::post().to(messages::email_webhook)),
                    )
                    .service(
                        resource("/conversations")
                            .wrap(from_fn(auth::read))
                            .route(web::get().to(conversations::list)),
                    )
                    .service(
                        resource("/conversations/{id}")
                            .wrap(from_fn(auth::read))
                            .route(web::get().to(conversations::get)),
                    )
                    .service(
                        resource("/conversations/{id}/messages")
                            .wrap(from_fn(auth::read))
                            .route(web::get().to(conversations::messages)),
                    )
                    .service(
                        resource("/dlq")
                            .wrap(from_fn(auth::admin))
                            .route(web::get().to(dead_letters::list))
                            .route(web::delete().to(dead_letters::delete_all)),
                    )
                    .service(
                        resource("/dlq/replay")
                            .wrap(from_fn(auth::admin))
                            .route(web::post().to(dead_letters::replay_all)),
                    )
                    .service(
                        resource("/dlq/{id}")
                            .wrap(from_fn(auth::admin))
                            .route(web::get().to(dead_letters::get))
                            .route(web::delete().to(dead_letters::delete)),
                    )
                    .service(
                        resource("/dlq/{id}/replay")
                            .wrap(from_fn(auth::admin))
                            .route(web::post().to(dead_letters::replay)),
                    ),
            )
            .default_service(web::to(not_found));
    }
}

/// The worker role's routes: health, readiness and metrics only.
pub fn configure_operations() -> impl FnOnce(&mut web::ServiceConfig) {
    |cfg| {
        cfg.service(resource("/healthz").route(web::get().to(operations::healthz)))
            .service(resource("/readyz").route(web::get().to(operations::readyz)))
            .service(resource("/metrics").route(web::get().to(operations::metrics)))
            .default_service(web::to(not_found));
    }
}

/// A resource whose unsupported methods answer 405 as a problem.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("resource".into()))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
