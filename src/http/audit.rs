//! The audit log's hand in the handlers (SPEC §16): a handler that changes settings or
//! dead letters takes an [`Audit`] and records what it did once the change is made.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use sea_orm::DatabaseConnection;

use super::auth::{Caller, Principal};
use super::hygiene::RequestId;
use super::{ApiError, AppState};
use crate::domain::audit::{Action, Actor, Entry};
use crate::store::audit;

/// Who is acting in this request, and where to record it.
pub struct Audit {
    db: DatabaseConnection,
    actor: Actor,
    request_id: Option<String>,
}

impl Audit {
    /// Appends the entry. The change it records is already committed, so a failure to
    /// record cannot undo it: it is logged with the whole entry (the log then holds the
    /// record) rather than turned into an error the client would retry.
    pub async fn record(&self, action: Action, target: impl Into<String>, detail: Option<String>) {
        let entry = Entry {
            actor: self.actor.clone(),
            action,
            target: target.into(),
            request_id: self.request_id.clone(),
            detail,
        };
        if let Err(err) = audit::record(&self.db, &entry).await {
            tracing::error!(
                audit_unrecorded = true,
                actor = %entry.actor.name,
                action = entry.action.as_str(),
                target = %entry.target,
                detail = entry.detail.as_deref().unwrap_or(""),
                error = %err,
                "an action could not be written to the audit log"
            );
        }
    }
}

fn actor_of(caller: &Caller) -> Actor {
    match &caller.principal {
        Principal::Key { prefix, .. } => Actor::key(prefix, caller.customer_scope()),
        // Audited routes never take a provider's signature; named all the same.
        Principal::Provider(name) => Actor {
            name: format!("provider:{name}"),
            customer_id: None,
        },
        Principal::Open => Actor::open(),
    }
}

impl FromRequest for Audit {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let extensions = req.extensions();
        let (Some(caller), Some(state)) = (
            extensions.get::<Caller>(),
            req.app_data::<web::Data<AppState>>(),
        ) else {
            return ready(Err(ApiError::Internal(
                "an audited route has no authentication guard".into(),
            )));
        };
        ready(Ok(Audit {
            db: state.db.clone(),
            actor: actor_of(caller),
            request_id: extensions.get::<RequestId>().map(|id| id.0.clone()),
        }))
    }
}
