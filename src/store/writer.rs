//! Writes events as messages: one transaction for a whole batch of events.
//!
//! Per batch, whatever its size, at most seven statements run: body de-duplication (insert,
//! then look up the bodies that existed), conversation upsert (same two steps), the message
//! insert (no-op on a known idempotency key, plus a look-up of those that existed), and one
//! counter update. Counters move only by the messages the insert really added, so replaying
//! an event changes nothing. Keys are sorted before writing so that concurrent batches take
//! row locks in the same order and cannot deadlock each other on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use super::delivery::NewLease;
use super::outage::WriteHealth;
use super::outbox::{self, EventType};
use super::status::{self, Delivered, MessageStatus, Which};
use super::{begin_write, StoreError};
use crate::domain::Event;

mod statements;

use statements::*;

/// Where an event ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    pub message_id: i64,
    pub conversation_id: i64,
    /// false when the idempotency key was already stored (a replay or duplicate).
    pub inserted: bool,
    /// The message's status as stored.
    pub status: MessageStatus,
    /// The fingerprint of the request the stored message came from.
    pub request_fingerprint: Option<String>,
}

impl Persisted {
    /// True when `event` carries the stored message's key but is another request (its
    /// fingerprint differs): a reused idempotency key, not a repeat. Messages or events
    /// from before fingerprints existed never conflict.
    pub fn conflicts_with(&self, event: &Event) -> bool {
        matches!(
            (&self.request_fingerprint, &event.request_fingerprint),
            (Some(stored), Some(new)) if stored != new
        )
    }
}

/// Most conversation ids kept in memory; past it the cache starts over (it only saves work).
const CONVERSATION_CACHE_LIMIT: usize = 100_000;

/// Writes batches of events. Shared by the workers: it remembers the ids of conversations
/// it has seen committed, so a busy conversation costs no look-up per batch (conversation
/// rows are never deleted, so a committed id stays valid).
///
/// On SQLite the writers of this process also take turns on a fair (FIFO) async lock before
/// opening a write transaction: SQLite's own busy handler polls with sleeps, so under load a
/// waiting writer could be overtaken for longer than the busy timeout and fail.
#[derive(Clone)]
pub struct MessageWriter {
    db: DatabaseConnection,
    conversations: Arc<Mutex<HashMap<ConversationKey, i64>>>,
    turn: Option<Arc<tokio::sync::Mutex<()>>>,
    health: WriteHealth,
}

impl MessageWriter {
    pub fn new(db: DatabaseConnection) -> Self {
        let sqlite = db.get_database_backend() == sea_orm::DbBackend::Sqlite;
        MessageWriter {
            db,
            conversations: Arc::default(),
            turn: sqlite.then(Arc::default),
            health: WriteHealth::default(),
        }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Whether the database takes this writer's writes (see [`super::outage`]).
    pub fn health(&self) -> &WriteHealth {
        &self.health
    }

    /// Reports an outcome to [`Self::health`]: a commit that wrote rows ends an outage.
    pub(crate) fn observe_write<T>(
        &self,
        result: &Result<T, StoreError>,
        wrote: impl FnOnce(&T) -> bool,
    ) {
        match result {
            Ok(value) if wrote(value) => self.health.succeeded(),
            Ok(_) => {}
            Err(err) => self.health.failed(err),
        }
    }

    /// Waits for this writer's turn to write (SQLite; `None` on PostgreSQL).
    pub async fn take_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }

    /// Persists `events` in one transaction and returns one outcome per event, in order.
    pub async fn persist(&self, events: &[&Event]) -> Result<Vec<Persisted>, StoreError> {
        self.persist_leased(events, None).await
    }

