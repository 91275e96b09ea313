//! `-h` and `--help` as printed: clap lays the options out under their
//! headings, and this wraps the lines to the terminal. clap wraps only with
//! its `wrap_help` feature, which brings in the terminal_size crate (and
//! rustix) to learn one number: one ioctl does it here.

use nix::libc;

/// The width when stdout is not a terminal (a pipe, a file, a pager).
const NOT_A_TERMINAL: usize = 80;

/// Longer lines are hard to read however wide the terminal (clap's cap).
const MOST: usize = 100;

/// The width to wrap help to: the terminal's, up to 100 columns, or 80.
pub fn width() -> usize {
    terminal_columns().map_or(NOT_A_TERMINAL, |columns| columns.min(MOST))
}

/// The columns of the terminal on stdout, if it is one.
fn terminal_columns() -> Option<usize> {
    // SAFETY: an all-zero winsize is a valid value of the plain C struct.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which
    // points to `size` for the whole call.
    let result = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (result == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Breaks each line of `help` wider than `width` at spaces; its
/// continuation lines start where its text did. Trailing spaces (clap
/// indents the blank line between paragraphs) go.
pub fn wrap(help: &str, width: usize) -> String {
    let mut wrapped = String::with_capacity(help.len() + help.len() / 8);
    for line in help.lines() {
        wrap_line(line.trim_end(), width, &mut wrapped);
    }
    wrapped
}

fn wrap_line(line: &str, width: usize, out: &mut String) {
    if line.chars().count() <= width {
        out.push_str(line);
        out.push('\n');
        return;
    }
    let indent = text_column(line, width);
    let (head, text) = line.split_at(indent);
    let mut current = head.to_owned();
    let mut length = indent;
    for word in text.split_whitespace() {
        let word_length = word.chars().count();
        if length > indent && length + 1 + word_length > width {
            out.push_str(&current);
            out.push('\n');
            current = " ".repeat(indent);
            length = indent;
        }
        if length > indent {
            current.push(' ');
            length += 1;
        }
        current.push_str(word);
        length += word_length;
    }
    out.push_str(&current);
    out.push('\n');
}

/// The fewest columns a continued text may have: an entry's text starting
/// further right (an example's aside) is continued under the line's start.
const NARROWEST_TEXT: usize = 20;

/// Where a line's text starts: after an entry's key and the run of spaces
/// that follows it (`  -w, --wait   Wait...`, `  4    the lock is held`),
/// else after its indentation. Keys are ASCII, so bytes are columns.
fn text_column(line: &str, width: usize) -> usize {
    let indented = line.len() - line.trim_start().len();
    let Some(gap) = line[indented..].find("  ") else {
        return indented;
    };
    let after_key = indented + gap;
    let text = after_key + (line[after_key..].len() - line[after_key..].trim_start().len());
    if text + NARROWEST_TEXT > width {
        indented
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_wraps_under_its_text() {
        let help = "  -w, --wait   one two three four five six\n    a b c d e f\n    \nshort\n";
        assert_eq!(
            wrap(help, 36),
            "  -w, --wait   one two three four\n               five six\n    a b c d e f\n\nshort\n"
        );
        assert_eq!(wrap("    aa bb cc dd", 10), "    aa bb\n    cc dd\n");
    }

    #[test]
    fn a_word_longer_than_the_line_stays_whole() {
        let word = "w".repeat(30);
        assert_eq!(
            wrap(&format!("  k  {word} x"), 26),
            format!("  k  {word}\n     x\n")
        );
    }

    #[test]
    fn an_aside_far_right_continues_under_the_line() {
        let example = format!("  me-only x y{}(an aside that is long)", " ".repeat(20));
        assert_eq!(
            wrap(&example, 30),
            "  me-only x y (an aside that\n  is long)\n"
        );
    }
}
