//! JSON `$batch`: many independent requests in few envelopes, sent at the
//! pace the tenant allows (see `pace`); items that were throttled or failed
//! wait out their `Retry-After` without holding a slot, then go out again
//! packed with the other items ready by then into full envelopes, and every
//! item keeps the history of its own attempts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::pace::{Answered, Start};
use super::{
    Answer, Attempt, GraphClient, GraphError, GraphRequest, GraphResponse, retry_after, retryable,
};

/// One item's answer inside a `$batch` response (by default: none).
#[derive(Debug, Default, PartialEq)]
struct ItemAnswer {
    /// Its status, 0 when it had none (or not a valid HTTP code).
    status: u16,
    body: Value,
    /// Its `Retry-After`.
    after: Option<Duration>,
    /// Its `request-id`.
    request_id: Option<String>,
    /// Its `x-ms-throttle-limit-percentage` (0..1.x).
    limit_pct: Option<f64>,
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
                limit_pct: header("x-ms-throttle-limit-percentage")
                    .and_then(|v| v.trim().parse().ok()),
            },
        );
    }
    answers
}

/// How long a partial envelope waits for held items about to be ready, so
/// that retried items from many envelopes go out together in full ones.
const FILL: Duration = Duration::from_millis(250);

/// What one envelope carried, how long it was in flight, and how Graph
/// answered it.
struct Sent {
    items: Vec<usize>,
    crids: HashMap<usize, String>,
    took: Duration,
    answer: Answer,
}

/// An envelope's place in the client's window: given back when its task ends,
/// however it ends (answered, failed, or aborted with its `batch` call).
struct InFlight(Arc<GraphClient>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut p) = self.0.pace.lock() {
            p.ended();
        }
        self.0.freed.notify_waiters();
    }
}

/// Where the items of one `batch` call stand.
struct Book {
    results: Vec<Option<Answer>>,
    /// The attempts of items not settled yet.
    history: HashMap<usize, Vec<Attempt>>,
    /// When each item was first sent (for `max_retry`).
    first: HashMap<usize, Instant>,
    /// Items ready to be sent, lowest index first.
    ready: BTreeSet<usize>,
    /// Items waiting out a `Retry-After` or a backoff, and until when.
    held: Vec<(Instant, usize)>,
}

