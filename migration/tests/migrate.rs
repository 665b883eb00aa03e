//! Runs the migrations up/down/up against a real SQLite file and, when
//! `TEST_DATABASE_URL` is set, against a throwaway PostgreSQL database, and
//! checks that the entity crate round-trips through the resulting schema.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use entity::{conversations, dead_letters, message_bodies, messages};
use entity::{Conversation, Customer, DeadLetter, Message, MessageBody};
use migration::{Migrator, MigratorTrait, DEFAULT_CUSTOMER_ID};
use sea_orm_migration::sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm_migration::sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, SqlErr, Statement, TryInsertResult,
};
use sea_orm_migration::sea_orm::{ColumnTrait, ModelTrait};
use uuid::Uuid;

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{}", std::process::id(), nanos)
}

/// Microsecond precision so values round-trip through PostgreSQL unchanged.
fn ts(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, micros * 1000).unwrap()
}

fn default_customer() -> Uuid {
    Uuid::parse_str(DEFAULT_CUSTOMER_ID).unwrap()
}

fn sql_err(err: &DbErr) -> SqlErr {
    err.sql_err()
        .unwrap_or_else(|| panic!("expected a constraint violation, got {err:?}"))
}

async fn table_count(db: &DatabaseConnection) -> i64 {
    let sql = match db.get_database_backend() {
        DbBackend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name IN \
             ('customers','conversations','message_bodies','messages','dead_letters')"
        }
        _ => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name IN ('customers','conversations','message_bodies','messages','dead_letters')"
        }
    };
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn upsert_conversation(
    db: &DatabaseConnection,
    a: &str,
    b: &str,
    at: DateTime<Utc>,
) -> conversations::Model {
    let am = conversations::ActiveModel {
        id: NotSet,
        customer_id: Set(default_customer()),
        channel: Set("sms".into()),
        participant_a: Set(a.into()),
        participant_b: Set(b.into()),
        message_count: Set(1),
        last_message_at: Set(Some(at)),
        created_at: Set(at),
        updated_at: Set(at),
    };
    Conversation::insert(am)
        .on_conflict(
            OnConflict::columns([
                conversations::Column::CustomerId,
                conversations::Column::Channel,
                conversations::Column::ParticipantA,
                conversations::Column::ParticipantB,
            ])
            .value(
                conversations::Column::MessageCount,
                Expr::col((Conversation, conversations::Column::MessageCount)).add(1),
            )
            .update_columns([
                conversations::Column::LastMessageAt,
                conversations::Column::UpdatedAt,
            ])
            .to_owned(),
        )
        .exec_with_returning(db)
        .await
        .unwrap()
}

