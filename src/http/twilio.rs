//! Twilio's webhooks (SPEC §14): inbound messages and delivery receipts, authenticated by
//! `X-Twilio-Signature` as Twilio computes it (its "Webhooks security" page): the base64
//! HMAC-SHA1, keyed with the account's auth token, of the full URL Twilio called followed
//! by every POST parameter's name and value, sorted by name. The URL is the one configured
//! in Twilio's console, so it is built from `providers.sms.public_url`, not from what a
//! proxy in between makes of the request.
//!
//! The [`guard`] runs before the handler: it reads the form body, verifies it, and leaves
//! the verified parameters ([`SignedForm`]) for the handler. A wrong or missing signature
//! is a 403 and the request goes no further.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, ResponseError};
use base64::Engine;
use ring::hmac;

use super::auth::{Caller, Principal};
use super::limits::read_body;
use super::{ApiError, AppState};
use crate::store::keys::Scope;

pub const HEADER: &str = "X-Twilio-Signature";

/// The signature Twilio sends for a form `params` posted to `url`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, &signed_text(url, params)))
}

/// Whether `header` is the signature of `params` posted to `url`. Twilio's own validators
/// also accept the URL with its default port written out or left out (Twilio signs what
/// the console holds), so both forms are tried.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(presented) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    url_forms(url).iter().any(|url| {
        // Constant-time comparison.
        hmac::verify(&key, &signed_text(url, params), &presented).is_ok()
    })
}

/// The URL followed by the parameters' names and values, sorted by name (and by value among
/// repeated names, as Twilio's libraries do).
fn signed_text(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut text = url.as_bytes().to_vec();
    for (name, value) in sorted {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(value.as_bytes());
    }
    text
}

/// `url` as given, and with its scheme's default port written out and left out.
fn url_forms(url: &str) -> Vec<String> {
    let mut forms = vec![url.to_string()];
    if let Ok(parsed) = url::Url::parse(url) {
        // The parser leaves a scheme's default port out (`:443` is dropped).
        let without = parsed.to_string();
        let with = match (
            parsed.port(),
            parsed.port_or_known_default(),
            parsed.host_str(),
        ) {
            (None, Some(port), Some(host)) => {
                Some(without.replacen(host, &format!("{host}:{port}"), 1))
            }
            _ => None,
        };
        for form in [Some(without), with].into_iter().flatten() {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms
}

/// The parameters of a form-encoded body, in order.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The parameters of a request whose signature was verified.
#[derive(Debug, Clone)]
pub struct SignedForm(pub Vec<(String, String)>);

impl SignedForm {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Guard of Twilio's webhook routes: only a request Twilio signed passes.
pub async fn guard<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    match admit(&mut req).await {
        Ok((caller, form)) => {
            req.extensions_mut().insert(caller);
            req.extensions_mut().insert(form);
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Err(err) => {
            tracing::info!(path = req.path(), reason = %err, "Twilio webhook refused");
            Ok(req.into_response(err.error_response()))
        }
    }
}

async fn admit(req: &mut ServiceRequest) -> Result<(Caller, SignedForm), ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(ApiError::Internal("no application state".into()));
    };
    let sms = &state.settings.providers.sms;
    if sms.auth_token.is_empty() || sms.public_url.is_empty() {
        return Err(ApiError::Forbidden(
            "Twilio webhooks are not accepted: providers.sms needs kind = \"twilio\", its auth_token and public_url".into(),
        ));
    }
    let body = read_body(req, state.settings.server.body_limit).await?;
    let url = format!(
        "{}{}",
        sms.public_url.trim_end_matches('/'),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(req.path())
    );
    let signature = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if signature.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "the {HEADER} header is missing"
        )));
    }
    let params = form(&body);
    if !verify(sms.auth_token.expose(), &url, &params, signature) {
        return Err(ApiError::Forbidden(format!(
            "the {HEADER} header does not match this request (signed over {url})"
        )));
    }
    let caller = Caller {
        customer_id: state.settings.api.default_customer_id,
        scopes: [Scope::Webhook].into_iter().collect(),
        principal: Principal::Provider("twilio"),
    };
    Ok((caller, SignedForm(params)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The example of Twilio's "Webhooks security" page: its token, URL, parameters and
    /// the signature it gives for them.
    #[test]
    fn twilios_documented_example_verifies() {
        let token = "12345";
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let form = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(sign(token, url, &form), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify(token, url, &form, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        // The same URL with the default port written out, as some consoles hold it.
        assert!(verify(
            token,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &form,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let token = "12345";
        let url = "https://msg.example.com/api/providers/twilio/sms";
        let form = params(&[("Body", "hi"), ("From", "+12015550123")]);
        let good = sign(token, url, &form);
        assert!(verify(token, url, &form, &good));
        let tampered = params(&[("Body", "hi!"), ("From", "+12015550123")]);
        assert!(!verify(token, url, &tampered, &good));
        assert!(!verify("54321", url, &form, &good));
        assert!(!verify(
            token,
            "https://evil.example.com/api/providers/twilio/sms",
            &form,
            &good
        ));
        assert!(!verify(token, url, &form, "not base64 at all!"));
        assert!(!verify(token, url, &form, ""));
    }

    #[test]
    fn parameters_are_signed_in_name_order_whatever_order_they_came_in() {
        let url = "https://msg.example.com/x";
        let a = params(&[("To", "1"), ("Body", "b"), ("MediaUrl0", "u")]);
        let b = params(&[("Body", "b"), ("MediaUrl0", "u"), ("To", "1")]);
        assert_eq!(sign("t", url, &a), sign("t", url, &b));
    }
}
