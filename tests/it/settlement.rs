//! Every accepted event is settled, and none is left behind: events the database refuses
//! are dead-lettered anyway (encoded, or logged whole as the last resort), a provider's
//! Retry-After cannot park an event, a shutdown keeps what the database refuses in a spill
//! file, and stored messages whose event was lost are sent again, once.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use common::nats::{nats_databases, NatsServer};
use common::stub::{Answer, StubProvider};
use common::{databases, eventually, sample, sms_event, spawn_on, Db, TestApp, TestDatabase};
use futures_util::future::LocalBoxFuture;
use messaging_server::actors::faults::{FaultHook, Site};
use messaging_server::actors::queue::Close;
use messaging_server::config::{ProviderKind, QueueBackendKind, Settings};
use messaging_server::domain::Event;
use messaging_server::providers::{OutboundMessage, Provider, ProviderError, Providers, Receipt};
use messaging_server::startup::{self, Application, Hooks};
use messaging_server::store::dead_letters;
use messaging_server::store::writer::MessageWriter;
use sea_orm::{ConnectionTrait, Database};

async fn metric(app: &TestApp, name: &str, labels: &str) -> f64 {
    sample(&app.metrics_text().await, name, labels)
}

use common::stub::use_stub;

/// Starts the app on `database` with `configure`d settings, its SMS provider built from
/// them (the `http` kind when a stub is configured), and `fault` injected.
async fn start(
    database: TestDatabase,
    configure: impl FnOnce(&mut Settings),
    fault: Option<FaultHook>,
) -> TestApp {
    let mut settings = common::test_settings(&database.url);
    configure(&mut settings);
    let hooks = Hooks {
        providers: (settings.providers.sms.kind == ProviderKind::Http)
            .then(|| Providers::from_settings(&settings.providers)),
        fault,
    };
    spawn_on(database, move |s| *s = settings, hooks).await
}

async fn send_ok(app: &TestApp, body: &str) -> String {
    let answer = app.send_sms(body).await;
    answer["idempotency_key"].as_str().unwrap().to_string()
}

/// Waits (20 s at most) until the status resource says `status` of the message `key`.
async fn until_status(app: &TestApp, key: &str, status: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{key} {status}"),
        || async {
            let (_, body) = app.get(&format!("/api/messages/{key}")).await;
            body["status"] == status
        },
    )
    .await;
}

async fn dead_letter_rows(app: &TestApp) -> Vec<entity::dead_letters::Model> {
    use sea_orm::{EntityTrait, QueryOrder};
    entity::dead_letters::Entity::find()
        .order_by_asc(entity::dead_letters::Column::Id)
        .all(app.db())
        .await
        .unwrap()
}

async fn assert_ready(app: &TestApp) {
    eventually(Duration::from_secs(10), "readyz 200", || async {
        app.get("/readyz").await.0 == StatusCode::OK
    })
    .await;
}

/// Runs `sql` on the test database as its owner (SQLite: a connection of its own).
async fn execute_as_admin(database: &TestDatabase, sql: &str) {
    match database.kind {
        Db::Postgres => database.admin_execute(sql).await,
        Db::Sqlite => {
            let db = Database::connect(database.url.as_str()).await.unwrap();
            db.execute_unprepared(sql).await.expect(sql);
            db.close().await.unwrap();
        }
    }
}

/// Creates the tables, as the first start would.
async fn migrate(database: &TestDatabase) {
    let settings = common::test_settings(&database.url);
    let db = messaging_server::store::connect(&settings.database)
        .await
        .unwrap();
    messaging_server::store::migrate(&db).await.unwrap();
    db.close().await.unwrap();
}

