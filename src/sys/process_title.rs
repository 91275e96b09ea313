//! The process's command line as ps and `pkill -f` show it
//! (/proc/PID/cmdline): the memory of the argument strings the kernel
//! handed to me-only, which main reads once, at start-up.

use std::sync::Mutex;

/// Rewrites the command line to `words`: a keeper inherits COMMAND's, and a
/// `pkill -f job` meant for the job hit it. Written as one title (see
/// `set_title`), so that /proc/PID/cmdline is the title alone, not the
/// area of the old words, whose size would add up a password's length.
///
/// # Safety
/// The argument strings are written in place: no other thread may run
/// meanwhile, and nothing may read them afterwards for the words given
/// (std::env::args() reads that very memory). A freshly forked keeper, or
/// the command before it starts any thread, may.
pub unsafe fn retitle(words: &[&str]) {
    let _alone = MASKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(area) = argument_area() else {
        return;
    };
    set_title(area, words.join(" ").as_bytes());
}

/// Replaces `secret` with one `*` wherever it ends an argument
/// (`--password SECRET`, `--password=SECRET`, `--user USER:SECRET`), so
/// that ps and /proc show no password for as long as me-only runs
/// (waiting, or with --fork), nor its length. Left as arguments apart, the
/// area would still give the length away: the kernel reports it whole as
/// /proc/PID/cmdline, and its size adds up the arguments as given. So the
/// masked arguments are written as setproctitle(3) does, as one string
/// (joined by spaces, as ps shows them) of which the kernel reports only
/// its first 4 KiB, up to its NUL (fs/proc/base.c, get_mm_proctitle).
///
/// # Safety
/// As for `retitle`: no other thread may run meanwhile, and nothing may
/// read the argument strings afterwards for the words given.
pub unsafe fn hide(secret: &str) {
    let secret = secret.as_bytes();
    if secret.is_empty() {
        return;
    }
    let Some(area) = argument_area() else {
        return;
    };
    let mut masked = MASKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let arguments = masked.get_or_insert_with(|| arguments_in(area));
    for argument in arguments.iter_mut() {
        if let Some(start) = secret_at(argument, secret) {
            argument.truncate(start);
            argument.push(b'*');
        }
    }
    set_title(area, &arguments.join(&b' '));
}

/// The arguments as masked so far: once written as one string, the area no
/// longer tells them apart, and `hide` may be called for several secrets.
static MASKED: Mutex<Option<Vec<Vec<u8>>>> = Mutex::new(None);

/// The arguments in `area`, each ended by a NUL.
fn arguments_in(area: &[u8]) -> Vec<Vec<u8>> {
    let arguments = area.strip_suffix(&[0]).unwrap_or(area);
    arguments.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// Writes `title` over `area` as setproctitle(3) does: the string and its
/// NUL at the start, zeros after, and a last byte that is not NUL, by which
/// the kernel tells a title from arguments as exec left them: it shows the
/// string up to its NUL, not the area whole. (A title whose NUL is the
/// area's last byte is the area whole: the same bytes.)
fn set_title(area: &mut [u8], title: &[u8]) {
    let Some(room) = area.len().checked_sub(1) else {
        return;
    };
    let kept = title.len().min(room);
    area[..kept].copy_from_slice(&title[..kept]);
    area[kept..].fill(0);
    if kept < room {
        area[room] = b' ';
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_shorter_than_the_area_ends_it_with_a_byte_not_nul() {
        let mut area = *b"me-only\0--password\0secret\0";
        set_title(&mut area, b"me-only --password *");
        assert_eq!(&area, b"me-only --password *\0\0\0\0\0 ");
    }

    #[test]
    fn a_title_that_fills_the_area_is_ended_by_its_last_nul() {
        let mut area = *b"me-only\0--password\0s\0";
        set_title(&mut area, b"me-only --password *");
        assert_eq!(&area, b"me-only --password *\0");
    }

    #[test]
    fn empty_arguments_are_kept_apart() {
        assert_eq!(arguments_in(b"a\0\0b\0"), [&b"a"[..], b"", b"b"]);
    }
}
