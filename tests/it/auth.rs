//! Security (SPEC §11) on SQLite and PostgreSQL: API keys and their scopes per endpoint,
//! customer isolation, revocation, signed webhooks, rate limits, the bootstrap key, and
//! the headers every answer carries.

use crate::common;

use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use common::{create_key, databases, eventually, sms, spawn_app_with, Db, TestApp, TestDatabase};
use hmac::{Hmac, KeyInit, Mac};
use messaging_server::config::{Rate, Secret, Settings};
use messaging_server::store::keys::{self, Scope};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

fn default_customer(app: &TestApp) -> Uuid {
    app.state.settings.api.default_customer_id
}

/// What the queue holds (workers disabled) — nothing may be added by a refused request.
fn queued(app: &TestApp) -> usize {
    app.queued_events().len()
}

/// Sends `body` (if any) to `path` with `key` (or none), exactly as given.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    app.send(request, body).await
}

fn sms_webhook(provider_id: &str) -> Value {
    json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
           "messaging_provider_id": provider_id, "body": "reply",
           "attachments": null, "timestamp": "2024-11-01T14:00:00Z"})
}

fn email_webhook(provider_id: &str) -> Value {
    json!({"from": "contact@gmail.com", "to": "user@usehatchapp.com",
           "xillio_id": provider_id, "body": "<p>reply</p>", "attachments": [],
           "timestamp": "2024-11-01T14:00:00Z"})
}

fn email(body: &str) -> Value {
    json!({"from": "user@usehatchapp.com", "to": "contact@gmail.com", "subject": "hi",
           "body": body, "attachments": [], "timestamp": "2024-11-01T14:00:00Z"})
}

fn no_workers(settings: &mut Settings) {
    settings.worker.enabled = false;
    // Tests below send many refused requests from one address on purpose.
    settings.rate_limit.per_ip = "100000/s".parse().unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// This status (2xx, or 404 for an id that does not exist).
    Allowed(StatusCode),
    Forbidden,
}

#[actix_web::test]
async fn each_scope_is_allowed_or_refused_per_endpoint_and_refusals_enqueue_nothing() {
    for db in databases() {
        let app = spawn_app_with(db, no_workers).await;
        let customer = default_customer(&app);
        let send = create_key(app.db(), customer, &[Scope::Send]).await;
        let webhook = create_key(app.db(), customer, &[Scope::Webhook]).await;
        let admin = common::create_operator_key(app.db()).await;
        let both = create_key(app.db(), customer, &[Scope::Send, Scope::Webhook]).await;
        let read = create_key(app.db(), customer, &[Scope::Read]).await;

        use Expect::*;
        let accepted = Allowed(StatusCode::ACCEPTED);
        let ok = Allowed(StatusCode::OK);
        let missing = Allowed(StatusCode::NOT_FOUND);
        // (method, path, body, [send, webhook, operator, send+webhook, read])
        let mut n = 0;
        let mut body = |make: fn(&str) -> Value| {
            n += 1;
            Some(make(&format!("distinct {n}")))
        };
        let cases: Vec<(Method, &str, Option<Value>, [Expect; 5])> = vec![
            (
                Method::POST,
                "/api/messages/sms",
                body(|b| sms("+12016661234", "+18045551234", b)),
                [accepted, Forbidden, accepted, accepted, Forbidden],
            ),
            (
                Method::POST,
                "/api/messages/email",
                body(email),
                [accepted, Forbidden, accepted, accepted, Forbidden],
            ),
            (
                Method::POST,
                "/api/webhooks/sms",
                body(sms_webhook),
                [Forbidden, accepted, accepted, accepted, Forbidden],
            ),
            (
                Method::POST,
                "/api/webhooks/email",
                body(email_webhook),
                [Forbidden, accepted, accepted, accepted, Forbidden],
            ),
            (
                Method::GET,
                "/api/conversations",
                None,
                [ok, Forbidden, ok, ok, ok],
            ),
            (
                Method::GET,
                "/api/conversations/1",
                None,
                [missing, Forbidden, missing, missing, missing],
            ),
            (
                Method::GET,
                "/api/conversations/1/messages",
                None,
                [missing, Forbidden, missing, missing, missing],
            ),
            (
                Method::GET,
                "/api/dlq",
                None,
                [Forbidden, Forbidden, ok, Forbidden, Forbidden],
            ),
            (
                Method::GET,
                "/api/dlq/1",
                None,
                [Forbidden, Forbidden, missing, Forbidden, Forbidden],
            ),
            (
                Method::POST,
                "/api/dlq/1/replay",
                None,
                [Forbidden, Forbidden, missing, Forbidden, Forbidden],
            ),
            (
                Method::POST,
                "/api/dlq/replay",
                None,
                [Forbidden, Forbidden, accepted, Forbidden, Forbidden],
            ),
            (
                Method::DELETE,
                "/api/dlq/1",
                None,
                [Forbidden, Forbidden, missing, Forbidden, Forbidden],
            ),
            (
                Method::GET,
                "/api/webhook-endpoints",
                None,
                [ok, Forbidden, ok, ok, Forbidden],
            ),
            (
                Method::GET,
                "/api/stats",
                None,
                [Forbidden, Forbidden, ok, Forbidden, Forbidden],
            ),
        ];
        let bogus = format!("msk_{}", "0".repeat(64));
        for (method, path, body, expected) in cases {
            // No key, a malformed one, or one that does not exist: 401 with a challenge.
            for key in [None, Some("msk_short"), Some(bogus.as_str())] {
                let before = queued(&app);
                let response = {
                    let mut request = app.client.request(method.clone(), app.url(path));
                    if let Some(key) = key {
                        request = request.bearer_auth(key);
                    }
                    match &body {
                        Some(body) => request.send_json(body).await,
                        None => request.send().await,
                    }
                    .unwrap()
                };
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{db:?} {method} {path} with {key:?}"
                );
                let challenge = response.headers().get("www-authenticate").unwrap();
                assert!(challenge.to_str().unwrap().starts_with("Bearer"));
                assert_eq!(
                    response.headers().get("content-type").unwrap(),
                    "application/problem+json"
                );
                assert_eq!(queued(&app), before, "{path}: nothing enqueued on a 401");
            }
            for (key, expect) in [&send, &webhook, &admin, &both, &read]
                .into_iter()
                .zip(expected)
            {
                let before = queued(&app);
                let (status, answer) =
                    call(&app, method.clone(), path, Some(key), body.as_ref()).await;
                match expect {
                    Allowed(wanted) => {
                        assert_eq!(status, wanted, "{db:?} {method} {path}: {answer}");
                        let enqueues = path.starts_with("/api/messages/")
                            || path.starts_with("/api/webhooks/");
                        assert_eq!(queued(&app), before + usize::from(enqueues), "{path}");
                    }
                    Forbidden => {
                        assert_eq!(
                            status,
                            StatusCode::FORBIDDEN,
                            "{db:?} {method} {path}: {answer}"
                        );
                        assert_eq!(answer["status"], 403);
                        assert_eq!(queued(&app), before, "{path}: nothing enqueued on a 403");
                    }
                }
            }
        }
    }
}

