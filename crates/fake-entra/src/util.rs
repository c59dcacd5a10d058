//! Small helpers: UTC timestamps, query strings, Graph error bodies, the internal
//! request/response types shared by direct calls and `$batch` items.

use serde_json::{Map, Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// Content type Graph uses on successful JSON answers.
pub(crate) const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// The request body as received.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    /// No body (or an empty one).
    None,
    /// A JSON body.
    Json(Value),
    /// A body that is not JSON (kept as text for the record).
    Invalid(String),
}

impl Body {
    /// Parses raw bytes into a body.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Body {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Body::None;
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Body::Json(v),
            Err(_) => Body::Invalid(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    /// The body as it goes into the request record.
    pub(crate) fn recorded(&self) -> Option<Value> {
        match self {
            Body::None => None,
            Body::Json(v) => Some(v.clone()),
            Body::Invalid(s) => Some(Value::String(s.clone())),
        }
    }
}

/// One Graph request (direct or a `$batch` item), path relative to `/v1.0`.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    /// Upper-case method.
    pub method: String,
    /// Path below `/v1.0`, starting with `/`, still percent-encoded.
    pub path: String,
    /// Raw query string, without `?`.
    pub query: Option<String>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
    /// Application (client id) the bearer token was issued to.
    pub client_id: String,
}

impl Req {
    /// Decoded query parameters (`+` and `%xx` decoded).
    pub(crate) fn params(&self) -> Vec<(String, String)> {
        parse_query(self.query.as_deref().unwrap_or(""))
    }

    /// First value of a query parameter, the name compared case-insensitively.
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// An answer before it becomes HTTP (or a `$batch` item).
#[derive(Clone, Debug)]
pub(crate) struct Resp {
    /// Status code.
    pub status: u16,
    /// Extra headers (Content-Type is added from the body).
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// A body that is not JSON (the sign-in pages); its Content-Type is in `headers`.
    pub text: Option<String>,
}

impl Resp {
    /// A JSON answer.
    pub(crate) fn json(status: u16, body: Value) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Some(body),
            text: None,
        }
    }

    /// An answer without a body (204 and the like).
    pub(crate) fn empty(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: None,
            text: None,
        }
    }

    /// An HTML page (sign-in and error pages of the authorize endpoint).
    pub(crate) fn html(status: u16, page: String) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            body: None,
            text: Some(page),
        }
    }

    /// Adds a header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Resp {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Whether this is a Graph error body.
    pub(crate) fn is_error(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.get("error").is_some())
    }

    /// Content type for this answer.
    pub(crate) fn content_type(&self) -> Option<&'static str> {
        match &self.body {
            None => None,
            Some(_) if self.is_error() => Some("application/json"),
            Some(_) => Some(ODATA_JSON),
        }
    }

    /// Fills `innerError` of a Graph error body with the date and request ids.
    pub(crate) fn stamp(&mut self, request_id: &str, client_request_id: &str) {
        if let Some(inner) = self
            .body
            .as_mut()
            .and_then(|b| b.get_mut("error"))
            .and_then(|e| e.get_mut("innerError"))
            .and_then(Value::as_object_mut)
        {
            inner.insert("date".into(), json!(inner_error_date()));
            inner.insert("request-id".into(), json!(request_id));
            inner.insert("client-request-id".into(), json!(client_request_id));
        }
    }
}

/// A Graph error answer: `{"error": {"code", "message", "innerError": {...}}}`;
/// `innerError` is stamped with date and request ids when the answer leaves.
pub(crate) fn graph_error(status: u16, code: &str, message: &str) -> Resp {
    Resp::json(
        status,
        json!({"error": {"code": code, "message": message, "innerError": {}}}),
    )
}

/// 404 `Request_ResourceNotFound` for a directory object.
pub(crate) fn not_found(id: &str) -> Resp {
    graph_error(
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// 400 `Request_BadRequest`.
pub(crate) fn bad_request(message: &str) -> Resp {
    graph_error(400, "Request_BadRequest", message)
}

/// 405 for a known resource and an unsupported method (Graph's wording).
pub(crate) fn method_not_allowed() -> Resp {
    graph_error(
        405,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

/// 429 in Graph's documented shape.
pub(crate) fn too_many_requests() -> Resp {
    graph_error(429, "TooManyRequests", "Please retry again later.")
}

/// Decodes a query string (`a=b&c=d`) into pairs.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Percent-decodes one path segment.
pub(crate) fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `(year, month, day, hour, minute, second)` in UTC for Unix seconds.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `2024-05-07T15:39:39Z` for Unix seconds.
pub(crate) fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Now as `2024-05-07T15:39:39Z`.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

/// Now as Graph writes `innerError.date`: `2024-05-07T15:39:39`.
pub(crate) fn inner_error_date() -> String {
    let (y, mo, d, h, mi, s) = civil(unix_now());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// Now as Entra writes token error timestamps: `2024-12-27 14:53:13Z`.
pub(crate) fn aad_timestamp() -> String {
    let (y, mo, d, h, mi, s) = civil(unix_now());
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// A small xorshift generator seeded from a random UUID (no `rand` dependency).
pub(crate) struct Rng(u64);

impl Rng {
    /// A freshly seeded generator.
    pub(crate) fn new() -> Rng {
        let seed = uuid::Uuid::new_v4().as_u128();
        Rng(((seed >> 64) as u64 ^ seed as u64) | 1)
    }

    /// Next value below `n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

/// Applies a JSON merge the way Graph's PATCH does: objects merge recursively,
/// arrays and scalars given replace what was there.
pub(crate) fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match (target.get_mut(k), v) {
            (Some(Value::Object(t)), Value::Object(p)) => merge_patch(t, p),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_311_193), "2024-12-27T14:53:13Z");
    }

    #[test]
    fn merge_is_deep_for_objects_and_replaces_arrays() {
        let mut t = json!({"a": {"x": 1, "y": [1, 2]}, "b": 2});
        let p = json!({"a": {"y": [3]}, "c": null});
        merge_patch(t.as_object_mut().unwrap(), p.as_object().unwrap());
        assert_eq!(t, json!({"a": {"x": 1, "y": [3]}, "b": 2, "c": null}));
    }
}
