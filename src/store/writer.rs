//! Writes events as messages: one transaction for a whole batch of events.
//!
//! Per batch, whatever its size, at most seven statements run: body de-duplication (insert,
//! then look up the bodies that existed), conversation upsert (same two steps), the message
//! insert (no-op on a known idempotency key, plus a look-up of those that existed), and one
//! counter update. Counters move only by the messages the insert really added, so replaying
//! an event changes nothing. Keys are sorted before writing so that concurrent batches take
//! row locks in the same order and cannot deadlock each other on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use entity::{conversations, message_bodies, messages};
use std::sync::{Arc, Mutex};

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query, ValueTuple};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityName, QueryResult,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use super::delivery::NewLease;
use super::outage::WriteHealth;
use super::outbox::{self, EventType};
use super::status::{self, Delivered, MessageStatus, Which};
use super::StoreError;
use crate::domain::{Direction, Event};

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

/// Starts a write transaction; on SQLite it takes the write lock up front (`BEGIN
/// IMMEDIATE`), because a deferred transaction that reads then writes gets SQLITE_BUSY
/// without the busy handler ever being consulted.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, StoreError> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    Ok(db.begin_with_options(options).await?)
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
        let result = async {
            let txn = begin_write(&self.db).await?;
            let moved = status::transition(
                &txn,
                Which::Delivered(sent),
                MessageStatus::Queued,
                MessageStatus::Sent,
            )
            .await?;
            txn.commit().await?;
            Ok(moved)
        }
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

fn keys_by_id(ids: &HashMap<ConversationKey, i64>) -> HashMap<i64, &ConversationKey> {
    ids.iter().map(|(k, id)| (*id, k)).collect()
}

fn status_of(row: &QueryResult) -> Result<MessageStatus, StoreError> {
    let text: String = get(row, "status")?;
    MessageStatus::parse(&text)
        .ok_or_else(|| StoreError::Rejected(format!("unknown message status {text:?}")))
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T, StoreError> {
    Ok(row.try_get::<T>("", column)?)
}

async fn store_bodies(
    txn: &DatabaseTransaction,
    bodies: &BTreeMap<&str, &str>,
) -> Result<HashMap<String, i64>, StoreError> {
    use message_bodies::Column;
    let mut insert = Query::insert();
    insert
        .into_table(message_bodies::Entity.table_ref())
        .columns([Column::Sha256, Column::Body])
        .values_from_panic(
            bodies
                .iter()
                .map(|(sha, body)| [Expr::from(sha.to_string()), Expr::from(body.to_string())]),
        )
        .on_conflict(OnConflict::column(Column::Sha256).do_nothing().to_owned())
        .returning(Query::returning().columns([Column::Id, Column::Sha256]));
    let mut ids = HashMap::with_capacity(bodies.len());
    for row in txn.query_all(&insert).await? {
        ids.insert(get::<String>(&row, "sha256")?, get::<i64>(&row, "id")?);
    }
    let missing: Vec<String> = bodies
        .keys()
        .filter(|sha| !ids.contains_key(**sha))
        .map(|sha| sha.to_string())
        .collect();
    if !missing.is_empty() {
        let select = Query::select()
            .columns([Column::Id, Column::Sha256])
            .from(message_bodies::Entity.table_ref())
            .and_where(Column::Sha256.is_in(missing))
            .to_owned();
        for row in txn.query_all(&select).await? {
            ids.insert(get::<String>(&row, "sha256")?, get::<i64>(&row, "id")?);
        }
    }
    Ok(ids)
}

fn conversation_key(row: &QueryResult) -> Result<(ConversationKey, i64), StoreError> {
    let channel: String = get(row, "channel")?;
    let channel = if channel == "email" { "email" } else { "sms" };
    Ok((
        ConversationKey {
            customer_id: get(row, "customer_id")?,
            channel,
            participant_a: get(row, "participant_a")?,
            participant_b: get(row, "participant_b")?,
        },
        get(row, "id")?,
    ))
}

async fn store_conversations(
    txn: &DatabaseTransaction,
    keys: &BTreeSet<&ConversationKey>,
    now: DateTime<Utc>,
) -> Result<HashMap<ConversationKey, i64>, StoreError> {
    use conversations::Column;
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let key_columns = [
        Column::CustomerId,
        Column::Channel,
        Column::ParticipantA,
        Column::ParticipantB,
    ];
    let returned = [
        Column::Id,
        Column::CustomerId,
        Column::Channel,
        Column::ParticipantA,
        Column::ParticipantB,
    ];
    let mut insert = Query::insert();
    insert
        .into_table(conversations::Entity.table_ref())
        .columns([
            Column::CustomerId,
            Column::Channel,
            Column::ParticipantA,
            Column::ParticipantB,
            Column::MessageCount,
            Column::CreatedAt,
            Column::UpdatedAt,
        ])
        .values_from_panic(keys.iter().map(|k| {
            [
                Expr::from(k.customer_id),
                Expr::from(k.channel),
                Expr::from(k.participant_a.clone()),
                Expr::from(k.participant_b.clone()),
                Expr::from(0i64),
                Expr::from(now),
                Expr::from(now),
            ]
        }))
        .on_conflict(OnConflict::columns(key_columns).do_nothing().to_owned())
        .returning(Query::returning().columns(returned));
    let mut ids = HashMap::with_capacity(keys.len());
    for row in txn.query_all(&insert).await? {
        let (key, id) = conversation_key(&row)?;
        ids.insert(key, id);
    }
    let missing: Vec<&&ConversationKey> = keys.iter().filter(|k| !ids.contains_key(**k)).collect();
    if !missing.is_empty() {
        // A row-value IN list, not an OR chain: SQLite caps expression depth at 1000.
        let select = Query::select()
            .columns(returned)
            .from(conversations::Entity.table_ref())
            .and_where(
                Expr::tuple(key_columns.map(Expr::col)).in_tuples(missing.iter().map(|k| {
                    ValueTuple::Many(vec![
                        k.customer_id.into(),
                        k.channel.into(),
                        k.participant_a.clone().into(),
                        k.participant_b.clone().into(),
                    ])
                })),
            )
            .to_owned();
        for row in txn.query_all(&select).await? {
            let (key, id) = conversation_key(&row)?;
            ids.insert(key, id);
        }
    }
    Ok(ids)
}

struct NewMessage<'a> {
    event: &'a Event,
    conversation_id: i64,
    body_id: i64,
}