async fn check_schema(db: &DatabaseConnection) {
    let backend = db.get_database_backend();
    assert_eq!(table_count(db).await, 5);

    // Default customer.
    let customer = Customer::find_by_id(default_customer())
        .one(db)
        .await
        .unwrap()
        .expect("default customer exists");
    assert_eq!(customer.name, "default");

    // message_bodies.sha256 is unique.
    let sha = "ab".repeat(32);
    let body = MessageBody::insert(message_bodies::ActiveModel {
        id: NotSet,
        sha256: Set(sha.clone()),
        body: Set("hello".into()),
    })
    .exec_with_returning(db)
    .await
    .unwrap();
    let dup = MessageBody::insert(message_bodies::ActiveModel {
        id: NotSet,
        sha256: Set(sha.clone()),
        body: Set("hello".into()),
    })
    .exec(db)
    .await
    .unwrap_err();
    assert!(
        matches!(sql_err(&dup), SqlErr::UniqueConstraintViolation(_)),
        "{dup:?}"
    );
    // ... and ON CONFLICT DO NOTHING on it reports a conflict rather than an error
    // with `exec` (which returns the key) ...
    let dup_body = || message_bodies::ActiveModel {
        id: NotSet,
        sha256: Set(sha.clone()),
        body: Set("hello".into()),
    };
    let res = MessageBody::insert(dup_body())
        .on_conflict_do_nothing_on([message_bodies::Column::Sha256])
        .exec(db)
        .await
        .unwrap();
    assert!(matches!(res, TryInsertResult::Conflicted), "{res:?}");
    // ... but SeaORM 2.0.4's `TryInsert::exec_with_returning` turns the empty RETURNING
    // into `Err(RecordNotFound)`, not `Ok(Conflicted)`.
    let res = MessageBody::insert(dup_body())
        .on_conflict_do_nothing_on([message_bodies::Column::Sha256])
        .exec_with_returning(db)
        .await;
    assert!(matches!(res, Err(DbErr::RecordNotFound(_))), "{res:?}");

    // Conversation upsert via the full unique index, with RETURNING.
    let t1 = ts(1_760_000_000, 123_456);
    let t2 = ts(1_760_000_100, 0);
    let c1 = upsert_conversation(db, "+15550001", "+15550002", t1).await;
    assert_eq!(c1.message_count, 1);
    assert_eq!(c1.last_message_at, Some(t1));
    let c2 = upsert_conversation(db, "+15550001", "+15550002", t2).await;
    assert_eq!(c2.id, c1.id);
    assert_eq!(c2.message_count, 2);
    assert_eq!(c2.last_message_at, Some(t2));
    assert_eq!(c2.created_at, t1);

    // Message round trip (JSON, nullable JSON, timestamps, UUID).
    let new_message =
        |key: &str, conversation_id: i64, sent_at: DateTime<Utc>| messages::ActiveModel {
            id: NotSet,
            conversation_id: Set(conversation_id),
            customer_id: Set(default_customer()),
            direction: Set("outbound".into()),
            channel: Set("mms".into()),
            from_address: Set("+15550001".into()),
            to_address: Set("+15550002".into()),
            subject: Set(None),
            body_id: Set(body.id),
            attachments: Set(serde_json::json!(["https://example.com/a.png"])),
            metadata: Set(Some(serde_json::json!({"k": 1}))),
            sent_at: Set(sent_at),
            received_at: Set(sent_at),
            status: Set("queued".into()),
            provider_message_id: Set(None),
            idempotency_key: Set(key.into()),
            created_at: Set(sent_at),
            updated_at: Set(sent_at),
            request_fingerprint: Set(Some(format!("{key:0>64}"))),
            next_attempt_at: Set(Some(sent_at)),
            lease_until: Set(None),
            lease_token: Set(None),
            delivery_attempts: Set(0),
            traceparent: Set(None),
            sent_by: Set(None),
            delivery_error: Set(None),
        };
    let m1 = Message::insert(new_message("k1", c1.id, t1))
        .exec_with_returning(db)
        .await
        .unwrap();
    let m2 = Message::insert(new_message("k2", c1.id, t2))
        .exec_with_returning(db)
        .await
        .unwrap();
    let fetched = Message::find_by_id(m1.id).one(db).await.unwrap().unwrap();
    assert_eq!(fetched, m1);
    assert_eq!(fetched.sent_at, t1);
    assert_eq!(
        fetched.attachments,
        serde_json::json!(["https://example.com/a.png"])
    );

    let dup = Message::insert(new_message("k1", c1.id, t1))
        .exec(db)
        .await
        .unwrap_err();
    assert!(
        matches!(sql_err(&dup), SqlErr::UniqueConstraintViolation(_)),
        "{dup:?}"
    );
    let orphan = Message::insert(new_message("k3", 999_999, t1))
        .exec(db)
        .await
        .unwrap_err();
    assert!(
        matches!(sql_err(&orphan), SqlErr::ForeignKeyConstraintViolation(_)),
        "{orphan:?}"
    );

    // Ordering on timestamps works (keyset-style query on the conversation index).
    let ordered = Message::find()
        .filter(messages::Column::ConversationId.eq(c1.id))
        .filter(messages::Column::SentAt.gt(t1))
        .order_by_asc(messages::Column::SentAt)
        .order_by_asc(messages::Column::Id)
        .all(db)
        .await
        .unwrap();
    assert_eq!(ordered, vec![m2.clone()]);

    // Relations.
    let conv = m1
        .find_related(Conversation)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conv.id, c1.id);
    let related = c2.find_related(Message).all(db).await.unwrap();
    assert_eq!(related.len(), 2);
    let b = m1.find_related(MessageBody).one(db).await.unwrap().unwrap();
    assert_eq!(b.sha256, sha);

    // dead_letters: idempotency_key is not unique.
    for _ in 0..2 {
        let dl = DeadLetter::insert(dead_letters::ActiveModel {
            id: NotSet,
            event: Set(serde_json::json!({"idempotency_key": "dl1", "body": "x"})),
            idempotency_key: Set("dl1".into()),
            attempts: Set(5),
            first_attempt_at: Set(t1),
            last_attempt_at: Set(t2),
            last_error: Set("boom".into()),
            error_kind: Set("transient".into()),
            error_code: Set(Some("provider_unavailable".into())),
            dead_at: Set(t2),
            replayed_at: Set(None),
        })
        .exec_with_returning(db)
        .await
        .unwrap();
        assert_eq!(dl.dead_at, t2);
    }

    // How things are physically stored.
    let sql = match backend {
        DbBackend::Sqlite => {
            "SELECT typeof(sent_at) || ' ' || sent_at || ' / ' || typeof(customer_id) \
             || ' / ' || typeof(attachments) AS s FROM messages ORDER BY id LIMIT 1"
        }
        _ => {
            "SELECT pg_typeof(sent_at)::text || ' ' || sent_at::text || ' / ' \
             || pg_typeof(customer_id)::text || ' / ' || pg_typeof(attachments)::text AS s \
             FROM messages ORDER BY id LIMIT 1"
        }
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "{backend:?} storage: {}",
        row.try_get::<String>("", "s").unwrap()
    );
}

