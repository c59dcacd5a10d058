//! JSON `$batch`: many independent requests in few envelopes, sent a few at a
//! time; items that were throttled or failed are retried alone, in later rounds
//! of their envelope, and every item keeps the history of its own attempts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Answer, Attempt, GraphClient, GraphError, GraphRequest, GraphResponse, retry_after, retryable,
};

/// One item's answer inside a `$batch` response.
#[derive(Debug, PartialEq)]
struct ItemAnswer {
    /// Its status, 0 when it had none (or not a valid HTTP code).
    status: u16,
    body: Value,
    /// Its `Retry-After`.
    after: Option<Duration>,
    /// Its `request-id`.
    request_id: Option<String>,
}

/// The envelope's `requests`: each item with its own fresh `client-request-id`,
/// so that each request (not only the envelope) can be traced in Graph's logs.
fn envelope_items(
    reqs: &[GraphRequest],
    pending: &[usize],
    crids: &HashMap<usize, String>,
) -> Vec<Value> {
    pending
        .iter()
        .map(|&i| {
            let r = &reqs[i];
            let mut item = json!({"id": i.to_string(), "method": r.method.as_str(), "url": r.path});
            let mut headers = json!({
                "client-request-id": crids.get(&i).cloned().unwrap_or_default(),
                "return-client-request-id": "true",
            });
            if let Some(b) = &r.body {
                item["body"] = b.clone();
                headers["Content-Type"] = json!("application/json");
            }
            item["headers"] = headers;
            item
        })
        .collect()
}

/// The items' answers of a `$batch` response body, by item id.
fn item_answers(body: &Value) -> HashMap<usize, ItemAnswer> {
    let mut answers = HashMap::new();
    for item in body
        .get("responses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = item
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        // A status that is not a valid HTTP code counts as no answer.
        let status = item
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0);
        let header = |n: &str| {
            item.get("headers").and_then(|h| {
                h.as_object()?
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .and_then(|(_, v)| v.as_str().map(str::to_string))
            })
        };
        answers.insert(
            id,
            ItemAnswer {
                status,
                body: item.get("body").cloned().unwrap_or(Value::Null),
                after: retry_after(header("Retry-After").as_deref()),
                request_id: header("request-id"),
            },
        );
    }
    answers
}

/// What one chunk of a batch has settled so far, over its rounds.
struct Chunk {
    started: Instant,
    round: u32,
    /// The attempts of items not settled yet.
    history: HashMap<usize, Vec<Attempt>>,
    /// Settled items and their answers.
    done: Vec<(usize, Answer)>,
}

