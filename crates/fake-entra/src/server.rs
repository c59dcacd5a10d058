//! HTTP plumbing: routing, authentication, faults, the request record and `$batch`.

use crate::RecordedRequest;
use crate::Shared;
use crate::graph::{self, Ctx};
use crate::oidc;
use crate::state::{Scope, lock};
use crate::token;
use crate::util::{Body, Req, Resp, Rng, graph_error, parse_query};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// The whole fake as one fallback handler (paths like `$batch` and `$ref` do not
/// suit a route table).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move { handle(shared, method, uri, headers, body).await }
        },
    )
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn header<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let hdrs = header_pairs(&headers);
    let client_request_id = header(&hdrs, "client-request-id")
        .map(str::to_string)
        .unwrap_or_else(|| request_id.clone());
    let method = method.as_str().to_ascii_uppercase();
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);

    let mut resp = if let Some(rest) = path.strip_prefix("/v1.0/") {
        let rel = format!("/{rest}");
        if method == "POST" && rel == "/$batch" {
            batch(&shared, &hdrs, query, &body, &client_request_id).await
        } else {
            direct(&shared, method, rel, query, hdrs.clone(), &body).await
        }
    } else if let Some((tenant, endpoint)) = oidc::route(&path) {
        let call = oidc::Call {
            method: &method,
            path: &path,
            tenant,
            endpoint,
            query,
            headers: hdrs.clone(),
        };
        oidc::serve(&shared, call, &body).await
    } else if let Some(tenant) = token_path_tenant(&path) {
        token_request(
            &shared,
            &method,
            &path,
            tenant,
            query,
            hdrs.clone(),
            &body,
            &client_request_id,
        )
        .await
    } else {
        let line = format!("{method} {path}");
        let r = {
            let st = lock(&shared.state);
            st.latency_for(&line, Scope::Other)
        };
        if !r.is_zero() {
            tokio::time::sleep(r).await;
        }
        let mut st = lock(&shared.state);
        let resp = st
            .apply_faults(&line, Scope::Other, Instant::now())
            .unwrap_or_else(|| {
                let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                graph::route_not_found(&segs)
            });
        st.record(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query,
            body: Body::from_bytes(&body).recorded(),
            headers: hdrs.clone(),
            in_batch: false,
            status: resp.status,
        });
        resp
    };
    resp.stamp(&request_id, &client_request_id);
    into_http(resp, &request_id, &client_request_id)
}

/// `/{tenant}/oauth2/v2.0/token` gives `tenant`.
fn token_path_tenant(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (tenant, tail) = rest.split_once('/')?;
    (tail == "oauth2/v2.0/token" && !tenant.is_empty()).then_some(tenant)
}

fn into_http(resp: Resp, request_id: &str, client_request_id: &str) -> Response {
    let mut b = Response::builder()
        .status(resp.status)
        .header("request-id", request_id)
        .header("client-request-id", client_request_id)
        .header("x-ms-request-id", request_id);
    let mut has_cache_control = false;
    for (k, v) in &resp.headers {
        has_cache_control |= k.eq_ignore_ascii_case("cache-control");
        b = b.header(k.as_str(), v.as_str());
    }
    if !has_cache_control {
        b = b.header("Cache-Control", "no-cache");
    }
    let body = match &resp.body {
        Some(v) => {
            let ct = if resp
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                None
            } else {
                resp.content_type()
            };
            if let Some(ct) = ct {
                b = b.header("Content-Type", ct);
            }
            axum::body::Body::from(serde_json::to_vec(v).unwrap_or_default())
        }
        None => match &resp.text {
            Some(t) => axum::body::Body::from(t.clone()),
            None => axum::body::Body::empty(),
        },
    };
    b.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

