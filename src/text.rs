//! Small text helpers every layer uses: clipping echoed input, making text
//! safe for a terminal, places in a file, id shapes. A leaf: it imports nothing
//! from the crate.

/// Whether a character would move the cursor, erase, recolour or reorder what a
/// terminal shows (C0/C1 controls, DEL, and the Unicode bidirectional overrides).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Makes text from a scan, rule or Graph safe to show on a terminal: control
/// characters (a UPN carrying `\r\x1b[2K` could rewrite the row above) are
/// written as visible escapes (`\r`, `\n`, `\t`, `\x1b`, `\u{202e}`); other
/// text is returned unchanged.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A CSV cell as exported: printable, and text that a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@` at the start) gets a leading `'`, the usual
/// defence against CSV injection (exported history is often opened in one).
/// `text` is false for numbers, which are written as they are.
pub fn csv_safe(s: &str, text: bool) -> String {
    let s = printable(s);
    match s.chars().next() {
        Some('=' | '+' | '-' | '@') if text => format!("'{s}"),
        _ => s.into_owned(),
    }
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

/// True for the 8-4-4-4-12 hexadecimal GUID form.
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// serde_json appends " at line L column C"; we report the position separately.
pub fn strip_serde_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Rhai appends " (line L, position C)"; we report the place separately.
pub fn strip_rhai_position(msg: &str) -> String {
    match msg.rfind(" (line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Cuts `s` to at most `max` characters, marking the cut with an ellipsis:
/// for chat messages with a length limit, where saying how much was cut
/// ([`clip`]) matters less than fitting.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_chars_marks_the_cut() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
    }
}
