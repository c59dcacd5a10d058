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

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Renders records: `columns` choose and order the table and CSV columns; JSON
/// prints each record whole.
pub fn render(format: Format, columns: &[&str], records: &[Value]) -> String {
    let mut out = String::new();
    match format {
        Format::Json => {
            for r in records {
                out.push_str(&r.to_string());
                out.push('\n');
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(columns);
            for r in records {
                let _ = w.write_record(columns.iter().map(|c| cell(r.get(c))));
            }
            let bytes = w.into_inner().unwrap_or_default();
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
        Format::Table => {
            const MAX: usize = 70;
            let rows: Vec<Vec<String>> = records
                .iter()
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
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: Vec<&str>| {
                let mut l = String::new();
                for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                    if i + 1 == cells.len() {
                        l.push_str(c);
                    } else {
                        l.push_str(&format!("{c:<w$}  ", w = *w));
                    }
                }
                l.trim_end().to_string() + "\n"
            };
            out.push_str(&line(
                columns
                    .iter()
                    .map(|c| c.to_uppercase())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|s| s.as_str())
                    .collect(),
            ));
            for row in &rows {
                out.push_str(&line(row.iter().map(|s| s.as_str()).collect()));
            }
        }
    }
    out
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
