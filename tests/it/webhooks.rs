//! Webhooks to customers (SPEC §15), against a receiver that checks every delivery with the
//! Standard Webhooks reference library (tests/peers/webhook_receiver.py), on both databases and
//! both queue backends, in-process and as a real process killed with SIGKILL.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use common::receiver::{events_by_message, register, webhook_settings, Receiver};
use common::{databases, eventually, sms, spawn_app_with, spawn_app_with_hooks, Db, TestApp};
use messaging_server::actors::faults::Site;
use messaging_server::config::QueueBackendKind;
use messaging_server::store::keys::{self, Scope};
use serde_json::{json, Value};

async fn backends() -> Vec<(Db, Option<common::nats::NatsServer>)> {
    let mut all: Vec<(Db, Option<common::nats::NatsServer>)> =
        databases().into_iter().map(|db| (db, None)).collect();
    all.push((Db::Sqlite, Some(common::nats::NatsServer::start().await)));
    all
}

#[actix_web::test]
async fn messages_in_and_out_reach_a_verifying_receiver_once_each() {
    for (db, nats) in backends().await {
        let Some(receiver) = Receiver::start().await else {
            return;
        };
        let app = spawn_app_with(db, |s| {
            webhook_settings(s);
            if let Some(nats) = &nats {
                s.queue.backend = QueueBackendKind::Nats;
                s.queue.nats.url = nats.url();
            }
        })
        .await;
        let endpoint = register(&app, &receiver.url()).await;
        let secret = endpoint["secret"].as_str().unwrap();
        assert!(secret.starts_with("whsec_"), "{endpoint}");
        receiver.set("secrets", secret);
        let id = endpoint["id"].as_str().unwrap().to_string();
        let (status, shown) = app.get(&format!("/api/webhook-endpoints/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            shown.get("secret").is_none(),
            "the secret is shown once: {shown}"
        );

        let inbound = json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
                             "messaging_provider_id": "in-1", "body": "hello"});
        let (status, received) = app.post_json("/api/webhooks/sms", &inbound).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let sent = app.send_sms("hi back").await;
        let key = |v: &Value| v["idempotency_key"].as_str().unwrap().to_string();
        let wanted = [
            ("message.received".to_string(), key(&received)),
            ("message.sent".to_string(), key(&sent)),
        ];
        eventually(Duration::from_secs(30), "both events delivered", || {
            let seen = events_by_message(&receiver);
            let all = wanted.iter().all(|w| seen.contains_key(w));
            async move { all }
        })
        .await;
        // Nothing else is due: the queue and the outbox are empty once the pending gauge
        // is 0; then each event arrived exactly once.
        eventually(Duration::from_secs(30), "no delivery pending", || async {
            let (_, text) = app.get("/metrics").await;
            text.as_str()
                .unwrap()
                .contains("messaging_webhook_pending 0")
        })
        .await;
        let seen = events_by_message(&receiver);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
        assert_eq!(
            receiver.requests().len(),
            2,
            "no unverified or repeated call"
        );
        let taken = receiver.taken();
        for r in &taken {
            let event = &r["event"];
            assert!(r["id"].as_str().unwrap().starts_with("msg_"));
            assert!(event["timestamp"].as_str().is_some());
            let status = event["data"]["status"].as_str().unwrap();
            match event["type"].as_str().unwrap() {
                "message.received" => assert_eq!(status, "received"),
                _ => assert_eq!(status, "sent"),
            }
        }

        // A delivery with its body changed does not verify.
        let first = &taken[0];
        let tampered = first["body"].as_str().unwrap().replace("hello", "hellO");
        let tampered = if tampered == first["body"] {
            first["body"].as_str().unwrap().replacen('{', "{ ", 1)
        } else {
            tampered
        };
        let answer = app
            .client
            .post(receiver.url())
            .insert_header(("webhook-id", first["id"].as_str().unwrap()))
            .insert_header(("webhook-timestamp", first["timestamp"].as_str().unwrap()))
            .insert_header(("webhook-signature", first["signature"].as_str().unwrap()))
            .send_body(tampered)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

        // The attempts, as the customer sees them.
        let (status, attempts) = app
            .get(&format!("/api/webhook-endpoints/{id}/attempts"))
            .await;
        assert_eq!(status, StatusCode::OK, "{attempts}");
        // One taken attempt per event; a connection the receiver dropped before answering
        // (seen once under load) is a failed attempt with its error, then retried.
        let items = attempts["items"].as_array().unwrap();
        let (taken, failed): (Vec<&Value>, Vec<&Value>) =
            items.iter().partition(|a| a["status_code"] == 204);
        assert_eq!(taken.len(), 2, "{attempts}");
        for a in taken {
            assert!(a["latency_ms"].as_i64().unwrap() >= 0);
            assert_eq!(a["response"], "ok");
            assert!(a["error"].is_null());
        }
        for a in failed {
            assert!(a["status_code"].is_null(), "{a}");
            assert!(a["error"].as_str().is_some_and(|e| !e.is_empty()), "{a}");
        }

        // Rotation: the old secret keeps verifying (both sign), then the new one alone.
        let (status, rotated) = app
            .post_json(
                &format!("/api/webhook-endpoints/{id}/rotate-secret"),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let new_secret = rotated["secret"].as_str().unwrap().to_string();
        assert_ne!(new_secret, secret);
        for (n, secrets) in [(1, secret.to_string()), (2, new_secret.clone())] {
            receiver.set("secrets", &secrets);
            let (_, more) = app
                .post_json(
                    "/api/messages/sms",
                    &sms(
                        "+12016661234",
                        "+18045551234",
                        &format!("after rotation {n}"),
                    ),
                )
                .await;
            let wanted = ("message.sent".to_string(), key(&more));
            eventually(Duration::from_secs(30), "verified after rotation", || {
                let seen = events_by_message(&receiver);
                let ok = seen.contains_key(&wanted);
                async move { ok }
            })
            .await;
        }
        assert_eq!(
            receiver.reports(|r| r["verified"] == false).len(),
            1,
            "every delivery verified (the one refused is the tampered copy): {:?}",
            receiver.requests()
        );

        // Another customer neither sees nor changes it.
        let customer = keys::create_customer(app.db(), "other").await.unwrap();
        let other = common::create_key(app.db(), customer, &[Scope::Send]).await;
        let get = app
            .client
            .get(app.url(&format!("/api/webhook-endpoints/{id}")))
            .bearer_auth(&other);
        assert_eq!(app.send(get, None).await.0, StatusCode::NOT_FOUND);
        let list = app
            .client
            .get(app.url("/api/webhook-endpoints"))
            .bearer_auth(&other);
        assert_eq!(app.send(list, None).await.1["items"], json!([]));

        let text = app.metrics_text().await;
        assert!(
            text.contains("messaging_webhook_deliveries_total{outcome=\"delivered\""),
            "{text}"
        );
    }
}

