//! The status resource (SPEC §12): every 202 points at `/api/messages/<key>` (`Location`
//! and `status_url`), and following it shows the message's way to its final status, on
//! both databases and both queue backends, scoped to the caller's customer. Also the other
//! operator tools over HTTP: `/api/stats` and the console's files (the console itself is
//! tested in a browser by tests/it/ui.rs).

use crate::common;

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use common::nats::{nats_databases, NatsServer};
use common::stub::{Answer, StubProvider};
use common::{
    create_key, databases, eventually, sms, spawn_on, test_settings, Db, TestApp, TestDatabase,
};
use messaging_server::config::{QueueBackendKind, Settings};
use messaging_server::startup::{Application, Hooks};
use messaging_server::store::keys::{self, Scope};
use serde_json::{json, Value};

/// What a 202 said: its `Location` and body.
struct Accepted {
    location: String,
    body: Value,
}

async fn post(app: &TestApp, path: &str, body: &Value, idempotency_key: Option<&str>) -> Accepted {
    let mut request = app.client.post(app.url(path)).bearer_auth(&app.admin_key);
    if let Some(key) = idempotency_key {
        request = request.insert_header(("Idempotency-Key", key));
    }
    let mut response = request
        .send_json(body)
        .await
        .expect("request reaches the server");
    let status = response.status();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
    let location = response
        .headers()
        .get(header::LOCATION)
        .expect("a 202 has a Location")
        .to_str()
        .unwrap()
        .to_string();
    let key = answer["idempotency_key"].as_str().unwrap();
    assert_eq!(location, format!("/api/messages/{key}"), "{path}");
    assert_eq!(answer["status_url"], location.as_str(), "{path}");
    Accepted {
        location,
        body: answer,
    }
}

/// GET on a status URL with `key` (the admin key when `None`).
async fn status_with(app: &TestApp, location: &str, key: Option<&str>) -> (StatusCode, Value) {
    let request = app
        .client
        .get(app.url(location))
        .bearer_auth(key.unwrap_or(&app.admin_key));
    app.send(request, None).await
}

/// Follows `location` until the message reaches `want`; returns that answer.
/// [`post`] of an SMS with `body` from +12016661234 to +18045551234.
async fn post_sms(app: &TestApp, body: &str) -> Accepted {
    let sms = sms("+12016661234", "+18045551234", body);
    post(app, "/api/messages/sms", &sms, None).await
}

/// [`post`] of an email with `body` from user@usehatchapp.com to contact@gmail.com.
async fn post_email(app: &TestApp, body: &str) -> Accepted {
    let email = email("user@usehatchapp.com", "contact@gmail.com", body);
    post(app, "/api/messages/email", &email, None).await
}

async fn until(app: &TestApp, location: &str, want: &str) -> Value {
    let mut last = Value::Null;
    let what = format!("{location} to become {want}");
    let seen = std::cell::RefCell::new(&mut last);
    eventually(Duration::from_secs(20), &what, || async {
        let (code, answer) = status_with(app, location, None).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        let done = answer["status"] == want;
        **seen.borrow_mut() = answer;
        done
    })
    .await;
    last
}

fn email(from: &str, to: &str, body: &str) -> Value {
    json!({ "from": from, "to": to, "type": "email", "body": body,
            "attachments": [], "timestamp": "2024-11-01T14:00:00Z" })
}

fn sms_webhook(provider_id: &str) -> Value {
    json!({ "from": "+18045551234", "to": "+12016661234", "type": "sms",
            "messaging_provider_id": provider_id, "body": "reply", "attachments": null,
            "timestamp": "2024-11-01T14:01:00Z" })
}

fn email_webhook(provider_id: &str) -> Value {
    json!({ "from": "contact@gmail.com", "to": "user@usehatchapp.com",
            "xillio_id": provider_id, "body": "<p>reply</p>", "attachments": [],
            "timestamp": "2024-11-01T14:01:00Z" })
}

/// Settings whose SMS provider is `stub` over HTTP, and hooks that build it.
fn with_stub(settings: &mut Settings, stub: &StubProvider) -> Hooks {
    common::stub::use_stub(settings, stub);
    common::real_providers(settings)
}

async fn spawn_with(db: Db, configure: impl FnOnce(&mut Settings) -> Hooks) -> TestApp {
    let database = TestDatabase::create(db).await;
    let mut settings = test_settings(&database.url);
    let hooks = configure(&mut settings);
    spawn_on(database, move |s| *s = settings, hooks).await
}

