//! The body of a webhook: `{type, timestamp, data}`, `data` being the message's status
//! resource (what `GET /api/messages/{idempotency_key}` answers) when first sent.

use entity::{messages, webhook_deliveries};
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};
use serde::Serialize;

use crate::http::routes::status::MessageStatusView;
use crate::store::progress;
use crate::store::StoreError;

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: Option<MessageStatusView>,
}

/// The JSON body of `delivery`'s event.
pub async fn render(
    db: &DatabaseConnection,
    delivery: &webhook_deliveries::Model,
) -> Result<String, StoreError> {
    let key: Option<String> = messages::Entity::find_by_id(delivery.message_id)
        .select_only()
        .column(messages::Column::IdempotencyKey)
        .into_tuple()
        .one(db)
        .await?;
    let mut data = None;
    if let Some(key) = key {
        let facts = progress::facts(db, &key, Some(delivery.customer_id)).await?;
        data = progress::resolve(&facts, None).map(|r| MessageStatusView::new(key, r));
    }
    let body = Body {
        kind: &delivery.event_type,
        timestamp: delivery
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        data,
    };
    serde_json::to_string(&body).map_err(|e| StoreError::Rejected(e.to_string()))
}