/// Makes the database refuse (as a constraint violation: permanent) every dead letter, or
/// only those not in the encoded form.
async fn refuse_dead_letters(database: &TestDatabase, even_encoded: bool) {
    migrate(database).await;
    let sql = match (database.kind, even_encoded) {
        (Db::Sqlite, false) => "CREATE TRIGGER refuse BEFORE INSERT ON dead_letters \
             WHEN json_extract(NEW.event, '$.event_json_hex') IS NULL \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            .to_string(),
        (Db::Sqlite, true) => "CREATE TRIGGER refuse BEFORE INSERT ON dead_letters \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            .to_string(),
        (Db::Postgres, even_encoded) => {
            let condition = if even_encoded {
                "true"
            } else {
                "NOT (NEW.event ? 'event_json_hex')"
            };
            format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF {condition} THEN RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; \
                 END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT ON dead_letters FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        }
    };
    execute_as_admin(database, &sql).await;
}

#[actix_web::test]
async fn events_the_database_cannot_store_are_dead_lettered_and_the_queue_drains() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let app = start(database, |_| {}, None).await;
        let customer = app.state.settings.api.default_customer_id;
        // Off the queue, past the HTTP edge that refuses them: a NUL in the body, in a
        // metadata value, and in the idempotency key. PostgreSQL refuses NUL in text and
        // jsonb, so the plain dead letter fails there too.
        let mut in_body = sms_event(customer, "x");
        in_body.body = "nul \0 in the body".into();
        let mut in_metadata = sms_event(customer, "nul in the metadata");
        in_metadata.metadata = Some(serde_json::json!({ "note": "a\u{0}b" }));
        let mut in_key = sms_event(customer, "nul in the key");
        in_key.idempotency_key =
            messaging_server::domain::IdempotencyKey::from_stored("k\0ey".into());
        let poisoned = vec![in_body, in_metadata, in_key];
        app.enqueue(poisoned.clone()).await;
        app.drained().await;

        let rows = dead_letter_rows(&app).await;
        assert_eq!(rows.len(), 3, "{db:?}: each one parked, once");
        for row in &rows {
            assert_eq!(row.error_kind, "permanent");
            let kept = dead_letters::event_of(row).expect("the event can be read back");
            assert!(
                poisoned.contains(&kept),
                "{db:?}: the dead letter keeps the event as it was"
            );
            if db == Db::Postgres {
                assert!(
                    row.event.get(dead_letters::ENCODED_EVENT).is_some(),
                    "PostgreSQL keeps it encoded: {}",
                    row.event
                );
            }
        }
        assert_eq!(app.state.backend.depth(), 0);
        assert_eq!(
            metric(&app, "messaging_dlq_write_failures_total", "").await,
            0.0
        );
        assert_ready(&app).await;
        // The pipeline goes on.
        send_ok(&app, "after the poison").await;
        app.drained().await;
        assert_eq!(app.sent_count().await, 1, "{db:?}");
    }
}

/// An app on `db` whose provider refuses every SMS (422) and whose database refuses their
/// dead letters ([`refuse_dead_letters`]); and the stub, to change its answer.
async fn refusing_everything(db: Db, even_encoded: bool) -> (TestApp, StubProvider) {
    let database = TestDatabase::create(db).await;
    refuse_dead_letters(&database, even_encoded).await;
    let stub = StubProvider::start(vec![], Answer::Status(422, None));
    let app = start(database, |s| use_stub(s, &stub), None).await;
    (app, stub)
}

#[actix_web::test]
async fn a_dead_letter_refused_as_it_is_is_stored_encoded_and_can_be_replayed() {
    for db in databases() {
        let (app, stub) = refusing_everything(db, false).await;
        let key = send_ok(&app, "refused by the provider").await;
        app.drained().await;

        let rows = dead_letter_rows(&app).await;
        assert_eq!(rows.len(), 1, "{db:?}");
        assert!(rows[0].event.get(dead_letters::ENCODED_EVENT).is_some());
        assert_eq!(rows[0].idempotency_key, key);
        assert!(rows[0].last_error.contains("422"), "{}", rows[0].last_error);
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM messages WHERE status = 'failed'")
                .await,
            1,
            "{db:?}: its message is failed, as for any dead letter"
        );

        stub.set_fallback(Answer::Accept);
        let (status, _) = app
            .post_empty(&format!("/api/dlq/{}/replay", rows[0].id))
            .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{db:?}: the encoded event replays"
        );
        app.drained().await;
        assert_eq!(app.sent_count().await, 1);
        assert_eq!(stub.accepted(&key), 1);
    }
}

