//! The delivery stage (SPEC §13): a provider outage holds up neither ingest nor the other
//! channel, and when the provider returns every message is sent once.

use crate::common;

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use common::nats::{nats_databases, NatsServer};
use common::stub::{Answer, StubProvider};
use common::{databases, eventually, sms, spawn_on, TestApp, TestDatabase};
use futures_util::StreamExt;
use messaging_server::config::{QueueBackendKind, Settings};
use messaging_server::startup::Hooks;
use serde_json::{json, Value};

const OUTBOUND_SMS: usize = 5_000;
const INBOUND: usize = 500;
const EMAILS: usize = 500;

/// Posts every body to `path` (64 at a time); returns the idempotency keys, each 202.
async fn post_all(app: &TestApp, path: &str, bodies: Vec<Value>) -> Vec<String> {
    let posts = futures_util::stream::iter(bodies.into_iter().map(|body| async move {
        let (status, answer) = app.post_json(path, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
        answer["idempotency_key"].as_str().unwrap().to_string()
    }));
    posts.buffer_unordered(64).collect().await
}

/// [`post_all`] of `n` SMS from +12016661234 to +18045551234, bodies "`what` 0", "`what` 1"…
async fn post_sms_many(app: &TestApp, n: usize, what: &str) -> Vec<String> {
    let bodies = (0..n)
        .map(|i| sms("+12016661234", "+18045551234", &format!("{what} {i}")))
        .collect();
    post_all(app, "/api/messages/sms", bodies).await
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.scalar(sql).await
}

async fn outage(app: TestApp, stub: StubProvider, label: &str) {
    let sms_bodies = (0..OUTBOUND_SMS)
        .map(|i| common::sms_from_many(i, "down"))
        .collect();
    let sms_keys = post_all(&app, "/api/messages/sms", sms_bodies).await;
    // The provider is down meanwhile: every SMS is stored (ingest is done with them), and
    // the circuit opens.
    eventually(Duration::from_secs(60), "every SMS stored", || async {
        count(&app, "SELECT COUNT(*) FROM messages").await == OUTBOUND_SMS as i64
    })
    .await;
    eventually(Duration::from_secs(30), "the SMS circuit open", || async {
        let (_, text) = app.get("/metrics").await;
        metric(
            text.as_str().unwrap_or_default(),
            "messaging_provider_circuit_state{provider=\"sms\"}",
        ) == Some(2.0)
    })
    .await;

    let started = Instant::now();
    let inbound = (0..INBOUND)
        .map(|i| {
            json!({"from": format!("+1804555{i:04}"), "to": "+12016661234", "type": "sms",
                   "messaging_provider_id": format!("in-{i}"), "body": format!("reply {i}"),
                   "timestamp": "2024-11-01T14:00:00Z"})
        })
        .collect();
    let emails = (0..EMAILS)
        .map(|i| {
            json!({"from": "user@usehatchapp.com", "to": format!("contact{i}@gmail.com"),
                   "subject": "hi", "body": format!("mail {i}"), "timestamp": "2024-11-01T14:00:00Z"})
        })
        .collect();
    let (_, _) = futures_util::join!(
        post_all(&app, "/api/webhooks/sms", inbound),
        post_all(&app, "/api/messages/email", emails)
    );
    // The SMS provider stays down until this passes, so it proves that neither waits for
    // it; the deadline is only there to fail instead of hanging (`took` is printed).
    eventually(
        Duration::from_secs(60),
        "inbound stored and email sent during the SMS outage",
        || async {
            count(
                &app,
                "SELECT COUNT(*) FROM messages WHERE direction = 'inbound'",
            )
            .await
                == INBOUND as i64
                && count(
                    &app,
                    "SELECT COUNT(*) FROM messages WHERE channel = 'email' AND status = 'sent'",
                )
                .await
                    == EMAILS as i64
        },
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent' AND channel = 'sms'"
        )
        .await,
        0,
        "{label}: nothing sent while the provider is down"
    );
    let calls_while_down = stub.calls().len();
    assert!(
        calls_while_down < OUTBOUND_SMS,
        "{label}: the open circuit stops the calls ({calls_while_down})"
    );

    stub.set_fallback(Answer::Accept);
    eventually(Duration::from_secs(120), "every SMS sent", || async {
        count(
            &app,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent' AND channel = 'sms'",
        )
        .await
            == OUTBOUND_SMS as i64
    })
    .await;
    for key in &sms_keys {
        assert_eq!(stub.accepted(key), 1, "{label}: {key} sent once");
    }
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM dead_letters").await,
        0,
        "{label}: no attempt spent to the end"
    );
    eprintln!(
        "{label}: inbound and email done {took:?} into the outage; {calls_while_down} calls while down"
    );
}

