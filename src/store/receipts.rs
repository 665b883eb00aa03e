//! Delivery receipts (SPEC §14): what a provider later says became of a message it
//! accepted. A receipt names the message only by the provider's id; it moves a `sent`
//! message to `delivered` or `undelivered` through [`status::transition`], so a receipt that
//! comes late, twice or out of order (a `sent` after `delivered`) changes nothing.

use entity::messages;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::status::{self, MessageStatus, Which};
use super::writer::MessageWriter;
use super::StoreError;

/// What a receipt reports, in the service's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// On its way (queued, sending, sent, accepted…): nothing to record.
    InTransit,
    Delivered,
    /// Not delivered, with the provider's error.
    Undelivered,
}

/// What a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The message moved to the reported status.
    Moved,
    /// The message exists but was not moved: it already has a final status, or the
    /// receipt reports nothing final.
    Ignored,
    /// No message has this provider id.
    Unknown,
}

impl Applied {
    /// The `outcome` label of `messaging_delivery_receipts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Moved => "applied",
            Applied::Ignored => "ignored",
            Applied::Unknown => "unknown",
        }
    }
}

/// Records a receipt from `provider` (as `messages.sent_by` names it) for the message it
/// calls `provider_message_id`.
pub async fn record(
    writer: &MessageWriter,
    provider: &'static str,
    provider_message_id: &str,
    reported: Reported,
    error: Option<&str>,
) -> Result<Applied, StoreError> {
    let to = match reported {
        Reported::Delivered => MessageStatus::Delivered,
        Reported::Undelivered => MessageStatus::Undelivered,
        Reported::InTransit => return known(writer, provider, provider_message_id).await,
    };
    let moved = {
        let _turn = writer.take_turn().await;
        let result = async {
            let txn = super::begin_write(writer.connection()).await?;
            let which = Which::Receipt {
                sent_by: provider,
                provider_message_id,
                error: error.filter(|_| to == MessageStatus::Undelivered),
            };
            let moved = status::transition(&txn, which, MessageStatus::Sent, to).await?;
            txn.commit().await?;
            Ok(moved)
        }
        .await;
        writer.observe_write(&result, |moved| *moved > 0);
        result?
    };
    match moved {
        0 => known(writer, provider, provider_message_id).await,
        _ => Ok(Applied::Moved),
    }
}

/// `Ignored` when a message `provider` sent has this id, else `Unknown`.
async fn known(
    writer: &MessageWriter,
    provider: &'static str,
    provider_message_id: &str,
) -> Result<Applied, StoreError> {
    let found = messages::Entity::find()
        .select_only()
        .column(messages::Column::Id)
        .filter(status::receipted_by(provider))
        .filter(messages::Column::ProviderMessageId.eq(provider_message_id))
        .into_tuple::<i64>()
        .one(writer.connection())
        .await?;
    Ok(match found {
        Some(_) => Applied::Ignored,
        None => Applied::Unknown,
    })
}
