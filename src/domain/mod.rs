//! The domain: validated values and the normalized event. No I/O here; the HTTP
//! layer, queue and workers all speak these types.

pub mod address;
pub mod audit;
pub mod error;
pub mod error_code;
pub mod event;
pub mod idempotency;
pub mod message;
pub mod request;
pub mod text;

pub use address::{Address, EmailAddress, OwnedAddress, PhoneNumber};
pub use error::{FieldError, ValidationErrors};
pub use error_code::ErrorCode;
pub(crate) use event::check_provider_id;
pub use event::{Event, SCHEMA_VERSION};
pub use idempotency::IdempotencyKey;
pub use message::{Attachments, Channel, Direction, MessageBody, Subject};
pub use request::{Accept, EmailWebhook, IntoEvent, SendEmail, SendSms, SmsWebhook};