/// An endpoint's attempts that got no answer (their `error` says why), newest first.
async fn failed_attempts(app: &TestApp, endpoint: &Value) -> Vec<Value> {
    let id = endpoint["id"].as_str().unwrap();
    let (_, attempts) = app
        .get(&format!(
            "/api/webhook-endpoints/{id}/attempts?pageSize=200"
        ))
        .await;
    common::items(&attempts)
        .filter(|a| a["status_code"].is_null())
        .cloned()
        .collect()
}

/// Sends `n` SMS; returns their idempotency keys.
async fn send_many(app: &TestApp, n: usize, text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let accepted = app.send_sms(&format!("{text} {i}")).await;
        keys.push(accepted["idempotency_key"].as_str().unwrap().to_string());
    }
    keys
}

/// Whether `receiver` took a `message.sent` for each of `keys`.
fn has_sent(receiver: &Receiver, keys: &[String]) -> bool {
    let seen = events_by_message(receiver);
    keys.iter()
        .all(|k| seen.contains_key(&("message.sent".to_string(), k.clone())))
}

/// Waits up to `seconds` until [`has_sent`]; `what` names the wait in the failure.
async fn until_sent(receiver: &Receiver, keys: &[String], seconds: u64, what: &str) {
    eventually(Duration::from_secs(seconds), what, || {
        let done = has_sent(receiver, keys);
        async move { done }
    })
    .await;
}

