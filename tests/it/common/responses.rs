//! Reading what the server answered: a response's JSON, a header, a page's items.

use actix_web::http::StatusCode;
use serde_json::Value;

/// The items of a page the API answered (`{"items": [...], "meta": {...}}`).
pub fn items(page: &Value) -> std::slice::Iter<'_, Value> {
    page["items"].as_array().expect("a page of items").iter()
}

/// The value of header `name` as text; empty when it is absent or not text.
pub fn header_text<'a>(headers: &'a actix_web::http::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// A response's status and JSON answer (a string when the answer is not JSON, null when
/// empty).
pub async fn answer_of<S>(mut response: awc::ClientResponse<S>) -> (StatusCode, Value)
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = response.status();
    let body = response.body().limit(16 * 1024 * 1024).await.expect("body");
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    (status, json)
}
