//! Workers persist events idempotently: the expected rows, nothing more on replay, counters
//! right under concurrency. Runs on SQLite and (with TEST_DATABASE_URL) PostgreSQL.

use crate::common;

use chrono::{TimeZone, Utc};
use common::{databases, spawn_app, spawn_app_with, Db, TestApp, TestDatabase};
use messaging_server::domain::{Accept, Event, IntoEvent, SendEmail, SendSms, SmsWebhook};
use messaging_server::startup::Hooks;
use messaging_server::store::writer::MessageWriter;
use uuid::Uuid;

const DEFAULT_CUSTOMER: &str = "00000000-0000-0000-0000-000000000001";

fn accept() -> Accept<'static> {
    Accept {
        default_customer: DEFAULT_CUSTOMER.parse().unwrap(),
        inbound_owner: None,
        idempotency_header: None,
        endpoint: "/api/messages/sms",
        now: Utc::now(),
    }
}

/// `request` as the API accepts it (for the default customer); `what` names it if it
/// is refused.
fn accepted(request: impl IntoEvent, what: &str) -> Event {
    request.into_event(&accept()).expect(what)
}

fn outbound_sms(from: &str, to: &str, body: &str, second: u32) -> Event {
    let request = SendSms {
        from: Some(from.into()),
        to: Some(to.into()),
        r#type: Some("sms".into()),
        body: Some(body.into()),
        timestamp: Some(
            Utc.with_ymd_and_hms(2024, 11, 1, 14, 0, second)
                .unwrap()
                .to_rfc3339(),
        ),
        ..Default::default()
    };
    accepted(request, "valid sms")
}

fn inbound_sms(from: &str, to: &str, body: &str, provider_id: &str) -> Event {
    let request = SmsWebhook {
        from: Some(from.into()),
        to: Some(to.into()),
        r#type: Some("sms".into()),
        messaging_provider_id: Some(provider_id.into()),
        body: Some(body.into()),
        timestamp: Some("2024-11-01T15:00:00Z".into()),
        ..Default::default()
    };
    accepted(request, "valid webhook")
}

fn email(from: &str, to: &str, body: &str) -> Event {
    let request = SendEmail {
        from: Some(from.into()),
        to: Some(to.into()),
        body: Some(body.into()),
        timestamp: Some("2024-11-01T16:00:00Z".into()),
        ..Default::default()
    };
    accepted(request, "valid email")
}

/// `count` outbound SMS sent at `second` to one number from `senders` numbers in turn (as
/// many conversations), with the bodies `text 0`, `text 1`, …
fn spread_sms(count: usize, senders: usize, text: &str, second: u32) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let from = format!("+1201666{:04}", i % senders);
            outbound_sms(&from, "+18045551234", &format!("{text} {i}"), second)
        })
        .collect()
}

async fn counts(app: &TestApp) -> (i64, i64, i64) {
    (
        app.scalar("SELECT COUNT(*) FROM conversations").await,
        app.scalar("SELECT COUNT(*) FROM messages").await,
        app.scalar("SELECT COUNT(*) FROM message_bodies").await,
    )
}

/// Persists `events` as one batch, which must succeed (else panics with `what`).
async fn persist_all(writer: &MessageWriter, events: &[Event], what: &str) {
    let batch: Vec<&Event> = events.iter().collect();
    writer.persist(&batch).await.expect(what);
}

