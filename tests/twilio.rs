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

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::{databases, eventually, spawn_app_with, Db, TestApp};
use messaging_server::config::{ProviderKind, Secret, Settings};
use messaging_server::providers::{MockProvider, Providers};
use messaging_server::startup::Hooks;
use serde_json::{json, Value};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

/// `prism mock` of Twilio's description, on a port of its own.
struct Prism {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prism {
    async fn start() -> Option<Prism> {
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
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        eventually(Duration::from_secs(60), "prism listens", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        Some(prism)
    }

    fn messages_url(&self) -> String {
        format!("{}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", self.url)
    }

    /// The shim described at the top: Prism's URL for repeated `MediaUrl` fields.
    fn behind_shim(&self) -> String {
        let prism = self.url.clone();
        let server = HttpServer::new(move || {
            let prism = prism.clone();
            App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
                let url = format!("{prism}{}", request.uri());
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
                    let body = answer.body().await.unwrap();
                    HttpResponse::build(answer.status())
                        .content_type("application/json")
                        .body(body)
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        url
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prism log: {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn twilio(settings: &mut Settings, base_url: &str) {
    let sms = &mut settings.providers.sms;
    sms.kind = ProviderKind::Twilio;
    sms.base_url = base_url.to_string();
    sms.account_sid = ACCOUNT.to_string();
    sms.auth_token = Secret::new("0123456789abcdef0123456789abcdef");
    // A refusal is not retried: one attempt shows it.
    settings.retry.max_attempts = 3;
}

/// The app with the providers its settings name (the Twilio adapter for SMS/MMS).
async fn app_with_twilio(db: Db, base_url: &str) -> TestApp {
    let mut settings = common::test_settings("sqlite::memory:");
    twilio(&mut settings, base_url);
    let providers = Providers {
        sms: Providers::from_settings(&settings.providers).sms,
        email: Arc::new(MockProvider::new("email", &settings.providers.email)),
    };
    spawn_app_with(
        db,
        |s| twilio(s, base_url),
        Hooks {
            providers: Some(providers),
            ..Hooks::default()
        },
    )
    .await
}

/// Follows a 202's status URL until the message is sent or dead-lettered; its status.
async fn settled(app: &TestApp, accepted: &Value) -> Value {
    let url = accepted["status_url"].as_str().unwrap().to_string();
    let status_of = || async {
        let (status, body) = app.request(app.client.get(app.url(&url)), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    eventually(Duration::from_secs(30), "the message settled", || async {
        matches!(
            status_of().await["status"].as_str(),
            Some("sent" | "dead_lettered")
        )
    })
    .await;
    status_of().await
}

#[actix_web::test]
async fn sms_and_mms_reach_twilio_as_its_contract_says() {
    let Some(prism) = Prism::start().await else {
        return;
    };

    // The mock enforces the contract: without `To`, or without Basic auth, Twilio refuses.
    let client = awc::Client::default();
    let no_to = client
        .post(prism.messages_url())
        .basic_auth(ACCOUNT, "token")
        .send_form(&[("From", "+12016661234"), ("Body", "hi")])
        .await
        .unwrap();
    assert_eq!(no_to.status().as_u16(), 422);
    let no_auth = client
        .post(prism.messages_url())
        .send_form(&[
            ("To", "+18045551234"),
            ("From", "+12016661234"),
            ("Body", "hi"),
        ])
        .await
        .unwrap();
    assert_eq!(no_auth.status().as_u16(), 401);

    // The shim forwards a repeated MediaUrl in Prism's form, and nothing else changes.
    let shim = prism.behind_shim();
    let media = client
        .post(format!(
            "{shim}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        ))
        .basic_auth(ACCOUNT, "token")
        .send_form(&[
            ("To", "+18045551234"),
            ("From", "+12016661234"),
            ("Body", "hi"),
            ("MediaUrl", "https://media.example.com/a.png"),
            ("MediaUrl", "https://media.example.com/b.png"),
        ])
        .await
        .unwrap();
    assert_eq!(media.status().as_u16(), 201);

    for db in databases() {
        let app = app_with_twilio(db, &shim).await;
        let (status, sms) = app
            .post_json(
                "/api/messages/sms",
                &common::sms("+12016661234", "+18045551234", "through Twilio"),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{sms}");
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
