//! Listings: Graph splits a collection into pages linked by `@odata.nextLink`.
//! The client follows every link until Graph gives none, whatever the page
//! size, and tells the caller of each request so that history names them all.

use serde_json::Value;

use super::{Answer, GraphClient, GraphError, GraphRequest, GraphResponse};

/// Why a listing could not be read to its end.
#[derive(Debug, Clone)]
pub enum ListingError {
    /// A page was answered with an error status.
    Refused(GraphResponse),
    /// A page got no answer.
    Unanswered {
        /// The request, as `METHOD path`.
        request: String,
        /// Why there was no answer.
        error: GraphError,
    },
    /// Graph kept linking to further pages beyond the caller's bound.
    TooManyPages,
}

/// The path below `/v1.0` of a page's `@odata.nextLink`, when more pages follow.
fn next_path(body: &Value) -> Option<String> {
    body["@odata.nextLink"]
        .as_str()
        .and_then(|next| next.split_once("/v1.0").map(|(_, rest)| rest.to_string()))
}

/// Adds a page's items to `items`; the path of the next page, if any.
fn take_page(page: &GraphResponse, items: &mut Vec<Value>) -> Result<Option<String>, ListingError> {
    if !page.ok() {
        return Err(ListingError::Refused(page.clone()));
    }
    items.extend(page.body["value"].as_array().into_iter().flatten().cloned());
    Ok(next_path(&page.body))
}

/// Takes a page's items out of its body (a refused page is the error); the
/// path of the next page, if any: what [`GraphClient::for_each_page`] reads on from.
pub fn drain_page(mut page: GraphResponse) -> Result<(Vec<Value>, Option<String>), ListingError> {
    if !page.ok() {
        return Err(ListingError::Refused(page));
    }
    let next = next_path(&page.body);
    let items = match page.body.get_mut("value").map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    Ok((items, next))
}

impl GraphClient {
    /// Reads a listing page by page (at most `max_pages`), handing each page's
    /// items to `each` as it arrives, so that a caller keeping only what it needs
    /// never holds more than one page of Graph's JSON.
    pub async fn for_each_page(
        &self,
        path: impl Into<String>,
        max_pages: usize,
        mut record: impl FnMut(&GraphRequest, &Answer),
        mut each: impl FnMut(Vec<Value>),
    ) -> Result<(), ListingError> {
        let mut next = Some(path.into());
        let mut pages = 0;
        while let Some(path) = next {
            if pages >= max_pages {
                return Err(ListingError::TooManyPages);
            }
            let req = GraphRequest::get(path);
            let ans = self.call(&req).await;
            record(&req, &ans);
            let page = ans.map_err(|error| ListingError::Unanswered {
                request: req.describe(),
                error,
            })?;
            let (items, link) = drain_page(page)?;
            each(items);
            next = link;
            pages += 1;
        }
        Ok(())
    }

    /// Reads every item of the listing at `path` (at most `max_pages` pages);
    /// `record` is told of each request and its answer, in order.
    pub async fn get_all(
        &self,
        path: impl Into<String>,
        max_pages: usize,
        record: impl FnMut(&GraphRequest, &Answer),
    ) -> Result<Vec<Value>, ListingError> {
        let mut items = Vec::new();
        self.for_each_page(path, max_pages, record, |page| items.extend(page))
            .await?;
        Ok(items)
    }

    /// Every item of a listing whose first page was read already (in a
    /// `$batch`): its items and those of the pages it links to, at most
    /// `max_pages` pages in all; `record` is told of each further request.
    pub async fn get_rest(
        &self,
        first: &GraphResponse,
        max_pages: usize,
        record: impl FnMut(&GraphRequest, &Answer),
    ) -> Result<Vec<Value>, ListingError> {
        let mut items = Vec::new();
        if let Some(path) = take_page(first, &mut items)? {
            if max_pages <= 1 {
                return Err(ListingError::TooManyPages);
            }
            self.for_each_page(path, max_pages - 1, record, |page| items.extend(page))
                .await?;
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(status: u16, body: Value) -> GraphResponse {
        GraphResponse {
            status,
            body,
            attempts: Vec::new(),
        }
    }

    #[test]
    fn next_path_is_the_link_below_v1() {
        let body = json!({"@odata.nextLink":
            "https://graph.microsoft.com/v1.0/groups/g/members?$top=999&$skiptoken=x"});
        assert_eq!(
            next_path(&body).as_deref(),
            Some("/groups/g/members?$top=999&$skiptoken=x")
        );
        assert_eq!(next_path(&json!({"value": []})), None);
        assert_eq!(
            next_path(&json!({"@odata.nextLink": "https://elsewhere/x"})),
            None
        );
    }

    #[test]
    fn a_page_adds_its_items_and_names_the_next() {
        let mut items = vec![json!({"id": "a"})];
        let next = take_page(
            &page(
                200,
                json!({"value": [{"id": "b"}], "@odata.nextLink": "http://h/v1.0/next"}),
            ),
            &mut items,
        );
        assert_eq!(next.ok().flatten().as_deref(), Some("/next"));
        assert_eq!(items, vec![json!({"id": "a"}), json!({"id": "b"})]);
        let last = take_page(&page(200, json!({"value": [{"id": "c"}]})), &mut items);
        assert_eq!(last.ok().flatten(), None);
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn an_error_page_stops_the_listing() {
        let mut items = Vec::new();
        let err = take_page(
            &page(
                403,
                json!({"error": {"code": "Authorization_RequestDenied"}}),
            ),
            &mut items,
        );
        match err {
            Err(ListingError::Refused(r)) => assert_eq!(r.status, 403),
            other => panic!("{other:?}"),
        }
        assert!(items.is_empty());
    }
}
