//! The process's command line as ps and `pkill -f` show it
//! (/proc/PID/cmdline): the memory of the argument strings the kernel
//! handed to me-only, which main reads once, at start-up.

/// Rewrites the command line to `words`: a keeper inherits COMMAND's, and a
/// `pkill -f job` meant for the job hit it. The new words go into the
/// memory of the old ones (as setproctitle does), cut to their length; the
/// rest is zeroed.
pub fn retitle(words: &[&str]) {
    let Some(area) = argument_area() else {
        return;
    };
    let mut title = Vec::new();
    for word in words {
        title.extend_from_slice(word.as_bytes());
        title.push(0);
    }
    let kept = title.len().min(area.len());
    area[..kept].copy_from_slice(&title[..kept]);
    area[kept..].fill(0);
    if let Some(last) = area.last_mut() {
        *last = 0;
    }
}

/// Replaces `secret` with one `*` wherever it ends an argument
/// (`--password SECRET`, `--password=SECRET`, `--user USER:SECRET`), so
/// that ps and /proc show no password for as long as me-only runs
/// (waiting, or with --fork), nor its length: the arguments after it move
/// up, and the area's end is zeroed. (The kernel keeps the area's size:
/// the count of bytes of /proc/PID/cmdline still adds up the lengths.)
pub fn hide(secret: &str) {
    const MASK: &[u8] = b"*";
    let secret = secret.as_bytes();
    let Some(area) = argument_area() else {
        return;
    };
    if secret.is_empty() {
        return;
    }
    let mut hidden = Vec::with_capacity(area.len());
    for argument in area.split(|&b| b == 0) {
        match secret_at(argument, secret) {
            Some(start) => {
                hidden.extend_from_slice(&argument[..start]);
                hidden.extend_from_slice(MASK);
            }
            None => hidden.extend_from_slice(argument),
        }
        hidden.push(0);
    }
    // One NUL more than the area holds: the split's last piece ends it.
    hidden.pop();
    area[..hidden.len()].copy_from_slice(&hidden);
    area[hidden.len()..].fill(0);
}

/// Where `secret` starts in `argument`, if it ends the argument as its
/// whole value: after nothing, `=` or `:`.
fn secret_at(argument: &[u8], secret: &[u8]) -> Option<usize> {
    let start = argument.len().checked_sub(secret.len())?;
    let whole = start == 0 || matches!(argument[start - 1], b'=' | b':');
    (whole && argument.ends_with(secret)).then_some(start)
}

/// The argument strings: arg_start to arg_end, fields 48 and 49 of
/// /proc/self/stat (counted after the command name, which may hold spaces).
fn argument_area() -> Option<&'static mut [u8]> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split(' ').skip(45);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    if start == 0 || start >= end {
        return None;
    }
    // SAFETY: [start, end) holds this process's argument strings, in its
    // own writable memory (the initial stack), as the kernel reports them;
    // me-only read them into its own strings at start-up and reads them no
    // more.
    Some(unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) })
}
