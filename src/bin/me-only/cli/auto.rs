//! --auto: a lock named from the command line, as run-one keys its lock by
//! the command, so that `me-only --auto backup --full` needs no name.
//!
//! The name is `me-only/auto/UID/HASH`: UID the real uid (each user's
//! commands are their own, as run-one's are under the user's home), HASH
//! the 16 hex digits of the 64-bit FNV-1a hash of COMMAND's real path (found
//! on PATH as exec finds it, symbolic links resolved), then, for each
//! argument, a NUL byte and the argument's bytes. Another tool can compute
//! it (the README shows how), and `sleep 30` and `/bin/sleep 30` name the
//! same lock where /bin/sleep is /usr/bin/sleep.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The lock name for `command` (COMMAND and its arguments) run by `uid`.
pub fn lock_name(command: &[OsString], uid: u32) -> OsString {
    let program = resolve(&command[0]);
    let mut hash = fnv1a(FNV_OFFSET_BASIS, program.as_os_str().as_bytes());
    for argument in &command[1..] {
        hash = fnv1a(hash, &[0]);
        hash = fnv1a(hash, argument.as_bytes());
    }
    format!("me-only/auto/{uid}/{hash:016x}").into()
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// COMMAND's real path: with a slash, the path itself; without, the first
/// executable of that name on PATH (as execvp looks: an empty entry is the
/// current directory; no PATH, glibc's default); symbolic links resolved.
/// A command not found keeps its word: exec will say it is not found.
fn resolve(program: &OsStr) -> PathBuf {
    let found = if program.as_bytes().contains(&b'/') {
        Some(PathBuf::from(program))
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
        std::env::split_paths(&path)
            .map(|dir| {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    &dir
                };
                dir.join(program)
            })
            .find(|candidate| {
                candidate.is_file() && access(candidate.as_path(), AccessFlags::X_OK).is_ok()
            })
    };
    found
        .and_then(|path| std::fs::canonicalize(path).ok())
        .unwrap_or_else(|| PathBuf::from(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a 64 test vectors.
    #[test]
    fn the_hash_is_fnv1a_64() {
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn arguments_are_separated_so_that_they_cannot_run_together() {
        let name = |words: &[&str]| {
            let words: Vec<OsString> = words.iter().map(OsString::from).collect();
            lock_name(&words, 1000)
        };
        assert_ne!(name(&["/no/such/x", "ab"]), name(&["/no/such/x", "a", "b"]));
        assert_ne!(name(&["/no/such/x"]), name(&["/no/such/x", ""]));
        // A command not found is named by its word; the name is the hash of
        // exactly that.
        let expected = fnv1a(FNV_OFFSET_BASIS, b"/no/such/x\0-v");
        assert_eq!(
            name(&["/no/such/x", "-v"]),
            OsString::from(format!("me-only/auto/1000/{expected:016x}"))
        );
    }
}
