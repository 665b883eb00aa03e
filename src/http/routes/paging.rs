use serde::{Deserialize, Serialize};

use crate::http::ApiError;
use crate::store::read::Page;

const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 200;

/// `?page=1&pageSize=50` (`page_size` accepted too).
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<u64>,
    #[serde(alias = "pageSize")]
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
        let fits = (page - 1)
            .checked_mul(size)
            .is_some_and(|offset| offset <= i64::MAX as u64);
        if !fits {
            return Err(ApiError::BadQuery(format!(
                "page is too large: at most {} with pageSize {size}",
                max_page(size)
            )));
        }
        Ok(Page { page, size })
    }
}

/// The largest page whose offset, `(page - 1) * size`, fits in an i64.
fn max_page(size: u64) -> u64 {
    i64::MAX as u64 / size + 1
}

#[derive(Debug, Serialize)]
pub struct Meta {
    pub page: u64,
    pub page_size: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
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
        assert!(page(i64::MAX as u64, None).is_err());
        assert!(page(i64::MAX as u64, Some(1)).is_ok());
        assert!(page(i64::MAX as u64 + 2, Some(1)).is_err());
        for size in [1, 50, 200] {
            let last = page(max_page(size), Some(size)).unwrap();
            assert_eq!((last.page - 1) * size, i64::MAX as u64 / size * size);
            assert!(page(max_page(size) + 1, Some(size)).is_err());
        }
        assert!(page(0, None).is_err());
    }
}