#[actix_web::test]
async fn a_dead_letter_refused_even_encoded_is_counted_and_settled() {
    for db in databases() {
        let (app, _stub) = refusing_everything(db, true).await;
        send_ok(&app, "nowhere to park").await;
        app.drained().await;

        assert!(dead_letter_rows(&app).await.is_empty());
        assert_eq!(
            metric(&app, "messaging_dlq_write_failures_total", "").await,
            1.0,
            "{db:?}"
        );
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM messages WHERE status = 'failed'")
                .await,
            1,
            "{db:?}: settled: failed, not left queued"
        );
        assert_eq!(app.state.backend.depth(), 0);
        assert_ready(&app).await;
    }
}

#[actix_web::test]
async fn a_dead_letter_the_database_cannot_take_yet_waits_in_the_queue_until_it_can() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let app = start(
            database,
            |s| {
                s.database.busy_timeout = Duration::from_millis(100);
                s.server.stall_timeout = Duration::from_secs(1);
            },
            None,
        )
        .await;
        // A transient refusal: PostgreSQL, the role loses INSERT on dead_letters; SQLite,
        // another process holds the write lock.
        let block = app.database.block_inserts("dead_letters").await;
        // An event that fails at once (permanently) and writes nothing but its dead letter.
        let mut invalid = sms_event(
            app.state.settings.api.default_customer_id,
            "from the future",
        );
        invalid.schema_version = 2;
        let key = invalid.idempotency_key.as_str().to_string();
        app.enqueue(vec![invalid]).await;
        eventually(Duration::from_secs(10), "the event failed", || async {
            metric(&app, "messaging_worker_failed_total", "kind=\"permanent\"").await >= 1.0
        })
        .await;
        // Its dead letter cannot be written for a while (tried every second meanwhile):
        // the event stays in the queue, and readiness says the queue does not move.
        app.until_unready("readyz names the stall", "queue stalled (1 events waiting")
            .await;
        assert_eq!(
            app.state.backend.depth(),
            1,
            "{db:?}: still owned by the queue"
        );
        block.release(&app.database).await;
        app.drained().await;
        assert_ready(&app).await;
        let letters = dead_letter_rows(&app).await;
        assert_eq!(
            letters.len(),
            1,
            "{db:?}: parked once the database takes it"
        );
        assert_eq!(letters[0].idempotency_key, key);
        assert_eq!(
            metric(&app, "messaging_dlq_write_failures_total", "").await,
            0.0
        );
    }
}

#[actix_web::test]
async fn a_huge_retry_after_is_capped_at_max_delay_and_the_scheduler_keeps_working() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let stub = StubProvider::start(
            vec![
                Answer::Status(429, Some(u64::MAX)),
                Answer::Status(503, Some(99_999_999_999)),
                Answer::Accept,
                // A later event: retried once, then sent.
                Answer::Status(503, None),
                Answer::Accept,
            ],
            Answer::Status(400, None),
        );
        let app = start(database, |s| use_stub(s, &stub), None).await;
        let parked_for_ever = send_ok(&app, "retry after the end of time").await;
        // Within the 30 s of `drained`: the 50 ms max_delay of the tests, not millennia.
        app.drained().await;
        let calls = stub.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.idempotency_key == parked_for_ever)
                .count(),
            3,
            "{db:?}: 429, 503, then accepted"
        );
        assert_eq!(stub.accepted(&parked_for_ever), 1);

        // One after the other: the stub answers in the order calls arrive.
        let retried = send_ok(&app, "later, retried").await;
        app.drained().await;
        let rejected = send_ok(&app, "later, rejected").await;
        app.drained().await;
        assert_eq!(stub.accepted(&retried), 1, "{db:?}: later 503s are retried");
        let letters = dead_letter_rows(&app).await;
        assert_eq!(letters.len(), 1, "{db:?}: later 400s are dead-lettered");
        assert_eq!(letters[0].idempotency_key, rejected);
        assert_eq!(
            metric(
                &app,
                "messaging_actor_restarts_total",
                "actor=\"retry_scheduler\""
            )
            .await,
            0.0,
            "nothing panicked"
        );
        assert_ready(&app).await;
    }
}

