//! What tenants are told when a message fails (SPEC §16): a stable code and a short public
//! message. The raw error (a provider's body, a database's message, constraint names)
//! stays in the operators' views: dead letters, logs.

/// Why a message failed, as its customer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The provider refused the message (a 4xx, an SMTP 5xx).
    ProviderRejected,
    /// The provider could not be reached, failed or was overloaded (5xx, 429).
    ProviderUnavailable,
    /// The provider refused the recipient's address.
    InvalidRecipient,
    /// The provider did not answer in time.
    Timeout,
    /// The message cannot be sent in this form.
    InvalidMessage,
    /// The idempotency key was used for another request.
    IdempotencyKeyReused,
    /// The service could not store the message (a database outage).
    StorageUnavailable,
    /// The carrier reported it undelivered (its receipt).
    Undelivered,
    /// Anything else, on the service's side.
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::ProviderRejected,
        ErrorCode::ProviderUnavailable,
        ErrorCode::InvalidRecipient,
        ErrorCode::Timeout,
        ErrorCode::InvalidMessage,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::StorageUnavailable,
        ErrorCode::Undelivered,
        ErrorCode::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ProviderRejected => "provider_rejected",
            ErrorCode::ProviderUnavailable => "provider_unavailable",
            ErrorCode::InvalidRecipient => "invalid_recipient",
            ErrorCode::Timeout => "timeout",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Undelivered => "undelivered",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// A stored code; one this version does not know (or none, on rows older than codes)
    /// is an internal error.
    pub fn parse(stored: Option<&str>) -> Self {
        ErrorCode::ALL
            .into_iter()
            .find(|c| Some(c.as_str()) == stored)
            .unwrap_or(ErrorCode::InternalError)
    }

    /// One sentence for the customer; never the raw error.
    pub fn public_message(self) -> &'static str {
        match self {
            ErrorCode::ProviderRejected => "The provider refused the message.",
            ErrorCode::ProviderUnavailable => "The provider was unavailable.",
            ErrorCode::InvalidRecipient => "The provider refused the recipient's address.",
            ErrorCode::Timeout => "The provider did not answer in time.",
            ErrorCode::InvalidMessage => "The message cannot be sent in this form.",
            ErrorCode::IdempotencyKeyReused => {
                "The idempotency key was already used for a different request."
            }
            ErrorCode::StorageUnavailable => "The service could not store the message.",
            ErrorCode::Undelivered => "The carrier could not deliver the message.",
            ErrorCode::InternalError => "The service failed to process the message.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_internal() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(Some(code.as_str())), code);
            assert!(code.public_message().ends_with('.'));
        }
        assert_eq!(ErrorCode::parse(None), ErrorCode::InternalError);
        assert_eq!(ErrorCode::parse(Some("gone")), ErrorCode::InternalError);
    }
}