impl GraphClient {
    /// Sends many independent requests through `$batch` (at most `batch_size`
    /// per envelope; the envelopes in flight of every call of this client
    /// together stay within the pace's window, at most `max_concurrency`).
    /// Answers come back in the order of `reqs`; failed items (throttled, 5xx,
    /// 424) are retried, packed with other ready items.
    pub async fn batch(self: &Arc<Self>, reqs: Vec<GraphRequest>) -> Vec<Answer> {
        let n = reqs.len();
        let reqs = Arc::new(reqs);
        let mut book = Book {
            results: (0..n).map(|_| None).collect(),
            history: HashMap::new(),
            first: HashMap::new(),
            ready: (0..n).collect(),
            held: Vec::new(),
        };
        let mut set = tokio::task::JoinSet::new();
        loop {
            let now = Instant::now();
            let ready = &mut book.ready;
            book.held.retain(|&(at, i)| {
                let keep = at > now;
                if !keep {
                    ready.insert(i);
                }
                keep
            });
            if book.ready.is_empty() && book.held.is_empty() && set.is_empty() {
                break;
            }
            let next_due = book.held.iter().map(|h| h.0).min();
            let mut wake = next_due;
            // Registered before the window is looked at, so that an envelope
            // of another call ending in between still wakes this one.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let mut full = false;
            if !book.ready.is_empty() {
                let take = book.ready.len().min(self.batch_size.max(1));
                let fill = if take < self.batch_size {
                    next_due.filter(|d| *d <= now + FILL)
                } else {
                    None
                };
                match self.pace_start(now, take, fill) {
                    Start::Go => {
                        let items: Vec<usize> =
                            (0..take).filter_map(|_| book.ready.pop_first()).collect();
                        for &i in &items {
                            book.first.entry(i).or_insert(now);
                        }
                        let (me, reqs) = (self.clone(), reqs.clone());
                        let slot = InFlight(self.clone());
                        set.spawn(async move {
                            let sent = me.send_envelope(&reqs, items).await;
                            drop(slot);
                            sent
                        });
                        continue;
                    }
                    Start::Full => full = true,
                    Start::At(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
                }
            }
            let joined = tokio::select! {
                j = set.join_next(), if !set.is_empty() => j,
                _ = &mut freed, if full => None,
                _ = tokio::time::sleep_until(wake.unwrap_or(now).into()), if wake.is_some() => None,
                else => None,
            };
            match joined {
                Some(Ok(sent)) => self.settle(&mut book, sent),
                Some(Err(e)) => tracing::error!("batch task failed: {e}"),
                None => {}
            }
        }
        book.results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(GraphError::Transport("batch task failed".into()))))
            .collect()
    }

    /// Whether an envelope of `items` may leave now (not before `not_before`):
    /// room in the window, and the pace's slot.
    fn pace_start(&self, now: Instant, items: usize, not_before: Option<Instant>) -> Start {
        self.pace.lock().map_or(Start::At(now + FILL), |mut p| {
            p.start(now, items, not_before)
        })
    }

    /// Sends one envelope of `items` (each with a fresh `client-request-id`).
    async fn send_envelope(&self, reqs: &[GraphRequest], items: Vec<usize>) -> Sent {
        let crids: HashMap<usize, String> = items
            .iter()
            .map(|&i| (i, uuid::Uuid::new_v4().to_string()))
            .collect();
        let body = envelope_items(reqs, &items, &crids);
        if items.iter().any(|&i| reqs[i].is_ca()) {
            self.pace_ca().await;
        }
        let envelope = GraphRequest::with_body(Method::POST, "/$batch", json!({"requests": body}));
        let left = Instant::now();
        let answer = self.call(&envelope).await;
        Sent {
            items,
            crids,
            took: left.elapsed(),
            answer,
        }
    }

    /// Records each item's attempt in this envelope and settles it, or holds
    /// it for another envelope after its wait; tells the pace what happened.
    fn settle(&self, book: &mut Book, sent: Sent) {
        let Sent {
            items,
            crids,
            took,
            answer,
        } = sent;
        let resp = match answer {
            Ok(r) if r.ok() => r,
            Ok(r) => {
                // The envelope itself failed after retries: every item shares that answer.
                for i in items {
                    let mut attempts = book.history.remove(&i).unwrap_or_default();
                    attempts.extend(r.attempts.iter().cloned());
                    book.results[i] = Some(Ok(GraphResponse {
                        status: r.status,
                        body: r.body.clone(),
                        attempts,
                    }));
                }
                return;
            }
            Err(e) => {
                for i in items {
                    book.history.remove(&i);
                    book.results[i] = Some(Err(e.clone()));
                }
                return;
            }
        };
        let now = Instant::now();
        let batch_request_id = resp.request_id().map(str::to_string);
        let mut answers = item_answers(&resp.body);
        let (mut ok, mut throttled, mut pct, mut wait) = (0, 0, None::<f64>, Duration::ZERO);
        let mut again = 0;
        let count = items.len();
        for i in items {
            let a = answers.remove(&i).unwrap_or_default();
            match a.status {
                429 => throttled += 1,
                s if s != 0 && s < 500 => ok += 1,
                _ => {}
            }
            if let Some(p) = a.limit_pct {
                pct = Some(pct.map_or(p, |q| q.max(p)));
            }
            let attempts = book.history.entry(i).or_default();
            attempts.push(Attempt {
                client_request_id: crids.get(&i).cloned().unwrap_or_default(),
                request_id: a.request_id,
                status: a.status,
                batched: true,
                batch_request_id: batch_request_id.clone(),
            });
            let tries = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
            self.report(Some(a.status), Duration::ZERO);
            let retry = retryable(a.status) || a.status == 424 || a.status == 0;
            let young = book
                .first
                .get(&i)
                .is_none_or(|t| now.duration_since(*t) < self.max_retry);
            if retry && tries < self.max_attempts && young {
                let w = a.after.unwrap_or_else(|| Self::backoff(tries));
                wait = wait.max(w);
                book.held.push((now + w, i));
                again += 1;
            } else {
                let attempts = book.history.remove(&i).unwrap_or_default();
                book.results[i] = Some(Ok(GraphResponse {
                    status: a.status,
                    body: a.body,
                    attempts,
                }));
            }
        }
        if let Ok(mut p) = self.pace.lock() {
            p.answered(
                now,
                Answered {
                    items: count,
                    ok,
                    throttled,
                    limit_pct: pct,
                    took,
                },
            );
        }
        if again > 0 {
            self.report(None, wait);
            tracing::info!(
                items = again,
                wait_ms = wait.as_millis() as u64,
                rate = self.pace.lock().ok().and_then(|p| p.rate()).unwrap_or(0.0),
                "retrying throttled or failed batch items"
            );
        }
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
            {"id": "2", "status": 429, "headers": {"retry-after": "3", "Request-Id": "r2", "x-ms-throttle-limit-percentage": "0.8"}},
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
                limit_pct: Some(0.8),
            }
        );
        assert_eq!(answers[&0].body, json!({"id": "a"}));
        assert_eq!(answers[&1].status, 0);
    }
}