fn configure(settings: &mut Settings, stub: &StubProvider) {
    common::stub::use_stub(settings, stub);
    settings.providers.sms.breaker_cooldown = Duration::from_millis(500);
    settings.retry.max_attempts = 100;
}

fn hooks(settings: &Settings) -> Hooks {
    common::real_sms(settings)
}

#[actix_web::test]
async fn an_sms_outage_holds_up_neither_inbound_nor_email_memory_queue() {
    for db in databases() {
        let stub = StubProvider::start(vec![], Answer::Status(503, None));
        let database = TestDatabase::create(db).await;
        let mut settings = common::test_settings(&database.url);
        configure(&mut settings, &stub);
        let hooks = hooks(&settings);
        let app = spawn_on(database, move |s| *s = settings, hooks).await;
        outage(app, stub, &format!("{db:?}, memory")).await;
    }
}

/// On NATS, with a small ack window: delivery retries are no longer redeliveries held in
/// it, so the window never fills with SMS waiting for their provider.
#[actix_web::test]
async fn an_sms_outage_holds_up_neither_inbound_nor_email_nats() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        let stub = StubProvider::start(vec![], Answer::Status(503, None));
        let database = TestDatabase::create(db).await;
        let mut settings = common::test_settings(&database.url);
        configure(&mut settings, &stub);
        settings.queue.backend = QueueBackendKind::Nats;
        settings.queue.nats.url = nats.url();
        settings.queue.nats.max_ack_pending = 100;
        let hooks = hooks(&settings);
        let app = spawn_on(database, move |s| *s = settings, hooks).await;
        outage(app, stub, &format!("{db:?}, nats")).await;
    }
}

/// Requests repeating one `Idempotency-Key` while its first request is still waiting to be
/// enqueued (the queue is full) get 409 `idempotency-key-in-progress`, never a 202: a 202
/// would point at an event that the first request then fails to create (it gets 503).
#[actix_web::test]
async fn no_202_for_a_key_whose_first_request_is_not_enqueued_yet() {
    let database = TestDatabase::create(common::Db::Sqlite).await;
    let app = spawn_on(
        database,
        |s| {
            s.worker.enabled = false;
            s.queue.capacity = 1;
            s.queue.enqueue_timeout = Duration::from_millis(500);
        },
        Hooks::default(),
    )
    .await;
    app.send_sms("fills the queue").await;
    let body = sms("+12016661234", "+18045551234", "same key");
    let tries = (0..10).map(|_| {
        let request = app
            .client
            .post(app.url("/api/messages/sms"))
            .insert_header(("Idempotency-Key", "order-4711"));
        app.request(request, Some(&body))
    });
    let answers = futures_util::future::join_all(tries).await;
    let codes: Vec<StatusCode> = answers.iter().map(|(status, _)| *status).collect();
    assert!(
        !codes.contains(&StatusCode::ACCEPTED),
        "no 202 without an event: {answers:?}"
    );
    let in_progress: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CONFLICT)
        .collect();
    assert!(!in_progress.is_empty(), "{answers:?}");
    for (_, problem) in in_progress {
        assert_eq!(
            problem["type"], "urn:messaging-server:problem:idempotency-key-in-progress",
            "{problem}"
        );
    }
    assert!(
        codes
            .iter()
            .all(|c| *c == StatusCode::CONFLICT || *c == StatusCode::SERVICE_UNAVAILABLE),
        "{codes:?}"
    );
}

