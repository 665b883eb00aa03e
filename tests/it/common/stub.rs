//! A provider over real HTTP, scripted by the test: each call takes the next scripted
//! answer (then the fallback), and every call is recorded.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with `{"id": ...}`
    Accept,
    /// This status, with `Retry-After: seconds` when given.
    Status(u16, Option<u64>),
    /// Answers 200 only after this long (longer than the provider timeout = a timeout).
    Slow(Duration),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub idempotency_key: String,
    pub answer: Answer,
    pub at: Instant,
}

#[derive(Default)]
struct Script {
    next: VecDeque<Answer>,
    fallback: Option<Answer>,
    calls: Vec<Call>,
}

#[derive(Clone)]
pub struct StubProvider {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl StubProvider {
    /// Starts the stub on a free port; `answers` are used in order, then `fallback`.
    pub fn start(answers: Vec<Answer>, fallback: Answer) -> Self {
        let script = Arc::new(Mutex::new(Script {
            next: answers.into(),
            fallback: Some(fallback),
            calls: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let url = format!("http://{}/messages", listener.local_addr().unwrap());
        let shared = script.clone();
        super::serve_on(listener, move |app| {
            app.app_data(web::Data::new(shared.clone()))
                .route("/messages", web::post().to(answer))
                .route("/control", web::post().to(control));
        });
        StubProvider { url, script }
    }

    /// Where another process (the browser test) changes the fallback answer: POST
    /// `{"status": 200, "delay_ms": 50}` (200 accepts, after the delay when given; any
    /// other status refuses with it).
    pub fn control_url(&self) -> String {
        self.url.replace("/messages", "/control")
    }

    pub fn set_fallback(&self, answer: Answer) {
        self.script.lock().unwrap().fallback = Some(answer);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.script.lock().unwrap().calls.clone()
    }

    /// Calls for this key that the stub accepted.
    pub fn accepted(&self, key: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| {
                c.idempotency_key == key && matches!(c.answer, Answer::Accept | Answer::Slow(_))
            })
            .count()
    }
}

#[derive(serde::Deserialize)]
struct Control {
    status: u16,
    delay_ms: Option<u64>,
}

async fn control(script: web::Data<Arc<Mutex<Script>>>, body: web::Json<Control>) -> HttpResponse {
    let answer = match (body.status, body.delay_ms) {
        (200, Some(ms)) => Answer::Slow(Duration::from_millis(ms)),
        (200, None) => Answer::Accept,
        (status, _) if actix_web::http::StatusCode::from_u16(status).is_ok() => {
            Answer::Status(status, None)
        }
        _ => return HttpResponse::BadRequest().body("status must be an HTTP status"),
    };
    script.lock().unwrap().fallback = Some(answer);
    HttpResponse::NoContent().finish()
}

async fn answer(
    script: web::Data<Arc<Mutex<Script>>>,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let key = super::header_text(req.headers(), "Idempotency-Key").to_string();
    assert_eq!(
        body["idempotency_key"],
        key.as_str(),
        "the key travels in header and body"
    );
    let answer = {
        let mut script = script.lock().unwrap();
        let answer = script
            .next
            .pop_front()
            .or(script.fallback)
            .unwrap_or(Answer::Accept);
        script.calls.push(Call {
            idempotency_key: key.clone(),
            answer,
            at: Instant::now(),
        });
        answer
    };
    match answer {
        Answer::Accept => {
            HttpResponse::Ok().json(serde_json::json!({ "id": format!("stub-{key}") }))
        }
        Answer::Slow(delay) => {
            actix_web::rt::time::sleep(delay).await;
            HttpResponse::Ok().json(serde_json::json!({ "id": format!("stub-{key}") }))
        }
        Answer::Status(status, retry_after) => {
            let mut response =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(seconds) = retry_after {
                response.insert_header(("Retry-After", seconds.to_string()));
            }
            response.body("stub says no")
        }
    }
}

/// Points the SMS provider of `settings` at `stub`, over HTTP.
pub fn use_stub(settings: &mut messaging_server::config::Settings, stub: &StubProvider) {
    settings.providers.sms.kind = messaging_server::config::ProviderKind::Http;
    settings.providers.sms.url = stub.url.clone();
}
