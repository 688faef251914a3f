//! Lists answered a page at a time, the same way by every service:
//! `?limit=` (1 to 1000, default 50) and `?after=` (the last id of the
//! previous page), answered as `{"items": […], "next_after": id}`, with
//! `next_after` null on the last page.

use serde::Serialize;

use crate::error::ApiError;
use crate::query;
use crate::{Request, Response};

/// Items on a page when the request does not say.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most items on one page.
pub const MAX_LIMIT: i64 = 1000;

/// The page a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    pub limit: i64,
    /// The id the page starts after; `None` for the first page.
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    /// Reads `limit` and `after`; `cursor` parses `after`, its error being
    /// the message of the 400.
    pub fn parse(
        request: &Request,
        cursor: impl FnOnce(&str) -> Result<C, String>,
    ) -> Result<Self, ApiError> {
        let query = request.query();
        let limit = query::integer(query, "limit", DEFAULT_LIMIT, 1..=MAX_LIMIT)
            .map_err(ApiError::BadQuery)?;
        let after = query::param(query, "after")
            .map(|text| cursor(&text))
            .transpose()
            .map_err(ApiError::BadQuery)?;
        Ok(PageRequest { limit, after })
    }

    /// Answers `items` (at most `limit`, in id order) as a page; `id` gives
    /// an item's id, the cursor of the next page.
    pub fn answer<T: Serialize, K: Serialize>(
        &self,
        items: Vec<T>,
        id: impl Fn(&T) -> K,
    ) -> Response {
        let full = items.len() as i64 == self.limit;
        let next_after = items.last().filter(|_| full).map(id);
        Response::json(200, &Page { items, next_after })
    }
}

#[derive(Serialize)]
struct Page<T, K> {
    items: Vec<T>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<K>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HttpError;

    fn parse(target: &str) -> Result<PageRequest<i64>, ApiError> {
        let request = Request::from_parts("GET", target, &[], b"");
        PageRequest::parse(&request, |text| {
            query::integer_in("after", text, 0..=i64::MAX)
        })
    }

    #[test]
    fn limits_and_cursors_are_read_and_checked() {
        assert_eq!(
            parse("/things").unwrap(),
            PageRequest {
                limit: DEFAULT_LIMIT,
                after: None
            }
        );
        assert_eq!(
            parse("/things?limit=2&after=7").unwrap(),
            PageRequest {
                limit: 2,
                after: Some(7)
            }
        );
        for bad in ["/things?limit=0", "/things?limit=1001", "/things?after=-1"] {
            assert_eq!(parse(bad).unwrap_err().code(), "invalid_query", "{bad}");
        }
    }

    #[test]
    fn a_full_page_names_the_next_and_a_short_one_does_not() {
        let page = parse("/things?limit=2").unwrap();
        let body = |response: Response| -> serde_json::Value {
            serde_json::from_slice(response.body()).unwrap()
        };
        assert_eq!(
            body(page.answer(vec![3, 5], |n| *n)),
            serde_json::json!({"items": [3, 5], "next_after": 5})
        );
        assert_eq!(
            body(page.answer(vec![3], |n| *n)),
            serde_json::json!({"items": [3], "next_after": null})
        );
    }
}