/// An app on `db` whose worker is off: what it accepts stays pending in the queue.
async fn spawn_api_only_on(db: Db) -> TestApp {
    spawn_with(db, |s| {
        s.worker.enabled = false;
        Hooks::default()
    })
    .await
}

/// The final fields every stored message shows.
fn assert_stored(answer: &Value, status: &str) {
    assert_eq!(answer["status"], status, "{answer}");
    assert_eq!(answer["attempts"], 1, "{answer}");
    assert_eq!(answer["last_error"], Value::Null, "{answer}");
    assert!(answer["message_id"].as_i64().is_some(), "{answer}");
    assert!(answer["conversation_id"].as_i64().is_some(), "{answer}");
    assert!(answer["provider_message_id"].as_str().is_some(), "{answer}");
    assert!(answer["updated_at"].as_str().is_some(), "{answer}");
}

#[actix_web::test]
async fn every_kind_of_202_leads_to_the_final_status() {
    for db in databases() {
        let app = common::spawn_app(db).await;
        let sent_sms = post_sms(&app, "hi").await;
        let sent_email = post_email(&app, "<p>hello</p>").await;
        let got_sms = post(&app, "/api/webhooks/sms", &sms_webhook("sms-1"), None).await;
        let got_email = post(&app, "/api/webhooks/email", &email_webhook("email-1"), None).await;
        // A repeat with the same Idempotency-Key answers the same Location.
        let body = sms("+12016661234", "+18045551234", "with a key");
        let keyed = post(&app, "/api/messages/sms", &body, Some("order-7")).await;
        let repeat = post(&app, "/api/messages/sms", &body, Some("order-7")).await;
        assert_eq!(repeat.location, keyed.location);
        assert_eq!(repeat.body["event_id"], keyed.body["event_id"]);

        for (accepted, want) in [
            (&sent_sms, "sent"),
            (&sent_email, "sent"),
            (&keyed, "sent"),
            (&got_sms, "received"),
            (&got_email, "received"),
        ] {
            let answer = until(&app, &accepted.location, want).await;
            assert_stored(&answer, want);
            assert_eq!(answer["idempotency_key"], accepted.body["idempotency_key"]);
        }
        // The ids are the stored message's, as the read API shows it.
        let answer = until(&app, &sent_sms.location, "sent").await;
        let conversation = answer["conversation_id"].as_i64().unwrap();
        let (_, messages) = app
            .get(&format!("/api/conversations/{conversation}/messages"))
            .await;
        let stored = common::items(&messages)
            .find(|m| m["id"] == answer["message_id"])
            .expect("the message is in its conversation")
            .clone();
        assert_eq!(stored["idempotency_key"], answer["idempotency_key"]);
        assert_eq!(stored["provider_message_id"], answer["provider_message_id"]);
        let inbound = until(&app, &got_sms.location, "received").await;
        assert_eq!(inbound["provider_message_id"], "sms-1", "{db:?}");
    }
}

#[actix_web::test]
async fn a_provider_4xx_is_dead_lettered_and_its_replay_is_sent() {
    for db in databases() {
        let stub = StubProvider::start(vec![Answer::Status(400, None)], Answer::Accept);
        let app = spawn_with(db, |s| with_stub(s, &stub)).await;
        let accepted = post_sms(&app, "bad").await;

        let dead = until(&app, &accepted.location, "dead_lettered").await;
        assert_eq!(
            dead["attempts"], 1,
            "{db:?}: a permanent failure is not retried: {dead}"
        );
        // The customer gets a code and a sentence; the provider's words are operators'.
        assert_eq!(dead["error_code"], "provider_rejected", "{db:?}: {dead}");
        assert_eq!(dead["last_error"], "The provider refused the message.");
        assert!(
            !dead.to_string().contains("stub says no"),
            "{db:?}: the provider's body reached the tenant: {dead}"
        );
        assert!(
            dead["message_id"].as_i64().is_some(),
            "stored before the provider call"
        );
        assert_eq!(dead["provider_message_id"], Value::Null);

        let (_, letters) = app.get("/api/dlq").await;
        let raw = letters["items"][0]["last_error"].as_str().unwrap();
        assert!(raw.contains("400") && raw.contains("stub says no"), "{raw}");
        let id = letters["items"][0]["id"].as_i64().unwrap();
        let (code, _) = app.post_empty(&format!("/api/dlq/{id}/replay")).await;
        assert_eq!(code, StatusCode::ACCEPTED);
        let sent = until(&app, &accepted.location, "sent").await;
        assert_stored(&sent, "sent");
        assert_eq!(sent["message_id"], dead["message_id"], "{db:?}");
    }
}

