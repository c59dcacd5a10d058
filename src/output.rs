//! Printing records as an aligned table, JSON lines or CSV.

use serde_json::Value;

use crate::text::printable;

/// How commands print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON object per line, every field.
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

/// An action as the CLI and the API show it: targets and rules as plain text,
/// reasons as JSON.
pub fn action_json(a: &crate::domain::Action) -> Value {
    serde_json::json!({
        "id": a.id,
        "run_id": a.run_id,
        "tenant": a.tenant,
        "identity_id": a.identity_id,
        "identity_upn": a.identity_upn,
        "identity_name": a.identity_name,
        "kind": a.kind.as_str(),
        "action": a.kind.as_str(),
        "targets": a.targets.join(" "),
        "reasons": a.reasons,
        "rules": a.rules.join(","),
        "mode": a.mode.as_str(),
        "state": a.state.as_str(),
        "state_reason": a.state_reason,
        "created_at": crate::store::ts(a.created_at),
        "expires_at": a.expires_at.map(crate::store::ts),
    })
}

/// A planned action (a preview when `id` is `None`, else as recorded): its
/// state, mode, targets, what it changes, and why it goes ahead or is refused.
pub fn planned_json(a: &crate::plan::PlannedAction, id: Option<i64>) -> Value {
    // The verdict as `{"decision": ..., "why": ...}`; its words are not action states.
    let verdict = serde_json::to_value(&a.decision).unwrap_or(Value::Null);
    serde_json::json!({
        "id": id,
        "state": a.state().as_str(),
        "mode": a.mode.as_str(),
        "action": a.kind.as_str(),
        "identity_id": a.identity_id,
        "upn": a.identity_upn,
        "identity_name": a.identity_name,
        "targets": a.targets,
        "effect": a.kind.effect(),
        "decision": verdict.get("decision"),
        "why": verdict.get("why"),
        "reasons": a.reasons,
    })
}

/// One action with its approvals and history, as `approvals show --format json`
/// and `GET /v1/actions/{id}` show it.
pub fn detail_json(d: &crate::service::show::ActionDetail) -> Value {
    let mut rec = action_json(&d.action);
    rec["approvals"] = serde_json::to_value(&d.approvals).unwrap_or(Value::Null);
    rec["history"] = serde_json::to_value(&d.history).unwrap_or(Value::Null);
    rec
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => printable(s).into_owned(),
        Some(other) => printable(&other.to_string()).into_owned(),
    }
}

/// A CSV cell, defused against spreadsheet formulas (see `text::csv_safe`).
fn csv_cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => crate::text::csv_safe(s, true),
        Some(other) => crate::text::csv_safe(&other.to_string(), false),
    }
}

/// Renders records into a string (small outputs and tests).
pub fn render(format: Format, columns: &[&str], records: &[Value]) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_records(&mut out, format, columns, records.iter().cloned());
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes records as they come: `columns` choose and order the table and CSV
/// columns; JSON prints each record whole. JSON and CSV stream record by record;
/// a table keeps only its cells to align them.
pub fn write_records<W: std::io::Write>(
    w: &mut W,
    format: Format,
    columns: &[&str],
    records: impl Iterator<Item = Value>,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            for r in records {
                serde_json::to_writer(&mut *w, &r)?;
                w.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let mut c = csv::Writer::from_writer(&mut *w);
            c.write_record(columns)?;
            for r in records {
                c.write_record(columns.iter().map(|col| csv_cell(r.get(col))))?;
            }
            c.flush()?;
        }
        Format::Table => {
            const MAX: usize = 70;
            let rows: Vec<Vec<String>> = records
                .map(|r| {
                    columns
                        .iter()
                        .map(|c| {
                            let s = cell(r.get(c));
                            if s.chars().count() > MAX {
                                let t: String = s.chars().take(MAX - 1).collect();
                                format!("{t}…")
                            } else {
                                s
                            }
                        })
                        .collect()
                })
                .collect();
            let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
            for row in &rows {
                for (wd, c) in widths.iter_mut().zip(row) {
                    *wd = (*wd).max(c.chars().count());
                }
            }
            let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
            for row in std::iter::once(&header).chain(rows.iter()) {
                let mut l = String::new();
                for (i, (c, wd)) in row.iter().zip(&widths).enumerate() {
                    if i + 1 == row.len() {
                        l.push_str(c);
                    } else {
                        l.push_str(&format!("{c:<wd$}  ", wd = *wd));
                    }
                }
                writeln!(w, "{}", l.trim_end())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_commas_and_table_aligns() {
        let recs = vec![
            json!({"a": "x,y", "b": 1}),
            json!({"a": "long value", "b": null}),
        ];
        let csv = render(Format::Csv, &["a", "b"], &recs);
        assert_eq!(csv, "a,b\n\"x,y\",1\nlong value,\n");
        let table = render(Format::Table, &["a", "b"], &recs);
        assert_eq!(table, "A           B\nx,y         1\nlong value\n");
        let json = render(Format::Json, &["a"], &recs);
        assert_eq!(json.lines().count(), 2);
    }

    #[test]
    fn control_characters_never_reach_the_terminal_in_tables_or_csv() {
        let hostile = "evil@contoso.com\r\u{1b}[2Kadmin@contoso.com\u{202e}moc.\u{7}\n";
        let recs = vec![json!({"upn": hostile, "n": 1})];
        for format in [Format::Table, Format::Csv] {
            let out = render(format, &["upn", "n"], &recs);
            assert!(
                !out.chars()
                    .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
                "{format:?} leaked a control character: {out:?}"
            );
            assert!(
                out.contains("evil@contoso.com\\r\\x1b[2Kadmin@contoso.com\\u{202e}moc.\\x07\\n"),
                "{out}"
            );
            // One header line and one record line: an embedded newline does not split the row.
            assert_eq!(out.lines().count(), 2, "{out}");
        }
        assert_eq!(printable("plain é text"), "plain é text");
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_quoted_out() {
        let recs = vec![json!({"a": "=HYPERLINK(\"http://x\")", "b": -1, "c": "@SUM(A1)"})];
        let csv = render(Format::Csv, &["a", "b", "c"], &recs);
        assert_eq!(
            csv,
            "a,b,c\n\"'=HYPERLINK(\"\"http://x\"\")\",-1,'@SUM(A1)\n"
        );
    }
}
