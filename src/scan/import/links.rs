//! Users named in a scanner's markdown: Entra portal links ending in
//! `.../userId/<guid>` (Maester and the Zero Trust Assessment both write them),
//! the link text as display name, and the UPN from the same table row when the
//! table has a UPN column.

use crate::text::{clip, is_guid};

/// One user link found in markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UserLink {
    /// The object id, lower case.
    pub id: String,
    /// The link text, or the row's display-name cell when the link text is the UPN.
    pub display_name: String,
    /// The UPN from the row's UPN column, when the row is in a table that has one.
    pub upn: Option<String>,
}

/// A link whose `userId/` is not a GUID, and the 1-based markdown line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LinkError {
    /// 1-based line within the markdown.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Every user link in `md`, in order (repeats included).
pub(super) fn user_links(md: &str) -> Result<Vec<UserLink>, LinkError> {
    let lines: Vec<&str> = md.lines().collect();
    let mut out = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if !t.starts_with('|') {
            header = None;
            for link in links(t) {
                if let Some(id) = user_id(link.url, i + 1)? {
                    out.push(UserLink {
                        id,
                        display_name: link.text.trim().to_string(),
                        upn: None,
                    });
                }
            }
            continue;
        }
        if is_separator(t) {
            continue;
        }
        let next_is_separator = lines.get(i + 1).is_some_and(|n| is_separator(n.trim()));
        if next_is_separator {
            header = Some(cells(t).iter().map(|c| norm(c)).collect());
            continue;
        }
        row_links(&cells(t), header.as_deref(), i + 1, &mut out)?;
    }
    Ok(out)
}

fn row_links(
    row: &[&str],
    header: Option<&[String]>,
    line: usize,
    out: &mut Vec<UserLink>,
) -> Result<(), LinkError> {
    let col =
        |names: &[&str]| header.and_then(|h| h.iter().position(|c| names.contains(&c.as_str())));
    let upn_col = col(&["upn", "userprincipalname"]);
    let name_col = col(&[
        "displayname",
        "name",
        "username",
        "user",
        "owner",
        "ownername",
    ]);
    for (idx, cell) in row.iter().enumerate() {
        for link in links(cell) {
            let Some(id) = user_id(link.url, line)? else {
                continue;
            };
            let text = link.text.trim().to_string();
            let (display_name, upn) = if Some(idx) == upn_col {
                let name = name_col
                    .and_then(|c| row.get(c))
                    .map(|c| cell_text(c))
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| text.clone());
                (name, Some(text).filter(|t| looks_like_upn(t)))
            } else {
                let upn = upn_col
                    .and_then(|c| row.get(c))
                    .map(|c| cell_text(c))
                    .filter(|u| looks_like_upn(u));
                (text, upn)
            };
            out.push(UserLink {
                id,
                display_name,
                upn,
            });
        }
    }
    Ok(())
}

struct Link<'a> {
    text: &'a str,
    url: &'a str,
}

/// `[text](url)` links in one line (no nesting, as the scanners write them).
fn links(s: &str) -> Vec<Link<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let tail = &after[close + 1..];
        if let Some(url_part) = tail.strip_prefix('(')
            && let Some(end) = url_part.find(')')
        {
            out.push(Link {
                text: &after[..close],
                url: &url_part[..end],
            });
            rest = &url_part[end + 1..];
            continue;
        }
        rest = after;
    }
    out
}

/// The GUID after `/userId/` in a portal URL; None for other links.
fn user_id(url: &str, line: usize) -> Result<Option<String>, LinkError> {
    let Some(at) = url.find("/userId/") else {
        return Ok(None);
    };
    let tail = &url[at + "/userId/".len()..];
    let end = tail
        .find(|c: char| matches!(c, '/' | '?' | '#' | '&') || c.is_whitespace())
        .unwrap_or(tail.len());
    let id = &tail[..end];
    if is_guid(id) {
        Ok(Some(id.to_ascii_lowercase()))
    } else {
        Err(LinkError {
            line,
            message: format!(
                "user link {:?} has userId {:?}, which is not a GUID",
                clip(url, 200),
                clip(id, 80)
            ),
        })
    }
}

/// Cells of a table row, outer pipes removed (an escaped `\|` stays in its cell).
fn cells(row: &str) -> Vec<&str> {
    let inner = row.strip_prefix('|').unwrap_or(row);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = inner.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'|' && (i == 0 || bytes[i - 1] != b'\\') {
            out.push(inner[start..i].trim());
            start = i + 1;
        }
    }
    out.push(inner[start..].trim());
    out
}

/// `| --- | :--: |`
fn is_separator(line: &str) -> bool {
    line.starts_with('|')
        && cells(line).iter().all(|c| {
            let c = c.trim_matches(':');
            !c.is_empty() && c.chars().all(|ch| ch == '-')
        })
}

/// A header cell compared without case, spaces or punctuation.
fn norm(cell: &str) -> String {
    cell.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A cell's text: the first link's text, else the cell, emphasis and code marks trimmed.
fn cell_text(cell: &str) -> String {
    let text = links(cell).first().map_or(cell, |l| l.text);
    text.trim()
        .trim_matches(|c| c == '`' || c == '*')
        .trim()
        .to_string()
}

fn looks_like_upn(s: &str) -> bool {
    !s.is_empty() && s.contains('@') && !s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "653c7fdd-1b41-4229-992a-69cc35aad4f7";
    const B: &str = "210d3e96-015f-462d-b6d6-81e6023263df";

    #[test]
    fn table_rows_give_the_upn_column() {
        let md = format!(
            "Found:\n\n| Role | User Name | User Principal Name |\n| :--- | :--- | :--- |\n\
             | GA | [Riley](https://entra.microsoft.com/#view/X/~/overview/userId/{A}/hidePreviewBanner~/true) | riley@contoso.com |\n\n\
             - [Dakota](https://portal.azure.com/#view/X/~/overview/userId/{B})\n"
        );
        let got = user_links(&md).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, A);
        assert_eq!(got[0].display_name, "Riley");
        assert_eq!(got[0].upn.as_deref(), Some("riley@contoso.com"));
        assert_eq!(got[1].id, B);
        assert_eq!(got[1].upn, None, "a list item outside a table has no UPN");
    }

    #[test]
    fn a_link_in_the_upn_column_takes_the_name_from_its_row() {
        let md = format!(
            "| Application | Owner | UPN | MFA |\n| --- | --- | --- | --- |\n\
             | [App](https://x/appId/1) | Ann Lee | [ann@contoso.com](https://x/~/overview/userId/{A}) | None |\n"
        );
        let got = user_links(&md).unwrap();
        assert_eq!(got[0].display_name, "Ann Lee");
        assert_eq!(got[0].upn.as_deref(), Some("ann@contoso.com"));
    }

    #[test]
    fn a_bad_guid_names_the_line() {
        let md = "ok\n\n- [X](https://x/~/overview/userId/not-a-guid)\n";
        let err = user_links(md).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("not-a-guid"), "{}", err.message);
    }
}
