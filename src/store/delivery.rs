//! The delivery stage's queries (SPEC §13): outbound messages are due work in the
//! `messages` table, claimed by one sender at a time and settled only by it.
//!
//! A claim is one `UPDATE … WHERE id IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED])`: it
//! gives the claimed rows a fresh `lease_token` and moves their `next_attempt_at` to the
//! end of the lease, so a message whose sender died is simply due again when the lease
//! runs out. Every settlement is conditional on the token (fencing): a sender whose lease
//! passed to another can change nothing. On PostgreSQL, `SKIP LOCKED` lets senders in
//! several processes claim side by side; on SQLite the single writer serializes them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::messages;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement, TransactionTrait,
    Value,
};
use uuid::Uuid;

use super::dead_letters::{self, NewDeadLetter};
use super::read;
use super::status::{self, MessageStatus, Which};
use super::writer::MessageWriter;
use super::StoreError;
use crate::domain::{Channel, Direction, Event, IdempotencyKey, SCHEMA_VERSION};

/// A lease taken at insert (see [`MessageWriter::persist_leased`]): the messages a batch
/// stores are held under `token` for `length` from their commit.
#[derive(Debug, Clone)]
pub struct NewLease {
    pub token: String,
    pub length: Duration,
}

impl NewLease {
    pub fn new(length: Duration) -> Self {
        NewLease {
            token: Uuid::new_v4().to_string(),
            length,
        }
    }
}

/// A message a sender holds until `lease_until`.
#[derive(Debug, Clone)]
pub struct Held {
    pub id: i64,
    pub lease_token: String,
    /// The message as an event (its `attempt` counts the earlier provider attempts).
    pub event: Result<Event, String>,
}

/// Claims up to `limit` due messages of `channels`, oldest due first, for `lease`.
pub async fn claim(
    writer: &MessageWriter,
    channels: &[Channel],
    limit: u64,
    lease: Duration,
) -> Result<Vec<Held>, StoreError> {
    if limit == 0 || channels.is_empty() {
        return Ok(Vec::new());
    }
    let db = writer.connection();
    let backend = db.get_database_backend();
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    let token = Uuid::new_v4().to_string();
    let mut values: Vec<Value> = Vec::with_capacity(6);
    let mut bind = |value: Value| {
        values.push(value);
        match backend {
            DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_string(),
        }
    };
    let (token_p, until_p) = (bind(token.clone().into()), bind(until.into()));
    let until_again = bind(until.into());
    let (now_p, limit_p) = (bind(now.into()), bind((limit as i64).into()));
    let now_again = bind(now.into());
    let channel_list = channels
        .iter()
        .map(|c| format!("'{}'", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let skip_locked = match backend {
        DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    // Channels and the status are literals from enums: SQLite uses the partial index on
    // queued messages only when the statement names the status it was built with.
    let sql = format!(
        "UPDATE messages SET lease_token = {token_p}, lease_until = {until_p}, \
         next_attempt_at = {until_again}, delivery_attempts = delivery_attempts + 1 \
         WHERE id IN (SELECT id FROM messages WHERE status = 'queued' \
         AND next_attempt_at <= {now_p} AND channel IN ({channel_list}) \
         ORDER BY next_attempt_at LIMIT {limit_p}{skip_locked}) \
         AND status = 'queued' AND next_attempt_at <= {now_again} \
         RETURNING id, customer_id, channel, from_address, to_address, subject, body_id, \
         attachments, metadata, sent_at, received_at, idempotency_key, \
         request_fingerprint, provider_message_id, delivery_attempts, traceparent"
    );
    let statement = Statement::from_sql_and_values(backend, sql, values);
    let rows = {
        let _turn = writer.take_turn().await;
        let rows = match backend {
            DbBackend::Postgres => {
                // Rows written faster than the statistics follow (a burst, a new table)
                // leave the planner expecting a few due rows: it then sorts every due row
                // to take the first `limit` (45 ms for 44,000) instead of reading the due
                // index in order (1 ms). Sorting is never the better plan for this query.
                let txn = db.begin().await?;
                txn.execute_unprepared("SET LOCAL enable_sort = off")
                    .await?;
                let rows = txn.query_all_raw(statement).await?;
                txn.commit().await?;
                rows
            }
            _ => db.query_all_raw(statement).await?,
        };
        // A claim that wrote rows proves the database takes writes; a failed one is not
        // reported (it would start an outage that only ingest's writes could end).
        if !rows.is_empty() {
            writer.health().succeeded();
        }
        rows
    };
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        claimed.push(read_row(row));
    }
    let body_ids: Vec<i64> = claimed
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|m| m.body_id))
        .collect();
    let bodies = read::bodies(db, body_ids).await?;
    Ok(claimed
        .into_iter()
        .zip(&rows)
        .map(|(row, raw)| {
            let id = raw.try_get::<i64>("", "id").unwrap_or_default();
            let event = row.and_then(|m| {
                let body = bodies
                    .get(&m.body_id)
                    .cloned()
                    .ok_or("its body is missing")?;
                event_of(m, body)
            });
            Held {
                id,
                lease_token: token.clone(),
                event,
            }
        })
        .collect())
}

