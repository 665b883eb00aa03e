//! Failure handling with real faults: a provider over HTTP that fails, a mock provider that
//! rate-limits, a database that refuses writes, a worker that panics, an unreadable event.
//! Retries use short configured delays.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use chrono::Utc;
use common::stub::{Answer, StubProvider};
use common::{
    databases, eventually, sms, spawn_app_with, spawn_app_with_hooks, spawn_on, Db, TestApp,
    TestDatabase,
};
use messaging_server::actors::faults::Site;
use messaging_server::config::Settings;
use messaging_server::startup::Hooks;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde_json::{json, Value};

/// An app whose SMS provider is `stub`, answering within 300 ms or timing out.
async fn spawn_with_stub(
    db: Db,
    stub: &StubProvider,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let database = TestDatabase::create(db).await;
    common::spawn_with_stub(database, stub, |s| {
        s.providers.sms.timeout = Duration::from_millis(300);
        configure(s)
    })
    .await
}

async fn send_one(app: &TestApp, body: &str) -> String {
    let answer = app.send_sms(body).await;
    answer["idempotency_key"].as_str().unwrap().to_string()
}

async fn message(app: &TestApp) -> Value {
    let (_, page) = app.get("/api/conversations").await;
    let id = page["items"][0]["id"].as_i64().expect("a conversation");
    let (_, messages) = app.get(&format!("/api/conversations/{id}/messages")).await;
    messages["items"][0].clone()
}

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    let (status, page) = app.get("/api/dlq").await;
    assert_eq!(status, StatusCode::OK);
    page["items"].as_array().unwrap().clone()
}

#[actix_web::test]
async fn provider_failing_twice_is_sent_on_the_third_attempt() {
    for db in databases() {
        let stub = StubProvider::start(
            vec![Answer::Status(500, None), Answer::Status(503, None)],
            Answer::Accept,
        );
        let app = spawn_with_stub(db, &stub, |_| {}).await;
        let key = send_one(&app, "third time lucky").await;
        app.drained().await;

        let answers: Vec<Answer> = stub.calls().iter().map(|c| c.answer).collect();
        assert_eq!(
            answers,
            [
                Answer::Status(500, None),
                Answer::Status(503, None),
                Answer::Accept
            ],
            "{db:?}"
        );
        let m = message(&app).await;
        assert_eq!(m["status"], "sent");
        assert_eq!(m["provider_message_id"], format!("stub-{key}"));
        assert!(dead_letters(&app).await.is_empty());
        assert_eq!(app.scalar("SELECT COUNT(*) FROM messages").await, 1);
    }
}

#[actix_web::test]
async fn http_provider_timeouts_are_retried_and_retry_after_is_honoured() {
    let stub = StubProvider::start(
        vec![
            Answer::Slow(Duration::from_millis(800)),
            Answer::Status(429, Some(1)),
        ],
        Answer::Accept,
    );
    // Retry-After is honoured up to retry.max_delay (the test default is 50 ms).
    let app = spawn_with_stub(Db::Sqlite, &stub, |s| {
        s.retry.max_delay = Duration::from_secs(2)
    })
    .await;
    let key = send_one(&app, "patience").await;
    app.drained().await;
    let calls = stub.calls();
    assert_eq!(calls.len(), 3, "timeout, 429, then accepted: {calls:?}");
    let waited = calls[2].at - calls[1].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 was honoured (waited {waited:?})"
    );
    // The timed-out call may have been accepted late by the stub; the provider sees the
    // same idempotency key every time, which is what lets a real provider de-duplicate.
    assert!(calls.iter().all(|c| c.idempotency_key == key));
    assert_eq!(message(&app).await["status"], "sent");
}