#[allow(clippy::too_many_arguments)]
async fn token_request(
    shared: &Shared,
    method: &str,
    path: &str,
    path_tenant: &str,
    query: Option<String>,
    hdrs: Vec<(String, String)>,
    body: &[u8],
    client_request_id: &str,
) -> Resp {
    let line = format!("{method} {path}");
    let delay = lock(&shared.state).latency_for(&line, Scope::Other);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let form = parse_query(&String::from_utf8_lossy(body));
    let recorded: Map<String, Value> = form.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let form = token::with_basic_auth(form, header(&hdrs, "authorization"));
    let mut st = lock(&shared.state);
    let resp = if let Some(r) = st.apply_faults(&line, Scope::Other, Instant::now()) {
        r
    } else if method != "POST" {
        Resp::json(
            405,
            json!({"error": "invalid_request", "error_description": "AADSTS900561: The endpoint only accepts POST requests.", "error_codes": [900561]}),
        )
    } else {
        token::handle(
            &mut st,
            &shared.base_url,
            &shared.tenant,
            path_tenant,
            &form,
            client_request_id,
        )
        .with_header("Cache-Control", "no-store, no-cache")
        .with_header("Content-Type", "application/json; charset=utf-8")
    };
    st.record(RecordedRequest {
        method: method.to_string(),
        path: path.to_string(),
        query,
        body: Some(Value::Object(recorded)),
        headers: hdrs,
        in_batch: false,
        status: resp.status,
    });
    resp
}

/// A direct Graph request: authentication, then the shared pipeline.
async fn direct(
    shared: &Shared,
    method: String,
    rel: String,
    query: Option<String>,
    hdrs: Vec<(String, String)>,
    body: &[u8],
) -> Resp {
    let body = Body::from_bytes(body);
    let auth = lock(&shared.state).authenticate(header(&hdrs, "authorization"));
    let client_id = match auth {
        Ok(c) => c,
        Err(resp) => {
            lock(&shared.state).record(RecordedRequest {
                method,
                path: format!("/v1.0{rel}"),
                query,
                body: body.recorded(),
                headers: hdrs,
                in_batch: false,
                status: resp.status,
            });
            return resp;
        }
    };
    let req = Req {
        method,
        path: rel,
        query,
        headers: hdrs,
        body,
        client_id,
    };
    run(shared, &req, false).await
}

/// Latency, faults, the Conditional Access limit, the handler, the record.
async fn run(shared: &Shared, req: &Req, in_batch: bool) -> Resp {
    let line = format!("{} /v1.0{}", req.method, req.path);
    let delay = lock(&shared.state).latency_for(&line, Scope::Graph);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let now = Instant::now();
    let mut st = lock(&shared.state);
    let resp = if let Some(r) = st.apply_faults(&line, Scope::Graph, now) {
        r
    } else if let Some(r) = st.ca_limit(req, now) {
        r
    } else {
        match st.charge_resource_units(req, &shared.tenant, now) {
            Err(r) => r,
            Ok(units) => {
                let r = graph::dispatch(
                    &mut st,
                    req,
                    &Ctx {
                        base_url: &shared.base_url,
                        tenant: &shared.tenant,
                    },
                );
                match units {
                    Some(u) => r.with_header("x-ms-resource-unit", &u.to_string()),
                    None => r,
                }
            }
        }
    };
    st.record(RecordedRequest {
        method: req.method.clone(),
        path: format!("/v1.0{}", req.path),
        query: req.query.clone(),
        body: req.body.recorded(),
        headers: req.headers.clone(),
        in_batch,
        status: resp.status,
    });
    resp
}

/// One parsed `$batch` item.
struct Item {
    id: String,
    req: Req,
    depends_on: Vec<String>,
}

fn batch_error(msg: &str) -> Resp {
    graph_error(400, "BadRequest", msg)
}

