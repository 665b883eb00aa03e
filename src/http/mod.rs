//! HTTP: routes, extractors, and the mapping of errors to problem responses.

pub mod errors;
mod middleware;
mod routes;
mod state;

pub use errors::ApiError;
pub(crate) use middleware::{record_metrics, require_json_accept};
pub use routes::{configure, configure_operations};
pub use state::AppState;
