//! The actor pipeline (SPEC §2):
//!
//! ```text
//! HTTP handlers --Enqueue--> QueueActor --ProcessBatch--> PersistenceWorker (pool, supervised)
//! PersistenceWorker --Failed--> RetryScheduler --retry later--> queue backend
//!                                             --DeadLetter--> DlqActor
//! PersistenceWorker --Take (stored, leased)--> Sender (one per provider) --calls--> provider
//! Sender --claims due messages (retries, given back, leases run out)--> database
//! Sender --DeliveryFailed--> RetryScheduler (decides) ; Sender --ParkDelivery--> DlqActor
//! ```
//! Ingest ends at the commit; delivery is its own stage, driven from the database
//! (`crate::delivery`).
//! Every actor is supervised (`supervision`); `health` tells readiness whether they work.

pub mod dlq;
pub mod dlq_delivery;
pub mod faults;
pub mod health;
pub mod queue;
pub mod retry;
pub mod sender;
pub mod supervision;
pub mod webhooks;
pub mod worker;

use std::time::Duration;

pub use dlq::DlqActor;
pub use queue::QueueActor;
pub use retry::RetryScheduler;
pub use sender::Sender;
pub use worker::PersistenceWorker;

use crate::domain::ErrorCode;
use crate::providers::ProviderError;
use crate::store::StoreError;

/// Why processing an event failed, as the RetryScheduler needs to know it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProcessingError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("worker stopped while processing: {0}")]
    WorkerStopped(String),
    /// The key is stored for another request (another fingerprint): never a silent drop.
    #[error("idempotency key reused with a different request")]
    KeyReused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying: connection, timeout, busy, 5xx, 429, a crashed worker.
    Transient,
    /// Will fail the same way again: a bad event, a constraint, a 4xx.
    Permanent,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        }
    }
}

impl ProcessingError {
    pub fn kind(&self) -> ErrorKind {
        let transient = match self {
            ProcessingError::InvalidEvent(_) | ProcessingError::KeyReused => false,
            ProcessingError::Store(e) => e.is_transient(),
            ProcessingError::Provider(e) => e.is_transient(),
            ProcessingError::WorkerStopped(_) => true,
        };
        if transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        }
    }

    /// What the event's customer is told (see [`ErrorCode`]).
    pub fn code(&self) -> ErrorCode {
        match self {
            ProcessingError::InvalidEvent(_) => ErrorCode::InvalidMessage,
            ProcessingError::Store(e) => e.code(),
            ProcessingError::Provider(e) => e.code(),
            ProcessingError::WorkerStopped(_) => ErrorCode::InternalError,
            ProcessingError::KeyReused => ErrorCode::IdempotencyKeyReused,
        }
    }

    /// The earliest moment a retry may happen, when the other side said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProcessingError::Provider(e) => e.retry_after(),
            _ => None,
        }
    }
}