#[actix_web::test]
async fn a_provider_4xx_is_permanent_and_dead_lettered_at_once() {
    for db in databases() {
        let stub = StubProvider::start(vec![], Answer::Status(422, None));
        let app = spawn_with_stub(db, &stub, |_| {}).await;
        send_one(&app, "rejected").await;
        app.drained().await;
        assert_eq!(stub.calls().len(), 1, "{db:?}: not retried");
        let letters = dead_letters(&app).await;
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0]["attempts"], 1);
        assert_eq!(letters[0]["error_kind"], "permanent");
        assert!(letters[0]["last_error"].as_str().unwrap().contains("422"));
        assert_eq!(message(&app).await["status"], "failed");
    }
}

#[actix_web::test]
async fn a_provider_always_rate_limiting_ends_in_the_dead_letter_queue() {
    for db in databases() {
        let app = spawn_app_with(db, |s| {
            s.providers.sms.mock_rate_limit_rate = 1.0;
            s.retry.max_attempts = 4;
        })
        .await;
        let key = send_one(&app, "never accepted").await;
        app.drained().await;

        let letters = dead_letters(&app).await;
        assert_eq!(letters.len(), 1, "{db:?}");
        let letter = &letters[0];
        assert_eq!(letter["attempts"], 4);
        assert_eq!(letter["error_kind"], "transient");
        assert_eq!(letter["idempotency_key"], key.as_str());
        assert!(
            letter["last_error"].as_str().unwrap().contains("429"),
            "{letter}"
        );
        assert!(letter["replayed_at"].is_null());
        assert_eq!(letter["event"]["idempotency_key"], key.as_str());
        let (status, one) = app.get(&format!("/api/dlq/{}", letter["id"])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["id"], letter["id"]);
        assert_eq!(message(&app).await["status"], "failed");
        assert_eq!(app.sms.successful_calls(&key), 0);
    }
}