/// The migration to operator keys turns every key with `admin` into an operator's key (no
/// customer, `admin` alone), leaves the others as they were, and its `down` gives operator
/// keys back to the first customer.
async fn operator_keys_migration(db: &DatabaseConnection) {
    let before = Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261206_000001_operator_keys")
        .expect("the migration is listed");
    Migrator::up(db, Some(before as u32)).await.unwrap();
    let insert = |id: i64, scopes: &str| {
        let customer = match db.get_database_backend() {
            DbBackend::Postgres => format!("'{DEFAULT_CUSTOMER_ID}'"),
            // sqlx keeps a UUID as its 16 bytes in SQLite.
            _ => format!("x'{}'", DEFAULT_CUSTOMER_ID.replace('-', "")),
        };
        format!(
            "INSERT INTO api_keys (id, customer_id, name, prefix, key_sha256, scopes, created_at) \
             VALUES ({id}, {customer}, 'k{id}', 'msk_0000000{id}', 'sha{id}', '{scopes}', '2026-12-06T00:00:00Z')"
        )
    };
    for (id, scopes) in [(1, "send,admin"), (2, "send,webhook")] {
        db.execute_unprepared(&insert(id, scopes)).await.unwrap();
    }
    Migrator::up(db, None).await.unwrap();
    let keys = entity::ApiKey::find()
        .order_by_asc(entity::api_keys::Column::Id)
        .all(db)
        .await
        .unwrap();
    let seen: Vec<_> = keys
        .iter()
        .map(|k| (k.id, k.customer_id, k.scopes.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, None, "admin"),
            (2, Some(default_customer()), "send,webhook")
        ]
    );
    let applied = Migrator::migrations().len() - before;
    Migrator::down(db, Some(applied as u32)).await.unwrap();
    let keys = entity::ApiKey::find()
        .order_by_asc(entity::api_keys::Column::Id)
        .all(db)
        .await
        .unwrap();
    assert!(keys
        .iter()
        .all(|k| k.customer_id == Some(default_customer())));
    db.execute_unprepared("DELETE FROM api_keys").await.unwrap();
    Migrator::down(db, None).await.unwrap();
}

async fn run_cycle(db: &DatabaseConnection) {
    operator_keys_migration(db).await;
    Migrator::up(db, None).await.unwrap();
    check_schema(db).await;
    Migrator::down(db, None).await.unwrap();
    assert_eq!(table_count(db).await, 0);
    Migrator::up(db, None).await.unwrap();
    check_schema(db).await;
}

/// Removes the SQLite file even when an assertion fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn sqlite_up_down_up() {
    let path = std::env::temp_dir().join(format!("migration_test_{}.db", unique_suffix()));
    let _cleanup = RemoveOnDrop(path.clone());
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = Database::connect(&url).await.unwrap();

    run_cycle(&db).await;

    // Auto-increment keys must be real rowid aliases on SQLite.
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE name = 'messages'",
        ))
        .await
        .unwrap()
        .unwrap();
    let ddl: String = row.try_get("", "sql").unwrap();
    assert!(
        ddl.contains(r#""id" integer NOT NULL PRIMARY KEY AUTOINCREMENT"#),
        "{ddl}"
    );

    db.close().await.unwrap();
}

#[tokio::test]
async fn postgres_up_down_up() {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("TEST_DATABASE_URL not set; skipping PostgreSQL migration test");
        return;
    };
    let admin = Database::connect(&admin_url).await.unwrap();
    let name = format!("migration_test_{}", unique_suffix());
    admin
        .execute_unprepared(&format!(r#"CREATE DATABASE "{name}""#))
        .await
        .unwrap();

    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url.as_str(), String::new()),
    };
    let (server, _) = base.rsplit_once('/').expect("URL has a database path");
    let db_url = format!("{server}/{name}{query}");

    let db = Database::connect(&db_url).await.unwrap();
    run_cycle(&db).await;

    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT is_identity || ' ' || data_type AS s FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'messages' \
             AND column_name = 'id'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "s").unwrap(), "YES bigint");
    db.close().await.unwrap();

    admin
        .execute_unprepared(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
        .await
        .unwrap();
}
