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
        Ok(Page { page, size })
    }
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