#[actix_web::test]
async fn an_event_with_an_unknown_schema_version_is_dead_lettered_without_retries() {
    for db in databases() {
        let app = spawn_app_with(db, |s| s.retry.max_attempts = 10).await;
        let mut event = common::sms_event(
            app.state.settings.api.default_customer_id,
            "from the future",
        );
        event.schema_version = 2;
        app.enqueue(vec![event]).await;
        app.drained().await;

        let letters = dead_letters(&app).await;
        assert_eq!(letters.len(), 1, "{db:?}");
        assert_eq!(letters[0]["attempts"], 1, "no retries");
        assert_eq!(letters[0]["error_kind"], "permanent");
        assert!(letters[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("schema_version"));
        assert_eq!(app.scalar("SELECT COUNT(*) FROM messages").await, 0);
    }
}

#[actix_web::test]
async fn replay_after_the_fault_is_fixed_stores_and_sends_exactly_once() {
    for db in databases() {
        let stub = StubProvider::start(vec![], Answer::Status(503, None));
        let app = spawn_with_stub(db, &stub, |s| s.retry.max_attempts = 2).await;
        let key = send_one(&app, "eventually delivered").await;
        app.drained().await;
        let letters = dead_letters(&app).await;
        assert_eq!(letters.len(), 1, "{db:?}");
        assert_eq!(message(&app).await["status"], "failed");

        stub.set_fallback(Answer::Accept);
        let id = letters[0]["id"].as_i64().unwrap();
        let (status, _) = app.post_empty(&format!("/api/dlq/{id}/replay")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        app.drained().await;

        let m = message(&app).await;
        assert_eq!(m["status"], "sent", "{db:?}");
        assert_eq!(stub.accepted(&key), 1, "sent exactly once");
        app.assert_stored(1).await;
        let (_, letter) = app.get(&format!("/api/dlq/{id}")).await;
        assert!(letter["replayed_at"].is_string(), "replay is recorded");

        let (status, problem) = app.post_empty(&format!("/api/dlq/{id}/replay")).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "a replayed dead letter is not replayed twice: {problem}"
        );
        let (status, _) = app.post_empty("/api/dlq/999999/replay").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, _) = app
            .request(app.client.delete(app.url(&format!("/api/dlq/{id}"))), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(dead_letters(&app).await.is_empty());
        let (status, _) = app
            .request(app.client.delete(app.url(&format!("/api/dlq/{id}"))), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[actix_web::test]
async fn replay_all_re_enqueues_every_pending_dead_letter() {
    let stub = StubProvider::start(vec![], Answer::Status(500, None));
    let app = spawn_with_stub(Db::Sqlite, &stub, |s| s.retry.max_attempts = 1).await;
    for i in 0..3 {
        send_one(&app, &format!("batch {i}")).await;
    }
    app.drained().await;
    assert_eq!(dead_letters(&app).await.len(), 3);
    stub.set_fallback(Answer::Accept);
    let (status, answer) = app.post_empty("/api/dlq/replay").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["replayed"], 3);
    app.drained().await;
    assert_eq!(app.sent_count().await, 3);
    let (_, answer) = app.post_empty("/api/dlq/replay").await;
    assert_eq!(answer["replayed"], 0, "already replayed ones are skipped");
}

#[actix_web::test]
async fn retention_purges_old_dead_letters() {
    for db in databases() {
        let app = spawn_app_with(db, |s| {
            s.dlq.retention = Duration::from_secs(3600);
            s.dlq.purge_interval = Duration::from_millis(50);
        })
        .await;
        let insert = |hours_ago: i64, key: &str| entity::dead_letters::ActiveModel {
            event: Set(json!({"schema_version": 1})),
            idempotency_key: Set(key.into()),
            attempts: Set(10),
            first_attempt_at: Set(Utc::now() - chrono::Duration::hours(hours_ago + 1)),
            last_attempt_at: Set(Utc::now() - chrono::Duration::hours(hours_ago)),
            last_error: Set("provider answered 500".into()),
            error_kind: Set("transient".into()),
            dead_at: Set(Utc::now() - chrono::Duration::hours(hours_ago)),
            ..Default::default()
        };
        insert(2, "old").insert(app.db()).await.unwrap();
        insert(0, "fresh").insert(app.db()).await.unwrap();
        eventually(Duration::from_secs(5), "old dead letter purged", || async {
            app.scalar("SELECT COUNT(*) FROM dead_letters WHERE idempotency_key = 'old'")
                .await
                == 0
        })
        .await;
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM dead_letters WHERE idempotency_key = 'fresh'")
                .await,
            1,
            "{db:?}: dead letters within retention stay"
        );
    }
}

#[actix_web::test]
async fn a_worker_that_panics_is_replaced_and_its_event_is_retried() {
    for db in databases() {
        let (hooks, panicked) = common::panics_once_at(Site::Persist);
        let app = spawn_app_with_hooks(db, |s| s.worker.concurrency = 2, hooks).await;
        let key = send_one(&app, "survives a panic").await;
        app.drained().await;
        assert!(panicked.load(Ordering::SeqCst), "the fault was injected");
        assert_eq!(message(&app).await["status"], "sent", "{db:?}");
        assert_eq!(app.sms.successful_calls(&key), 1);
        assert!(dead_letters(&app).await.is_empty());
        eventually(
            Duration::from_secs(5),
            "both workers running again",
            || async { app.state.metrics.workers_active.load(Ordering::Relaxed) == 2 },
        )
        .await;
        // The pool still works after the restart.
        send_one(&app, "after the restart").await;
        app.drained().await;
        assert_eq!(app.sent_count().await, 2);
    }
}

#[actix_web::test]
async fn events_wait_out_a_database_outage_none_lost_none_doubled() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let app = spawn_on(
            database,
            |s| {
                s.retry.max_attempts = 1000;
                s.retry.max_delay = Duration::from_millis(100);
                s.database.busy_timeout = Duration::from_millis(50);
            },
            Hooks::default(),
        )
        .await;
        let fault = app.database.block_inserts("messages").await;
        // Accepted until the first failed write; refused (503) from then on.
        let mut keys = Vec::new();
        for i in 0..20 {
            let (status, answer) = app
                .post_json(
                    "/api/messages/sms",
                    &sms(
                        "+12016661234",
                        "+18045551234",
                        &format!("during the outage {i}"),
                    ),
                )
                .await;
            match status {
                StatusCode::ACCEPTED => {
                    keys.push(answer["idempotency_key"].as_str().unwrap().to_string())
                }
                StatusCode::SERVICE_UNAVAILABLE => break,
                other => panic!("{db:?}: {other} {answer}"),
            }
        }
        assert!(!keys.is_empty(), "{db:?}");
        // The workers hold their batches while nothing commits: readiness and the edge say
        // so, and no attempt is spent (a long outage must not end in dead letters).
        app.until_unready(
            "readiness reports the failing writes",
            "database (not taking writes)",
        )
        .await;
        let (status, _) = app.post_sms("refused").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{db:?}");
        let (_, text) = app.get("/metrics").await;
        let text = text.as_str().unwrap_or_default().to_string();
        assert_eq!(metric(&text, "messaging_retries_total"), 0.0, "{db:?}");
        assert_eq!(
            app.state.backend.depth(),
            keys.len(),
            "{db:?}: every accepted event still held by the queue"
        );
        fault.release(&app.database).await;
        app.drained().await;

        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM messages").await,
            keys.len() as i64,
            "{db:?}: none lost, none doubled"
        );
        assert_eq!(app.sent_count().await, keys.len() as i64);
        for key in &keys {
            assert_eq!(app.sms.successful_calls(key), 1);
        }
        assert!(dead_letters(&app).await.is_empty());
        app.assert_counters_match().await;
    }
}