/// PostgreSQL keeps microseconds; truncating here makes both databases store and compare
/// the same instant.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

async fn insert_messages(
    txn: &DatabaseTransaction,
    rows: &[NewMessage<'_>],
    now: DateTime<Utc>,
    lease: Option<&NewLease>,
) -> Result<HashMap<String, Persisted>, StoreError> {
    use messages::Column;
    // Outbound messages are due at once, for a sender to claim; or, under `lease`, held
    // from the commit by this process's sender (its first attempt), and due again only if
    // that sender dies before settling them. Inbound messages are never due.
    let until = lease.map(|l| now + chrono::Duration::from_std(l.length).unwrap_or_default());
    let schedule = |direction: Direction| match (direction, lease) {
        (Direction::Inbound, _) => (None, None, None, 0),
        (Direction::Outbound, None) => (Some(now), None, None, 0),
        (Direction::Outbound, Some(lease)) => (until, until, Some(lease.token.clone()), 1),
    };
    let mut insert = Query::insert();
    insert
        .into_table(messages::Entity.table_ref())
        .columns([
            Column::ConversationId,
            Column::CustomerId,
            Column::Direction,
            Column::Channel,
            Column::FromAddress,
            Column::ToAddress,
            Column::Subject,
            Column::BodyId,
            Column::Attachments,
            Column::Metadata,
            Column::SentAt,
            Column::ReceivedAt,
            Column::Status,
            Column::ProviderMessageId,
            Column::IdempotencyKey,
            Column::CreatedAt,
            Column::UpdatedAt,
            Column::RequestFingerprint,
            Column::NextAttemptAt,
            Column::LeaseUntil,
            Column::LeaseToken,
            Column::DeliveryAttempts,
            Column::Traceparent,
        ])
        .values_from_panic(rows.iter().map(|row| {
            let e = row.event;
            let (next_attempt_at, lease_until, lease_token, attempts) = schedule(e.direction);
            [
                Expr::from(row.conversation_id),
                Expr::from(e.customer_id),
                Expr::from(e.direction.as_str()),
                Expr::from(e.channel.as_str()),
                Expr::from(e.from.clone()),
                Expr::from(e.to.clone()),
                Expr::from(e.subject.clone()),
                Expr::from(row.body_id),
                Expr::from(serde_json::Value::from(e.attachments.clone())),
                Expr::from(e.metadata.clone()),
                Expr::from(micros(e.sent_at)),
                Expr::from(micros(e.accepted_at)),
                Expr::from(MessageStatus::initial(e.direction).as_str()),
                Expr::from(e.provider_message_id.clone()),
                Expr::from(e.idempotency_key.as_str().to_string()),
                Expr::from(now),
                Expr::from(now),
                Expr::from(e.request_fingerprint.clone()),
                Expr::from(next_attempt_at),
                Expr::from(lease_until),
                Expr::from(lease_token),
                Expr::from(attempts),
                Expr::from(e.traceparent.clone()),
            ]
        }))
        .on_conflict(
            OnConflict::column(Column::IdempotencyKey)
                .do_nothing()
                .to_owned(),
        )
        .returning(Query::returning().columns([
            Column::Id,
            Column::IdempotencyKey,
            Column::ConversationId,
            Column::Status,
            Column::RequestFingerprint,
        ]));
    let mut inserted = HashMap::with_capacity(rows.len());
    for row in txn.query_all(&insert).await? {
        inserted.insert(
            get::<String>(&row, "idempotency_key")?,
            Persisted {
                message_id: get(&row, "id")?,
                conversation_id: get(&row, "conversation_id")?,
                inserted: true,
                status: status_of(&row)?,
                request_fingerprint: get(&row, "request_fingerprint")?,
            },
        );
    }
    Ok(inserted)
}

async fn find_messages_by_key(
    txn: &DatabaseTransaction,
    keys: &[&str],
) -> Result<HashMap<String, Persisted>, StoreError> {
    use messages::Column;
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let select = Query::select()
        .columns([
            Column::Id,
            Column::IdempotencyKey,
            Column::ConversationId,
            Column::Status,
            Column::RequestFingerprint,
        ])
        .from(messages::Entity.table_ref())
        .and_where(Column::IdempotencyKey.is_in(keys.iter().map(|k| k.to_string())))
        .to_owned();
    let mut found = HashMap::with_capacity(keys.len());
    for row in txn.query_all(&select).await? {
        found.insert(
            get::<String>(&row, "idempotency_key")?,
            Persisted {
                message_id: get(&row, "id")?,
                conversation_id: get(&row, "conversation_id")?,
                inserted: false,
                status: status_of(&row)?,
                request_fingerprint: get(&row, "request_fingerprint")?,
            },
        );
    }
    Ok(found)
}

/// Adds the newly inserted messages to their conversations' counters in one statement.
///
/// It is written as an upsert on the primary key (every row conflicts, so every row is an
/// update) because that is the one multi-row UPDATE both SQLite and PostgreSQL accept
/// from the same builder.
async fn bump_counters(
    txn: &DatabaseTransaction,
    rows: &[NewMessage<'_>],
    inserted: &HashMap<String, Persisted>,
    keys: &HashMap<i64, &ConversationKey>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    use conversations::Column;
    let mut bumps: BTreeMap<i64, (i64, DateTime<Utc>)> = BTreeMap::new();
    for row in rows {
        if !inserted.contains_key(row.event.idempotency_key.as_str()) {
            continue;
        }
        let sent_at = micros(row.event.sent_at);
        let bump = bumps.entry(row.conversation_id).or_insert((0, sent_at));
        bump.0 += 1;
        bump.1 = Ord::max(bump.1, sent_at);
    }
    if bumps.is_empty() {
        return Ok(());
    }
    let mut upsert = Query::insert();
    upsert
        .into_table(conversations::Entity.table_ref())
        .columns([
            Column::Id,
            Column::CustomerId,
            Column::Channel,
            Column::ParticipantA,
            Column::ParticipantB,
            Column::MessageCount,
            Column::LastMessageAt,
            Column::CreatedAt,
            Column::UpdatedAt,
        ])
        .values_from_panic(bumps.iter().map(|(id, (count, last))| {
            let key = keys[id];
            [
                Expr::from(*id),
                Expr::from(key.customer_id),
                Expr::from(key.channel),
                Expr::from(key.participant_a.clone()),
                Expr::from(key.participant_b.clone()),
                Expr::from(*count),
                Expr::from(*last),
                Expr::from(now),
                Expr::from(now),
            ]
        }))
        .on_conflict(
            OnConflict::column(Column::Id)
                .values([
                    (
                        Column::MessageCount,
                        Expr::cust(r#""conversations"."message_count" + "excluded"."message_count""#),
                    ),
                    (
                        Column::LastMessageAt,
                        Expr::cust(
                            r#"CASE WHEN "conversations"."last_message_at" IS NULL OR "excluded"."last_message_at" > "conversations"."last_message_at" THEN "excluded"."last_message_at" ELSE "conversations"."last_message_at" END"#,
                        ),
                    ),
                    (Column::UpdatedAt, Expr::cust(r#""excluded"."updated_at""#)),
                ])
                .to_owned(),
        );
    txn.execute(&upsert).await?;
    Ok(())
}
