//! Twilio's webhooks (SPEC §14): inbound SMS/MMS and delivery receipts, in Twilio's own
//! format (form-encoded, answered with TwiML). The signature was checked by
//! [`crate::http::twilio::guard`] before these run.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::messages::enqueue;
use crate::config::ProviderKind;
use crate::domain::{check_provider_id, FieldError, SmsWebhook};
use crate::http::errors::ProblemDoc as Problem;
use crate::http::twilio::SignedForm;
use crate::http::{ApiError, AppState, Caller};
use crate::store::receipts::{self, Reported};

/// Twilio's media parameters go up to `MediaUrl9`.
const MAX_MEDIA: usize = 10;

fn twiml() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body("<Response/>")
}

fn signed_form(req: &HttpRequest) -> Result<SignedForm, ApiError> {
    req.extensions()
        .get::<SignedForm>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("route has no Twilio signature guard".into()))
}

/// Receive an SMS or MMS from Twilio
///
/// Set this URL (`<public_url>/api/providers/twilio/sms`) as the "A message comes in"
/// webhook of a Twilio number. Verified by `X-Twilio-Signature`; answered with an empty
/// TwiML response once the message is queued. `MessageSid` makes it idempotent.
#[utoipa::path(
    post,
    path = "/api/providers/twilio/sms",
    operation_id = "receiveTwilioSms",
    request_body(content = ref("#/components/schemas/TwilioInbound"), content_type = "application/x-www-form-urlencoded", description = "Twilio's inbound message parameters"),
    responses(
        (status = 200, description = "Queued for the customer owning `To` (or a repeat of a queued message), or `To` is owned by no customer (stored nowhere, counted in `messaging_inbound_unrouted_total`): an empty TwiML response", body = String, content_type = "text/xml", example = json!("<Response/>")),
        (status = 400, description = "`validation-failed`: the message is not one this service can store (with `errors`, named by this service's fields)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: no valid `X-Twilio-Signature`, or Twilio is not configured (`providers.sms.kind = \"twilio\"` with `auth_token` and `public_url`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: a message with this `MessageSid` was already received with other content", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`: the body is over `server.body_limit`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable` or `queue-full`: retry later", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn inbound_sms(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let form = signed_form(&req)?;
    let owned = |name: &str| form.get(name).map(str::to_string);
    // Every `MediaUrl{n}` Twilio sent (it sends `NumMedia` of them, from 0).
    let attachments: Vec<String> = (0..MAX_MEDIA)
        .filter_map(|i| owned(&format!("MediaUrl{i}")))
        .collect();
    let message = SmsWebhook {
        from: owned("From"),
        to: owned("To"),
        r#type: Some(if attachments.is_empty() { "sms" } else { "mms" }.into()),
        messaging_provider_id: owned("MessageSid"),
        body: owned("Body"),
        attachments: Some(attachments).filter(|a| !a.is_empty()),
        ..SmsWebhook::default()
    };
    // Queued, or to an address no customer owns (counted, logged): Twilio gets its
    // answer either way, and does not send it again.
    enqueue(&state, &caller, &req, message).await?;
    Ok(twiml())
}

/// Receive a delivery receipt from Twilio
///
/// Where outbound messages ask Twilio to report their status (`StatusCallback`, set when
/// `providers.sms.public_url` is). `delivered` and `undelivered`/`failed` move a `sent`
/// message on; a receipt that comes late or for an unknown message is answered 200 and
/// counted (`messaging_delivery_receipts_total`), never retried.
#[utoipa::path(
    post,
    path = "/api/providers/twilio/status",
    operation_id = "receiveTwilioStatus",
    request_body(content = ref("#/components/schemas/TwilioStatus"), content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback parameters"),
    responses(
        (status = 200, description = "Recorded, or nothing to record: an empty TwiML response", body = String, content_type = "text/xml", example = json!("<Response/>")),
        (status = 400, description = "`validation-failed`: no `MessageSid` or `MessageStatus`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: no valid `X-Twilio-Signature`, or Twilio is not configured", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`: the body is over `server.body_limit`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is not taking writes", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn status_callback(
    state: web::Data<AppState>,
    _caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let form = signed_form(&req)?;
    let mut errors = Vec::new();
    let sid = form.get("MessageSid").unwrap_or_default();
    if let Err(problem) = check_provider_id(sid) {
        errors.push(FieldError::new("MessageSid", problem));
    }
    let status = form.get("MessageStatus").unwrap_or_default();
    if status.is_empty() {
        errors.push(FieldError::new("MessageStatus", "is required"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (label, reported) = reported(status);
    let error = form
        .get("ErrorCode")
        .filter(|code| !code.is_empty())
        // Twilio's codes are 5 digits; a longer value is not stored whole.
        .map(|code| code.chars().take(16).collect::<String>())
        .map(|code| format!("Twilio error {code} ({label})"))
        .or_else(|| (reported == Reported::Undelivered).then(|| format!("Twilio: {label}")));
    let twilio = ProviderKind::Twilio.as_str();
    let applied = receipts::record(&state.writer, twilio, sid, reported, error.as_deref()).await?;
    state.metrics.delivery_receipt(label, applied.as_str());
    tracing::info!(
        provider_message_id = sid,
        status = label,
        outcome = applied.as_str(),
        "delivery receipt"
    );
    Ok(twiml())
}

/// Twilio's `MessageStatus`, as a bounded metric label and what it means here.
fn reported(status: &str) -> (&'static str, Reported) {
    const IN_TRANSIT: [&str; 8] = [
        "accepted",
        "scheduled",
        "queued",
        "sending",
        "sent",
        "receiving",
        "received",
        "read",
    ];
    match status {
        "delivered" => ("delivered", Reported::Delivered),
        "undelivered" => ("undelivered", Reported::Undelivered),
        "failed" => ("failed", Reported::Undelivered),
        other => match IN_TRANSIT.iter().find(|s| **s == other) {
            Some(known) => (known, Reported::InTransit),
            None => ("other", Reported::InTransit),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilios_statuses_map_to_receipts_with_bounded_labels() {
        assert_eq!(reported("delivered"), ("delivered", Reported::Delivered));
        assert_eq!(
            reported("undelivered"),
            ("undelivered", Reported::Undelivered)
        );
        assert_eq!(reported("failed"), ("failed", Reported::Undelivered));
        assert_eq!(reported("sent"), ("sent", Reported::InTransit));
        assert_eq!(
            reported("x".repeat(1000).as_str()),
            ("other", Reported::InTransit)
        );
    }
}
