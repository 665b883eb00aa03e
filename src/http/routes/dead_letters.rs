//! Dead-letter operations (SPEC §3.6).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

use super::paging::{PageQuery, Paged};
use crate::actors::dlq::{Replay, ReplayAll};
use crate::actors::ErrorKind;
use crate::domain::audit::{target, Action};
use crate::http::audit::Audit;
use crate::http::errors::ProblemDoc as Problem;
use crate::http::openapi::string_enum;
use crate::http::{ApiError, AppState};
use crate::store::dead_letters;

/// An event that exhausted its retries or failed permanently.
#[derive(Serialize, ToSchema)]
#[schema(as = DeadLetter)]
pub(crate) struct DeadLetterView {
    id: i64,
    /// The event as it was queued (schema_version 1, SPEC §4).
    #[schema(value_type = Object)]
    event: serde_json::Value,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    idempotency_key: String,
    #[schema(minimum = 0)]
    attempts: i32,
    first_attempt_at: DateTime<Utc>,
    last_attempt_at: DateTime<Utc>,
    last_error: String,
    #[schema(schema_with = error_kind)]
    error_kind: String,
    dead_at: DateTime<Utc>,
    /// When it was replayed; null until then.
    replayed_at: Option<DateTime<Utc>>,
}

fn error_kind() -> Object {
    string_enum(
        "ErrorKind",
        [ErrorKind::Transient, ErrorKind::Permanent].map(ErrorKind::as_str),
        "`transient` (retries exhausted) or `permanent`.",
    )
}

impl From<entity::dead_letters::Model> for DeadLetterView {
    fn from(m: entity::dead_letters::Model) -> Self {
        DeadLetterView {
            id: m.id,
            event: m.event,
            idempotency_key: m.idempotency_key,
            attempts: m.attempts,
            first_attempt_at: m.first_attempt_at,
            last_attempt_at: m.last_attempt_at,
            last_error: m.last_error,
            error_kind: m.error_kind,
            dead_at: m.dead_at,
            replayed_at: m.replayed_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ReplayedStatus {
    Replayed,
}

/// The dead letter's event is queued again.
#[derive(Serialize, ToSchema)]
pub(crate) struct Replayed {
    status: ReplayedStatus,
    /// The dead letter replayed.
    id: i64,
}

/// The dead letters not replayed yet are queued again.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReplayedAll {
    status: ReplayedStatus,
    /// How many were queued.
    #[schema(minimum = 0)]
    replayed: u64,
}

/// List dead letters
///
/// Newest first.
#[utoipa::path(
    get,
    path = "/api/dlq",
    operation_id = "listDeadLetters",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of dead letters", body = Paged<DeadLetterView>),
        (status = 400, description = "`invalid-query`: page or pageSize is not a whole number, or page is 0 or too large", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let rows = dead_letters::list(&state.db, page).await?;
    Ok(Paged::<DeadLetterView>::answer(rows, page))
}

/// One dead letter
#[utoipa::path(
    get,
    path = "/api/dlq/{id}",
    operation_id = "getDeadLetter",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterView),
        (status = 400, description = "`invalid-query`: the id is not a whole number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such dead letter", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get(state: web::Data<AppState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let letter = dead_letters::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("dead letter {id}")))?;
    Ok(HttpResponse::Ok().json(DeadLetterView::from(letter)))
}

/// Replay a dead letter
///
/// Queues its event again (attempts start over); a dead letter is replayed once.
#[utoipa::path(
    post,
    path = "/api/dlq/{id}/replay",
    operation_id = "replayDeadLetter",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses(
        (status = 202, description = "Queued again", body = Replayed),
        (status = 400, description = "`invalid-query`: the id is not a whole number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: already replayed, or its event cannot be read back", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn replay(
    state: web::Data<AppState>,
    audit: Audit,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state.dlq.send(Replay(id)).await??;
    audit
        .record(Action::DeadLetterReplay, target::dead_letter(id), None)
        .await;
    Ok(HttpResponse::Accepted().json(Replayed {
        status: ReplayedStatus::Replayed,
        id,
    }))
}

/// Replay every dead letter
///
/// Queues again the events of all dead letters not replayed yet.
#[utoipa::path(
    post,
    path = "/api/dlq/replay",
    operation_id = "replayAllDeadLetters",
    responses(
        (status = 202, description = "Queued again", body = ReplayedAll),
    ),
)]
pub async fn replay_all(
    state: web::Data<AppState>,
    audit: Audit,
) -> Result<HttpResponse, ApiError> {
    let replayed = state.dlq.send(ReplayAll).await??;
    audit
        .record(
            Action::DeadLetterReplayAll,
            target::DEAD_LETTERS,
            Some(format!("{replayed} replayed")),
        )
        .await;
    Ok(HttpResponse::Accepted().json(ReplayedAll {
        status: ReplayedStatus::Replayed,
        replayed,
    }))
}

/// Delete a dead letter
#[utoipa::path(
    delete,
    path = "/api/dlq/{id}",
    operation_id = "deleteDeadLetter",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid-query`: the id is not a whole number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such dead letter", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn delete(
    state: web::Data<AppState>,
    audit: Audit,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if dead_letters::delete(&state.db, id).await? {
        audit
            .record(Action::DeadLetterDelete, target::dead_letter(id), None)
            .await;
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("dead letter {id}")))
    }
}

/// How many dead letters were deleted.
#[derive(serde::Serialize, ToSchema)]
pub struct Deleted {
    /// Dead letters deleted, replayed or not.
    pub deleted: u64,
}

/// Delete every dead letter
///
/// Replayed or not; their events cannot be replayed afterwards.
#[utoipa::path(
    delete,
    path = "/api/dlq",
    operation_id = "deleteDeadLetters",
    responses((status = 200, description = "Deleted", body = Deleted)),
)]
pub async fn delete_all(
    state: web::Data<AppState>,
    audit: Audit,
) -> Result<HttpResponse, ApiError> {
    let deleted = dead_letters::delete_all(&state.db).await?;
    audit
        .record(
            Action::DeadLetterDeleteAll,
            target::DEAD_LETTERS,
            Some(format!("{deleted} deleted")),
        )
        .await;
    Ok(HttpResponse::Ok().json(Deleted { deleted }))
}