/// Parses and validates the `$batch` body; `Err` is the 400 for the whole batch.
fn parse_batch(body: &Body, client_id: &str) -> Result<Vec<Item>, Resp> {
    let Body::Json(Value::Object(root)) = body else {
        return Err(batch_error("Invalid batch payload format."));
    };
    let Some(Value::Array(requests)) = root.get("requests") else {
        return Err(batch_error(
            "Invalid batch payload format: 'requests' array is required.",
        ));
    };
    if requests.is_empty() {
        return Err(batch_error(
            "Invalid batch payload format: 'requests' is empty.",
        ));
    }
    if requests.len() > 20 {
        return Err(batch_error(&format!(
            "The batch contains {} requests; a JSON batch is limited to 20 requests.",
            requests.len()
        )));
    }
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for r in requests {
        let Some(o) = r.as_object() else {
            return Err(batch_error(
                "Invalid batch payload format: each request must be an object.",
            ));
        };
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let (Some(id), Some(method), Some(url)) = (s("id"), s("method"), s("url")) else {
            return Err(batch_error(
                "Invalid batch payload format: each request needs string 'id', 'method' and 'url'.",
            ));
        };
        if !seen.insert(id.to_ascii_lowercase()) {
            return Err(batch_error(&format!(
                "Batch request ids must be unique; '{id}' appears twice."
            )));
        }
        let headers: Vec<(String, String)> = match o.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(h)) => h
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k.to_ascii_lowercase(), v)
                })
                .collect(),
            Some(_) => {
                return Err(batch_error(&format!(
                    "Invalid batch payload format: 'headers' of request '{id}' must be an object."
                )));
            }
        };
        let body = match o.get("body") {
            None | Some(Value::Null) => Body::None,
            Some(v) => Body::Json(v.clone()),
        };
        if !matches!(body, Body::None) && header(&headers, "content-type").is_none() {
            return Err(batch_error(&format!(
                "Request '{id}' has a body but no Content-Type header; a batch request with a body must set Content-Type in 'headers'."
            )));
        }
        let depends_on = match o.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => {
                let mut d = Vec::new();
                for x in a {
                    let Some(x) = x.as_str() else {
                        return Err(batch_error(
                            "Invalid batch payload format: 'dependsOn' must list request ids.",
                        ));
                    };
                    d.push(x.to_string());
                }
                d
            }
            Some(_) => {
                return Err(batch_error(
                    "Invalid batch payload format: 'dependsOn' must be an array.",
                ));
            }
        };
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (url, None),
        };
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        items.push(Item {
            id: id.to_string(),
            req: Req {
                method: method.to_ascii_uppercase(),
                path,
                query,
                headers,
                body,
                client_id: client_id.to_string(),
            },
            depends_on,
        });
    }
    let ids: HashSet<String> = items.iter().map(|i| i.id.to_ascii_lowercase()).collect();
    for it in &items {
        for d in &it.depends_on {
            if !ids.contains(&d.to_ascii_lowercase()) || d.eq_ignore_ascii_case(&it.id) {
                return Err(batch_error(&format!(
                    "Request '{}' depends on '{d}', which is not another request of the batch.",
                    it.id
                )));
            }
        }
    }
    Ok(items)
}

/// Execution order honouring dependsOn (request order otherwise); `None` on a cycle.
fn execution_order(items: &[Item]) -> Option<Vec<usize>> {
    let index: HashMap<String, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.to_ascii_lowercase(), i))
        .collect();
    let mut done = vec![false; items.len()];
    let mut order = Vec::new();
    while order.len() < items.len() {
        let next = (0..items.len()).find(|&i| {
            !done[i]
                && items[i]
                    .depends_on
                    .iter()
                    .all(|d| index.get(&d.to_ascii_lowercase()).is_some_and(|&j| done[j]))
        })?;
        done[next] = true;
        order.push(next);
    }
    Some(order)
}

/// Each item has its own request id, returned in the item's headers with the
/// item's `client-request-id` (the envelope's when the item has none).
fn stamp_item(mut resp: Resp, req: &Req, envelope_crid: &str) -> Resp {
    let item_crid = header(&req.headers, "client-request-id").unwrap_or(envelope_crid);
    let item_rid = uuid::Uuid::new_v4().to_string();
    resp.stamp(&item_rid, item_crid);
    resp.with_header("request-id", &item_rid)
        .with_header("client-request-id", item_crid)
}