#[actix_web::test]
async fn an_attempt_that_failed_shows_failed_with_attempts_and_error_until_it_is_sent() {
    for db in databases() {
        let stub = StubProvider::start(Vec::new(), Answer::Status(503, None));
        let app = spawn_with(db, |s| {
            s.retry.max_attempts = 1000;
            s.retry.base_delay = Duration::from_millis(100);
            s.retry.max_delay = Duration::from_millis(100);
            with_stub(s, &stub)
        })
        .await;
        let accepted = post_sms(&app, "later").await;
        let location = accepted.location.as_str();
        eventually(Duration::from_secs(20), "two failed attempts", || async {
            let (_, answer) = status_with(&app, location, None).await;
            answer["status"] == "failed" && answer["attempts"].as_u64() >= Some(2)
        })
        .await;
        let (_, failed) = status_with(&app, location, None).await;
        assert_eq!(failed["status"], "failed", "{db:?}: {failed}");
        assert_eq!(
            failed["error_code"], "provider_unavailable",
            "{db:?}: {failed}"
        );
        assert_eq!(failed["last_error"], "The provider was unavailable.");
        assert!(failed["message_id"].as_i64().is_some());

        stub.set_fallback(Answer::Accept);
        let sent = until(&app, location, "sent").await;
        assert_eq!(sent["last_error"], Value::Null);
        assert!(sent.get("error_code").is_none(), "{sent}");
        assert!(
            sent["attempts"].as_u64().unwrap() >= 3,
            "{db:?}: the failures count: {sent}"
        );
    }
}

#[actix_web::test]
async fn an_event_waiting_in_the_queue_is_pending() {
    for db in databases() {
        let app = spawn_api_only_on(db).await;
        let accepted = post_sms(&app, "wait").await;
        let (code, answer) = status_with(&app, &accepted.location, None).await;
        assert_eq!(code, StatusCode::OK, "{db:?}: {answer}");
        assert_eq!(answer["status"], "pending");
        assert_eq!(answer["attempts"], 0);
        assert_eq!(answer["message_id"], Value::Null);
        assert_eq!(answer["conversation_id"], Value::Null);
        assert!(answer["updated_at"].as_str().is_some());
    }
}