#[actix_web::test]
async fn a_retry_that_would_come_after_max_age_is_dead_lettered_at_once() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let stub = StubProvider::start(vec![], Answer::Status(503, Some(99_999_999_999)));
        let app = start(
            database,
            |s| {
                use_stub(s, &stub);
                s.retry.max_delay = Duration::from_secs(3600);
                s.retry.max_age = Duration::from_secs(600);
            },
            None,
        )
        .await;
        let key = send_ok(&app, "would wait past its age").await;
        app.drained().await;
        let letters = dead_letter_rows(&app).await;
        assert_eq!(letters.len(), 1, "{db:?}");
        assert_eq!(letters[0].idempotency_key, key);
        assert_eq!(letters[0].attempts, 1, "not held for an hour first");
        assert_eq!(letters[0].error_kind, "transient");
        assert_eq!(stub.calls().len(), 1);
    }
}

#[actix_web::test]
async fn a_shutdown_keeps_what_the_database_refuses_in_a_spill_file_for_the_next_start() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let spill_dir = database.spill_dir();
        // API only: everything accepted stays queued until the shutdown saves it.
        let app = start(database, |s| s.worker.enabled = false, None).await;
        let customer = app.state.settings.api.default_customer_id;
        let mut events: Vec<Event> = (0..10)
            .map(|i| sms_event(customer, &format!("before {i}")))
            .collect();
        let mut poisoned = sms_event(customer, "x");
        poisoned.body = "a NUL \0 PostgreSQL cannot store".into();
        events.push(poisoned.clone());
        events.extend((0..10).map(|i| sms_event(customer, &format!("after {i}"))));
        app.enqueue(events).await;

        let left = app.state.queue.send(Close).await.unwrap();
        assert_eq!(left.len(), 21);
        let saved = startup::save_unfinished(app.db(), &app.state.spill, left)
            .await
            .expect("saved");
        match db {
            Db::Postgres => {
                assert_eq!(saved.in_database, 20, "only the NUL event is refused");
                let (path, n) = saved.in_file.clone().expect("a spill file");
                assert_eq!(n, 1);
                assert!(path.starts_with(&spill_dir), "{path:?}");
                let text = std::fs::read_to_string(&path).unwrap();
                let kept: Event = serde_json::from_str(text.trim()).unwrap();
                assert_eq!(kept, poisoned);
            }
            Db::Sqlite => {
                assert_eq!(saved.in_database, 21);
                assert!(saved.in_file.is_none());
            }
        }

        // The next start (with workers) loads both, then the files are gone.
        let TestApp { database, .. } = app;
        let next = start(database, |_| {}, None).await;
        next.drained().await;
        assert_eq!(
            next.sent_count().await,
            20,
            "{db:?}: none of the accepted events lost"
        );
        let letters = dead_letter_rows(&next).await;
        assert_eq!(letters.len(), 1, "{db:?}: the NUL event is dead-lettered");
        assert_eq!(dead_letters::event_of(&letters[0]).unwrap(), poisoned);
        assert_eq!(next.scalar("SELECT COUNT(*) FROM pending_events").await, 0);
        let files: Vec<_> = std::fs::read_dir(&spill_dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(files.is_empty(), "{db:?}: spill files removed: {files:?}");
    }
}