/// Outbound messages stored in batches far larger than the provider's `concurrency` are
/// handed to the sender with their insert: what it has no room for waits for the calls in
/// flight or, beyond one more round, is given back and claimed. Every message is sent
/// exactly once, on its first attempt, and none waits for its lease to run out.
#[actix_web::test]
async fn a_sender_with_little_room_sends_every_stored_message_once() {
    for db in databases() {
        let stub = StubProvider::start(Vec::new(), Answer::Slow(Duration::from_millis(20)));
        let database = TestDatabase::create(db).await;
        let mut settings = common::test_settings(&database.url);
        configure(&mut settings, &stub);
        settings.providers.sms.concurrency = 2;
        // A message given back waits for no lease: this one would outlast the test.
        settings.delivery.lease = Duration::from_secs(3600);
        let hooks = hooks(&settings);
        let app = spawn_on(database, move |s| *s = settings, hooks).await;
        let keys = post_sms_many(&app, 200, "little room").await;
        eventually(Duration::from_secs(60), "every message sent", || async {
            count(&app, "SELECT COUNT(*) FROM messages WHERE status = 'sent'").await
                == keys.len() as i64
        })
        .await;
        for key in &keys {
            assert_eq!(stub.accepted(key), 1, "{db:?}: {key} sent once");
        }
        let attempts = count(
            &app,
            "SELECT CAST(MAX(delivery_attempts) AS BIGINT) FROM messages",
        )
        .await;
        assert_eq!(
            attempts, 1,
            "{db:?}: a message given back does not spend an attempt"
        );
    }
}

/// The status resource's `provider` for each key, once every one is sent.
async fn sent_by(app: &TestApp, keys: &[String]) -> Vec<String> {
    eventually(Duration::from_secs(30), "every message sent", || async {
        let mut all = true;
        for key in keys {
            let (_, status) = app.get(&format!("/api/messages/{key}")).await;
            all &= status["status"] == "sent";
        }
        all
    })
    .await;
    let mut providers = Vec::new();
    for key in keys {
        let (_, status) = app.get(&format!("/api/messages/{key}")).await;
        providers.push(status["provider"].as_str().unwrap_or_default().to_string());
    }
    providers
}

/// While the SMS provider's circuit is open, its fallback (`fallback_url`) sends, once per
/// message, and the status resource says so; once the provider answers again, it sends.
#[actix_web::test]
async fn while_the_providers_circuit_is_open_its_fallback_sends() {
    for db in databases() {
        let primary = StubProvider::start(vec![], Answer::Status(503, None));
        let fallback = StubProvider::start(vec![], Answer::Accept);
        let database = TestDatabase::create(db).await;
        let mut settings = common::test_settings(&database.url);
        configure(&mut settings, &primary);
        settings.providers.sms.breaker_failures = 3;
        settings.providers.sms.fallback_url = fallback.url.clone();
        let hooks = hooks(&settings);
        let app = spawn_on(database, move |s| *s = settings, hooks).await;

        let keys = post_sms_many(&app, 20, "fallback").await;
        let providers = sent_by(&app, &keys).await;
        assert!(
            providers.iter().all(|p| p == "fallback"),
            "{db:?}: the provider never accepted one, so the fallback sent them all: {providers:?}"
        );
        let mut called: Vec<String> = fallback
            .calls()
            .into_iter()
            .map(|c| c.idempotency_key)
            .collect();
        called.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(called, expected, "{db:?}: one fallback call per message");
        let (_, text) = app.get("/metrics").await;
        let text = text.as_str().unwrap_or_default().to_string();
        assert_eq!(
            metric(
                &text,
                "messaging_provider_requests_total{outcome=\"sent\",provider=\"sms_fallback\"}"
            ),
            Some(20.0),
            "{db:?}"
        );

        // The provider is back: after its cooldown a trial call succeeds and it sends again.
        primary.set_fallback(Answer::Accept);
        eventually(
            Duration::from_secs(30),
            "the provider sends again",
            || async {
                let body = sms(
                    "+12016661234",
                    "+18045551234",
                    &uuid::Uuid::new_v4().to_string(),
                );
                let key = post_all(&app, "/api/messages/sms", vec![body]).await;
                sent_by(&app, &key).await == ["http"]
            },
        )
        .await;
    }
}
