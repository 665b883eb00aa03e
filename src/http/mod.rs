//! HTTP: routes, extractors, and the mapping of errors to problem responses.

pub mod connection;
pub mod errors;
pub mod idempotency;
mod limits;
mod middleware;
mod routes;
mod state;

pub use errors::ApiError;
pub(crate) use middleware::{record_metrics, require_json_accept};
pub use routes::configure;
pub use state::AppState;
