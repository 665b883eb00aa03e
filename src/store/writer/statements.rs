//! The statements of one batch: body de-duplication, conversation upsert, the message
//! insert and the counters (see the parent module for why they are shaped so).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use entity::{conversations, message_bodies, messages};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query, ValueTuple};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityName, QueryResult};

use super::super::delivery::NewLease;
use super::super::status::MessageStatus;
use super::super::StoreError;
use super::{ConversationKey, Persisted};
use crate::domain::{Direction, Event};

pub(super) fn keys_by_id(ids: &HashMap<ConversationKey, i64>) -> HashMap<i64, &ConversationKey> {
    ids.iter().map(|(k, id)| (*id, k)).collect()
}

pub(super) fn status_of(row: &QueryResult) -> Result<MessageStatus, StoreError> {
    let text: String = get(row, "status")?;
    MessageStatus::parse(&text)
        .ok_or_else(|| StoreError::Rejected(format!("unknown message status {text:?}")))
}

pub(super) fn get<T: sea_orm::TryGetable>(
    row: &QueryResult,
    column: &str,
) -> Result<T, StoreError> {
    Ok(row.try_get::<T>("", column)?)
}

pub(super) async fn store_bodies(
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

pub(super) fn conversation_key(row: &QueryResult) -> Result<(ConversationKey, i64), StoreError> {
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

pub(super) async fn store_conversations(
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

pub(super) struct NewMessage<'a> {
    pub(super) event: &'a Event,
    pub(super) conversation_id: i64,
    pub(super) body_id: i64,
}

/// PostgreSQL keeps microseconds; truncating here makes both databases store and compare
/// the same instant.
pub(super) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

pub(super) async fn insert_messages(
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
        .returning(Query::returning().columns(PERSISTED_COLUMNS));
    by_key(txn.query_all(&insert).await?, true)
}

pub(super) async fn find_messages_by_key(
    txn: &DatabaseTransaction,
    keys: &[&str],
) -> Result<HashMap<String, Persisted>, StoreError> {
    use messages::Column;
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let select = Query::select()
        .columns(PERSISTED_COLUMNS)
        .from(messages::Entity.table_ref())
        .and_where(Column::IdempotencyKey.is_in(keys.iter().map(|k| k.to_string())))
        .to_owned();
    by_key(txn.query_all(&select).await?, false)
}

/// What [`by_key`] reads of a message row, inserted or found.
const PERSISTED_COLUMNS: [messages::Column; 5] = [
    messages::Column::Id,
    messages::Column::IdempotencyKey,
    messages::Column::ConversationId,
    messages::Column::Status,
    messages::Column::RequestFingerprint,
];

/// The rows of [`PERSISTED_COLUMNS`] by idempotency key; `inserted` says whether this batch
/// wrote them.
fn by_key(
    rows: Vec<QueryResult>,
    inserted: bool,
) -> Result<HashMap<String, Persisted>, StoreError> {
    let mut persisted = HashMap::with_capacity(rows.len());
    for row in rows {
        persisted.insert(
            get::<String>(&row, "idempotency_key")?,
            Persisted {
                message_id: get(&row, "id")?,
                conversation_id: get(&row, "conversation_id")?,
                inserted,
                status: status_of(&row)?,
                request_fingerprint: get(&row, "request_fingerprint")?,
            },
        );
    }
    Ok(persisted)
}

/// Adds the newly inserted messages to their conversations' counters in one statement.
///
/// It is written as an upsert on the primary key (every row conflicts, so every row is an
/// update) because that is the one multi-row UPDATE both SQLite and PostgreSQL accept
/// from the same builder.
pub(super) async fn bump_counters(
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
