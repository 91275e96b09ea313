//! What /proc tells about sockets and their owners, for naming a lock's
//! holder without touching the lock. Every lookup is best effort: a field
//! that cannot be read (another user's process, a changed format) gives
//! `None`, never an error.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// A listening TCP socket that holds a port, as /proc/net/tcp{,6} shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Listener {
    pub inode: u64,
    pub uid: u32,
}

/// TCP state LISTEN in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// The listener that keeps `address` from being bound: one on the address
/// itself, or on the wildcard address of either family, on the same port.
pub fn tcp_listener(address: SocketAddrV4) -> Option<Listener> {
    let ipv4 = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let ipv6 = fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let blocks = |local: &str| match parse_socket_address(local) {
        Some((ip, port)) => port == address.port() && conflicts_with(&ip, address.ip()),
        None => false,
    };
    ipv4.lines()
        .chain(ipv6.lines())
        .skip_while(|line| line.trim_start().starts_with("sl"))
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != TCP_LISTEN || !blocks(fields[1]) {
                return None;
            }
            Some(Listener {
                uid: fields[7].parse().ok()?,
                inode: fields[9].parse().ok()?,
            })
        })
        .next()
}

/// An address as /proc/net/tcp{,6} prints it: hex words in host byte order.
#[derive(Debug, PartialEq, Eq)]
enum Ip {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

fn parse_socket_address(text: &str) -> Option<(Ip, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => Ip::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Ip::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some((ip, port))
}

fn conflicts_with(listening: &Ip, ours: &Ipv4Addr) -> bool {
    match listening {
        Ip::V4(ip) => ip == ours || ip.is_unspecified(),
        Ip::V6(ip) => ip.is_unspecified() || ip.to_ipv4_mapped() == Some(*ours),
    }
}

/// Whether a socket is bound to the abstract name, listening or not.
pub fn abstract_name_is_bound(name: &[u8]) -> bool {
    let Ok(table) = fs::read("/proc/net/unix") else {
        return false;
    };
    let mut path = Vec::with_capacity(name.len() + 1);
    path.push(b'@');
    path.extend_from_slice(name);
    // Num RefCount Protocol Flags Type St Inode Path: the path is whatever
    // follows the seventh field, and may itself hold spaces.
    table
        .split(|&byte| byte == b'\n')
        .filter_map(|line| nth_field_rest(line, 7))
        .any(|rest| rest == path.as_slice())
}

fn nth_field_rest(line: &[u8], n: usize) -> Option<&[u8]> {
    let mut rest = line;
    for _ in 0..n {
        rest = rest.trim_ascii_start();
        let end = rest.iter().position(|byte| byte.is_ascii_whitespace())?;
        rest = &rest[end..];
    }
    let rest = rest.strip_prefix(b" ")?;
    Some(rest)
}

/// The process of user `uid` with socket `inode` open, where /proc lets us
/// look. Only that user's processes are searched: the socket is theirs.
pub fn pid_holding_socket(inode: u64, uid: u32) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;

    let target = format!("socket:[{inode}]");
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.metadata().is_ok_and(|meta| meta.uid() == uid))
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                return false;
            };
            fds.filter_map(Result::ok).any(|fd| {
                fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
            })
        })
}

/// A process's command line, its arguments joined by spaces.
pub fn command_line(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|&byte| byte == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_host_byte_order() {
        let localhost = u32::from_ne_bytes([127, 0, 0, 1]);
        let text = format!("{localhost:08X}:1F90");
        assert_eq!(
            parse_socket_address(&text),
            Some((Ip::V4(Ipv4Addr::LOCALHOST), 8080))
        );
        assert_eq!(
            parse_socket_address("00000000000000000000000000000000:0050"),
            Some((Ip::V6(Ipv6Addr::UNSPECIFIED), 80))
        );
        assert_eq!(parse_socket_address("nonsense"), None);
    }

    #[test]
    fn wildcards_and_mapped_addresses_conflict() {
        let ours = Ipv4Addr::new(127, 3, 232, 1);
        assert!(conflicts_with(&Ip::V4(ours), &ours));
        assert!(conflicts_with(&Ip::V4(Ipv4Addr::UNSPECIFIED), &ours));
        assert!(!conflicts_with(&Ip::V4(Ipv4Addr::LOCALHOST), &ours));
        assert!(conflicts_with(&Ip::V6(Ipv6Addr::UNSPECIFIED), &ours));
        assert!(conflicts_with(&Ip::V6(ours.to_ipv6_mapped()), &ours));
        assert!(!conflicts_with(&Ip::V6(Ipv6Addr::LOCALHOST), &ours));
    }

    #[test]
    fn unix_table_path_is_the_rest_of_the_line() {
        let line = b"0000000000000000: 00000002 00000000 00010000 0001 01 12345 @my lock";
        assert_eq!(nth_field_rest(line, 7), Some(&b"@my lock"[..]));
        let unnamed = b"0000000000000000: 00000002 00000000 00000000 0001 03 12346";
        assert_eq!(nth_field_rest(unnamed, 7), None);
    }
}