/// The columns of a claimed row that make its event.
struct ClaimedRow {
    id: i64,
    customer_id: Uuid,
    channel: String,
    from: String,
    to: String,
    subject: Option<String>,
    body_id: i64,
    attachments: serde_json::Value,
    metadata: Option<serde_json::Value>,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    idempotency_key: String,
    request_fingerprint: Option<String>,
    provider_message_id: Option<String>,
    attempts: i32,
    traceparent: Option<String>,
}

fn read_row(row: &sea_orm::QueryResult) -> Result<ClaimedRow, String> {
    let read = || -> Result<ClaimedRow, sea_orm::DbErr> {
        Ok(ClaimedRow {
            id: row.try_get("", "id")?,
            customer_id: row.try_get("", "customer_id")?,
            channel: row.try_get("", "channel")?,
            from: row.try_get("", "from_address")?,
            to: row.try_get("", "to_address")?,
            subject: row.try_get("", "subject")?,
            body_id: row.try_get("", "body_id")?,
            attachments: row.try_get("", "attachments")?,
            metadata: row.try_get("", "metadata")?,
            sent_at: row.try_get("", "sent_at")?,
            received_at: row.try_get("", "received_at")?,
            idempotency_key: row.try_get("", "idempotency_key")?,
            request_fingerprint: row.try_get("", "request_fingerprint")?,
            provider_message_id: row.try_get("", "provider_message_id")?,
            attempts: row.try_get("", "delivery_attempts")?,
            traceparent: row.try_get("", "traceparent")?,
        })
    };
    read().map_err(|e| format!("unreadable row: {e}"))
}

/// The event a stored outbound message came from, as accepted when it was stored, on the
/// attempt after the ones it has had (this claim counted).
fn event_of(m: ClaimedRow, body: String) -> Result<Event, String> {
    let unreadable = |what: &str| format!("message {}: {what}", m.id);
    let channel: Channel = m.channel.parse().map_err(|e: String| unreadable(&e))?;
    let attachments: Vec<String> =
        serde_json::from_value(m.attachments).map_err(|e| unreadable(&e.to_string()))?;
    Ok(Event {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::new_v4(),
        direction: Direction::Outbound,
        channel,
        customer_id: m.customer_id,
        from: m.from,
        to: m.to,
        subject: m.subject,
        body,
        attachments,
        sent_at: m.sent_at,
        idempotency_key: IdempotencyKey::from_stored(m.idempotency_key),
        provider_message_id: m.provider_message_id,
        metadata: m.metadata,
        accepted_at: m.received_at,
        attempt: u32::try_from(m.attempts.saturating_sub(1)).unwrap_or(0),
        request_fingerprint: m.request_fingerprint,
        traceparent: m.traceparent,
    })
}