async fn batch(
    shared: &Arc<Shared>,
    hdrs: &[(String, String)],
    query: Option<String>,
    raw: &[u8],
    client_request_id: &str,
) -> Resp {
    let _serving = shared.batches.enter();
    let body = Body::from_bytes(raw);
    let line = "POST /v1.0/$batch";
    let envelope_record = |status: u16| RecordedRequest {
        method: "POST".into(),
        path: "/v1.0/$batch".into(),
        query: query.clone(),
        body: body.recorded(),
        headers: hdrs.to_vec(),
        in_batch: false,
        status,
    };
    let auth = lock(&shared.state).authenticate(header(hdrs, "authorization"));
    let client_id = match auth {
        Ok(c) => c,
        Err(resp) => {
            lock(&shared.state).record(envelope_record(resp.status));
            return resp;
        }
    };
    let delay = lock(&shared.state).latency_for(line, Scope::Other);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let parsed = parse_batch(&body, &client_id).and_then(|items| {
        execution_order(&items)
            .map(|o| (items, o))
            .ok_or_else(|| batch_error("The dependsOn references of the batch form a cycle."))
    });
    {
        let mut st = lock(&shared.state);
        let early = match &parsed {
            Err(e) => Some(e.clone()),
            Ok(_) => st.apply_faults(line, Scope::Other, Instant::now()),
        };
        if let Some(r) = early {
            st.record(envelope_record(r.status));
            return r;
        }
        st.record(envelope_record(200));
    }
    let Ok((items, order)) = parsed else {
        return batch_error("Invalid batch payload format.");
    };
    let mut results: Vec<Option<Resp>> = vec![None; items.len()];
    let index: HashMap<String, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.to_ascii_lowercase(), i))
        .collect();
    // One after another in dependency order, or (when asked) in waves: every
    // item whose dependencies are settled runs at once.
    let parallel = lock(&shared.state).parallel_batch_items;
    let mut remaining = order;
    while !remaining.is_empty() {
        let wave: Vec<usize> = if parallel {
            remaining
                .iter()
                .copied()
                .filter(|&i| {
                    items[i].depends_on.iter().all(|d| {
                        index
                            .get(&d.to_ascii_lowercase())
                            .is_some_and(|&j| results[j].is_some())
                    })
                })
                .collect()
        } else {
            remaining.iter().copied().take(1).collect()
        };
        remaining.retain(|i| !wave.contains(i));
        let mut running = tokio::task::JoinSet::new();
        for &i in &wave {
            let it = &items[i];
            let failed_dep = it.depends_on.iter().any(|d| {
                index
                    .get(&d.to_ascii_lowercase())
                    .and_then(|&j| results[j].as_ref())
                    .is_none_or(|r| r.status >= 400)
            });
            if failed_dep {
                let r = graph_error(424, "FailedDependency", "Failed dependency.");
                lock(&shared.state).record(RecordedRequest {
                    method: it.req.method.clone(),
                    path: format!("/v1.0{}", it.req.path),
                    query: it.req.query.clone(),
                    body: it.req.body.recorded(),
                    headers: it.req.headers.clone(),
                    in_batch: true,
                    status: r.status,
                });
                results[i] = Some(stamp_item(r, &it.req, client_request_id));
            } else if parallel {
                let (sh, req) = (shared.clone(), it.req.clone());
                running.spawn(async move { (i, run(&sh, &req, true).await) });
            } else {
                let r = run(shared, &it.req, true).await;
                results[i] = Some(stamp_item(r, &it.req, client_request_id));
            }
        }
        while let Some(done) = running.join_next().await {
            if let Ok((i, r)) = done {
                results[i] = Some(stamp_item(r, &items[i].req, client_request_id));
            }
        }
    }
    let mut responses: Vec<Value> = items
        .iter()
        .zip(results)
        .map(|(it, r)| {
            let r = r.unwrap_or_else(|| graph_error(500, "generalException", "Item not executed."));
            let mut headers = Map::new();
            headers.insert("Cache-Control".into(), json!("no-cache"));
            if let Some(ct) = r.content_type() {
                headers.insert("Content-Type".into(), json!(ct));
            }
            for (k, v) in &r.headers {
                if !k.eq_ignore_ascii_case("www-authenticate") {
                    headers.insert(k.clone(), json!(v));
                }
            }
            let mut o = Map::new();
            o.insert("id".into(), json!(it.id));
            o.insert("status".into(), json!(r.status));
            o.insert("headers".into(), Value::Object(headers));
            if let Some(b) = r.body {
                o.insert("body".into(), b);
            }
            Value::Object(o)
        })
        .collect();
    shuffle(&mut responses);
    Resp::json(200, json!({"responses": responses}))
}

/// Shuffles the responses; with two or more, never leaves them in request order
/// (Graph does not promise an order, and callers must not rely on one).
fn shuffle(v: &mut [Value]) {
    if v.len() < 2 {
        return;
    }
    let original: Vec<Value> = v.to_vec();
    let mut rng = Rng::new();
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
    if v == original.as_slice() {
        v.rotate_left(1);
    }
}
