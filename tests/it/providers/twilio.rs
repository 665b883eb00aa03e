//! SMS and MMS through Twilio's Messages API (SPEC §14), against Prism serving Twilio's own
//! OpenAPI description of it (tests/fixtures/twilio): Prism answers 4xx to any request that
//! does not match Twilio's contract (path, Basic auth, form fields), and the adapter treats
//! a 4xx as a refusal, so a message reaches `sent` with Twilio's `sid` only if the call the
//! adapter made is one Twilio accepts.
//!
//! One known gap of Prism is bridged: Twilio takes one `MediaUrl` field per picture
//! (`MediaUrl=a&MediaUrl=b`, as its own helper libraries send them, and as OpenAPI's default
//! `form`/`explode` encoding of an array says), while Prism 5 reads repeated keys as one
//! overwritten value and only understands `MediaUrl[]=` (stoplightio/prism#2473, open). A
//! shim in front of Prism renames the repeated keys and forwards everything else unchanged.
//! Prism answers its example, one `sid` for every message; Twilio gives each message its
//! own, so the shim makes each answered `sid` unique (a receipt names its message by it).
//!
//! Twilio's webhooks (inbound messages, delivery receipts) are signed in these tests by
//! Twilio's own helper library (`RequestValidator` of the `twilio` Python package, run by
//! tests/peers/twilio_sign.py), so the server accepts exactly what Twilio sends.

use super::{settled, status_of};
use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::peer::Peer;
use common::{databases, eventually, spawn_app_with_hooks, Db, TestApp};
use messaging_server::config::{ProviderKind, Secret, Settings};
use messaging_server::http::twilio as twilio_webhooks;
use messaging_server::providers::{MockProvider, Providers};
use messaging_server::startup::Hooks;
use serde_json::{json, Value};

pub(crate) const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// This server as Twilio's console would name it: what Twilio signs its webhooks over.
pub(crate) const PUBLIC_URL: &str = "https://msg.example.com";

/// `prism mock` of Twilio's description, on a port of its own.
pub(crate) struct Prism {
    // Held for its Drop: the process stops with the test.
    _peer: Peer,
    url: String,
}

