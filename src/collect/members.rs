//! Direct user members of every group: one `$batch` item per group, then the
//! further pages of the big ones.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::gaps::{Data, gap};
use super::{MAX_PAGES, Tally};
use crate::graph::paging::{ListingError, drain_page};
use crate::graph::{GraphClient, GraphRequest};
use crate::scan::posture::{GraphGroup, Part};

/// The user ids in a page of members (groups, devices and service principals are not users).
fn user_ids(items: Vec<Value>, into: &mut Vec<String>) {
    for item in items {
        let is_user = item
            .get("@odata.type")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "#microsoft.graph.user");
        if let (true, Some(id)) = (is_user, item.get("id").and_then(Value::as_str)) {
            into.push(id.to_string());
        }
    }
}

/// Every group's direct user members, by group id, or the gap that stopped the reading.
pub(super) async fn read(
    client: &Arc<GraphClient>,
    tally: &Tally,
    groups: &[GraphGroup],
) -> Part<HashMap<String, Vec<String>>> {
    let reqs: Vec<GraphRequest> = groups
        .iter()
        .map(|g| GraphRequest::get(format!("/groups/{}/members?$select=id&$top=999", g.id)))
        .collect();
    let answers = client.batch(reqs.clone()).await;
    let mut out = HashMap::with_capacity(groups.len());
    for ((group, req), ans) in groups.iter().zip(&reqs).zip(answers) {
        tally.record(req, &ans);
        let first = ans.map_err(|error| {
            gap(
                Data::Groups,
                &ListingError::Unanswered {
                    request: req.describe(),
                    error,
                },
            )
        })?;
        let (items, next) = drain_page(first).map_err(|e| gap(Data::Groups, &e))?;
        let mut ids = Vec::new();
        user_ids(items, &mut ids);
        // A big group's further pages: only the ids are kept, page by page.
        if let Some(next) = next {
            client
                .for_each_page(
                    next,
                    MAX_PAGES,
                    |r, a| tally.record(r, a),
                    |items| user_ids(items, &mut ids),
                )
                .await
                .map_err(|e| gap(Data::Groups, &e))?;
        }
        ids.shrink_to_fit();
        out.insert(group.id.clone(), ids);
    }
    Ok(out)
}