/// Stores `n` outbound messages as a worker would, then forgets their events (as a process
/// killed with the memory queue holding them would): they stay `queued`.
async fn store_unsent(database: &TestDatabase, n: usize) -> Vec<String> {
    migrate(database).await;
    let settings = common::test_settings(&database.url);
    let db = messaging_server::store::connect(&settings.database)
        .await
        .unwrap();
    let customer = settings.api.default_customer_id;
    let events: Vec<Event> = (0..n)
        .map(|i| sms_event(customer, &format!("stored, never sent {i}")))
        .collect();
    let refs: Vec<&Event> = events.iter().collect();
    MessageWriter::new(db.clone()).persist(&refs).await.unwrap();
    db.close().await.unwrap();
    events
        .iter()
        .map(|e| e.idempotency_key.as_str().to_string())
        .collect()
}

#[actix_web::test]
async fn stored_but_unsent_messages_are_sent_once_at_start() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let keys = store_unsent(&database, 30).await;
        let stub = StubProvider::start(vec![], Answer::Accept);
        let app = start(database, |s| use_stub(s, &stub), None).await;
        eventually(Duration::from_secs(20), "stored messages sent", || async {
            app.sent_count().await == 30
        })
        .await;
        app.drained().await;
        for key in &keys {
            assert_eq!(stub.accepted(key), 1, "{db:?}: {key} sent once");
        }
        assert_eq!(stub.calls().len(), 30);
        app.assert_stored(30).await;
    }
}

/// A retry is scheduled in the database: the provider is called again only when it is due
/// (not before its Retry-After), and meanwhile the status resource says when.
#[actix_web::test]
async fn a_delivery_retry_waits_in_the_database_until_it_is_due() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let stub = StubProvider::start(vec![Answer::Status(503, Some(2))], Answer::Accept);
        let app = start(
            database,
            |s| {
                use_stub(s, &stub);
                s.retry.max_delay = Duration::from_secs(5);
            },
            None,
        )
        .await;
        let key = send_ok(&app, "waits for its retry").await;
        let seen = std::sync::Mutex::new(None);
        eventually(Duration::from_secs(10), "the retry scheduled", || {
            let (app, key, seen) = (&app, &key, &seen);
            async move {
                let (_, body) = app.get(&format!("/api/messages/{key}")).await;
                let waiting = body["status"] == "failed" && body["next_attempt_at"].is_string();
                if waiting {
                    *seen.lock().unwrap() = Some(body);
                }
                waiting
            }
        })
        .await;
        let waiting = seen.into_inner().unwrap().unwrap();
        assert_eq!(waiting["attempts"], 1, "{db:?}: {waiting}");
        eventually(Duration::from_secs(15), "sent after the retry", || async {
            app.sent_count().await == 1
        })
        .await;
        let calls = stub.calls();
        let answers: Vec<Answer> = calls.iter().map(|c| c.answer).collect();
        assert_eq!(
            answers,
            [Answer::Status(503, Some(2)), Answer::Accept],
            "{db:?}"
        );
        assert!(
            calls[1].at - calls[0].at >= Duration::from_secs(2),
            "{db:?}: Retry-After honoured"
        );
        assert_eq!(stub.accepted(&key), 1);
        let (_, done) = app.get(&format!("/api/messages/{key}")).await;
        assert_eq!(done["status"], "sent", "{db:?}: {done}");
        assert!(done.get("next_attempt_at").is_none(), "{db:?}: {done}");
    }
}

/// A provider whose call panics for one body: that message fails alone.
struct PanicsOnBoom;

impl Provider for PanicsOnBoom {
    fn name(&self) -> &'static str {
        "sms"
    }

    fn send(
        &self,
        message: OutboundMessage,
    ) -> LocalBoxFuture<'static, Result<Receipt, ProviderError>> {
        Box::pin(async move {
            if message.body == "boom" {
                panic!("injected fault in a provider call");
            }
            Ok(Receipt {
                provider_message_id: format!("ok-{}", message.idempotency_key),
            })
        })
    }
}