#[actix_web::test]
async fn seeded_events_become_the_expected_rows_and_replays_add_nothing() {
    for db in databases() {
        let app = spawn_app(db).await;
        let a = "+12016661234";
        let b = "+18045551234";
        let events = vec![
            outbound_sms(a, b, "hello", 0),
            outbound_sms(a, b, "same body", 1),
            outbound_sms(a, b, "same body", 2),
            inbound_sms(b, a, "reply", "provider-1"),
            email("user@usehatchapp.com", "contact@gmail.com", "<p>hi</p>"),
        ];
        app.enqueue(events.clone()).await;
        app.drained().await;

        assert_eq!(
            counts(&app).await,
            (2, 5, 4),
            "{db:?}: 2 conversations, 5 messages, 4 distinct bodies"
        );
        let sms_conversation = app
            .scalar("SELECT message_count FROM conversations WHERE channel = 'sms'")
            .await;
        assert_eq!(
            sms_conversation, 4,
            "{db:?}: inbound and outbound share the conversation"
        );
        assert_eq!(
            app.scalar(
                "SELECT COUNT(*) FROM messages WHERE direction = 'inbound' AND status = 'received'"
            )
            .await,
            1
        );
        assert_eq!(
            app.scalar(
                "SELECT COUNT(*) FROM messages WHERE direction = 'outbound' AND status = 'sent'"
            )
            .await,
            4,
            "{db:?}: outbound messages were handed to the provider"
        );

        // At-least-once delivery: the same events again (new event ids, same keys).
        let replays: Vec<Event> = events
            .iter()
            .cloned()
            .map(|mut e| {
                e.event_id = Uuid::new_v4();
                e
            })
            .collect();
        app.enqueue(replays.clone()).await;
        app.enqueue(replays).await;
        app.drained().await;
        assert_eq!(counts(&app).await, (2, 5, 4), "{db:?}: replays add nothing");
        app.assert_counters_match().await;
        for event in events.iter().filter(|e| e.from == a) {
            assert_eq!(
                app.sms.successful_calls(event.idempotency_key.as_str()),
                1,
                "{db:?}: a sent message is never sent again"
            );
        }
    }
}

#[actix_web::test]
async fn one_batch_with_duplicates_inside_it() {
    for db in databases() {
        let app = spawn_app(db).await;
        let event = outbound_sms("+12016661234", "+18045551234", "twice in a batch", 0);
        let persisted = MessageWriter::new(app.db().clone())
            .persist(&[&event, &event])
            .await
            .expect("batch persists");
        assert!(persisted[0].inserted);
        assert!(
            !persisted[1].inserted,
            "{db:?}: second sight is a duplicate"
        );
        assert_eq!(persisted[0].message_id, persisted[1].message_id);
        assert_eq!(counts(&app).await, (1, 1, 1));
        app.assert_counters_match().await;
    }
}

#[actix_web::test]
async fn concurrent_workers_on_one_conversation_create_it_once_with_the_right_count() {
    for db in databases() {
        let app = spawn_app_with(db, |s| {
            s.worker.concurrency = 4;
            s.worker.batch_size = 7;
        })
        .await;
        // Both directions and both orders of the participants: one conversation.
        let events: Vec<Event> = (0..300)
            .map(|i| match i % 3 {
                0 => outbound_sms(
                    "+12016661234",
                    "+18045551234",
                    &format!("m{i}"),
                    (i % 60) as u32,
                ),
                1 => outbound_sms(
                    "+18045551234",
                    "+12016661234",
                    &format!("m{i}"),
                    (i % 60) as u32,
                ),
                _ => inbound_sms(
                    "+18045551234",
                    "+12016661234",
                    &format!("m{i}"),
                    &format!("p{i}"),
                ),
            })
            .collect();
        app.enqueue(events).await;
        app.drained().await;
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM conversations").await,
            1,
            "{db:?}"
        );
        assert_eq!(
            app.scalar("SELECT message_count FROM conversations").await,
            300,
            "{db:?}"
        );
        app.assert_counters_match().await;
    }
}

#[actix_web::test]
async fn concurrent_transactions_racing_on_new_conversations() {
    for db in databases() {
        let app = spawn_app(db).await;
        // Eight writers, each with the same new conversations and overlapping keys.
        let batch = spread_sms(40, 10, "race", 0);
        // Separate writers: no shared conversation cache, every one races on the rows.
        let writers = (0..8).map(|_| {
            let (writer, batch) = (MessageWriter::new(app.db().clone()), batch.clone());
            async move { writer.persist(&batch.iter().collect::<Vec<_>>()).await }
        });
        let results = futures_util::future::join_all(writers).await;
        for result in results {
            result.expect("every concurrent batch commits");
        }
        assert_eq!(counts(&app).await, (10, 40, 40), "{db:?}");
        app.assert_counters_match().await;
    }
}

