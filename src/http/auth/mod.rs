//! Who is calling, and what they may do (SPEC §11). The one place that decides 401
//! (no valid credentials), 403 (a scope or customer the caller does not have) and 429
//! (over its rate limit); reads of another customer's data are 404 because handlers scope
//! their queries with [`Caller::customer_scope`].
//!
//! Each protected resource is wrapped in one of the middlewares below ([`send`],
//! [`read`], [`admin`], [`sms_webhook`], [`email_webhook`]); it runs before the body is
//! parsed, so nothing is enqueued for a refused request, and leaves a [`Caller`] in the
//! request for the handler to take as an extractor.

use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{web, Error, FromRequest, HttpMessage, HttpRequest, ResponseError};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

mod upkeep;

use super::client_ip::TrustedProxies;
use super::key_cache::{CachedKey, KeyCache, Verdict};
use super::rate_limit::{RateLimits, Subject};
use super::signature::{self, SignatureError};
use super::{ApiError, AppState};
use crate::config::{ProviderSettings, Secret, Settings};
use crate::store::keys::{PresentedKey, Scope, Scopes};

const BEARER_CHALLENGE: &str = "Bearer realm=\"messaging-server\"";
const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"messaging-server\", error=\"invalid_token\"";
const SIGNATURE_CHALLENGE: &str = "X-Messaging-Signature";

/// The authenticated party of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The customer the caller acts for when a request names none.
    pub customer_id: Uuid,
    pub scopes: Scopes,
    pub principal: Principal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An API key (its id and public prefix, never the key).
    Key { id: i64, prefix: String },
    /// A provider's signed webhook: it delivers for every customer.
    Provider(&'static str),
    /// No key, with `auth.required = false`: today's open behaviour.
    Open,
}

impl Caller {
    /// `None` when the caller sees every customer's data, else the one customer it sees.
    pub fn customer_scope(&self) -> Option<Uuid> {
        if self.all_customers() {
            None
        } else {
            Some(self.customer_id)
        }
    }

    /// 403 unless the caller may act for `customer`.
    pub fn authorize_customer(&self, customer: Uuid) -> Result<(), ApiError> {
        if self.all_customers() || customer == self.customer_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this API key cannot act for that customer_id".into(),
            ))
        }
    }

    fn all_customers(&self) -> bool {
        self.scopes.contains(Scope::Admin)
            || matches!(self.principal, Principal::Provider(_) | Principal::Open)
    }

    /// How logs name the caller.
    fn label(&self) -> String {
        match &self.principal {
            Principal::Key { id, prefix } => format!("key {id} ({prefix})"),
            Principal::Provider(p) => format!("provider {p} (signed)"),
            Principal::Open => "open (auth.required = false)".into(),
        }
    }

    /// An operator's key acts for `default_customer` when a request names none.
    fn from_key(key: &CachedKey, default_customer: Uuid) -> Self {
        Caller {
            customer_id: key.customer_id.unwrap_or(default_customer),
            scopes: key.scopes,
            principal: Principal::Key {
                id: key.id,
                prefix: key.prefix.clone(),
            },
        }
    }
}

/// Handlers take `caller: Caller`. Without one (a route nobody wrapped) the request is
/// refused: a forgotten guard fails closed.
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| ApiError::Internal("route has no authentication guard".into())),
        )
    }
}

/// Which provider's webhook a route receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Sms,
    Email,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Sms => "sms",
            Provider::Email => "email",
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Send messages and manage the customer's own settings (webhook endpoints,
    /// addresses): `send` or `admin`.
    Send,
    /// Read conversations: `read`, `send` or `admin`, scoped to the key's customer.
    Read,
    /// A message's status: whoever may send, deliver or read it (`send`, `webhook`,
    /// `read`, `admin`), scoped to the key's customer.
    Status,
    /// Dead letters, stats, the audit log: an operator's `admin`.
    Admin,
    /// A provider's webhook: its signature when it has a secret, else `webhook` or `admin`.
    Webhook(Provider),
}

impl Access {
    /// Scopes any one of which lets a key through, and how a refusal names them.
    pub fn scopes(self) -> (&'static [Scope], &'static str) {
        use Scope::*;
        match self {
            Access::Send => (&[Send, Admin], "send"),
            Access::Read => (&[Read, Send, Admin], "read or send"),
            Access::Status => (&[Send, Webhook, Read, Admin], "send, webhook or read"),
            Access::Admin => (&[Admin], "admin (an operator's key)"),
            Access::Webhook(_) => (&[Webhook, Admin], "webhook"),
        }
    }

    fn permits(self, caller: &Caller) -> Result<(), ApiError> {
        let (any_of, needs) = self.scopes();
        if any_of.iter().any(|s| caller.scopes.contains(*s)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key lacks the {needs} scope"
            )))
        }
    }
}

struct Signing {
    secret: Secret,
    tolerance: Duration,
}