/// Gives held messages back, each due again at its own time, in one statement.
pub async fn reschedule(
    writer: &MessageWriter,
    later: &[(i64, String, DateTime<Utc>)],
    refund_attempt: bool,
) -> Result<u64, StoreError> {
    if later.is_empty() {
        return Ok(0);
    }
    let db = writer.connection();
    let backend = db.get_database_backend();
    let mut param = super::placeholders(backend);
    let mut values: Vec<Value> = Vec::with_capacity(3 * later.len());
    let mut rows = String::with_capacity(later.len() * 16);
    for (i, (id, token, at)) in later.iter().enumerate() {
        if i > 0 {
            rows.push(',');
        }
        let cast = match backend {
            DbBackend::Postgres => "::timestamptz",
            _ => "",
        };
        rows.push_str(&format!("({}, {}, {}{cast})", param(), param(), param()));
        values.push((*id).into());
        values.push(token.clone().into());
        values.push((*at).into());
    }
    // An attempt that never reached the provider (the circuit opened meanwhile, shutdown)
    // is not counted.
    let refund = if refund_attempt {
        ", delivery_attempts = messages.delivery_attempts - 1"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE messages SET next_attempt_at = v.column3, lease_until = NULL, \
         lease_token = NULL{refund} FROM (VALUES {rows}) AS v \
         WHERE messages.id = v.column1 AND messages.lease_token = v.column2 \
         AND messages.status = 'queued'"
    );
    let statement = Statement::from_sql_and_values(backend, sql, values);
    let _turn = writer.take_turn().await;
    let result = db.execute_raw(statement).await.map_err(StoreError::from);
    writer.observe_write(&result, |_| true);
    Ok(result?.rows_affected())
}

/// How a dead letter is kept (see [`super::dead_letters`]): as it is, encoded when the
/// database refuses it as it is, or not at all when it refuses even that (the caller logs
/// the event whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Plain,
    Encoded,
    Nowhere,
}

/// Dead-letters a held message: `queued → failed` and the dead letter in `form`, in one
/// transaction, only while the lease is still this sender's. Returns whether it was.
pub async fn dead_letter(
    writer: &MessageWriter,
    id: i64,
    lease_token: &str,
    new: &NewDeadLetter<'_>,
    form: Form,
) -> Result<bool, StoreError> {
    let _turn = writer.take_turn().await;
    let txn = super::begin_write(writer.connection()).await?;
    let moved = status::transition(
        &txn,
        Which::Held { id, lease_token },
        MessageStatus::Queued,
        MessageStatus::Failed,
    )
    .await?;
    if moved == 0 {
        return Ok(false);
    }
    match form {
        Form::Plain => drop(dead_letters::insert_row(&txn, new).await?),
        Form::Encoded => drop(dead_letters::insert_encoded_row(&txn, new).await?),
        Form::Nowhere => {}
    }
    txn.commit().await?;
    Ok(true)
}

/// Marks a held message that cannot be read `failed` (it can be neither sent nor parked
/// as an event), so it never blocks a claim again.
pub async fn fail_unreadable(
    writer: &MessageWriter,
    id: i64,
    lease_token: &str,
) -> Result<(), StoreError> {
    let _turn = writer.take_turn().await;
    status::transition_committed(
        writer.connection(),
        Which::Held { id, lease_token },
        MessageStatus::Queued,
        MessageStatus::Failed,
    )
    .await?;
    Ok(())
}

/// Outbound messages not settled yet: due, waiting for a retry, or in a provider call.
pub async fn count_unsent<C: ConnectionTrait>(db: &C) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(messages::Entity::find()
        .filter(messages::Column::Status.eq(MessageStatus::Queued.as_str()))
        .count(db)
        .await?)
}

/// Messages of `channels` due now and not held by any sender.
pub async fn count_due_on<C: ConnectionTrait>(
    db: &C,
    channels: &[Channel],
) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    Ok(messages::Entity::find()
        .filter(messages::Column::Status.eq(MessageStatus::Queued.as_str()))
        .filter(messages::Column::NextAttemptAt.lte(Utc::now()))
        .filter(messages::Column::Channel.is_in(names))
        .count(db)
        .await?)
}

/// Messages due now and not held by any sender (`messaging_delivery_due`).
pub async fn count_due<C: ConnectionTrait>(db: &C) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(messages::Entity::find()
        .filter(messages::Column::Status.eq(MessageStatus::Queued.as_str()))
        .filter(messages::Column::NextAttemptAt.lte(Utc::now()))
        .count(db)
        .await?)
}