#[actix_web::test]
async fn under_a_flaky_provider_every_message_is_sent_exactly_once() {
    for db in databases() {
        let app = spawn_app_with(db, |s| {
            s.providers.sms.mock_error_rate = 0.3;
            s.providers.sms.mock_rate_limit_rate = 0.2;
            // Seeded: the failures this test is about happen on every run.
            s.providers.sms.mock_seed = Some(9);
            s.providers.sms.mock_retry_after = Duration::from_millis(5);
            s.retry.base_delay = Duration::from_millis(5);
            s.retry.max_delay = Duration::from_millis(20);
            s.retry.max_attempts = 40;
            // Runs of failures open the circuit; a short cooldown keeps the test short.
            s.providers.sms.breaker_cooldown = Duration::from_millis(100);
        })
        .await;
        let sends = (0..100).map(|i| {
            let body = common::sms_from_many(i, "flaky");
            let app = &app;
            async move { app.post_json("/api/messages/sms", &body).await }
        });
        let answers = futures_util::future::join_all(sends).await;
        let keys: Vec<String> = answers
            .iter()
            .map(|(status, answer)| {
                assert_eq!(*status, StatusCode::ACCEPTED);
                answer["idempotency_key"].as_str().unwrap().to_string()
            })
            .collect();
        app.drained().await;

        assert_eq!(app.sent_count().await, 100, "{db:?}");
        for key in &keys {
            assert_eq!(
                app.sms.successful_calls(key),
                1,
                "{db:?}: {key} delivered exactly once"
            );
        }
        assert!(dead_letters(&app).await.is_empty());
        let (_, text) = app.get("/metrics").await;
        assert!(
            metric(text.as_str().unwrap(), "messaging_retries_total") > 0.0,
            "failures happened"
        );
    }
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    common::find_sample(text, name, "").unwrap_or(0.0)
}

/// An SMS provider that panics at its first call and works from then on.
struct PanicsOnce {
    panicked: AtomicBool,
    inner: messaging_server::providers::MockProvider,
}

impl messaging_server::providers::Provider for PanicsOnce {
    fn name(&self) -> &'static str {
        "sms"
    }

    fn send(
        &self,
        message: messaging_server::providers::OutboundMessage,
    ) -> futures_util::future::LocalBoxFuture<
        'static,
        Result<messaging_server::providers::Receipt, messaging_server::providers::ProviderError>,
    > {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("injected provider panic");
        }
        self.inner.send(message)
    }
}

