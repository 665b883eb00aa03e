//! HTTP: routes, extractors, and the mapping of errors to problem responses.

pub mod audit;
pub mod auth;
mod client_ip;
pub mod connection;
pub mod errors;
mod hygiene;
pub mod idempotency;
mod key_cache;
mod limits;
mod middleware;
pub mod openapi;
pub mod rate_limit;
pub(crate) mod routes;
pub mod signature;
mod state;
pub mod twilio;
mod ui;

pub use auth::{Auth, Caller};
pub use errors::ApiError;
pub(crate) use hygiene::request_context;
pub(crate) use middleware::{observe_request, request_trace, require_json_accept};
pub use routes::stats::{Stats, Totals};
pub use routes::{
    configure, configure_operations, refresh_gauges_every, table as route_table, Endpoint,
    GaugeRefresh, Guard, API_SCOPE,
};
pub use state::AppState;
