//! The ops console in a real browser: starts the server binary with an SMS provider (a stub
//! over HTTP) that refuses everything, so dead letters exist, then runs
//! `node tests/ui/console.test.mjs` (Playwright driving Debian's chromium), which switches
//! the stub to accepting, loads the queue, and replays a dead letter from the page.
//!
//! Needs node, `npm ci --prefix tests/ui` and chromium (`make test` installs them). The
//! screenshot goes to `UI_SCREENSHOT` when set (`UI_SCREENSHOT=docs/console.png` refreshes
//! the README's picture), else to a temporary file.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::server::ServerProcess;
use common::stub::{Answer, StubProvider};
use common::{eventually, sms};
use serde_json::Value;

async fn get_json(client: &awc::Client, url: &str, key: &str) -> (u16, Value) {
    match client.get(url).bearer_auth(key).send().await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            (status, body)
        }
        Err(_) => (0, Value::Null),
    }
}

#[actix_web::test]
async fn the_console_shows_the_queue_move_and_replays_a_dead_letter() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if !common::require_tools(&["node", "chromium", "playwright-core"]) {
        return;
    }
    let node = common::require_tool("node").unwrap();
    let chromium = common::require_tool("chromium").unwrap();
    let dir = std::env::temp_dir().join(format!("ms-console-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let stub = StubProvider::start(Vec::new(), Answer::Status(400, None));
    let server = ServerProcess::start(
        &dir,
        &[
            ("MESSAGING__PROVIDERS__SMS__KIND", "http".into()),
            ("MESSAGING__PROVIDERS__SMS__URL", stub.url.clone()),
            // One message at a time, so the load stays visible in the queue for seconds.
            ("WORKER_CONCURRENCY", "1".into()),
            ("MESSAGING__WORKER__BATCH_SIZE", "1".into()),
            ("MESSAGING__WEBHOOKS__ALLOW_PRIVATE", "true".into()),
        ],
    );
    let (base, key) = (server.url.clone(), server.key.clone());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();

    eventually(
        Duration::from_secs(30),
        "the server to be ready",
        || async { get_json(&client, &format!("{base}/readyz"), &key).await.0 == 200 },
    )
    .await;
    // A webhook endpoint nothing listens at: its deliveries fail, as the console shows.
    let closed = common::nats::free_port();
    let response = client
        .post(format!("{base}/api/webhook-endpoints"))
        .bearer_auth(&key)
        .send_json(&serde_json::json!({"url": format!("http://127.0.0.1:{closed}/hooks")}))
        .await
        .expect("the server answers");
    assert_eq!(response.status().as_u16(), 201);
    for i in 0..3 {
        let response = client
            .post(format!("{base}/api/messages/sms"))
            .bearer_auth(&key)
            .send_json(&sms(
                "+12016661234",
                "+18045551234",
                &format!("refused {i}"),
            ))
            .await
            .expect("the server answers");
        assert_eq!(response.status().as_u16(), 202);
    }
    eventually(Duration::from_secs(30), "3 dead letters", || async {
        let (_, page) = get_json(&client, &format!("{base}/api/dlq"), &key).await;
        page["meta"]["total"] == 3
    })
    .await;

    let screenshot = std::env::var("UI_SCREENSHOT")
        .map(|p| root.join(p))
        .unwrap_or_else(|_| dir.join("console.png"));
    let mut script = Command::new(node);
    script
        .arg(root.join("tests/ui/console.test.mjs"))
        .env("CONSOLE_URL", &base)
        .env("ADMIN_KEY", &key)
        .env("PROVIDER_CONTROL_URL", stub.control_url())
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", chromium);
    let stdout = server.run_client(script, "the browser test").await;

    // What the page showed is what the API says.
    let replayed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("replayed "))
        .expect("the script names the replayed message");
    let (status, answer) =
        get_json(&client, &format!("{base}/api/messages/{replayed}"), &key).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "sent", "{answer}");
    let (_, page) = get_json(&client, &format!("{base}/api/dlq"), &key).await;
    assert_eq!(
        page["meta"]["total"], 2,
        "one deleted from the page: {page}"
    );
    assert!(
        screenshot.exists(),
        "a screenshot at {}",
        screenshot.display()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