/// One batch holds an unreadable event (failed, and dead-lettered, by the worker) and an
/// SMS whose provider call then panics. Each is settled once, alone: the unreadable event
/// by the worker, the SMS by its sender (a panicking call is that message's own fault:
/// dead-lettered, not retried into the same panic, and sent once replayed).
#[actix_web::test]
async fn a_failure_reported_just_before_the_worker_panics_is_settled_once() {
    use messaging_server::providers::{MockProvider, Providers};
    use messaging_server::store;
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let settings = common::test_settings(&database.url);
        // Both wait in the queue before the worker starts, so they arrive in one batch.
        let conn = store::connect(&settings.database).await.unwrap();
        store::migrate(&conn).await.unwrap();
        let event = |body: &str| common::sms_event(settings.api.default_customer_id, body);
        let mut unreadable = event("from the future");
        unreadable.schema_version = 2;
        let unsaved =
            store::pending::spill(&conn, vec![unreadable, event("sent after the panic")]).await;
        assert!(unsaved.events.is_empty(), "{:?}", unsaved.error);
        conn.close().await.unwrap();

        let providers = Providers {
            sms: Arc::new(PanicsOnce {
                panicked: AtomicBool::new(false),
                inner: MockProvider::new("sms", &settings.providers.sms),
            }),
            email: Arc::new(MockProvider::new("email", &settings.providers.email)),
        };
        let hooks = Hooks {
            providers: Some(providers),
            ..Hooks::default()
        };
        let app = spawn_on(database, |s| s.worker.concurrency = 1, hooks).await;
        app.drained().await;

        let letters = dead_letters(&app).await;
        assert_eq!(
            letters.len(),
            2,
            "{db:?}: one dead letter each: {letters:?}"
        );
        for letter in &letters {
            assert_eq!(letter["attempts"], 1, "{db:?}: never retried");
        }
        let (_, text) = app.get("/metrics").await;
        assert_eq!(
            metric(text.as_str().unwrap(), "messaging_retries_total"),
            0.0,
            "{db:?}"
        );
        let panicked = letters
            .iter()
            .find(|l| l["last_error"].as_str().unwrap().contains("panicked"))
            .expect("the SMS's dead letter");
        let id = panicked["id"].as_i64().unwrap();
        let (status, _) = app.post_empty(&format!("/api/dlq/{id}/replay")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{db:?}");
        app.drained().await;
        assert_eq!(app.sent_count().await, 1, "{db:?}");
    }
}

/// One event that makes the worker panic, in a batch of 100: the batch is split until it
/// is alone, so the other 99 are stored on their first attempt and only it is retried
/// (and dead-lettered when out of attempts).
#[actix_web::test]
async fn a_panicking_event_fails_alone_and_its_batch_mates_are_stored_at_once() {
    for db in databases() {
        let hooks = Hooks {
            fault: Some(Arc::new(|site, batch| {
                if site == Site::Persist && batch.iter().any(|event| event.body == "poison") {
                    panic!("injected fault: a poison event");
                }
                None
            })),
            ..Hooks::default()
        };
        let app = spawn_app_with_hooks(
            db,
            |s| {
                s.worker.concurrency = 1;
                s.retry.max_attempts = 2;
            },
            hooks,
        )
        .await;
        let customer = app.state.settings.api.default_customer_id;
        let event = |body: &str| common::sms_event(customer, body);
        let mut events: Vec<_> = (0..99).map(|i| event(&format!("fine {i}"))).collect();
        events.insert(50, event("poison"));
        let poison = events[50].idempotency_key.as_str().to_string();
        app.enqueue(events).await;
        app.drained().await;
        assert_eq!(app.sent_count().await, 99, "{db:?}");
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM event_failures").await,
            1,
            "{db:?}: no failed attempt but the poison's"
        );
        let letters = dead_letters(&app).await;
        assert_eq!(letters.len(), 1, "{db:?}");
        assert_eq!(letters[0]["idempotency_key"], poison);
        assert_eq!(
            letters[0]["attempts"], 2,
            "{db:?}: retried alone, then parked"
        );
    }
}