#[actix_web::test]
async fn data_survives_a_restart_on_the_same_database() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let url = database.url.clone();
        let app = common::spawn_on(database, |_| {}, Hooks::default()).await;
        app.enqueue(vec![outbound_sms(
            "+12016661234",
            "+18045551234",
            "persisted",
            0,
        )])
        .await;
        app.drained().await;
        let TestApp { database, .. } = app;

        // A second application on the same database: migrations are idempotent and the
        // message is still there.
        assert_eq!(database.url, url);
        let again = common::spawn_on(database, |_| {}, Hooks::default()).await;
        assert_eq!(counts(&again).await, (1, 1, 1), "{db:?}");
    }
}

#[actix_web::test]
async fn a_cached_conversation_is_still_counted_and_large_batches_work() {
    for db in databases() {
        let app = spawn_app(db).await;
        let writer = MessageWriter::new(app.db().clone());
        // 1000 events over 500 conversations in one batch (the largest batch_size).
        let batch = spread_sms(1000, 500, "big", 0);
        persist_all(&writer, &batch, "a 1000-event batch").await;
        // Second batch: every conversation comes from the cache.
        let more = spread_sms(500, 500, "more", 1);
        persist_all(&writer, &more, "the batch persists").await;
        assert_eq!(counts(&app).await, (500, 1500, 1500), "{db:?}");
        assert_eq!(
            app.scalar("SELECT MIN(message_count) FROM conversations")
                .await,
            3
        );
        app.assert_counters_match().await;
    }
}

/// SQLite: the server's own connections never checkpoint the WAL (that would stall a
/// batch transaction); a checkpointer beside them copies it into the database file while
/// the server runs. Without one, the file would stay as migrated until the process exits.
#[actix_web::test]
async fn sqlite_wal_is_copied_into_the_database_file_while_the_server_runs() {
    use std::time::Duration;
    let app = spawn_app(Db::Sqlite).await;
    let path = app.state.settings.database.sqlite_path().expect("a file");
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let writer = MessageWriter::new(app.db().clone());
    let filler = "x".repeat(2_000);
    for round in 0..3 {
        let batch: Vec<Event> = (0..1000)
            .map(|i| {
                email(
                    "ops@example.com",
                    &format!("c{i}@example.com"),
                    &format!("{round} {i} {filler}"),
                )
            })
            .collect();
        persist_all(&writer, &batch, "the batch persists").await;
    }
    // ~6 MB of bodies: the database file grows only by checkpoints.
    let what = format!("the database file (was {before} bytes) to take the WAL's pages");
    common::eventually(Duration::from_secs(20), &what, || async {
        size() > before + 4_000_000
    })
    .await;
    assert_eq!(counts(&app).await.1, 3000);
}

/// The PostgreSQL half of this suite really runs: required in CI, and when configured the
/// server answers and the application starts on it (a wrong URL fails here, by name).
#[actix_web::test]
async fn postgres_is_required_in_ci_and_usable_when_configured() {
    if !common::postgres_configured() {
        return;
    }
    assert!(databases().contains(&Db::Postgres));
    let app = spawn_app(Db::Postgres).await;
    assert_eq!(
        app.db().get_database_backend(),
        sea_orm::DbBackend::Postgres
    );
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, actix_web::http::StatusCode::OK, "{body}");
}

/// Every TCP connection to PostgreSQL has Nagle's algorithm off. Without TCP_NODELAY a
/// statement larger than one segment (every batched insert) waits for the server's delayed
/// ACK, about 40 ms each: sqlx 0.9.0 dropped the option and batched writes fell to a
/// quarter. The sockets are found in /proc/self/fd, as this test's own business.
#[cfg(target_os = "linux")]
#[actix_web::test]
async fn connections_to_postgres_do_not_wait_for_delayed_acks() {
    use std::os::fd::{BorrowedFd, RawFd};
    if !common::postgres_configured() {
        return;
    }
    let app = spawn_app(Db::Postgres).await;
    let port = url::Url::parse(&app.state.settings.database.url)
        .unwrap()
        .port()
        .unwrap_or(5432);
    // Several writes, so the pool has opened its connections.
    app.post_sms("hello").await;
    app.drained().await;
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: borrowed for two socket-option reads; a descriptor closed meanwhile makes
        // them fail, which is skipped.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_postgres = socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port);
        if let (true, Ok(nodelay)) = (to_postgres, socket.tcp_nodelay()) {
            assert!(
                nodelay,
                "a connection to PostgreSQL with Nagle's algorithm on"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no connection to PostgreSQL found");
}
