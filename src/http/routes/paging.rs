use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::ApiError;
use crate::store::read::Page;

const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 200;
/// The last page whose offset fits in an i64 at the largest page size: one bound for
/// every page size, so that the published contract can state it.
pub const MAX_PAGE: u64 = i64::MAX as u64 / MAX_PAGE_SIZE + 1;

/// `?page=1&pageSize=50` (`page_size` accepted too).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page, counting from 1 (default 1).
    #[param(minimum = 1, maximum = 46116860184273880_u64)]
    page: Option<u64>,
    /// Items per page: 0 or absent means 50, more than 200 means 200. `page_size` is
    /// accepted too (not both).
    #[serde(rename = "pageSize", alias = "page_size")]
    #[param(minimum = 0, maximum = 18446744073709551615_u64, format = "uint64")]
    page_size: Option<u64>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let page = self.page.unwrap_or(1);
        if page == 0 {
            return Err(ApiError::BadQuery("page counts from 1".into()));
        }
        let size = match self.page_size.unwrap_or(0) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // The databases take the offset as a signed 64-bit integer; past it the SQL layer
        // panicked and the client got an empty reply.
        if page > MAX_PAGE {
            return Err(ApiError::BadQuery(format!(
                "page is too large: at most {MAX_PAGE}"
            )));
        }
        Ok(Page { page, size })
    }
}

/// Where a page is in the whole list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Meta {
    /// The page answered, counting from 1.
    #[schema(minimum = 1)]
    pub page: u64,
    /// Items per page (after the default and the cap are applied).
    #[schema(minimum = 1, maximum = 200)]
    pub page_size: u64,
    /// Items in the whole list.
    pub total: u64,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub meta: Meta,
}

impl<T> Paged<T> {
    pub fn new(items: Vec<T>, page: Page, total: u64) -> Self {
        Paged {
            items,
            meta: Meta {
                page: page.page,
                page_size: page.size,
                total,
            },
        }
    }
}

impl<T: Serialize> Paged<T> {
    /// A list route's 200: the rows and total a store list found, each row shown as `T`.
    pub fn answer<R>((rows, total): (Vec<R>, u64), page: Page) -> HttpResponse
    where
        T: From<R>,
    {
        let items = rows.into_iter().map(T::from).collect();
        HttpResponse::Ok().json(Paged::<T>::new(items, page, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(page: u64, page_size: Option<u64>) -> Result<Page, ApiError> {
        PageQuery {
            page: Some(page),
            page_size,
        }
        .page()
    }

    #[test]
    fn the_offset_always_fits_in_an_i64() {
        assert!(page(u64::MAX, None).is_err());
        assert!(page(i64::MAX as u64, Some(1)).is_err());
        for size in [None, Some(1), Some(50), Some(200), Some(u64::MAX)] {
            let last = page(MAX_PAGE, size).unwrap();
            assert!((last.page - 1).checked_mul(last.size).unwrap() <= i64::MAX as u64);
            assert!(page(MAX_PAGE + 1, size).is_err());
        }
        assert!(page(0, None).is_err());
    }

    #[test]
    fn the_documented_bound_is_the_real_one() {
        assert_eq!(MAX_PAGE, 46116860184273880);
    }
}
