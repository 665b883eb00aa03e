use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use actix::Addr;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::idempotency::RecentKeys;
use super::{ApiError, Auth};

use crate::actors::health::Pipeline;
use crate::actors::{DlqActor, QueueActor};
use crate::config::Settings;
use crate::domain::FieldError;
use crate::queue::spill::SpillDir;
use crate::queue::{MemoryQueue, QueueBackend};
use crate::store;
use crate::store::writer::MessageWriter;
use crate::telemetry::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub queue: Addr<QueueActor>,
    pub backend: Arc<dyn QueueBackend>,
    /// The same queue when it is the in-process one (`queue.backend = "memory"`).
    pub memory_queue: Option<MemoryQueue>,
    pub dlq: Addr<DlqActor>,
    /// The pipeline's actors, for readiness.
    pub pipeline: Arc<Pipeline>,
    /// The workers' writer, for readiness's database check (on SQLite it takes its turn).
    pub writer: MessageWriter,
    /// Where a shutdown keeps what the database refuses (memory backend).
    pub spill: SpillDir,
    pub metrics: Arc<Metrics>,
    /// API keys, webhook signatures and rate limits.
    pub auth: Arc<Auth>,
    /// Customers known to exist; asked of the database only on a miss.
    pub customers: Arc<RwLock<HashSet<Uuid>>>,
    /// `Idempotency-Key`s this process accepted recently (repeats and conflicts).
    pub recent_keys: Arc<RecentKeys>,
    /// SQLite: checkpoints the WAL beside the writers, as long as the app lives.
    pub checkpointer: Option<Arc<store::Checkpointer>>,
}

impl AppState {
    /// A request may name a customer; an unknown one is a 400, not a stored orphan.
    pub async fn require_customer(&self, id: Uuid) -> Result<(), ApiError> {
        if self.customers.read().expect("not poisoned").contains(&id) {
            return Ok(());
        }
        if store::read::customer_exists(&self.db, id).await? {
            self.customers.write().expect("not poisoned").insert(id);
            return Ok(());
        }
        Err(ApiError::Validation(vec![FieldError::new(
            "customer_id",
            format!("unknown customer {id}"),
        )]))
    }
}
