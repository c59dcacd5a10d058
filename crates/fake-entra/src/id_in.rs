//! `$filter=id in ('a','b',...)` on `GET /users`: the users among these ids,
//! as Graph v1.0 answers it without advanced query headers. Ids that match no
//! user are simply not in `value`. Graph limits an `in` to 15 values by default
//! and refuses more with 400 `Request_UnsupportedQuery`.

use crate::util::{Resp, graph_error};
use std::collections::HashSet;

/// Graph's default limit of values in one `in` expression.
pub(crate) const MAX_VALUES: usize = 15;

fn unsupported(msg: &str) -> Resp {
    graph_error(400, "Request_UnsupportedQuery", msg)
}

/// The quoted literals of `'a','b'` (quotes inside doubled), or why not.
fn literals(list: &str) -> Result<Vec<String>, Resp> {
    let invalid =
        || unsupported("Invalid filter clause: the values of 'in' must be quoted string literals.");
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let body = rest.strip_prefix('\'').ok_or_else(invalid)?;
        let mut value = String::new();
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c != '\'' {
                value.push(c);
            } else if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                value.push('\'');
                chars.next();
            } else {
                end = Some(i + 1);
                break;
            }
        }
        out.push(value);
        rest = body[end.ok_or_else(invalid)?..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err(invalid());
            }
        } else if !rest.is_empty() {
            return Err(invalid());
        }
    }
    Ok(out)
}

/// The ids (lower-cased) of a filter `id in (...)`; `None` when the filter is
/// not of that form (the caller parses it as `eq` clauses).
pub(crate) fn ids_in(filter: &str) -> Option<Result<HashSet<String>, Resp>> {
    let f = filter.trim();
    let (prop, rest) = f.split_once(char::is_whitespace)?;
    if !prop.eq_ignore_ascii_case("id") {
        return None;
    }
    let rest = rest.trim_start();
    let (op, rest) = rest.split_at_checked(2)?;
    if !op.eq_ignore_ascii_case("in") {
        return None;
    }
    let Some(list) = rest
        .trim_start()
        .strip_prefix('(')
        .and_then(|r| r.trim_end().strip_suffix(')'))
    else {
        return Some(Err(unsupported(
            "Invalid filter clause: 'in' takes a parenthesised list of values.",
        )));
    };
    Some(literals(list).and_then(|values| {
        if values.len() > MAX_VALUES {
            return Err(unsupported(&format!(
                "Too many child clauses specified in search filter expression containing 'OR' operators: {}. Max allowed: {MAX_VALUES}.",
                values.len()
            )));
        }
        Ok(values.iter().map(|v| v.to_ascii_lowercase()).collect())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(f: &str) -> Option<Result<Vec<String>, u16>> {
        ids_in(f).map(|r| {
            r.map(|s| {
                let mut v: Vec<String> = s.into_iter().collect();
                v.sort();
                v
            })
            .map_err(|e| e.status)
        })
    }

    #[test]
    fn an_id_in_list_is_read_with_doubled_quotes_and_other_filters_are_left_alone() {
        assert_eq!(
            ids("id in ('B', 'a''x')"),
            Some(Ok(vec!["a'x".to_string(), "b".into()]))
        );
        assert_eq!(ids("ID IN ('a')"), Some(Ok(vec!["a".to_string()])));
        assert_eq!(ids("id eq 'a'"), None);
        assert_eq!(ids("userPrincipalName in ('a')"), None);
        assert_eq!(ids("id in 'a'"), Some(Err(400)));
        assert_eq!(ids("id in ('a',)"), Some(Err(400)));
        assert_eq!(ids("id in ('a' 'b')"), Some(Err(400)));
        assert_eq!(ids("id in ('a)"), Some(Err(400)));
    }

    #[test]
    fn more_than_fifteen_values_are_refused() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("'u{i}'"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            ids(&format!("id in ({})", list(15))).map(|r| r.map(|v| v.len())),
            Some(Ok(15))
        );
        assert_eq!(ids(&format!("id in ({})", list(16))), Some(Err(400)));
    }
}
