//! Dead-letter operations (SPEC §3.6).

use actix_web::{web, HttpResponse};

use super::paging::{PageQuery, Paged};
use crate::actors::dlq::{Replay, ReplayAll};
use crate::http::{ApiError, AppState};
use crate::store::dead_letters;

pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let (items, total) = dead_letters::list(&state.db, page).await?;
    Ok(HttpResponse::Ok().json(Paged::new(items, page, total)))
}

pub async fn get(state: web::Data<AppState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let letter = dead_letters::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("dead letter {id}")))?;
    Ok(HttpResponse::Ok().json(letter))
}

pub async fn replay(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state.dlq.send(Replay(id)).await??;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "status": "replayed", "id": id })))
}

pub async fn replay_all(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let replayed = state.dlq.send(ReplayAll).await??;
    Ok(HttpResponse::Accepted()
        .json(serde_json::json!({ "status": "replayed", "replayed": replayed })))
}

pub async fn delete(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if dead_letters::delete(&state.db, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("dead letter {id}")))
    }
}

/// `DELETE /api/dlq` → 200.
#[derive(serde::Serialize)]
pub struct Deleted {
    /// Dead letters deleted, replayed or not.
    pub deleted: u64,
}

pub async fn delete_all(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let deleted = dead_letters::delete_all(&state.db).await?;
    Ok(HttpResponse::Ok().json(Deleted { deleted }))
}