#[actix_web::test]
async fn the_status_is_scoped_to_the_key_s_customer() {
    for db in databases() {
        // Pending first (so the queue's owner check is exercised), stored later.
        let app = spawn_api_only_on(db).await;
        let customer = app.state.settings.api.default_customer_id;
        let own_send = create_key(app.db(), customer, &[Scope::Send]).await;
        let own_webhook = create_key(app.db(), customer, &[Scope::Webhook]).await;
        let other = keys::create_customer(app.db(), "other").await.unwrap();
        let other_send = create_key(app.db(), other, &[Scope::Send, Scope::Webhook]).await;
        let other_admin = common::create_operator_key(app.db()).await;

        let accepted = post_sms(&app, "mine").await;
        let location = accepted.location.as_str();
        for (key, want) in [
            (own_send.as_str(), StatusCode::OK),
            (own_webhook.as_str(), StatusCode::OK),
            (other_admin.as_str(), StatusCode::OK),
            (other_send.as_str(), StatusCode::NOT_FOUND),
        ] {
            let (code, answer) = status_with(&app, location, Some(key)).await;
            assert_eq!(code, want, "{db:?} pending: {answer}");
        }
        let (code, _) = app.send(app.client.get(app.url(location)), None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);

        // Stored now: the database's rows are scoped the same way.
        let mut settings = (*app.state.settings).clone();
        settings.worker.enabled = true;
        let workers = Application::build_with(settings, Hooks::default())
            .await
            .unwrap();
        let workers_port = workers.port();
        actix_web::rt::spawn(workers.run_until_stopped());
        // The memory queue is per process: the second process stores what is sent to it.
        let mut response = app
            .client
            .post(format!("http://127.0.0.1:{workers_port}/api/messages/sms"))
            .bearer_auth(&app.admin_key)
            .send_json(&sms("+12016661234", "+18045551234", "stored"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let stored_location = response
            .headers()
            .get(header::LOCATION)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let _: Value = response.json().await.unwrap();
        // Asked of the first process, which reads the database (the event was never in
        // its queue, so it is unknown there until stored).
        eventually(Duration::from_secs(20), "stored and sent", || async {
            let (_, answer) = status_with(&app, &stored_location, None).await;
            answer["status"] == "sent"
        })
        .await;
        for (key, want) in [
            (own_send.as_str(), StatusCode::OK),
            (other_admin.as_str(), StatusCode::OK),
            (other_send.as_str(), StatusCode::NOT_FOUND),
        ] {
            let (code, answer) = status_with(&app, &stored_location, Some(key)).await;
            assert_eq!(code, want, "{db:?} stored: {answer}");
        }

        // Malformed keys name nothing; the send endpoints keep their 405 for GET.
        let unknown = format!("/api/messages/{}", "0".repeat(64));
        let upper = format!("/api/messages/{}", "A".repeat(64));
        for path in [
            unknown.as_str(),
            upper.as_str(),
            "/api/messages/xyz",
            "/api/messages/%00",
        ] {
            let (code, answer) = status_with(&app, path, None).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {answer}");
            assert_eq!(answer["status"], 404, "a problem document: {answer}");
        }
        let (code, _) = status_with(&app, "/api/messages/sms", None).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }
}

#[actix_web::test]
async fn nats_statuses_from_pending_to_sent_received_and_dead_lettered() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        // SMS answered 400 (dead-lettered); email by the default mock (sent).
        let stub = StubProvider::start(Vec::new(), Answer::Status(400, None));
        let database = TestDatabase::create(db).await;
        let mut settings = test_settings(&database.url);
        settings.queue.backend = QueueBackendKind::Nats;
        settings.queue.nats.url = nats.url();
        let hooks = with_stub(&mut settings, &stub);
        let mut api_settings = settings.clone();
        api_settings.worker.enabled = false;
        let api = spawn_on(database, move |s| *s = api_settings, Hooks::default()).await;

        let bad = post_sms(&api, "nope").await;
        let good = post_email(&api, "<p>yes</p>").await;
        let inbound = post(&api, "/api/webhooks/sms", &sms_webhook("nats-1"), None).await;
        for accepted in [&bad, &good, &inbound] {
            let (code, answer) = status_with(&api, &accepted.location, None).await;
            assert_eq!(code, StatusCode::OK, "{db:?}: {answer}");
            assert_eq!(answer["status"], "pending", "{db:?}: {answer}");
        }
        let other = keys::create_customer(api.db(), "other").await.unwrap();
        let other_send = create_key(api.db(), other, &[Scope::Send]).await;
        let (code, _) = status_with(&api, &good.location, Some(&other_send)).await;
        assert_eq!(
            code,
            StatusCode::NOT_FOUND,
            "{db:?}: a queued event is its customer's"
        );

        // Workers in another process-like application on the same stream and database.
        settings.server.port = 0;
        let workers = Application::build_with(settings, hooks).await.unwrap();
        actix_web::rt::spawn(workers.run_until_stopped());

        let sent = until(&api, &good.location, "sent").await;
        assert_stored(&sent, "sent");
        let received = until(&api, &inbound.location, "received").await;
        assert_stored(&received, "received");
        let dead = until(&api, &bad.location, "dead_lettered").await;
        assert_eq!(dead["attempts"], 1, "{db:?}: {dead}");
        assert_eq!(dead["error_code"], "provider_rejected", "{dead}");
    }
}