impl Prism {
    pub(crate) async fn start() -> Option<Prism> {
        let prism = common::require_tool("prism")?;
        let port = common::nats::free_port();
        let spec = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/twilio/messages.openapi.json");
        let log = std::env::temp_dir().join(format!("ms-prism-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(prism)
            .args(["mock", "--host", "127.0.0.1", "--port", &port.to_string()])
            // Response violations are errors too: the mock keeps to the document both ways.
            .arg("--errors")
            .arg(&spec)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("prism starts");
        let prism = Prism {
            _peer: Peer::new(child, "prism log", log),
            url: format!("http://127.0.0.1:{port}"),
        };
        eventually(Duration::from_secs(60), "prism listens", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        Some(prism)
    }

    pub(crate) fn messages_url(&self) -> String {
        format!("{}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", self.url)
    }

    /// The shim described at the top: Prism's URL for repeated `MediaUrl` fields. Each
    /// form it forwarded is kept in `forms`, as the adapter sent it.
    pub(crate) fn behind_shim(&self) -> Shim {
        let prism = self.url.clone();
        let forms = Forms::default();
        let kept = forms.clone();
        let server = HttpServer::new(move || {
            let prism = prism.clone();
            let kept = kept.clone();
            App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
                let url = format!("{prism}{}", request.uri());
                kept.lock().unwrap().push(twilio_webhooks::form(&body));
                async move {
                    let form = String::from_utf8_lossy(&body)
                        .split('&')
                        .map(|pair| match pair.strip_prefix("MediaUrl=") {
                            Some(value) => format!("MediaUrl%5B%5D={value}"),
                            None => pair.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("&");
                    let mut forward = awc::Client::default().request(request.method().clone(), url);
                    for name in ["authorization", "content-type", "accept"] {
                        if let Some(value) = request.headers().get(name) {
                            forward = forward.insert_header((name, value.clone()));
                        }
                    }
                    let mut answer = forward.send_body(form).await.unwrap();
                    let mut body: Value = answer.json().await.unwrap();
                    if body["sid"].is_string() {
                        body["sid"] = json!(format!("SM{:032x}", fastrand::u128(..)));
                    }
                    HttpResponse::build(answer.status()).json(body)
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        Shim { url, forms }
    }
}

pub(crate) type Forms = Arc<Mutex<Vec<Vec<(String, String)>>>>;

pub(crate) struct Shim {
    pub(crate) url: String,
    pub(crate) forms: Forms,
}

pub(crate) fn twilio(settings: &mut Settings, base_url: &str) {
    let sms = &mut settings.providers.sms;
    sms.kind = ProviderKind::Twilio;
    sms.base_url = base_url.to_string();
    sms.account_sid = ACCOUNT.to_string();
    sms.auth_token = Secret::new(AUTH_TOKEN);
    sms.public_url = PUBLIC_URL.to_string();
    // A refusal is not retried: one attempt shows it.
    settings.retry.max_attempts = 3;
}

/// The app with the providers its settings name (the Twilio adapter for SMS/MMS).
pub(crate) async fn app_with_twilio(db: Db, base_url: &str) -> TestApp {
    let mut settings = common::test_settings("sqlite::memory:");
    twilio(&mut settings, base_url);
    let providers = Providers {
        sms: Providers::from_settings(&settings.providers).sms,
        email: Arc::new(MockProvider::new("email", &settings.providers.email)),
    };
    spawn_app_with_hooks(
        db,
        |s| twilio(s, base_url),
        Hooks {
            providers: Some(providers),
            ..Hooks::default()
        },
    )
    .await
}

#[actix_web::test]
async fn sms_and_mms_reach_twilio_as_its_contract_says() {
    let Some(prism) = Prism::start().await else {
        return;
    };

    // The mock enforces the contract: without `To`, or without Basic auth, Twilio refuses.
    // The shim forwards a repeated MediaUrl in Prism's form, and nothing else changes.
    let shim = prism.behind_shim();
    let shim = shim.url.clone();
    let through_shim = format!("{shim}/2010-04-01/Accounts/{ACCOUNT}/Messages.json");
    let sms = [
        ("To", "+18045551234"),
        ("From", "+12016661234"),
        ("Body", "hi"),
    ];
    let media = [
        ("MediaUrl", "https://media.example.com/a.png"),
        ("MediaUrl", "https://media.example.com/b.png"),
    ];
    let client = awc::Client::default();
    for (what, url, basic_auth, form, want) in [
        ("no To", prism.messages_url(), true, sms[1..].to_vec(), 422),
        ("no auth", prism.messages_url(), false, sms.to_vec(), 401),
        (
            "media",
            through_shim,
            true,
            [&sms[..], &media].concat(),
            201,
        ),
    ] {
        let mut request = client.post(url);
        if basic_auth {
            request = request.basic_auth(ACCOUNT, "token");
        }
        let answer = request.send_form(&form).await.unwrap();
        assert_eq!(answer.status().as_u16(), want, "{what}");
    }

    for db in databases() {
        let app = app_with_twilio(db, &shim).await;
        let sms = app.send_sms("through Twilio").await;
        let mms = json!({
            "from": "+12016661234", "to": "+18045551234", "type": "mms",
            "body": "a picture",
            "attachments": ["https://media.example.com/a.png", "https://media.example.com/b.png"],
            "timestamp": "2024-11-01T14:00:00Z"
        });
        let (status, mms) = app.post_json("/api/messages/sms", &mms).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{mms}");

        for accepted in [&sms, &mms] {
            let done = settled(&app, accepted).await;
            assert_eq!(done["status"], "sent", "{db:?}: {done}");
            // Twilio's message SID: SM and 32 hex digits.
            let sid = done["provider_message_id"].as_str().unwrap_or_default();
            assert!(
                sid.len() == 34
                    && sid.starts_with("SM")
                    && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()),
                "{db:?}: {done}"
            );
            assert_eq!(
                done["attempts"], 1,
                "{db:?}: sent on the first call: {done}"
            );
        }
    }
}

/// Twilio's signature of `params` posted to `path`, from Twilio's own library.
pub(crate) fn twilio_signature(path: &str, params: &[(&str, &str)]) -> String {
    let python = common::tools::python_with("twilio").expect("CI has the twilio package");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/twilio_sign.py");
    let request =
        json!({"token": AUTH_TOKEN, "url": format!("{PUBLIC_URL}{path}"), "params": params});
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tests/peers/twilio_sign.py failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Posts `params` to one of Twilio's webhook routes as Twilio does, with `signature`.
pub(crate) async fn post_form(
    app: &TestApp,
    path: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = app.client.post(app.url(path));
    if let Some(signature) = signature {
        request = request.insert_header(("X-Twilio-Signature", signature));
    }
    let mut answer = request
        .send_form(&params)
        .await
        .expect("the server answers");
    let content_type = common::header_text(answer.headers(), "content-type").to_string();
    let body = answer.body().await.unwrap();
    (
        answer.status(),
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A signed Twilio webhook must be answered with TwiML.
pub(crate) async fn signed(app: &TestApp, path: &str, params: &[(&str, &str)]) {
    let signature = twilio_signature(path, params);
    let (status, content_type, body) = post_form(app, path, params, Some(&signature)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert_eq!(body, "<Response/>");
}

pub(crate) fn receipts(app: &TestApp, status: &str, outcome: &str) -> f64 {
    let (text, _) = app.state.metrics.render();
    text.lines()
        .find(|line| {
            line.starts_with("messaging_delivery_receipts_total{")
                && line.contains(&format!("outcome=\"{outcome}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn twilios_signed_webhooks_bring_messages_in_and_receipts_move_sent_messages_on() {
    let Some(prism) = Prism::start().await else {
        return;
    };
    if common::tools::python_with("twilio").is_none() {
        return;
    }
    let shim = prism.behind_shim();
    for db in databases() {
        let app = app_with_twilio(db, &shim.url).await;

        // Inbound SMS and MMS, as Twilio posts them (with fields this service ignores).
        let sms_path = "/api/providers/twilio/sms";
        let sms = [
            ("ToCountry", "US"),
            ("SmsMessageSid", "SM11111111111111111111111111111111"),
            ("NumMedia", "0"),
            ("MessageSid", "SM11111111111111111111111111111111"),
            ("AccountSid", ACCOUNT),
            ("From", "+18045551234"),
            ("To", "+12016661234"),
            ("Body", "Hello from a phone"),
            ("NumSegments", "1"),
            ("ApiVersion", "2010-04-01"),
        ];
        signed(&app, sms_path, &sms).await;
        // Twilio retries a webhook it got no answer to: the same message, stored once.
        signed(&app, sms_path, &sms).await;
        let mms = [
            ("MessageSid", "MM22222222222222222222222222222222"),
            ("AccountSid", ACCOUNT),
            ("From", "+18045551234"),
            ("To", "+12016661234"),
            ("Body", "two pictures"),
            ("NumMedia", "2"),
            (
                "MediaUrl0",
                "https://api.twilio.com/2010-04-01/Accounts/x/Media/ME1",
            ),
            ("MediaContentType0", "image/jpeg"),
            (
                "MediaUrl1",
                "https://api.twilio.com/2010-04-01/Accounts/x/Media/ME2",
            ),
            ("MediaContentType1", "image/png"),
        ];
        signed(&app, sms_path, &mms).await;

        // A tampered body with a genuine signature, no signature, a signature over another
        // URL: 403, and nothing of them is stored.
        let genuine = twilio_signature(sms_path, &sms);
        let mut tampered = sms;
        tampered[7] = ("Body", "Hello from somebody else");
        tampered[3] = ("MessageSid", "SM33333333333333333333333333333333");
        let (status, content_type, body) =
            post_form(&app, sms_path, &tampered, Some(&genuine)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(content_type, "application/problem+json");
        let (status, _, _) = post_form(&app, sms_path, &tampered, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let elsewhere = twilio_signature("/api/providers/twilio/status", &tampered);
        let (status, _, _) = post_form(&app, sms_path, &tampered, Some(&elsewhere)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        app.drained().await;
        let inbound = app
            .scalar("SELECT COUNT(*) FROM messages WHERE direction = 'inbound'")
            .await;
        assert_eq!(inbound, 2, "{db:?}: the SMS once and the MMS");
        let (status, page) = app.get("/api/conversations").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let conversation = page["items"][0]["id"].as_i64().unwrap();
        let (_, messages) = app
            .get(&format!("/api/conversations/{conversation}/messages"))
            .await;
        let items = messages["items"].as_array().unwrap();
        let by_body = |body: &str| {
            items
                .iter()
                .find(|m| m["body"] == body)
                .unwrap_or_else(|| panic!("{db:?}: no {body:?} in {messages}"))
        };
        let stored_sms = by_body("Hello from a phone");
        assert_eq!(stored_sms["channel"], "sms", "{stored_sms}");
        assert_eq!(stored_sms["direction"], "inbound");
        let stored_mms = by_body("two pictures");
        assert_eq!(stored_mms["channel"], "mms", "{stored_mms}");
        assert_eq!(
            stored_mms["attachments"],
            json!([
                "https://api.twilio.com/2010-04-01/Accounts/x/Media/ME1",
                "https://api.twilio.com/2010-04-01/Accounts/x/Media/ME2"
            ])
        );
        assert!(!items
            .iter()
            .any(|m| m["body"] == "Hello from somebody else"));

        // Outbound: Twilio is asked to send receipts here, and they move the message on.
        let first = app.send_sms("will be delivered").await;
        let (status, second) = app
            .post_json(
                "/api/messages/sms",
                &common::sms("+12016661234", "+18045551235", "will not be delivered"),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{second}");
        let first_sid = settled(&app, &first).await["provider_message_id"]
            .as_str()
            .unwrap()
            .to_string();
        let second_sid = settled(&app, &second).await["provider_message_id"]
            .as_str()
            .unwrap()
            .to_string();
        let callback = format!("{PUBLIC_URL}/api/providers/twilio/status");
        assert!(
            shim.forms.lock().unwrap().iter().any(|form| form
                .contains(&("Body".into(), "will be delivered".into()))
                && form.contains(&("StatusCallback".into(), callback.clone()))),
            "the send asks for receipts at {callback}"
        );

        let status_path = "/api/providers/twilio/status";
        let receipt = |sid: &str, status: &str, error: Option<&str>| {
            let mut params = vec![
                ("MessageSid".to_string(), sid.to_string()),
                ("MessageStatus".to_string(), status.to_string()),
                ("AccountSid".to_string(), ACCOUNT.to_string()),
            ];
            if let Some(code) = error {
                params.push(("ErrorCode".to_string(), code.to_string()));
            }
            params
        };
        let send_receipt = |params: Vec<(String, String)>| {
            let app = &app;
            async move {
                let params: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                signed(app, status_path, &params).await;
            }
        };
        send_receipt(receipt(&first_sid, "sent", None)).await;
        assert_eq!(status_of(&app, &first).await["status"], "sent");
        send_receipt(receipt(&first_sid, "delivered", None)).await;
        let delivered = status_of(&app, &first).await;
        assert_eq!(delivered["status"], "delivered", "{db:?}: {delivered}");
        assert_eq!(delivered["last_error"], Value::Null);
        // Receipts can arrive out of order: a late `sent` leaves `delivered` alone.
        send_receipt(receipt(&first_sid, "sent", None)).await;
        send_receipt(receipt(&first_sid, "undelivered", Some("30003"))).await;
        assert_eq!(status_of(&app, &first).await["status"], "delivered");

        send_receipt(receipt(&second_sid, "undelivered", Some("30003"))).await;
        let undelivered = status_of(&app, &second).await;
        assert_eq!(
            undelivered["status"], "undelivered",
            "{db:?}: {undelivered}"
        );
        assert_eq!(undelivered["error_code"], "undelivered", "{undelivered}");
        assert!(
            undelivered["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("30003")),
            "{undelivered}"
        );

        // A receipt for a message this server does not know: 200, counted, nothing else.
        send_receipt(receipt(
            "SM99999999999999999999999999999999",
            "delivered",
            None,
        ))
        .await;
        assert_eq!(receipts(&app, "delivered", "applied"), 1.0);
        assert_eq!(receipts(&app, "delivered", "unknown"), 1.0);
        assert_eq!(receipts(&app, "undelivered", "applied"), 1.0);
        assert_eq!(receipts(&app, "undelivered", "ignored"), 1.0);
        assert_eq!(receipts(&app, "sent", "ignored"), 2.0);
        // A receipt Twilio did not sign changes nothing.
        let forged = [
            ("MessageSid", second_sid.as_str()),
            ("MessageStatus", "delivered"),
        ];
        let (status, _, _) =
            post_form(&app, status_path, &forged, Some("bm90IGEgc2lnbmF0dXJl")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(status_of(&app, &second).await["status"], "undelivered");
    }
}
