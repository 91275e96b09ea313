//! --list's output: a table for people, JSON for scripts.

use std::fmt::Write;
use std::time::Duration;

use super::Entry;
use crate::error::printable;

const HEADER: [&str; 7] = ["LOCK", "BACKEND", "PID", "UID", "HOST", "AGE", "COMMAND"];

/// One line per lock under a header, columns aligned; names with control
/// characters escaped, as in error lines. The last column, COMMAND, is not
/// padded.
pub fn table(entries: &[Entry]) -> String {
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|entry| {
            [
                printable(&entry.lock),
                backend(entry),
                known(entry.pid),
                known(entry.uid),
                printable(&entry.host),
                entry.age.map(age).unwrap_or_else(|| "-".to_owned()),
                printable(&entry.command.join(" ")),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len() - 1;
        for (column, cell) in row.iter().enumerate() {
            if column == last {
                let _ = writeln!(text, "{cell}");
            } else {
                let _ = write!(text, "{cell:<width$} ", width = widths[column]);
            }
        }
    }
    text
}

/// The backend, and a shared lock's mode with it: `flock-shared`, one word,
/// as every cell but COMMAND's is, for awk and `read`.
fn backend(entry: &Entry) -> String {
    if entry.shared {
        format!("{}-shared", entry.backend)
    } else {
        entry.backend.to_owned()
    }
}

/// A lock's mode, for JSON.
fn mode(entry: &Entry) -> &'static str {
    if entry.shared { "shared" } else { "exclusive" }
}

fn known<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// An age as ps(1)'s ELAPSED reads at a glance: 42s, 3m05s, 2h07m, 3d04h.
fn age(age: Duration) -> String {
    let seconds = age.as_secs();
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match () {
        _ if days > 0 => format!("{days}d{:02}h", hours % 24),
        _ if hours > 0 => format!("{hours}h{:02}m", minutes % 60),
        _ if minutes > 0 => format!("{minutes}m{:02}s", seconds % 60),
        _ => format!("{seconds}s"),
    }
}

/// A JSON array of one object per lock; unknown numbers are null.
pub fn json(entries: &[Entry]) -> String {
    let objects: Vec<String> = entries
        .iter()
        .map(|entry| {
            let command: Vec<String> = entry.command.iter().map(|word| string(word)).collect();
            format!(
                "{{\"lock\":{},\"backend\":{},\"mode\":{},\"pid\":{},\"uid\":{},\"host\":{},\
                 \"age_seconds\":{},\"command\":[{}]}}",
                string(&entry.lock),
                string(entry.backend),
                string(mode(entry)),
                number(entry.pid),
                number(entry.uid),
                string(&entry.host),
                number(entry.age.map(|age| age.as_secs())),
                command.join(","),
            )
        })
        .collect();
    format!("[{}]\n", objects.join(",\n "))
}

fn number<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "null".to_owned(), |value| value.to_string())
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lock: &str) -> Entry {
        Entry {
            lock: lock.to_owned(),
            backend: "abstract",
            shared: false,
            pid: Some(42),
            uid: None,
            host: "web-1".to_owned(),
            age: Some(Duration::from_secs(3725)),
            command: vec!["sh".to_owned(), "-c".to_owned(), "echo \"hi\"".to_owned()],
        }
    }

    #[test]
    fn the_table_aligns_columns_and_escapes_names() {
        let table = table(&[entry("/tmp/a"), entry("/tmp/line\nbreak")]);
        assert_eq!(
            table,
            "LOCK             BACKEND  PID UID HOST  AGE   COMMAND\n\
             /tmp/a           abstract 42  -   web-1 1h02m sh -c echo \"hi\"\n\
             /tmp/line\\nbreak abstract 42  -   web-1 1h02m sh -c echo \"hi\"\n"
        );
    }

    #[test]
    fn ages_read_at_a_glance() {
        let ages: Vec<String> = [0, 59, 60, 185, 3600, 86_399, 86_400 * 3 + 3600 * 4]
            .map(|seconds| age(Duration::from_secs(seconds)))
            .to_vec();
        assert_eq!(
            ages,
            ["0s", "59s", "1m00s", "3m05s", "1h00m", "23h59m", "3d04h"]
        );
    }

    #[test]
    fn json_escapes_what_json_must() {
        assert_eq!(
            json(&[entry("a\"b\\c\u{1}")]),
            "[{\"lock\":\"a\\\"b\\\\c\\u0001\",\"backend\":\"abstract\",\"mode\":\"exclusive\",\
             \"pid\":42,\
             \"uid\":null,\"host\":\"web-1\",\"age_seconds\":3725,\
             \"command\":[\"sh\",\"-c\",\"echo \\\"hi\\\"\"]}]\n"
        );
        assert_eq!(json(&[]), "[]\n");
    }
}