#[actix_web::test]
async fn a_panicking_provider_call_fails_its_message_alone() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let mut settings = common::test_settings(&database.url);
        settings.retry.max_attempts = 3;
        let providers = Providers::from_settings(&settings.providers);
        let hooks = Hooks {
            providers: Some(Providers {
                sms: Arc::new(PanicsOnBoom),
                email: providers.email,
            }),
            ..Hooks::default()
        };
        let app = spawn_on(database, move |s| *s = settings, hooks).await;
        let boom = send_ok(&app, "boom").await;
        let mut fine = Vec::new();
        for i in 0..5 {
            fine.push(send_ok(&app, &format!("fine {i}")).await);
        }
        eventually(Duration::from_secs(20), "the others sent", || async {
            app.sent_count().await == 5
        })
        .await;
        until_status(&app, &boom, "dead_lettered").await;
        assert!(metric(&app, "messaging_actor_restarts_total", "actor=\"sender\"").await >= 1.0);
        assert_ready(&app).await;
    }
}

/// Settling panics once (a bug): the sender's settler goes on, so every later message is
/// still recorded as sent; the one it was settling is due again when its lease runs out,
/// and its provider is called a second time, as after a crash.
#[actix_web::test]
async fn a_panic_while_settling_stops_no_later_settlement() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let stub = StubProvider::start(vec![], Answer::Accept);
        let (hooks, panicked) = common::panics_once_at(Site::Settle);
        let configure = |s: &mut Settings| {
            use_stub(s, &stub);
            s.delivery.lease = Duration::from_secs(2);
        };
        let app = start(database, configure, hooks.fault).await;
        let first = send_ok(&app, "settled after a panic").await;
        until_status(&app, &first, "sent").await;
        assert!(
            panicked.load(Ordering::SeqCst),
            "{db:?}: the fault was injected"
        );
        let mut later = Vec::new();
        for i in 0..5 {
            later.push(send_ok(&app, &format!("after the panic {i}")).await);
        }
        eventually(
            Duration::from_secs(20),
            "every later one recorded",
            || async { app.sent_count().await == 6 },
        )
        .await;
        assert_eq!(
            stub.accepted(&first),
            2,
            "{db:?}: called again after its lease"
        );
        for key in &later {
            assert_eq!(stub.accepted(key), 1, "{db:?}: {key} sent once");
        }
        assert_eq!(
            metric(&app, "messaging_actor_restarts_total", "actor=\"sender\"").await,
            1.0,
            "{db:?}"
        );
    }
}

/// Two worker processes (here: two applications) on one NATS stream and one database claim
/// due messages at the same time: each is claimed by one, and sent once.
#[actix_web::test]
async fn two_nats_workers_send_each_message_once() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        let database = TestDatabase::create(db).await;
        let keys = store_unsent(&database, 40).await;
        let stub = StubProvider::start(vec![], Answer::Accept);
        let configure = |s: &mut Settings| {
            use_stub(s, &stub);
            s.queue.backend = QueueBackendKind::Nats;
            s.queue.nats.url = nats.url();
            s.queue.nats.ack_wait = Duration::from_secs(2);
        };
        let mut second = common::test_settings(&database.url);
        configure(&mut second);
        let first = start(database, configure, None).await;
        let providers = Providers::from_settings(&second.providers);
        let other = Application::build_with(
            second,
            Hooks {
                providers: Some(providers),
                ..Hooks::default()
            },
        )
        .await
        .expect("second worker starts");
        let other_state = other.state().clone();
        actix_web::rt::spawn(other.run_until_stopped());

        eventually(Duration::from_secs(30), "stored messages sent", || async {
            first.sent_count().await == 40
        })
        .await;
        for key in &keys {
            assert_eq!(stub.accepted(key), 1, "{db:?}: {key} sent once");
        }
        assert_eq!(stub.calls().len(), 40, "{db:?}: no call twice");
        let label = "outcome=\"sent\",provider=\"sms\"";
        let by_first = metric(&first, "messaging_provider_requests_total", label).await;
        let (text, _) = other_state.metrics.render();
        let by_other = sample(&text, "messaging_provider_requests_total", label);
        assert_eq!(
            by_first + by_other,
            40.0,
            "{db:?}: each called by one worker"
        );
    }
}