#[actix_web::test]
async fn a_hanging_endpoint_delays_no_other_and_a_receiver_down_then_up_misses_nothing() {
    for db in databases() {
        let (Some(hanging), Some(mut healthy)) = (Receiver::start().await, Receiver::start().await)
        else {
            return;
        };
        let app = spawn_app_with(db, |s| {
            webhook_settings(s);
            s.webhooks.concurrency_per_endpoint = 2;
        })
        .await;
        for receiver in [&hanging, &healthy] {
            receiver.subscribe(&app).await;
        }
        // Answers long after the 2 s timeout: each of its calls holds a slot until then.
        hanging.set("delay", "30");

        let first = send_many(&app, 20, "while one endpoint hangs").await;
        until_sent(&healthy, &first, 20, "the healthy endpoint has all 20").await;
        // It was being called all along (each call answered only after the timeout).
        assert!(!hanging.reports(|r| r["arrived"].is_string()).is_empty());

        // The healthy receiver goes down; what happens meanwhile reaches it once it is back.
        healthy.stop();
        let second = send_many(&app, 10, "while the receiver is down").await;
        eventually(
            Duration::from_secs(20),
            "attempts failed while it is down",
            || async {
                let (_, page) = app.get("/api/webhook-endpoints?pageSize=10").await;
                common::items(&page)
                    .any(|e| e["url"] == healthy.url() && e["failing_since"].is_string())
            },
        )
        .await;
        let healthy = healthy.restart().await;
        until_sent(&healthy, &second, 30, "all 10 delivered after the outage").await;
        let (_, page) = app.get("/api/webhook-endpoints?pageSize=10").await;
        let endpoint = common::items(&page)
            .find(|e| e["url"] == healthy.url())
            .unwrap()
            .clone();
        eventually(Duration::from_secs(10), "the failure streak ends", || {
            let app = &app;
            let id = endpoint["id"].as_str().unwrap().to_string();
            async move {
                let (_, e) = app.get(&format!("/api/webhook-endpoints/{id}")).await;
                e["failing_since"].is_null()
            }
        })
        .await;
        let failed = failed_attempts(&app, &endpoint).await;
        assert!(!failed.is_empty(), "the outage shows as failed attempts");
        assert!(failed.iter().all(|a| a["error"].is_string()), "{failed:?}");
    }
}

/// A webhook attempt that panics (a bug) costs that attempt only: it is recorded as failed
/// with the panic, retried on the schedule and delivered, and counted as the `webhook`
/// actor's; and its endpoint's one slot is free again, so later deliveries still arrive.
#[actix_web::test]
async fn a_panicking_webhook_attempt_is_retried_and_frees_its_slot() {
    let Some(receiver) = Receiver::start().await else {
        return;
    };
    let (hooks, panicked) = common::panics_once_at(Site::WebhookDelivery);
    let app = spawn_app_with_hooks(
        Db::Sqlite,
        |s| {
            webhook_settings(s);
            s.webhooks.concurrency_per_endpoint = 1;
        },
        hooks,
    )
    .await;
    let endpoint = receiver.subscribe(&app).await;
    let first = send_many(&app, 1, "before the panic").await;
    until_sent(
        &receiver,
        &first,
        30,
        "delivered after its attempt panicked",
    )
    .await;
    assert!(panicked.load(Ordering::SeqCst), "the fault was injected");
    let later = send_many(&app, 5, "after the panic").await;
    until_sent(
        &receiver,
        &later,
        30,
        "later deliveries through the one slot",
    )
    .await;

    let failed = failed_attempts(&app, &endpoint).await;
    assert!(
        failed.iter().any(|a| a["error"]
            .as_str()
            .is_some_and(|e| e.contains("injected fault at WebhookDelivery"))),
        "the panicked attempt is recorded with its reason: {failed:?}"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        common::sample(&text, "messaging_actor_restarts_total", "actor=\"webhook\""),
        1.0,
        "{text}"
    );
}

/// A call to the server process with its key; the status and JSON answer.
async fn call(
    server: &common::server::ServerProcess,
    request: awc::ClientRequest,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let request = request.bearer_auth(&server.key);
    let response = match body {
        Some(body) => request.send_json(body).await,
        None => request.send().await,
    };
    common::answer_of(response.expect("the server answers")).await
}