impl Signing {
    fn from(settings: &ProviderSettings) -> Option<Self> {
        (!settings.webhook_secret.is_empty()).then(|| Signing {
            secret: settings.webhook_secret.clone(),
            tolerance: settings.webhook_tolerance,
        })
    }
}

/// Authentication state shared by every HTTP worker.
pub struct Auth {
    required: bool,
    default_customer: Uuid,
    body_limit: usize,
    ttl: Duration,
    keys: KeyCache,
    limits: RateLimits,
    sms_signing: Option<Signing>,
    email_signing: Option<Signing>,
    proxies: TrustedProxies,
    /// The upkeep task, until [`Auth::stop_upkeep`].
    upkeep: Mutex<Option<upkeep::Upkeep>>,
}

impl Auth {
    pub fn new(settings: &Settings, db: DatabaseConnection) -> Arc<Self> {
        Arc::new(Auth {
            required: settings.auth.required,
            default_customer: settings.api.default_customer_id,
            body_limit: settings.server.body_limit,
            ttl: settings.auth.cache_ttl,
            keys: KeyCache::new(db, settings.auth.cache_ttl),
            limits: RateLimits::new(&settings.rate_limit),
            sms_signing: Signing::from(&settings.providers.sms),
            email_signing: Signing::from(&settings.providers.email),
            proxies: TrustedProxies::new(settings.server.trusted_proxies.clone()),
            upkeep: Mutex::default(),
        })
    }

    fn signing(&self, provider: Provider) -> Option<&Signing> {
        match provider {
            Provider::Sms => self.sms_signing.as_ref(),
            Provider::Email => self.email_signing.as_ref(),
        }
    }

    /// Decides whether the request may go on, and as whom.
    async fn admit(&self, req: &mut ServiceRequest, access: Access) -> Result<Caller, ApiError> {
        let ip = self.client_ip(req);
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("client", tracing::field::display(ip));
        }
        if let Access::Webhook(provider) = access {
            if let Some(signing) = self.signing(provider) {
                return self.admit_signed(req, provider, signing, ip).await;
            }
        }
        let caller = match credentials(req.headers()) {
            Credentials::Missing if !self.required => {
                self.limits.check(&Subject::Open(ip))?;
                Caller {
                    customer_id: self.default_customer,
                    scopes: Scopes::all(),
                    principal: Principal::Open,
                }
            }
            Credentials::Missing => {
                let why = "this endpoint needs an API key: Authorization: Bearer msk_…";
                return Err(self.refuse(ip, why, BEARER_CHALLENGE));
            }
            Credentials::Malformed => {
                let why = "the Authorization header does not hold an API key (Bearer msk_…)";
                return Err(self.refuse(ip, why, INVALID_TOKEN_CHALLENGE));
            }
            Credentials::Key(key) => {
                // Only uncached keys reach the database. A key found valid costs nothing
                // (a restart does not spend clients' budgets on their first requests); a
                // refused one costs its client one request of the per-IP budget, and a
                // client over that budget gets no more look-ups until it refills.
                let verdict = self
                    .keys
                    .resolve(&key, || self.limits.may_look_up(ip))
                    .await?;
                match verdict {
                    Verdict::Valid(key) => {
                        key.mark_used();
                        self.limits.check(&Subject::Key(key.id))?;
                        Caller::from_key(&key, self.default_customer)
                    }
                    Verdict::Revoked => {
                        let why = "the API key is revoked";
                        return Err(self.refuse(ip, why, INVALID_TOKEN_CHALLENGE));
                    }
                    Verdict::Unknown => {
                        let why = "the API key is not valid";
                        return Err(self.refuse(ip, why, INVALID_TOKEN_CHALLENGE));
                    }
                }
            }
        };
        access.permits(&caller)?;
        Ok(caller)
    }

    /// A webhook of a provider with a secret: the signature over the raw body decides.
    /// The body is read here and put back for the JSON extractor, which then parses the
    /// very bytes that were verified.
    async fn admit_signed(
        &self,
        req: &mut ServiceRequest,
        provider: Provider,
        signing: &Signing,
        ip: IpAddr,
    ) -> Result<Caller, ApiError> {
        let body = super::limits::read_body(req, self.body_limit).await?;
        let header = req
            .headers()
            .get(signature::HEADER)
            // A header that is not even text is no signature.
            .map(|v| v.to_str().unwrap_or(""));
        let verified = signature::verify(
            signing.secret.expose().as_bytes(),
            header,
            &body,
            chrono::Utc::now().timestamp(),
            signing.tolerance,
        );
        if let Err(err) = verified {
            let why = match err {
                SignatureError::Missing => format!(
                    "{err}: the {} provider's webhooks must be signed",
                    provider.name()
                ),
                _ => err.to_string(),
            };
            return Err(self.refuse(ip, why, SIGNATURE_CHALLENGE));
        }
        self.limits.check(&Subject::Provider(provider.name()))?;
        req.set_payload(Payload::from(body));
        Ok(Caller {
            customer_id: self.default_customer,
            scopes: [Scope::Webhook].into_iter().collect(),
            principal: Principal::Provider(provider.name()),
        })
    }
}

