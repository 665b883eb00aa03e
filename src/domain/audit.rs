//! What the audit log records (SPEC §16): who did which state-changing action to what.

use uuid::Uuid;

/// A state-changing action on the service's settings or its dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CustomerCreate,
    KeyCreate,
    KeyRevoke,
    DeadLetterReplay,
    DeadLetterReplayAll,
    DeadLetterDelete,
    DeadLetterDeleteAll,
    DeadLetterPurge,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
    WebhookEndpointDelete,
    WebhookEndpointRotateSecret,
    WebhookEndpointReplay,
    AddressAdd,
    AddressRemove,
}

impl Action {
    pub const ALL: [Action; 15] = [
        Action::CustomerCreate,
        Action::KeyCreate,
        Action::KeyRevoke,
        Action::DeadLetterReplay,
        Action::DeadLetterReplayAll,
        Action::DeadLetterDelete,
        Action::DeadLetterDeleteAll,
        Action::DeadLetterPurge,
        Action::WebhookEndpointCreate,
        Action::WebhookEndpointUpdate,
        Action::WebhookEndpointDelete,
        Action::WebhookEndpointRotateSecret,
        Action::WebhookEndpointReplay,
        Action::AddressAdd,
        Action::AddressRemove,
    ];

    /// The stored (and filtered-on) name: `<resource>.<verb>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CustomerCreate => "customer.create",
            Action::KeyCreate => "key.create",
            Action::KeyRevoke => "key.revoke",
            Action::DeadLetterReplay => "dead_letter.replay",
            Action::DeadLetterReplayAll => "dead_letter.replay_all",
            Action::DeadLetterDelete => "dead_letter.delete",
            Action::DeadLetterDeleteAll => "dead_letter.delete_all",
            Action::DeadLetterPurge => "dead_letter.purge",
            Action::WebhookEndpointCreate => "webhook_endpoint.create",
            Action::WebhookEndpointUpdate => "webhook_endpoint.update",
            Action::WebhookEndpointDelete => "webhook_endpoint.delete",
            Action::WebhookEndpointRotateSecret => "webhook_endpoint.rotate_secret",
            Action::WebhookEndpointReplay => "webhook_endpoint.replay",
            Action::AddressAdd => "address.add",
            Action::AddressRemove => "address.remove",
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `key:<prefix>` (never the key), `cli:<user>` or `open`.
    pub name: String,
    /// The customer a customer's key acts for; `None` for operators.
    pub customer_id: Option<Uuid>,
}

impl Actor {
    pub fn key(prefix: &str, customer_id: Option<Uuid>) -> Self {
        Actor {
            name: format!("key:{prefix}"),
            customer_id,
        }
    }

    /// The command line, run by the operating-system user of `$USER` (or `unknown`).
    pub fn command_line() -> Self {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Actor {
            name: format!("cli:{user}"),
            customer_id: None,
        }
    }

    /// A request with `auth.required = false`: nobody in particular.
    pub fn open() -> Self {
        Actor {
            name: "open".into(),
            customer_id: None,
        }
    }
}

/// How entries name what they acted on: `<resource>:<id>`, one spelling for the API and
/// the command line, so that filtering on a target finds both.
pub mod target {
    use std::fmt::Display;

    /// Every dead letter at once (replay all, delete all, purge).
    pub const DEAD_LETTERS: &str = "dead_letters";

    pub fn dead_letter(id: i64) -> String {
        format!("dead_letter:{id}")
    }
    pub fn webhook_endpoint(id: impl Display) -> String {
        format!("webhook_endpoint:{id}")
    }
    pub fn address(id: i64) -> String {
        format!("address:{id}")
    }
    /// A key by its public prefix (`msk_…`), never the key.
    pub fn key(prefix: &str) -> String {
        format!("key:{prefix}")
    }
    pub fn customer(id: impl Display) -> String {
        format!("customer:{id}")
    }
}

/// One line of the audit log.
#[derive(Debug, Clone)]
pub struct Entry {
    pub actor: Actor,
    pub action: Action,
    /// `<resource>:<id>`, or the collection's name for an action on all of it.
    pub target: String,
    pub request_id: Option<String>,
    /// A count, a URL, a key's name: what the entry needs to be read; never a secret.
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_back_from_its_name() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        assert_eq!(Action::parse("dead_letter.explode"), None);
        let mut names: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
    }
}