#[actix_web::test]
async fn a_server_killed_mid_delivery_delivers_everything_after_its_restart() {
    for db in databases() {
        let Some(receiver) = Receiver::start().await else {
            return;
        };
        let database = common::TestDatabase::create(db).await;
        let dir = receiver.dir.join("server");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            r#"
[webhooks]
allow_private = true
timeout = "2s"
lease = "3s"
poll_interval = "100ms"
retry_schedule = ["100ms", "200ms", "400ms", "800ms", "1s", "1s", "1s", "1s"]
"#,
        )
        .unwrap();
        let env = [
            ("MESSAGING_CONFIG", config.display().to_string()),
            ("DATABASE_URL", database.url.clone()),
        ];
        let server = common::server::ServerProcess::start(&dir, &env);
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let (status, endpoint) = call(
            &server,
            client.post(format!("{}/api/webhook-endpoints", server.url)),
            Some(&json!({"url": receiver.url()})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}");
        receiver.set("secrets", endpoint["secret"].as_str().unwrap());
        // Slow enough that the kill finds deliveries in flight.
        receiver.set("delay", "0.3");

        let mut keys = Vec::new();
        for i in 0..20 {
            let (status, accepted) = call(
                &server,
                client.post(format!("{}/api/messages/sms", server.url)),
                Some(&sms(
                    "+12016661234",
                    "+18045551234",
                    &format!("before the kill {i}"),
                )),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED);
            keys.push(accepted["idempotency_key"].as_str().unwrap().to_string());
        }
        // Every message sent (so every event is in the outbox), some delivered, not all.
        for key in &keys {
            eventually(Duration::from_secs(30), "the message is sent", || {
                let request = client.get(format!("{}/api/messages/{key}", server.url));
                let server = &server;
                async move { call(server, request, None).await.1["status"] == "sent" }
            })
            .await;
        }
        eventually(Duration::from_secs(30), "deliveries under way", || {
            let arrived = receiver.reports(|r| r["arrived"].is_string()).len();
            async move { arrived >= 2 }
        })
        .await;
        let key = server.key.clone();
        drop(server); // SIGKILL
        assert!(!has_sent(&receiver, &keys), "the kill came before the end");

        let server = common::server::ServerProcess::start_with_key(&dir, &env, &key);
        until_sent(
            &receiver,
            &keys,
            60,
            "every event delivered after the restart",
        )
        .await;
        // At least once: a repeat carries the webhook-id of the first, and no id is
        // used for two events.
        let mut ids: HashMap<String, (String, String)> = HashMap::new();
        let mut by_event: HashMap<(String, String), std::collections::BTreeSet<String>> =
            HashMap::new();
        for r in receiver.taken() {
            let event = (
                r["event"]["type"].as_str().unwrap().to_string(),
                r["event"]["data"]["idempotency_key"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            let id = r["id"].as_str().unwrap().to_string();
            if let Some(earlier) = ids.insert(id.clone(), event.clone()) {
                assert_eq!(earlier, event, "{id} names one event");
            }
            by_event.entry(event).or_default().insert(id);
        }
        assert!(by_event.values().all(|ids| ids.len() == 1), "{by_event:?}");
        drop(server);
    }
}

#[actix_web::test]
async fn an_endpoint_failing_for_disable_after_is_disabled_and_its_failures_can_be_replayed() {
    use common::stub::{Answer, StubProvider};
    for db in databases() {
        let Some(receiver) = Receiver::start().await else {
            return;
        };
        // The provider refuses every message for good: each is dead-lettered.
        let stub = StubProvider::start(vec![], Answer::Status(400, None));
        let database = common::TestDatabase::create(db).await;
        let mut settings = common::test_settings(&database.url);
        webhook_settings(&mut settings);
        settings.webhooks.retry_schedule = vec![Duration::from_millis(300); 8];
        settings.webhooks.disable_after = Duration::from_secs(1);
        common::stub::use_stub(&mut settings, &stub);
        let hooks = common::real_sms(&settings);
        let app = common::spawn_on(database, move |s| *s = settings, hooks).await;
        let endpoint = receiver.subscribe(&app).await;
        let id = endpoint["id"].as_str().unwrap().to_string();
        receiver.set("answer", "500");

        let keys = send_many(&app, 3, "refused by the provider").await;
        eventually(
            Duration::from_secs(30),
            "the endpoint is disabled",
            || async {
                let (_, e) = app.get(&format!("/api/webhook-endpoints/{id}")).await;
                e["enabled"] == false
            },
        )
        .await;
        let (_, disabled) = app.get(&format!("/api/webhook-endpoints/{id}")).await;
        assert!(
            disabled["disabled_reason"]
                .as_str()
                .unwrap()
                .contains("failed for 1s"),
            "{disabled}"
        );
        let text = app.metrics_text().await;
        assert!(
            text.contains("messaging_webhook_endpoints_disabled_total 1"),
            "{text}"
        );
        eventually(
            Duration::from_secs(30),
            "nothing pending for a disabled endpoint",
            || async {
                let (_, text) = app.get("/metrics").await;
                text.as_str()
                    .unwrap()
                    .contains("messaging_webhook_pending 0")
            },
        )
        .await;
        assert!(receiver.taken().is_empty());

        // Its customer fixes the receiver, enables the endpoint and replays.
        receiver.set("answer", "204");
        let (status, enabled) = app
            .request(
                app.client
                    .patch(app.url(&format!("/api/webhook-endpoints/{id}"))),
                Some(&json!({"enabled": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{enabled}");
        assert!(enabled["disabled_reason"].is_null() && enabled["failing_since"].is_null());
        let (status, replayed) = app
            .post_json(&format!("/api/webhook-endpoints/{id}/replay"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(replayed["replayed"], 3, "{replayed}");
        eventually(
            Duration::from_secs(30),
            "the replayed events delivered",
            || {
                let seen = events_by_message(&receiver);
                let done = keys
                    .iter()
                    .all(|k| seen.contains_key(&("message.dead_lettered".to_string(), k.clone())));
                async move { done }
            },
        )
        .await;
        for r in receiver.taken() {
            assert_eq!(r["event"]["data"]["status"], "dead_lettered", "{r}");
        }
    }
}
