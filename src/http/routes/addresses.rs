//! `/api/addresses` (SPEC §16): the phone numbers and email domains a customer owns. An
//! inbound message belongs to the customer owning its `to`, whatever its body says.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::JsonObject;
use super::paging::{PageQuery, Paged};
use crate::domain::audit::{target, Action};
use crate::domain::{FieldError, OwnedAddress};
use crate::http::audit::Audit;
use crate::http::errors::ProblemDoc as Problem;
use crate::http::{ApiError, AppState, Caller};
use crate::store::addresses::{self, AddressError};

/// An address to own.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewAddress)]
pub(crate) struct NewAddressBody {
    /// A phone number in E.164, or an email domain (every address at it).
    #[schema(
        max_length = 253,
        pattern = r"^(\+[1-9][0-9]{7,14}|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)$",
        examples("+12016661234", "example.com")
    )]
    address: String,
    /// Operators name the customer; a customer's key owns for its own customer.
    #[schema(value_type = Option<String>, format = Uuid)]
    customer_id: Option<String>,
}

/// An address a customer owns.
#[derive(Serialize, ToSchema)]
#[schema(as = OwnedAddress)]
pub(crate) struct AddressView {
    id: i64,
    customer_id: Uuid,
    #[schema(inline)]
    kind: AddressKind,
    #[schema(examples("+12016661234", "example.com"))]
    address: String,
    created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum AddressKind {
    Phone,
    EmailDomain,
}

impl From<entity::addresses::Model> for AddressView {
    fn from(m: entity::addresses::Model) -> Self {
        AddressView {
            id: m.id,
            customer_id: m.customer_id,
            kind: match m.kind.as_str() {
                "phone" => AddressKind::Phone,
                _ => AddressKind::EmailDomain,
            },
            address: m.address,
            created_at: m.created_at,
        }
    }
}

impl From<AddressError> for ApiError {
    fn from(err: AddressError) -> Self {
        match err {
            AddressError::Taken(_) => ApiError::Conflict(err.to_string()),
            AddressError::Store(e) => e.into(),
        }
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("address {id}"))
}

/// Own an address
///
/// Inbound messages to it are then this customer's. An address has one owner: taken
/// already (by any customer) is a 409.
#[utoipa::path(
    post,
    path = "/api/addresses",
    operation_id = "addAddress",
    request_body(content = NewAddressBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Owned", body = AddressView, headers(("Location" = String, description = "The address"))),
        (status = 400, description = "`validation-failed` (with `errors`) or `malformed-json`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: the address is owned already", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn add(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    body: web::Json<JsonObject<NewAddressBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner().into_inner();
    let mut errors = Vec::new();
    let address = OwnedAddress::parse(&body.address)
        .map_err(|e| errors.push(FieldError::new("address", e)))
        .ok();
    let customer = match body.customer_id.as_deref().map(Uuid::parse_str) {
        None => Some(caller.customer_id),
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            errors.push(FieldError::new("customer_id", "must be a UUID"));
            None
        }
    };
    let (Some(address), Some(customer)) = (address, customer) else {
        return Err(ApiError::Validation(errors));
    };
    caller.authorize_customer(customer)?;
    state.require_customer(customer).await?;
    let row = addresses::add(&state.db, customer, &address).await?;
    tracing::info!(customer_id = %customer, address = %row.address, "address owned");
    audit
        .record(
            Action::AddressAdd,
            target::address(row.id),
            Some(format!("{} for customer {customer}", row.address)),
        )
        .await;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/addresses/{}", row.id)))
        .json(AddressView::from(row)))
}

/// List owned addresses
///
/// Oldest first. An operator's key sees every customer's.
#[utoipa::path(
    get,
    path = "/api/addresses",
    operation_id = "listAddresses",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of addresses", body = Paged<AddressView>),
        (status = 400, description = "`invalid-query`", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let rows = addresses::list(&state.db, caller.customer_scope(), page).await?;
    Ok(Paged::<AddressView>::answer(rows, page))
}

/// One owned address
#[utoipa::path(
    get,
    path = "/api/addresses/{id}",
    operation_id = "getAddress",
    params(("id" = i64, Path, description = "The address's id")),
    responses(
        (status = 200, description = "The address", body = AddressView),
        (status = 400, description = "`invalid-query`: the id is not a whole number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such address for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let row = addresses::get(&state.db, caller.customer_scope(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(AddressView::from(row)))
}

/// Give up an address
///
/// Inbound messages to it are then stored nowhere until a customer owns it again.
#[utoipa::path(
    delete,
    path = "/api/addresses/{id}",
    operation_id = "removeAddress",
    params(("id" = i64, Path, description = "The address's id")),
    responses(
        (status = 204, description = "Given up"),
        (status = 400, description = "`invalid-query`: the id is not a whole number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such address for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn remove(
    state: web::Data<AppState>,
    caller: Caller,
    audit: Audit,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let row = addresses::remove(&state.db, caller.customer_scope(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    tracing::info!(customer_id = %row.customer_id, address = %row.address, "address given up");
    audit
        .record(
            Action::AddressRemove,
            target::address(id),
            Some(format!("{} of customer {}", row.address, row.customer_id)),
        )
        .await;
    Ok(HttpResponse::NoContent().finish())
}
