//! Printing records as an aligned table, JSON lines or CSV.

use serde_json::Value;

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
pub fn action_json(a: &crate::store::ActionRow) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Ok(t) = serde_json::from_str::<Vec<String>>(&a.targets) {
        v["targets"] = Value::from(t.join(" "));
    }
    v["rules"] = Value::from(a.rules.trim_matches(','));
    v["action"] = Value::from(a.kind.clone());
    if let Ok(r) = serde_json::from_str::<Value>(&a.reasons) {
        v["reasons"] = r;
    }
    v
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
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
                c.write_record(columns.iter().map(|col| cell(r.get(col))))?;
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
                            let s = cell(r.get(c)).replace('\n', " ");
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

/// Shortens a message that echoes input (one value of a hostile scan, config or
/// rule file can be megabytes long): keeps its start and end and says how much
/// was cut, so logs and history stay small and the message still names the
/// place and the problem.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut head = max / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - max / 2;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}...[{} bytes cut]...{}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}

/// The 1-based line and column (in characters) of byte `offset` of `bytes`, the
/// place of the first invalid byte when a file is not UTF-8.
pub fn place_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
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
}