#[actix_web::test]
async fn stats_count_what_happened_and_need_an_admin_key() {
    for db in databases() {
        let stub = StubProvider::start(Vec::new(), Answer::Status(400, None));
        let app = spawn_with(db, |s| with_stub(s, &stub)).await;
        let (code, before) = app.get("/api/stats").await;
        assert_eq!(code, StatusCode::OK, "{before}");
        assert_eq!(before["totals"]["accepted"], 0, "{before}");

        for i in 0..2 {
            let body = email(
                "user@usehatchapp.com",
                "contact@gmail.com",
                &format!("<p>{i}</p>"),
            );
            post(&app, "/api/messages/email", &body, None).await;
        }
        let refused = post_sms(&app, "no").await;
        until(&app, &refused.location, "dead_lettered").await;
        app.drained().await;

        let (_, stats) = app.get("/api/stats").await;
        let totals = &stats["totals"];
        assert_eq!(totals["accepted"], 3, "{db:?}: {stats}");
        assert_eq!(totals["stored"], 3, "{stats}");
        assert_eq!(totals["sent"], 2, "{stats}");
        assert_eq!(totals["failed"], 1, "{stats}");
        assert_eq!(totals["dead_lettered"], 1, "{stats}");
        assert_eq!(stats["dlq_size"], 1, "{stats}");
        assert_eq!(stats["queue_depth"], 0, "{stats}");
        assert_eq!(stats["queue_backend"], "memory");
        assert_eq!(stats["ready"], true, "{stats}");
        assert_eq!(
            stats["workers_active"],
            app.state.settings.worker.concurrency as i64
        );
        assert!(stats["sampled_at"].as_str().is_some());

        let customer = app.state.settings.api.default_customer_id;
        let send_only = create_key(app.db(), customer, &[Scope::Send]).await;
        let request = app
            .client
            .get(app.url("/api/stats"))
            .bearer_auth(&send_only);
        let (code, _) = app.send(request, None).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "operators only");

        // Delete all: the console's button.
        let (code, answer) = app
            .request(app.client.delete(app.url("/api/dlq")), None)
            .await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        assert_eq!(answer["deleted"], 1);
        let (_, stats) = app.get("/api/stats").await;
        assert_eq!(stats["dlq_size"], 0, "{stats}");
        let (code, _) = app
            .send(
                app.client
                    .delete(app.url("/api/dlq"))
                    .bearer_auth(&send_only),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
    }
}

#[actix_web::test]
async fn the_console_is_served_without_a_key_under_a_strict_policy() {
    let app = common::spawn_app(Db::Sqlite).await;
    let client = awc::Client::builder().disable_redirects().finish();
    let response = client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers().get(header::LOCATION).unwrap(), "/ui/");

    for (path, content_type, marker) in [
        (
            "/ui/",
            "text/html",
            "<script type=\"module\" src=\"app.js\"></script>",
        ),
        ("/ui/app.js", "text/javascript", "/api/stats"),
        ("/ui/style.css", "text/css", ":root"),
        ("/ui/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let mut response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        let header = |name| headers.get(name).unwrap().to_str().unwrap().to_string();
        assert!(
            header(header::CONTENT_TYPE).starts_with(content_type),
            "{path}"
        );
        let csp = header(header::CONTENT_SECURITY_POLICY);
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        let body = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
        assert!(body.contains(marker), "{path}");
        if path == "/ui/" {
            // The policy forbids inline code, so the page must have none.
            assert!(
                !body.contains("<script>") && !body.contains("<style"),
                "inline code"
            );
            assert!(
                !body.contains(" onclick=") && !body.contains(" style="),
                "inline handlers or styles"
            );
        }
    }
    let (code, answer) = app.send(client.get(app.url("/ui/secrets.txt")), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["status"], 404);
    let (code, _) = app.send(client.post(app.url("/ui/")), None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

#[actix_web::test]
async fn a_database_refusal_reaches_the_tenant_as_a_code_and_its_text_only_operators() {
    use sea_orm::ConnectionTrait;
    for db in databases() {
        let app = spawn_with(db, |_| Hooks::default()).await;
        // The database refuses one message by a rule of its own, naming its internals.
        let refuse = match db {
            Db::Sqlite => "CREATE TRIGGER refuse_marked BEFORE INSERT ON message_bodies \
                 WHEN NEW.body LIKE '%refuse me%' BEGIN \
                 SELECT RAISE(ABORT, 'constraint ck_internal_body_rule failed on message_bodies'); END"
                .to_string(),
            Db::Postgres => "CREATE FUNCTION refuse_marked() RETURNS trigger AS $$ BEGIN \
                 IF NEW.body LIKE '%refuse me%' THEN \
                 RAISE EXCEPTION 'new row violates check constraint \"ck_internal_body_rule\"' \
                 USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER refuse_marked BEFORE INSERT ON message_bodies \
                 FOR EACH ROW EXECUTE FUNCTION refuse_marked()"
                .to_string(),
        };
        app.db().execute_unprepared(&refuse).await.unwrap();
        let accepted = post_sms(&app, "please refuse me").await;

        let dead = until(&app, &accepted.location, "dead_lettered").await;
        assert_eq!(dead["error_code"], "internal_error", "{db:?}: {dead}");
        assert!(
            !dead.to_string().contains("ck_internal_body_rule"),
            "{db:?}: the database's words reached the tenant: {dead}"
        );
        let (_, letters) = app.get("/api/dlq").await;
        let raw = letters["items"][0]["last_error"].as_str().unwrap();
        assert!(
            raw.contains("ck_internal_body_rule"),
            "{db:?}: operators see it: {raw}"
        );
    }
}