fn unauthorized(detail: impl Into<String>, challenge: &'static str) -> ApiError {
    ApiError::Unauthorized {
        detail: detail.into(),
        challenge,
    }
}

enum Credentials {
    Missing,
    Malformed,
    Key(PresentedKey),
}

/// `Authorization: Bearer <key>` (the scheme is case-insensitive, RFC 9110).
fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credentials::Missing;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed;
    };
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default().trim();
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Malformed;
    }
    match PresentedKey::parse(token) {
        Some(key) => Credentials::Key(key),
        None => Credentials::Malformed,
    }
}

impl Auth {
    /// A refused credential costs its client one request of the per-IP budget: the answer
    /// is a 401, or a 429 once the client is over that budget.
    fn refuse(&self, ip: IpAddr, why: impl Into<String>, challenge: &'static str) -> ApiError {
        match self.limits.check_ip(ip) {
            Ok(()) => unauthorized(why, challenge),
            Err(over_budget) => over_budget,
        }
    }

    /// The client: the peer, or whom a trusted proxy names (see [`TrustedProxies`]).
    fn client_ip(&self, req: &ServiceRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.proxies.client(peer, req.headers())
    }
}

/// The middleware of every route that takes keys (or a provider's signature): `access`
/// says which (see `routes::Guard`).
pub async fn guard<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
    access: Access,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let auth = match req.app_data::<web::Data<AppState>>() {
        Some(state) => state.auth.clone(),
        None => {
            let err = ApiError::Internal("no application state".into());
            return Ok(req.into_response(err.error_response()));
        }
    };
    match auth.admit(&mut req, access).await {
        Ok(caller) => {
            let span = tracing::Span::current();
            if !span.is_disabled() {
                span.record("caller", caller.label());
            }
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Err(err) => {
            tracing::debug!(status = err.status_code().as_u16(), reason = %err, "request refused");
            Ok(req.into_response(err.error_response()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn bearer_credentials_are_parsed_strictly() {
        let key = format!("msk_{}", "0f".repeat(32));
        assert!(matches!(
            credentials(&HeaderMap::new()),
            Credentials::Missing
        ));
        for ok in [
            format!("Bearer {key}"),
            format!("bearer {key}"),
            format!("BEARER  {key} "),
        ] {
            assert!(
                matches!(credentials(&with_authorization(&ok)), Credentials::Key(_)),
                "{ok}"
            );
        }
        for bad in [
            key.clone(),
            format!("Basic {key}"),
            "Bearer".to_string(),
            "Bearer msk_short".to_string(),
            format!("Bearer {key} extra"),
        ] {
            assert!(
                matches!(
                    credentials(&with_authorization(&bad)),
                    Credentials::Malformed
                ),
                "{bad}"
            );
        }
    }

    fn caller(scopes: &[Scope], principal: Principal) -> Caller {
        Caller {
            customer_id: Uuid::from_u128(1),
            scopes: scopes.iter().copied().collect(),
            principal,
        }
    }

    #[test]
    fn scopes_decide_each_kind_of_route() {
        let key = || Principal::Key {
            id: 1,
            prefix: "msk_00000000".into(),
        };
        let send = caller(&[Scope::Send], key());
        let webhook = caller(&[Scope::Webhook], key());
        let read = caller(&[Scope::Read], key());
        let admin = caller(&[Scope::Admin], key());
        let sms = Access::Webhook(Provider::Sms);
        for (access, allowed) in [
            (Access::Send, [true, false, false, true]),
            (Access::Read, [true, false, true, true]),
            (Access::Status, [true, true, true, true]),
            (Access::Admin, [false, false, false, true]),
            (sms, [false, true, false, true]),
        ] {
            for (caller, allowed) in [&send, &webhook, &read, &admin].into_iter().zip(allowed) {
                assert_eq!(
                    access.permits(caller).is_ok(),
                    allowed,
                    "{access:?} for {:?}",
                    caller.scopes
                );
            }
        }
    }

    #[test]
    fn customers_are_scoped_unless_admin_provider_or_open() {
        let other = Uuid::from_u128(2);
        let key = Principal::Key {
            id: 1,
            prefix: "msk_00000000".into(),
        };
        let send = caller(&[Scope::Send], key.clone());
        assert_eq!(send.customer_scope(), Some(Uuid::from_u128(1)));
        assert!(send.authorize_customer(Uuid::from_u128(1)).is_ok());
        assert!(matches!(
            send.authorize_customer(other),
            Err(ApiError::Forbidden(_))
        ));
        for everyone in [
            caller(&[Scope::Admin], key),
            caller(&[Scope::Webhook], Principal::Provider("sms")),
            caller(&[], Principal::Open),
        ] {
            assert_eq!(everyone.customer_scope(), None);
            assert!(everyone.authorize_customer(other).is_ok());
        }
    }
}