    /// As [`Self::persist`]; the outbound messages it inserts are held under `lease` from
    /// their commit, for this process's sender to call at once without claiming them.
    pub async fn persist_leased(
        &self,
        events: &[&Event],
        lease: Option<&NewLease>,
    ) -> Result<Vec<Persisted>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.persist_once(events, lease).await;
        // A batch of repeats writes nothing, and so proves nothing about a full disk.
        self.observe_write(&result, |p| p.iter().any(|p| p.inserted));
        result
    }

    async fn persist_once(
        &self,
        events: &[&Event],
        lease: Option<&NewLease>,
    ) -> Result<Vec<Persisted>, StoreError> {
        let keys: Vec<ConversationKey> = events.iter().map(|e| ConversationKey::of(e)).collect();
        let known = self.known_conversations(&keys);
        let _turn = self.take_turn().await;
        let txn = begin_write(&self.db).await?;
        let (persisted, learned) = persist_in(&txn, events, &keys, known, lease).await?;
        // Nothing counts as stored before this returns Ok: on an error the transaction is
        // rolled back on drop, and a connection it leaves inside it is closed, not reused
        // (see `super::reuse`).
        txn.commit().await?;
        self.remember(learned);
        Ok(persisted)
    }

    /// Records provider acceptance: `queued → sent` with the provider's id, in one
    /// statement, for the messages whose lease is still their sender's. A message no
    /// longer `queued` is left alone, so a late duplicate cannot overwrite it.
    ///
    /// In turn with the batches on SQLite: left to SQLite's busy handler, which polls with
    /// sleeps, it could find the lock taken by one batch after another for longer than the
    /// busy timeout (a benchmark run failed 1,000 acceptances with "database is locked"
    /// after 5.3 s). Since it is one `UPDATE … FROM (VALUES …)`, the wait costs nothing
    /// measurable.
    pub async fn mark_sent(&self, sent: &[Delivered]) -> Result<u64, StoreError> {
        if sent.is_empty() {
            return Ok(0);
        }
        let _turn = self.take_turn().await;
        let result = status::transition_committed(
            &self.db,
            Which::Delivered(sent),
            MessageStatus::Queued,
            MessageStatus::Sent,
        )
        .await;
        self.observe_write(&result, |_| true);
        result
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, i64>> {
        self.conversations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn known_conversations(&self, keys: &[ConversationKey]) -> HashMap<ConversationKey, i64> {
        let cache = self.cache();
        keys.iter()
            .filter_map(|key| cache.get(key).map(|id| (key.clone(), *id)))
            .collect()
    }

    /// Called only after a commit: an id from a rolled-back insert must never be cached.
    fn remember(&self, learned: HashMap<ConversationKey, i64>) {
        let mut cache = self.cache();
        if cache.len() + learned.len() > CONVERSATION_CACHE_LIMIT {
            cache.clear();
        }
        cache.extend(learned);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ConversationKey {
    customer_id: Uuid,
    channel: &'static str,
    participant_a: String,
    participant_b: String,
}

impl ConversationKey {
    fn of(event: &Event) -> Self {
        let (participant_a, participant_b) = event.participants();
        ConversationKey {
            customer_id: event.customer_id,
            channel: event.channel.family(),
            participant_a,
            participant_b,
        }
    }
}

/// Returns the outcomes and the conversation ids this batch looked up or created.
async fn persist_in(
    txn: &DatabaseTransaction,
    events: &[&Event],
    keys: &[ConversationKey],
    known: HashMap<ConversationKey, i64>,
    lease: Option<&NewLease>,
) -> Result<(Vec<Persisted>, HashMap<ConversationKey, i64>), StoreError> {
    let now = Utc::now();
    let shas: Vec<String> = events.iter().map(|e| e.body_sha256()).collect();

    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for (event, sha) in events.iter().zip(&shas) {
        bodies.entry(sha.as_str()).or_insert(event.body.as_str());
    }
    let body_ids = store_bodies(txn, &bodies).await?;

    let unknown: BTreeSet<&ConversationKey> =
        keys.iter().filter(|k| !known.contains_key(*k)).collect();
    let learned = store_conversations(txn, &unknown, now).await?;
    let mut conversation_ids = known;
    conversation_ids.extend(learned.iter().map(|(k, id)| (k.clone(), *id)));

    // First occurrence of each idempotency key is the one written; later ones in the same
    // batch are duplicates of it.
    let mut first_by_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        first_by_key
            .entry(event.idempotency_key.as_str())
            .or_insert(i);
    }
    let rows: Vec<NewMessage<'_>> = first_by_key
        .values()
        .map(|&i| NewMessage {
            event: events[i],
            conversation_id: conversation_ids[&keys[i]],
            body_id: body_ids[shas[i].as_str()],
        })
        .collect();
    let inserted = insert_messages(txn, &rows, now, lease).await?;

    let existing_keys: Vec<&str> = first_by_key
        .keys()
        .copied()
        .filter(|k| !inserted.contains_key(*k))
        .collect();
    let existing = find_messages_by_key(txn, &existing_keys).await?;

    bump_counters(txn, &rows, &inserted, &keys_by_id(&conversation_ids), now).await?;
    let received: Vec<i64> = inserted
        .values()
        .filter(|p| p.status == MessageStatus::Received)
        .map(|p| p.message_id)
        .collect();
    outbox::record(txn, EventType::Received, &received).await?;

    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let persisted = events
        .iter()
        .map(|event| {
            let key = event.idempotency_key.as_str();
            let first_sight = seen.insert(key);
            if let Some(stored) = inserted.get(key) {
                return Ok(Persisted {
                    inserted: first_sight,
                    ..stored.clone()
                });
            }
            existing.get(key).cloned().ok_or_else(|| {
                StoreError::Rejected(format!("message {key} neither inserted nor found"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((persisted, learned))
}
