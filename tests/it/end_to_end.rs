//! Over real HTTP: send and receive, then read conversations and messages back.

use crate::common;

use actix_web::http::StatusCode;
use common::{databases, sms, spawn_app};
use serde_json::json;

#[actix_web::test]
async fn messages_sent_and_received_are_read_back_as_conversations() {
    for db in databases() {
        let app = spawn_app(db).await;
        let me = "+12016661234";
        let them = "+18045551234";

        let (status, _) = app
            .post_json("/api/messages/sms", &sms(me, them, "hello"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let mms = json!({"from": me, "to": them, "type": "mms", "body": "look",
                         "attachments": ["https://example.com/cat.png"],
                         "timestamp": "2024-11-01T14:05:00Z", "metadata": {"campaign": "fall"}});
        assert_eq!(
            app.post_json("/api/messages/sms", &mms).await.0,
            StatusCode::ACCEPTED
        );
        let reply = json!({"from": them, "to": me, "type": "sms", "messaging_provider_id": "m-1",
                           "body": "hi back", "attachments": null, "timestamp": "2024-11-01T14:10:00Z"});
        assert_eq!(
            app.post_json("/api/webhooks/sms", &reply).await.0,
            StatusCode::ACCEPTED
        );
        // The provider delivers the webhook twice: still one message.
        assert_eq!(
            app.post_json("/api/webhooks/sms", &reply).await.0,
            StatusCode::ACCEPTED
        );
        let mail = json!({"from": "user@usehatchapp.com", "to": "contact@gmail.com", "subject": "Hello",
                          "body": "<p>html</p>", "attachments": [], "timestamp": "2024-11-01T13:00:00Z"});
        assert_eq!(
            app.post_json("/api/messages/email", &mail).await.0,
            StatusCode::ACCEPTED
        );
        app.drained().await;

        let (status, page) = app.get("/api/conversations").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            page["meta"],
            json!({"page": 1, "page_size": 50, "total": 2}),
            "{db:?}"
        );
        let sms_conversation = &page["items"][0];
        assert_eq!(
            sms_conversation["channel"], "sms",
            "most recent activity first"
        );
        assert_eq!(sms_conversation["participants"], json!([me, them]));
        assert_eq!(sms_conversation["message_count"], 3);
        assert_eq!(sms_conversation["last_message_at"], "2024-11-01T14:10:00Z");
        assert_eq!(page["items"][1]["channel"], "email");

        let id = sms_conversation["id"].as_i64().unwrap();
        let (status, one) = app.get(&format!("/api/conversations/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["id"], id);

        let (status, messages) = app.get(&format!("/api/conversations/{id}/messages")).await;
        assert_eq!(status, StatusCode::OK);
        let items = messages["items"].as_array().unwrap();
        let bodies: Vec<&str> = items.iter().map(|m| m["body"].as_str().unwrap()).collect();
        assert_eq!(bodies, ["hello", "look", "hi back"], "oldest first");
        assert_eq!(items[0]["direction"], "outbound");
        assert_eq!(items[0]["status"], "sent");
        assert!(items[0]["provider_message_id"]
            .as_str()
            .unwrap()
            .starts_with("mock-"));
        assert_eq!(items[1]["channel"], "mms");
        assert_eq!(
            items[1]["attachments"],
            json!(["https://example.com/cat.png"])
        );
        assert_eq!(items[1]["metadata"], json!({"campaign": "fall"}));
        assert_eq!(items[2]["direction"], "inbound");
        assert_eq!(items[2]["status"], "received");
        assert_eq!(items[2]["provider_message_id"], "m-1");
        assert_eq!(items[2]["from"], them);

        let (status, problem) = app.get("/api/conversations/999999").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(problem["status"], 404);
        let (status, _) = app.get("/api/conversations/999999/messages").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.get("/api/conversations/not-a-number").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        app.assert_counters_match().await;
    }
}

#[actix_web::test]
async fn pages_are_sized_capped_and_ordered() {
    for db in databases() {
        let app = spawn_app(db).await;
        for i in 0..5 {
            let body = json!({"from": "+12016661234", "to": format!("+1804555000{i}"), "type": "sms",
                              "body": "hi", "timestamp": format!("2024-11-01T14:00:0{i}Z")});
            assert_eq!(
                app.post_json("/api/messages/sms", &body).await.0,
                StatusCode::ACCEPTED
            );
        }
        app.drained().await;

        let (_, page) = app.get("/api/conversations?page=2&pageSize=2").await;
        assert_eq!(
            page["meta"],
            json!({"page": 2, "page_size": 2, "total": 5}),
            "{db:?}"
        );
        let tos: Vec<&str> = common::items(&page)
            .map(|c| c["participants"][1].as_str().unwrap())
            .collect();
        assert_eq!(
            tos,
            ["+18045550002", "+18045550001"],
            "{db:?}: most recent first"
        );

        let (_, page) = app.get("/api/conversations?page_size=0").await;
        assert_eq!(page["meta"]["page_size"], 50, "0 means the default");
        let (_, page) = app.get("/api/conversations?pageSize=5000").await;
        assert_eq!(page["meta"]["page_size"], 200, "capped");
        let (_, page) = app.get("/api/conversations?page=9").await;
        assert_eq!(page["items"], json!([]));
        let (status, _) = app.get("/api/conversations?page=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = app.get("/api/conversations?pageSize=lots").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