impl GraphClient {
    /// Sends many independent requests through `$batch` (at most `batch_size` per
    /// batch, `max_concurrency` batches in flight). Answers come back in the order
    /// of `reqs`; failed items (throttled, 5xx, 424) are retried alone.
    pub async fn batch(self: &Arc<Self>, reqs: Vec<GraphRequest>) -> Vec<Answer> {
        let n = reqs.len();
        let mut results: Vec<Option<Answer>> = (0..n).map(|_| None).collect();
        let sem = Arc::new(tokio::sync::Semaphore::new(self.max_concurrency));
        let mut set = tokio::task::JoinSet::new();
        let reqs = Arc::new(reqs);
        let indices: Vec<usize> = (0..n).collect();
        for chunk in indices.chunks(self.batch_size) {
            let chunk = chunk.to_vec();
            let me = self.clone();
            let reqs = reqs.clone();
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let out = me.run_chunk(&reqs, chunk.clone()).await;
                (chunk, out)
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((_, out)) => {
                    for (i, r) in out {
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(r);
                        }
                    }
                }
                Err(e) => tracing::error!("batch task failed: {e}"),
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(GraphError::Transport("batch task failed".into()))))
            .collect()
    }

    /// Sends one chunk's items in one envelope, round after round, until every
    /// item is answered for good or out of retries.
    async fn run_chunk(
        &self,
        reqs: &[GraphRequest],
        mut pending: Vec<usize>,
    ) -> Vec<(usize, Answer)> {
        let mut chunk = Chunk {
            started: Instant::now(),
            round: 0,
            history: HashMap::new(),
            done: Vec::new(),
        };
        while !pending.is_empty() {
            chunk.round += 1;
            let crids: HashMap<usize, String> = pending
                .iter()
                .map(|&i| (i, uuid::Uuid::new_v4().to_string()))
                .collect();
            let items = envelope_items(reqs, &pending, &crids);
            if pending.iter().any(|&i| reqs[i].is_ca()) {
                self.pace_ca().await;
            }
            let envelope =
                GraphRequest::with_body(Method::POST, "/$batch", json!({"requests": items}));
            let resp = match self.call(&envelope).await {
                Ok(r) if r.ok() => r,
                Ok(r) => {
                    // The batch itself failed after retries: every item shares that answer.
                    for i in pending.drain(..) {
                        let mut attempts = chunk.history.remove(&i).unwrap_or_default();
                        attempts.extend(r.attempts.iter().cloned());
                        let status = r.status;
                        let body = r.body.clone();
                        chunk.done.push((
                            i,
                            Ok(GraphResponse {
                                status,
                                body,
                                attempts,
                            }),
                        ));
                    }
                    break;
                }
                Err(e) => {
                    chunk
                        .done
                        .extend(pending.drain(..).map(|i| (i, Err(e.clone()))));
                    break;
                }
            };
            let (again, wait) = self.settle_round(&mut chunk, &resp, pending, &crids);
            if !again.is_empty() {
                self.report(None, wait);
                tracing::info!(
                    items = again.len(),
                    wait_ms = wait.as_millis() as u64,
                    "retrying throttled or failed batch items"
                );
                tokio::time::sleep(wait).await;
            }
            pending = again;
        }
        chunk.done
    }

    /// Records each item's attempt of this round and settles it, or keeps it
    /// for another round: the items to send again and the wait before that.
    fn settle_round(
        &self,
        chunk: &mut Chunk,
        resp: &GraphResponse,
        pending: Vec<usize>,
        crids: &HashMap<usize, String>,
    ) -> (Vec<usize>, Duration) {
        let batch_request_id = resp.request_id().map(str::to_string);
        let mut answers = item_answers(&resp.body);
        let mut again = Vec::new();
        let mut wait = Duration::ZERO;
        for i in pending {
            let a = answers.remove(&i).unwrap_or(ItemAnswer {
                status: 0,
                body: Value::Null,
                after: None,
                request_id: None,
            });
            chunk.history.entry(i).or_default().push(Attempt {
                client_request_id: crids.get(&i).cloned().unwrap_or_default(),
                request_id: a.request_id,
                status: a.status,
                batched: true,
                batch_request_id: batch_request_id.clone(),
            });
            self.report(Some(a.status), Duration::ZERO);
            let retry = retryable(a.status) || a.status == 424 || a.status == 0;
            if retry && chunk.round < self.max_attempts && chunk.started.elapsed() < self.max_retry
            {
                wait = wait.max(a.after.unwrap_or_else(|| Self::backoff(chunk.round)));
                again.push(i);
            } else {
                let attempts = chunk.history.remove(&i).unwrap_or_default();
                let (status, body) = (a.status, a.body);
                chunk.done.push((
                    i,
                    Ok(GraphResponse {
                        status,
                        body,
                        attempts,
                    }),
                ));
            }
        }
        (again, wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_carry_their_own_request_id_and_a_json_body() {
        let reqs = vec![
            GraphRequest::get("/users/a"),
            GraphRequest::with_body(Method::PATCH, "/users/b", json!({"accountEnabled": false})),
        ];
        let crids = HashMap::from([(0, "c0".to_string()), (1, "c1".to_string())]);
        let items = envelope_items(&reqs, &[1, 0], &crids);
        assert_eq!(
            items[0],
            json!({"id": "1", "method": "PATCH", "url": "/users/b",
                   "body": {"accountEnabled": false},
                   "headers": {"client-request-id": "c1", "return-client-request-id": "true",
                               "Content-Type": "application/json"}})
        );
        assert_eq!(
            items[1],
            json!({"id": "0", "method": "GET", "url": "/users/a",
                   "headers": {"client-request-id": "c0", "return-client-request-id": "true"}})
        );
    }

    #[test]
    fn answers_are_read_by_id_with_headers_in_any_case() {
        let body = json!({"responses": [
            {"id": "2", "status": 429, "headers": {"retry-after": "3", "Request-Id": "r2"}},
            {"id": "0", "status": 200, "body": {"id": "a"}},
            {"id": "1", "status": 70000},
            {"id": "x", "status": 200},
        ]});
        let answers = item_answers(&body);
        assert_eq!(answers.len(), 3);
        assert_eq!(
            answers[&2],
            ItemAnswer {
                status: 429,
                body: Value::Null,
                after: Some(Duration::from_secs(3)),
                request_id: Some("r2".into()),
            }
        );
        assert_eq!(answers[&0].body, json!({"id": "a"}));
        assert_eq!(answers[&1].status, 0);
    }
}