#[actix_web::test]
async fn customers_see_and_write_only_their_own_data_even_by_guessing_ids() {
    for db in databases() {
        let app = spawn_app_with(db, |_| {}).await;
        let a = keys::create_customer(app.db(), "Customer A").await.unwrap();
        let b = keys::create_customer(app.db(), "Customer B").await.unwrap();
        let a_key = create_key(app.db(), a, &[Scope::Send]).await;
        let b_key = create_key(app.db(), b, &[Scope::Send]).await;
        let b_webhook = create_key(app.db(), b, &[Scope::Webhook]).await;

        // Each sends without naming a customer: the key decides whose message it is.
        for (key, from, text) in [
            (&a_key, "+12016660001", "from A"),
            (&b_key, "+12016660002", "from B"),
            (&b_key, "+12016660003", "from B again"),
        ] {
            let (status, answer) = call(
                &app,
                Method::POST,
                "/api/messages/sms",
                Some(key),
                Some(&sms(from, "+18045551234", text)),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        }
        // B receives on a number it owns.
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/addresses",
            Some(&b_key),
            Some(&json!({"address": "+14155550177"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let mut inbound = sms_webhook("b-inbound-1");
        inbound["to"] = json!("+14155550177");
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/webhooks/sms",
            Some(&b_webhook),
            Some(&inbound),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        app.drained().await;

        // Lists show only the key's own customer.
        let (_, a_list) = call(&app, Method::GET, "/api/conversations", Some(&a_key), None).await;
        assert_eq!(a_list["meta"]["total"], 1, "{db:?}: {a_list}");
        assert_eq!(a_list["items"][0]["participants"][0], "+12016660001");
        let a_conversation = a_list["items"][0]["id"].as_i64().unwrap();
        let (_, b_list) = call(&app, Method::GET, "/api/conversations", Some(&b_key), None).await;
        assert_eq!(
            b_list["meta"]["total"], 3,
            "{db:?}: two sent, one received: {b_list}"
        );
        let b_ids: Vec<i64> = common::items(&b_list)
            .map(|c| c["id"].as_i64().unwrap())
            .collect();

        // Guessing ids: every id that is not one's own answers 404, like an unknown one.
        let highest = *b_ids.iter().chain([&a_conversation]).max().unwrap();
        for id in 1..=highest + 2 {
            for (key, own) in [
                (&a_key, id == a_conversation),
                (&b_key, b_ids.contains(&id)),
            ] {
                for path in [
                    format!("/api/conversations/{id}"),
                    format!("/api/conversations/{id}/messages"),
                ] {
                    let (status, answer) = call(&app, Method::GET, &path, Some(key), None).await;
                    let wanted = if own {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    };
                    assert_eq!(status, wanted, "{db:?} {path}: {answer}");
                }
            }
        }

        // Writing for another customer is refused and enqueues nothing.
        let before = app.scalar("SELECT COUNT(*) FROM messages").await;
        let mut for_b = sms("+12016660001", "+18045550000", "posing as B");
        for_b["customer_id"] = json!(b);
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/messages/sms",
            Some(&a_key),
            Some(&for_b),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        let mut a_webhook_for_a = sms_webhook("b-posing-as-a");
        a_webhook_for_a["customer_id"] = json!(a);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/webhooks/sms",
            Some(&b_webhook),
            Some(&a_webhook_for_a),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Naming one's own customer is fine.
        let mut for_a = sms("+12016660001", "+18045550000", "as myself");
        for_a["customer_id"] = json!(a);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/messages/sms",
            Some(&a_key),
            Some(&for_a),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        app.drained().await;
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM messages").await,
            before + 1,
            "{db:?}: only the permitted request stored anything"
        );

        // An admin key sees every customer and may write for any.
        let (_, all) = app.get("/api/conversations").await;
        assert_eq!(all["meta"]["total"], 5, "{db:?}: {all}");
        let (status, _) = app
            .post_json("/api/messages/sms", &{
                let mut body = sms("+12016660009", "+18045550000", "admin for B");
                body["customer_id"] = json!(b);
                body
            })
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        app.drained().await;
        let (_, b_list) = call(&app, Method::GET, "/api/conversations", Some(&b_key), None).await;
        assert_eq!(
            b_list["meta"]["total"], 4,
            "{db:?}: the admin's message is B's"
        );
    }
}

#[actix_web::test]
async fn a_revoked_key_is_refused_within_the_cache_ttl_and_use_is_recorded() {
    for db in databases() {
        let ttl = Duration::from_secs(1);
        let app = spawn_app_with(db, |s| {
            s.auth.cache_ttl = ttl;
        })
        .await;
        let key = create_key(app.db(), default_customer(&app), &[Scope::Send]).await;
        let (status, _) = call(&app, Method::GET, "/api/conversations", Some(&key), None).await;
        assert_eq!(status, StatusCode::OK);
        // Used keys get last_used_at, written in the background.
        let prefix = &key[..keys::PREFIX_LEN];
        eventually(Duration::from_secs(10), "last_used_at written", || async {
            app.scalar(&format!(
                "SELECT COUNT(*) FROM api_keys WHERE prefix = '{prefix}' AND last_used_at IS NOT NULL"
            ))
            .await
                == 1
        })
        .await;

        assert!(matches!(
            keys::revoke(app.db(), prefix).await.unwrap(),
            keys::Revoked::Now(_)
        ));
        let revoked_at = Instant::now();
        // Within the TTL (plus a little for a busy machine), every request is refused.
        eventually(
            ttl + Duration::from_secs(1),
            "the revoked key refused",
            || async {
                call(&app, Method::GET, "/api/conversations", Some(&key), None)
                    .await
                    .0
                    == StatusCode::UNAUTHORIZED
            },
        )
        .await;
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/messages/sms",
            Some(&key),
            Some(&sms("+12016661234", "+18045551234", "after revocation")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{db:?}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("revoked"));
        assert!(revoked_at.elapsed() < ttl + Duration::from_secs(2));
        // Revoking again says so.
        assert!(matches!(
            keys::revoke(app.db(), prefix).await.unwrap(),
            keys::Revoked::Already(_)
        ));
    }
}

const SECRET: &str = "whsec_test_0123456789abcdef";

/// The signature a provider computes, written independently of the server's code.
fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_signed(
    app: &TestApp,
    path: &str,
    signature: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url(path))
        .insert_header(("Content-Type", content_type));
    if let Some(signature) = signature {
        request = request.insert_header(("X-Messaging-Signature", signature));
    }
    let response = request.send_body(body.to_vec()).await.unwrap();
    if response.status() == StatusCode::UNAUTHORIZED {
        assert!(response.headers().contains_key("www-authenticate"));
    }
    common::answer_of(response).await
}

#[actix_web::test]
async fn signed_webhooks_accept_only_fresh_signatures_over_the_exact_body() {
    for db in databases() {
        let app = spawn_app_with(db, |s| {
            no_workers(s);
            s.server.body_limit = 4096;
            s.providers.sms.webhook_secret = Secret::new(SECRET);
        })
        .await;
        let now = chrono::Utc::now().timestamp();
        let path = "/api/webhooks/sms";
        let json = "application/json";
        let body = serde_json::to_vec(&sms_webhook("signed-1")).unwrap();
        let other = serde_json::to_vec(&sms_webhook("signed-2")).unwrap();
        let good = signature(SECRET, now, &body);

        let refused = [
            ("missing", None, body.clone()),
            ("malformed", Some("v1=abc".to_string()), body.clone()),
            (
                "wrong secret",
                Some(signature("another_secret_0123456789", now, &body)),
                body.clone(),
            ),
            (
                "stale",
                Some(signature(SECRET, now - 330, &body)),
                body.clone(),
            ),
            (
                "from the future",
                Some(signature(SECRET, now + 330, &body)),
                body.clone(),
            ),
            (
                "replayed with another body",
                Some(good.clone()),
                other.clone(),
            ),
        ];
        for (what, signature, body) in refused {
            let (status, problem) =
                post_signed(&app, path, signature.as_deref(), json, &body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{db:?} {what}: {problem}");
            assert_eq!(queued(&app), 0, "{what}: nothing enqueued");
        }
        // An API key does not replace the signature once the provider has a secret.
        let (status, _) = call(
            &app,
            Method::POST,
            path,
            Some(&app.admin_key),
            Some(&sms_webhook("keyed")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, answer) = post_signed(&app, path, Some(&good), json, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{db:?}: {answer}");
        let events = app.queued_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].customer_id, default_customer(&app));
        assert_eq!(events[0].provider_message_id.as_deref(), Some("signed-1"));
        // A signature within the tolerance is fine on either side of the clock.
        let (status, _) = post_signed(
            &app,
            path,
            Some(&signature(SECRET, now - 240, &other)),
            json,
            &other,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);

        // Once the signature holds, the body is judged as any other: 400, 415, 413.
        let broken = b"{\"from\": ";
        let (status, problem) = post_signed(
            &app,
            path,
            Some(&signature(SECRET, now, broken)),
            json,
            broken,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(
            problem["type"],
            "urn:messaging-server:problem:malformed-json"
        );
        let (status, _) = post_signed(
            &app,
            path,
            Some(&signature(SECRET, now, &body)),
            "text/plain",
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let invalid =
            serde_json::to_vec(&json!({"from": "nobody", "messaging_provider_id": "x"})).unwrap();
        let (status, problem) = post_signed(
            &app,
            path,
            Some(&signature(SECRET, now, &invalid)),
            json,
            &invalid,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(problem["errors"].as_array().is_some_and(|e| !e.is_empty()));
        let huge = vec![b' '; 5000];
        let (status, _) = post_signed(
            &app,
            path,
            Some(&signature(SECRET, now, &huge)),
            json,
            &huge,
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(queued(&app), 2, "{db:?}: only the two good webhooks");

        // The email provider has no secret: its webhook needs a webhook (or admin) key.
        let (status, _) = post_signed(
            &app,
            "/api/webhooks/email",
            Some(&good),
            json,
            &serde_json::to_vec(&email_webhook("e-1")).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let webhook_key = create_key(app.db(), default_customer(&app), &[Scope::Webhook]).await;
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/webhooks/email",
            Some(&webhook_key),
            Some(&email_webhook("e-1")),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
}

#[actix_web::test]
async fn floods_get_429_with_retry_after_and_nothing_is_stored_for_them() {
    for db in databases() {
        let app = spawn_app_with(db, |s| {
            s.rate_limit.per_key = Rate {
                count: 1,
                per: Duration::from_secs(3600),
            };
            s.rate_limit.burst = 3;
            // Spent only by refused credentials: looking up a valid key is free.
            s.rate_limit.per_ip = "4/h".parse().unwrap();
        })
        .await;
        let key = create_key(app.db(), default_customer(&app), &[Scope::Send]).await;
        let mut statuses = Vec::new();
        for i in 0..6 {
            let body = sms("+12016661234", "+18045551234", &format!("flood {i}"));
            let response = app
                .client
                .post(app.url("/api/messages/sms"))
                .bearer_auth(&key)
                .send_json(&body)
                .await
                .unwrap();
            statuses.push(response.status());
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .unwrap_or_else(|| panic!("{name} on a 429"))
                        .to_str()
                        .unwrap()
                        .to_string()
                };
                let retry_after: u64 = header("retry-after").parse().unwrap();
                assert!((3000..=3600).contains(&retry_after), "{retry_after}");
                assert_eq!(header("ratelimit-limit"), "3");
                assert_eq!(header("ratelimit-remaining"), "0");
                assert_eq!(header("ratelimit-reset"), retry_after.to_string());
                assert_eq!(header("content-type"), "application/problem+json");
            }
        }
        assert_eq!(
            statuses,
            [
                vec![StatusCode::ACCEPTED; 3],
                vec![StatusCode::TOO_MANY_REQUESTS; 3]
            ]
            .concat(),
            "{db:?}"
        );
        // Another key has a budget of its own.
        app.send_sms("admin's own budget").await;
        app.drained().await;
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM messages").await,
            4,
            "{db:?}: nothing stored for a 429"
        );

        // A restart finds no key cached: first look-ups of more valid keys than the per-IP
        // budget, from one address (a load balancer), all go through.
        for i in 0..6 {
            let fresh = create_key(app.db(), default_customer(&app), &[Scope::Read]).await;
            let (status, _) =
                call(&app, Method::GET, "/api/conversations", Some(&fresh), None).await;
            assert_eq!(status, StatusCode::OK, "{db:?}: fresh key {i}");
        }

        // Without valid credentials, the per-IP budget applies: bad keys cannot flood.
        let bogus = format!("msk_{}", "1".repeat(64));
        let mut statuses = Vec::new();
        for i in 0..6 {
            let key = if i % 2 == 0 {
                None
            } else {
                Some(bogus.as_str())
            };
            statuses.push(
                call(&app, Method::GET, "/api/conversations", key, None)
                    .await
                    .0,
            );
        }
        assert_eq!(
            statuses,
            [
                vec![StatusCode::UNAUTHORIZED; 4],
                vec![StatusCode::TOO_MANY_REQUESTS; 2]
            ]
            .concat()
        );
        // A valid key from the same address is not held back by that.
        let (status, _) = app.get("/api/conversations").await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn one_bootstrap_key_however_many_starts_race_for_it() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let mut settings = common::test_settings(&database.url);
        settings.database.max_connections = 8;
        let pool = messaging_server::store::connect(&settings.database)
            .await
            .unwrap();
        messaging_server::store::migrate(&pool).await.unwrap();
        let racers = (0..8).map(|_| keys::bootstrap_operator(&pool));
        let created: Vec<String> = futures_util::future::join_all(racers)
            .await
            .into_iter()
            .filter_map(|result| result.expect("bootstrap runs"))
            .collect();
        assert_eq!(created.len(), 1, "{db:?}: exactly one key created");
        assert!(
            keys::bootstrap_operator(&pool).await.unwrap().is_none(),
            "and never again"
        );
        let rows = keys::list(&pool).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].scopes, "admin");
        assert_eq!(
            rows[0].customer_id, None,
            "an operator's key, of no customer"
        );
        assert_eq!(rows[0].key_sha256, keys::key_sha256(&created[0]));
        pool.close().await.ok();
    }
}

#[actix_web::test]
async fn every_answer_carries_a_request_id_and_api_answers_are_not_cached() {
    let app = spawn_app_with(Db::Sqlite, no_workers).await;
    let cases = [
        ("/healthz", None, false),
        ("/metrics", None, false),
        ("/nowhere", None, false),
        ("/api/conversations", Some(app.admin_key.as_str()), true),
        ("/api/conversations", None, true),
        ("/api/conversations/999", Some(app.admin_key.as_str()), true),
    ];
    for (path, key, api) in cases {
        for sent_id in [None, Some("client-id-42"), Some("bad id with spaces")] {
            let mut request = app.client.get(app.url(path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            if let Some(id) = sent_id {
                request = request.insert_header(("X-Request-Id", id));
            }
            let response = request.send().await.unwrap();
            let headers = response.headers();
            let id = headers
                .get("x-request-id")
                .unwrap_or_else(|| panic!("{path}: X-Request-Id"))
                .to_str()
                .unwrap();
            match sent_id {
                Some("client-id-42") => assert_eq!(id, "client-id-42"),
                _ => assert_eq!(id.len(), 32, "{path}: a generated id, not {sent_id:?}"),
            }
            assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
            if api {
                assert_eq!(headers.get("cache-control").unwrap(), "no-store", "{path}");
            }
        }
    }
    // Operations endpoints stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = call(&app, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[actix_web::test]
async fn with_auth_off_keyless_requests_pass_and_keys_still_scope() {
    for db in databases() {
        let app = spawn_app_with(db, |s| {
            s.auth.required = false;
        })
        .await;
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/messages/sms",
            None,
            Some(&sms("+12016661234", "+18045551234", "open")),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{db:?}");
        app.drained().await;
        let (status, page) = call(&app, Method::GET, "/api/conversations", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["meta"]["total"], 1);
        let (status, _) = call(&app, Method::GET, "/api/dlq", None, None).await;
        assert_eq!(status, StatusCode::OK);

        // A key that is sent is still checked, and still limits what it sees.
        let other = keys::create_customer(app.db(), "Other").await.unwrap();
        let key = create_key(app.db(), other, &[Scope::Send]).await;
        let (_, page) = call(&app, Method::GET, "/api/conversations", Some(&key), None).await;
        assert_eq!(page["meta"]["total"], 0, "{db:?}: {page}");
        let bogus = format!("msk_{}", "2".repeat(64));
        let (status, _) = call(&app, Method::GET, "/api/conversations", Some(&bogus), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

/// Behind a load balancer listed in `server.trusted_proxies`, each client has its own
/// per-IP budget (from `X-Forwarded-For`); without the setting the header is the client's
/// own words and ignored: everyone through that peer shares one budget.
#[actix_web::test]
async fn x_forwarded_for_is_honoured_from_trusted_proxies_only() {
    for trusted in [true, false] {
        let app = spawn_app_with(databases().remove(0), |s| {
            s.rate_limit.per_ip = "2/h".parse().unwrap();
            if trusted {
                s.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            }
        })
        .await;
        let bogus = format!("msk_{}", "2".repeat(64));
        let from = |client: &'static str| {
            let app = &app;
            let bogus = bogus.clone();
            async move {
                app.client
                    .get(app.url("/api/conversations"))
                    .insert_header(("X-Forwarded-For", client))
                    .bearer_auth(bogus)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };
        // One client spends its budget of refused keys...
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(from("203.0.113.5").await);
        }
        assert_eq!(
            first,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::TOO_MANY_REQUESTS
            ],
            "trusted: {trusted}"
        );
        // ...and another client through the same proxy has its own, when the proxy is
        // trusted; a client naming itself in the header gains nothing otherwise.
        let other = from("198.51.100.7").await;
        let expected = if trusted {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(other, expected, "trusted: {trusted}");
    }
}

/// Inbound messages belong to whoever owns their `to` (SPEC §16): a body's `customer_id`
/// cannot choose another tenant, an unowned address stores nothing, and an address has
/// one owner, managed by its customer's keys only.
#[actix_web::test]
async fn inbound_messages_go_to_the_owner_of_their_address_whatever_the_body_says() {
    for db in databases() {
        let app = spawn_app_with(db, |_| {}).await;
        let a = default_customer(&app);
        let b = keys::create_customer(app.db(), "b").await.unwrap();
        let a_send = create_key(app.db(), a, &[Scope::Send]).await;
        let b_send = create_key(app.db(), b, &[Scope::Send]).await;
        let b_read = create_key(app.db(), b, &[Scope::Read]).await;
        let number = json!({"address": "+14155550123"});

        // B owns the number; nobody else can own it, nor own for B.
        let (status, owned) = call(
            &app,
            Method::POST,
            "/api/addresses",
            Some(&b_send),
            Some(&number),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{db:?}: {owned}");
        assert_eq!(owned["customer_id"], b.to_string());
        assert_eq!(owned["kind"], "phone");
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/addresses",
            Some(&a_send),
            Some(&number),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{db:?}: owned already");
        let for_a = json!({"address": "b.example.org", "customer_id": a.to_string()});
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/addresses",
            Some(&b_send),
            Some(&for_a),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{db:?}: a key owns for its customer only"
        );
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/addresses",
            Some(&b_read),
            Some(&number),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db:?}: owning needs send");
        let (_, listed) = call(&app, Method::GET, "/api/addresses", Some(&b_send), None).await;
        assert_eq!(
            listed["meta"]["total"], 1,
            "{db:?}: B sees its own only: {listed}"
        );
        let (_, all) = app.get("/api/addresses").await;
        assert_eq!(
            all["meta"]["total"],
            common::TEST_ADDRESSES.len() + 1,
            "{all}"
        );
        let id = owned["id"].as_i64().unwrap();
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("/api/addresses/{id}"),
            Some(&a_send),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{db:?}: not A's to give up");

        // An inbound message to B's number naming A in its body is B's.
        let inbound = |to: &str, id: &str| {
            json!({"from": "+18045551234", "to": to, "type": "sms", "messaging_provider_id": id,
                   "body": "to whom?", "customer_id": a.to_string()})
        };
        let (status, answer) = app
            .post_json("/api/webhooks/sms", &inbound("+14155550123", "in-b"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{db:?}: {answer}");
        app.drained().await;
        let (_, b_sees) = call(&app, Method::GET, "/api/conversations", Some(&b_read), None).await;
        assert_eq!(b_sees["meta"]["total"], 1, "{db:?}: {b_sees}");
        let (_, a_sees) = call(&app, Method::GET, "/api/conversations", Some(&a_send), None).await;
        assert_eq!(a_sees["meta"]["total"], 0, "{db:?}: {a_sees}");
        // A's webhook key cannot post B's inbound messages.
        let a_webhook = create_key(app.db(), a, &[Scope::Webhook]).await;
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/webhooks/sms",
            Some(&a_webhook),
            Some(&inbound("+14155550123", "in-b2")),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db:?}");

        // To an address nobody owns: answered, stored nowhere, counted.
        let before = app.scalar("SELECT COUNT(*) FROM messages").await;
        let (status, answer) = app
            .post_json("/api/webhooks/sms", &inbound("+14155550999", "in-none"))
            .await;
        assert_eq!(status, StatusCode::OK, "{db:?}: {answer}");
        assert_eq!(answer, json!({"status": "unrouted"}));
        let email = json!({"from": "x@sender.example", "to": "someone@nobody.example", "xillio_id": "e-none",
                           "body": "hi", "attachments": []});
        let (status, _) = app.post_json("/api/webhooks/email", &email).await;
        assert_eq!(status, StatusCode::OK);
        app.drained().await;
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM messages").await,
            before,
            "{db:?}"
        );
        let (_, metrics) = app.get("/metrics").await;
        assert!(
            metrics
                .as_str()
                .unwrap()
                .contains("messaging_inbound_unrouted_total 2"),
            "{db:?}"
        );

        // Given up, the number routes nowhere.
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("/api/addresses/{id}"),
            Some(&b_send),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app
            .post_json("/api/webhooks/sms", &inbound("+14155550123", "in-b3"))
            .await;
        assert_eq!(status, StatusCode::OK, "{db:?}");
    }
}

/// Sends `method path` as the operator with `X-Request-Id: request_id`; returns the status.
async fn as_operator(
    app: &TestApp,
    method: Method,
    path: &str,
    request_id: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let request = app
        .client
        .request(method, app.url(path))
        .insert_header(("X-Request-Id", request_id));
    app.request(request, body).await
}

/// Dead letters made the quick way: events from a schema version this server cannot read
/// are parked at once.
async fn park(app: &TestApp, n: usize) -> Vec<i64> {
    for i in 0..n {
        let mut event = common::sms_event(default_customer(app), &format!("from the future {i}"));
        event.schema_version = 2;
        app.enqueue(vec![event]).await;
    }
    app.drained().await;
    let (_, page) = app.get("/api/dlq").await;
    let ids: Vec<i64> = common::items(&page)
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), n, "{page}");
    ids
}

#[actix_web::test]
async fn every_state_change_is_in_the_audit_log_once_with_who_what_and_the_request() {
    for db in databases() {
        let app = spawn_app_with(db, |_| {}).await;
        let customer = default_customer(&app);
        let letters = park(&app, 3).await;
        let operator = format!("key:{}", &app.admin_key[..12]);

        // The operator's destructive actions, each with its own request id; a refused one
        // and the reads between them change nothing and are not recorded.
        let endpoint = json!({"url": "https://hooks.example.com/in", "events": ["message.sent"]});
        let (status, created) = as_operator(
            &app,
            Method::POST,
            "/api/webhook-endpoints",
            "req-ep-create",
            Some(&endpoint),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{db:?}: {created}");
        let endpoint_id = created["id"].as_str().unwrap().to_string();
        let address = json!({"address": "+14155550188", "customer_id": customer.to_string()});
        let (status, owned) = as_operator(
            &app,
            Method::POST,
            "/api/addresses",
            "req-addr-add",
            Some(&address),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{db:?}: {owned}");
        let address_id = owned["id"].as_i64().unwrap();
        let steps = [
            (
                Method::POST,
                format!("/api/dlq/{}/replay", letters[0]),
                "req-replay",
                StatusCode::ACCEPTED,
            ),
            (
                Method::DELETE,
                format!("/api/dlq/{}", letters[1]),
                "req-delete",
                StatusCode::NO_CONTENT,
            ),
            (
                Method::DELETE,
                "/api/dlq/999999".into(),
                "req-refused",
                StatusCode::NOT_FOUND,
            ),
            (Method::GET, "/api/dlq".into(), "req-read", StatusCode::OK),
            (
                Method::DELETE,
                "/api/dlq".into(),
                "req-delete-all",
                StatusCode::OK,
            ),
            (
                Method::POST,
                format!("/api/webhook-endpoints/{endpoint_id}/rotate-secret"),
                "req-ep-rotate",
                StatusCode::OK,
            ),
            (
                Method::DELETE,
                format!("/api/webhook-endpoints/{endpoint_id}"),
                "req-ep-delete",
                StatusCode::NO_CONTENT,
            ),
            (
                Method::DELETE,
                format!("/api/addresses/{address_id}"),
                "req-addr-remove",
                StatusCode::NO_CONTENT,
            ),
        ];
        let mut deleted = Value::Null;
        for (method, path, request_id, expected) in &steps {
            let (status, answer) = as_operator(&app, method.clone(), path, request_id, None).await;
            assert_eq!(status, *expected, "{db:?}: {method} {path}: {answer}");
            if *request_id == "req-delete-all" {
                deleted = answer["deleted"].clone();
            }
        }

        // A customer's change to its own settings is recorded under its key and customer.
        let send = create_key(app.db(), customer, &[Scope::Send]).await;
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/addresses",
            Some(&send),
            Some(&json!({"address": "own.example.org"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);

        let (status, log) = app.get("/api/audit?pageSize=200").await;
        assert_eq!(status, StatusCode::OK, "{db:?}: {log}");
        let entries = log["items"].as_array().unwrap();
        let expected = [
            (
                "webhook_endpoint.create",
                "req-ep-create".to_string(),
                format!("webhook_endpoint:{endpoint_id}"),
            ),
            (
                "address.add",
                "req-addr-add".into(),
                format!("address:{address_id}"),
            ),
            (
                "dead_letter.replay",
                "req-replay".into(),
                format!("dead_letter:{}", letters[0]),
            ),
            (
                "dead_letter.delete",
                "req-delete".into(),
                format!("dead_letter:{}", letters[1]),
            ),
            (
                "dead_letter.delete_all",
                "req-delete-all".into(),
                "dead_letters".into(),
            ),
            (
                "webhook_endpoint.rotate_secret",
                "req-ep-rotate".into(),
                format!("webhook_endpoint:{endpoint_id}"),
            ),
            (
                "webhook_endpoint.delete",
                "req-ep-delete".into(),
                format!("webhook_endpoint:{endpoint_id}"),
            ),
            (
                "address.remove",
                "req-addr-remove".into(),
                format!("address:{address_id}"),
            ),
        ];
        assert_eq!(entries.len(), expected.len() + 1, "{db:?}: {log}");
        for (action, request_id, target) in &expected {
            let found: Vec<_> = entries
                .iter()
                .filter(|e| e["action"] == *action && e["actor"] == operator)
                .collect();
            assert_eq!(found.len(), 1, "{db:?}: {action} once: {log}");
            let e = found[0];
            assert_eq!(e["request_id"], *request_id, "{db:?}: {e}");
            assert_eq!(e["target"], *target, "{db:?}: {e}");
            assert_eq!(e["actor"], operator, "{db:?}: {e}");
            assert!(
                e["customer_id"].is_null(),
                "an operator acts for nobody: {e}"
            );
            assert!(e["at"].is_string());
        }
        assert!(!log.to_string().contains("req-refused") && !log.to_string().contains("req-read"));
        // Newest first: the customer's own change, then the operator's in order, reversed.
        let newest = &entries[0];
        assert_eq!(newest["action"], "address.add");
        assert_eq!(newest["actor"], format!("key:{}", &send[..12]));
        assert_eq!(newest["customer_id"], customer.to_string());
        let order: Vec<_> = entries[1..]
            .iter()
            .map(|e| e["request_id"].as_str().unwrap())
            .rev()
            .collect();
        let sent: Vec<_> = expected.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(order, sent, "{db:?}");
        assert_eq!(
            entries
                .iter()
                .filter(|e| e["action"] == "dead_letter.delete_all")
                .map(|e| e["detail"].clone())
                .next(),
            Some(json!(format!("{deleted} deleted"))),
            "the count the answer gave: {log}"
        );
        assert!(!log.to_string().contains(&app.admin_key), "never a key");

        // Filters.
        let (_, one) = app.get("/api/audit?action=dead_letter.delete").await;
        assert_eq!(one["meta"]["total"], 1, "{one}");
        let (_, by_target) = app
            .get(&format!("/api/audit?target=webhook_endpoint:{endpoint_id}"))
            .await;
        assert_eq!(by_target["meta"]["total"], 3, "{by_target}");
        let (_, by_actor) = app
            .get(&format!("/api/audit?actor={operator}&pageSize=2"))
            .await;
        assert_eq!(by_actor["meta"]["total"], expected.len(), "{by_actor}");
        assert_eq!(by_actor["items"].as_array().unwrap().len(), 2);
        let (_, future) = app.get("/api/audit?since=2999-01-01T00:00:00Z").await;
        assert_eq!(future["meta"]["total"], 0, "{future}");
        let (_, past) = app.get("/api/audit?until=2000-01-01T00:00:00Z").await;
        assert_eq!(past["meta"]["total"], 0, "{past}");
        for bad in ["action=dead_letter.explode", "since=yesterday", "page=0"] {
            let (status, problem) = app.get(&format!("/api/audit?{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
            assert_eq!(
                problem["type"]
                    .as_str()
                    .map(|t| t.ends_with("invalid-query")),
                Some(true),
                "{problem}"
            );
        }

        // Operators only.
        for scopes in [
            &[Scope::Send][..],
            &[Scope::Read],
            &[Scope::Send, Scope::Webhook],
        ] {
            let key = create_key(app.db(), customer, scopes).await;
            let (status, _) = call(&app, Method::GET, "/api/audit", Some(&key), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{db:?}: {scopes:?}");
        }
    }
}
