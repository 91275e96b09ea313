//! What /proc tells about sockets and their owners, for naming a lock's
//! holder without touching the lock. Every lookup is best effort: a field
//! that cannot be read (another user's process, a changed format) gives
//! `None`, never an error.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use nix::libc;

use crate::sys::unix_diag::NamedSocket;

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
    let ipv4 = read_table("/proc/net/tcp");
    let ipv6 = read_table("/proc/net/tcp6");
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
fn parse_socket_address(text: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some((ip, port))
}

/// Whether a socket listening on `listening` keeps `ours` (on the same
/// port) from being bound.
pub fn conflicts_with(listening: &IpAddr, ours: &Ipv4Addr) -> bool {
    match listening {
        IpAddr::V4(ip) => ip == ours || ip.is_unspecified(),
        IpAddr::V6(ip) => ip.is_unspecified() || ip.to_ipv4_mapped() == Some(*ours),
    }
}

/// The sockets bound to the abstract `name`, as /proc/net/unix lists them:
/// where the kernel has no unix_diag (see unix_diag.rs, which is exact);
/// None where the table cannot be read. This table prints names raw, so a
/// name holding a newline can forge a line here. It tells no owner, nor a
/// listener's queue: a listener is taken to have queued every other socket
/// of its name, which counts too many (sockets bound only, connections
/// accepted) and never too few.
pub fn abstract_sockets(name: &[u8]) -> Option<Vec<NamedSocket>> {
    // Flags: __SO_ACCEPTCON (listening). Queued connections show the
    // listener's name too, but no process has them open.
    const LISTENING: &[u8] = b"00010000";
    let table = fs::read("/proc/net/unix").ok()?;
    let mut path = Vec::with_capacity(name.len() + 1);
    path.push(b'@');
    path.extend_from_slice(name);
    // Num RefCount Protocol Flags Type St Inode Path: the path is whatever
    // follows the seventh field, and may itself hold spaces.
    let mut sockets: Vec<NamedSocket> = table
        .split(|&byte| byte == b'\n')
        .filter(|line| nth_field_rest(line, 7) == Some(path.as_slice()))
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line
                .split(u8::is_ascii_whitespace)
                .filter(|f| !f.is_empty())
                .collect();
            Some(NamedSocket {
                inode: std::str::from_utf8(fields.get(6)?).ok()?.parse().ok()?,
                listening: fields.get(3) == Some(&LISTENING),
                uid: None,
                queued: 0,
            })
        })
        .collect();
    let others = sockets.iter().filter(|socket| !socket.listening).count();
    for listener in sockets.iter_mut().filter(|socket| socket.listening) {
        listener.queued = u32::try_from(others).unwrap_or(u32::MAX);
    }
    Some(sockets)
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

/// What a process has open when it holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A listening socket, by inode number (as /proc/net/* show it).
    Socket(u64),
    /// A flock(2) lock on a file, by stat(2)'s device and inode: an open
    /// file description of it that holds the lock, which /proc/PID/fdinfo
    /// shows on a `lock:` line. A process that merely has the file open
    /// (a shell's `< lockfile`), or waits for the lock, holds nothing.
    LockedFile { device: u64, inode: u64 },
    /// The write end of a pipe, by inode: what an etcd instance's processes
    /// hold (ME_ONLY_FD), while its keeper holds the read end.
    PipeWriter(u64),
}

/// What /proc shows of whether a process holds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    Holds,
    /// Looked at, and it does not (or there is no such process).
    DoesNot,
    /// Its descriptors cannot be looked at: another user's process, or one
    /// that is not dumpable, seen by a process without CAP_SYS_PTRACE.
    Unseen,
}

/// Whether process `pid` holds it, as far as /proc lets us look.
pub fn sight(pid: i32, opened: Opened) -> Sight {
    match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => {
            let holds = fds
                .filter_map(Result::ok)
                .any(|fd| fd_holds(pid, &fd, opened));
            if holds { Sight::Holds } else { Sight::DoesNot }
        }
        Err(err)
            if err.kind() == std::io::ErrorKind::PermissionDenied
                || is_out_of_descriptors(&err) =>
        {
            Sight::Unseen
        }
        Err(_) => Sight::DoesNot,
    }
}

/// Whether process `pid` holds it, where /proc lets us look.
pub fn has_open(pid: i32, opened: Opened) -> bool {
    sight(pid, opened) == Sight::Holds
}

/// Whether descriptor `fd` (an entry of /proc/PID/fd) holds it.
fn fd_holds(pid: i32, fd: &fs::DirEntry, opened: Opened) -> bool {
    use std::os::unix::fs::MetadataExt;

    match opened {
        Opened::Socket(inode) => links_to(fd, "socket", inode),
        // stat(2) of the link is stat of the open file itself.
        Opened::LockedFile { device, inode } => {
            fs::metadata(fd.path()).is_ok_and(|meta| meta.dev() == device && meta.ino() == inode)
                && fd_holds_a_flock(pid, &fd.file_name())
        }
        Opened::PipeWriter(inode) => links_to(fd, "pipe", inode) && fd_writes(pid, &fd.file_name()),
    }
}

/// Whether descriptor `fd` is the `kind` (socket, pipe) with this inode, as
/// its link reads: `socket:[4242]`.
fn links_to(fd: &fs::DirEntry, kind: &str, inode: u64) -> bool {
    fs::read_link(fd.path()).is_ok_and(|link| {
        link.as_os_str().as_encoded_bytes() == format!("{kind}:[{inode}]").as_bytes()
    })
}

/// Whether /proc/PID/fdinfo/FD shows the descriptor open for writing (its
/// `flags:`, in octal): of a pipe, the write end.
fn fd_writes(pid: i32, fd: &std::ffi::OsStr) -> bool {
    fd_info(pid, fd).is_some_and(|info| {
        info.lines().any(|line| {
            line.strip_prefix("flags:")
                .and_then(|flags| i32::from_str_radix(flags.trim(), 8).ok())
                .is_some_and(|flags| flags & libc::O_ACCMODE != libc::O_RDONLY)
        })
    })
}

/// /proc/PID/fdinfo/FD.
fn fd_info(pid: i32, fd: &std::ffi::OsStr) -> Option<String> {
    let mut path = std::path::PathBuf::from(format!("/proc/{pid}/fdinfo"));
    path.push(fd);
    fs::read_to_string(path).ok()
}

/// Whether /proc/PID/fdinfo/FD shows a flock(2) lock held through that
/// descriptor's open file description (the kernel lists there only the
/// locks that description owns; waiters are not listed).
fn fd_holds_a_flock(pid: i32, fd: &std::ffi::OsStr) -> bool {
    fd_info(pid, fd).is_some_and(|info| flock_modes(&info).next().is_some())
}

/// Whether this process's descriptor `fd` holds an exclusive flock(2)
/// lock (LOCK_EX, as /proc/self/fdinfo shows it: WRITE); a shared one
/// (flock -s: READ) is held by others at the same time, and is no lock.
pub fn own_descriptor_holds_an_exclusive_flock(fd: i32) -> bool {
    let me = std::process::id() as i32;
    let fd = std::ffi::OsString::from(fd.to_string());
    fd_info(me, &fd).is_some_and(|info| flock_modes(&info).any(|mode| mode == "WRITE"))
}

/// The modes (WRITE: exclusive, READ: shared) of the flock(2) locks that an
/// fdinfo lists, on lines like `lock:  1: FLOCK  ADVISORY  WRITE 4242 ...`.
fn flock_modes(info: &str) -> impl Iterator<Item = &str> {
    info.lines().filter_map(|line| {
        let mut fields = line.strip_prefix("lock:")?.split_whitespace().skip(1);
        (fields.next() == Some("FLOCK")).then(|| fields.nth(1))?
    })
}

/// A process (of user `uid`, if given, and not one of `ignored`) that has it
/// open, where /proc lets us look. Its pid is one of this pid namespace's:
/// a /proc mounted for another (a namespace entered without remounting it)
/// is not searched.
pub fn pid_with_open(opened: Opened, uid: Option<u32>, ignored: &[i32]) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;

    if !shows_our_pids() {
        return None;
    }
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| uid.is_none_or(|uid| entry.metadata().is_ok_and(|meta| meta.uid() == uid)))
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| !ignored.contains(&pid) && has_open(pid, opened))
}

/// This process's own descriptors that hold it.
pub fn own_descriptors_holding(opened: Opened) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(fds) = fs::read_dir(format!("/proc/{me}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(Result::ok)
        .filter(|fd| fd_holds(me, fd, opened))
        .filter_map(|fd| fd.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every process of this pid namespace that holds it, where /proc lets us
/// look, and whether any could not be looked at. Empty where /proc shows
/// another pid namespace's processes.
pub fn pids_holding(opened: Opened) -> (Vec<i32>, bool) {
    if !shows_our_pids() {
        return (Vec::new(), true);
    }
    let Some(pids) = all_pids() else {
        return (Vec::new(), true);
    };
    let mut unseen = false;
    let holding = pids
        .into_iter()
        .filter(|&pid| match sight(pid, opened) {
            Sight::Holds => true,
            Sight::DoesNot => false,
            Sight::Unseen => {
                unseen = true;
                false
            }
        })
        .collect();
    (holding, unseen)
}

/// Whether /proc numbers processes as this pid namespace does: its `self`
/// is our own pid.
fn shows_our_pids() -> bool {
    fs::read_link("/proc/self").is_ok_and(|link| {
        link.to_str()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| pid == std::process::id())
    })
}

/// A flock(2) lock, or a wait for one, as /proc/locks lists it.
#[derive(Debug, PartialEq, Eq)]
struct FlockEntry {
    pid: i32,
    waiting: bool,
    /// WRITE (LOCK_EX), not READ (LOCK_SH, `flock -s`).
    exclusive: bool,
    device: (u32, u32),
    inode: u64,
}

/// Who holds a flock(2) lock on a file, and who waits for it, by pid as
/// /proc/locks shows them: 0 for one in a pid namespace this one cannot see
/// (and for all, where /proc was mounted for another pid namespace).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlockLockers {
    /// One exclusive holder, or any number of shared ones, in the order
    /// the kernel lists them.
    pub holders: Vec<FlockHolder>,
    pub waiting: Vec<i32>,
}

/// A holder of a flock(2) lock, and its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlockHolder {
    pub pid: i32,
    pub exclusive: bool,
}

/// The flock(2) lockers of the file with this device (major, minor: the
/// superblock's, see `superblock_device`) and inode.
pub fn flock_lockers(device: (u32, u32), inode: u64) -> FlockLockers {
    // The kernel freezes the lock list only while one read() fills one
    // page; between reads, locks that others take or drop shift the rest,
    // and a lock held all along can be skipped. Reading in page-sized
    // reads, not std's small first probe, gives one consistent snapshot
    // where the table fits a page; more passes make a miss under heavy
    // churn unlikely. A held lock needs one pass; a free one costs all.
    let mut on_inode = Vec::new();
    for _ in 0..LOCKS_TABLE_PASSES {
        on_inode = read_locks_table()
            .lines()
            .filter_map(parse_flock_line)
            .filter(|entry| entry.inode == inode)
            .collect();
        if on_inode.iter().any(|entry| !entry.waiting) {
            break;
        }
    }
    on_inode.retain(|entry| entry.device == device);
    let ours = shows_our_pids();
    let pid = |entry: &FlockEntry| if ours { entry.pid } else { 0 };
    FlockLockers {
        holders: on_inode
            .iter()
            .filter(|entry| !entry.waiting)
            .map(|entry| FlockHolder {
                pid: pid(entry),
                exclusive: entry.exclusive,
            })
            .collect(),
        waiting: on_inode
            .iter()
            .filter(|entry| entry.waiting)
            .map(pid)
            .collect(),
    }
}

const LOCKS_TABLE_PASSES: usize = 3;

/// The device (major, minor) of the filesystem that `path` is on, as
/// /proc/locks names it: the superblock's, which stat(2) does not always
/// give (btrfs gives each subvolume a device number of its own). Found
/// from the file's mount id (statx) in /proc/self/mountinfo; None where
/// either is unavailable.
pub fn superblock_device(path: &std::path::Path) -> Option<(u32, u32)> {
    use std::os::unix::ffi::OsStrExt;

    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx is a plain C struct that zeroes validly.
    let mut status: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a C string, the buffer ours; the link itself, as
    // --flock never follows one.
    let done = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut status,
        )
    };
    if done != 0 || status.stx_mask & libc::STATX_MNT_ID == 0 {
        return None;
    }
    mount_device(
        &fs::read_to_string("/proc/self/mountinfo").ok()?,
        status.stx_mnt_id,
    )
}

/// The device of mount `id` in mountinfo: `ID PARENT MAJOR:MINOR ROOT ...`.
fn mount_device(mountinfo: &str, id: u64) -> Option<(u32, u32)> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.next()?.parse::<u64>().ok()? != id {
            return None;
        }
        let (major, minor) = fields.nth(1)?.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

/// /proc/locks, read a page or more at a time.
fn read_locks_table() -> String {
    read_table("/proc/locks")
}

/// A table in /proc, read 64 KiB at a time (empty if it cannot be read).
/// std's read_to_string starts with small reads, and each read of a table
/// like /proc/net/tcp walks the kernel's tables anew (a third of a
/// millisecond here): a waiter that looked at one cost tens of reads.
fn read_table(path: &str) -> String {
    use std::io::Read;

    let mut table = Vec::with_capacity(64 * 1024);
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_end(&mut table);
    }
    String::from_utf8_lossy(&table).into_owned()
}

/// `1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234 0 EOF`, or with `->` after
/// the number for a waiter.
fn parse_flock_line(line: &str) -> Option<FlockEntry> {
    let mut fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    let waiting = fields.first() == Some(&"->");
    if waiting {
        fields.remove(0);
    }
    if fields.first() != Some(&"FLOCK") {
        return None;
    }
    let exclusive = match *fields.get(2)? {
        "WRITE" => true,
        "READ" => false,
        _ => return None,
    };
    let pid = fields.get(3)?.parse().ok()?;
    let mut file = fields.get(4)?.split(':');
    let major = u32::from_str_radix(file.next()?, 16).ok()?;
    let minor = u32::from_str_radix(file.next()?, 16).ok()?;
    let inode = file.next()?.parse().ok()?;
    Some(FlockEntry {
        pid,
        waiting,
        exclusive,
        device: (major, minor),
        inode,
    })
}

/// The user a process runs as (its effective uid, which owns /proc/PID).
pub fn process_uid(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;

    fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|meta| meta.uid())
}

/// How long ago a process started, as /proc tells (to its clock ticks).
pub fn process_age(pid: i32) -> Option<Duration> {
    let age = since_boot().as_secs_f64() - process_start(pid)?;
    Duration::try_from_secs_f64(age.max(0.0)).ok()
}

/// When a process started, in seconds since boot (to its clock ticks).
pub fn process_start(pid: i32) -> Option<f64> {
    let started = start_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf only reads a setting.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_second > 0).then(|| started as f64 / ticks_per_second as f64)
}

/// The time since boot, as CLOCK_BOOTTIME counts it: the clock of
/// /proc/uptime and of processes' start times in /proc.
pub fn since_boot() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the time into `now`, ours.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The executable a process runs, where /proc lets us look.
pub fn executable(pid: i32) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether a process is stopped (state T: SIGSTOP, a terminal's ^Z).
pub fn is_stopped(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .is_some_and(|end| stat[end + 1..].trim_start().starts_with('T'))
    })
}

/// This process's parent, its parent's parent, and so on up to the first
/// process.
pub fn ancestors() -> Vec<i32> {
    let mut ancestors = Vec::new();
    let mut pid = nix::unistd::getppid().as_raw();
    while pid > 0 && !ancestors.contains(&pid) {
        ancestors.push(pid);
        pid = parent_pid(pid).unwrap_or(0);
    }
    ancestors
}

/// A process's name (/proc/PID/comm: its executable's, up to 15 bytes).
pub fn process_name(pid: i32) -> Option<String> {
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end_matches('\n').to_owned())
}

/// A process's children: as its threads list them, or where the kernel
/// does not, as their /proc/PID/stat name their parent.
pub fn children(pid: i32) -> Vec<i32> {
    listed_children(pid).unwrap_or_else(|| {
        pids()
            .into_iter()
            .filter(|&child| parent_pid(child) == Some(pid))
            .collect()
    })
}

/// The start time field of /proc/PID/stat (the 22nd), in clock ticks after
/// boot. The command name (2nd field, in parentheses) may hold spaces and
/// parentheses itself: fields are counted after its last ')'.
fn start_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// A process's command line, its arguments joined by spaces.
pub fn command_line(pid: i32) -> Option<String> {
    let words = command_words(pid)?;
    (!words.is_empty()).then(|| words.join(" "))
}

/// A process's arguments (bytes that are not UTF-8 replaced).
pub fn command_words(pid: i32) -> Option<Vec<String>> {
    Some(cmdline_words(
        &fs::read(format!("/proc/{pid}/cmdline")).ok()?,
    ))
}

/// The words of a /proc/PID/cmdline: each ends with a NUL, so an empty
/// argument (`sh -c 'x' ''`) is one NUL of its own and is kept; only the
/// split's last piece, after the final NUL, is not a word.
fn cmdline_words(raw: &[u8]) -> Vec<String> {
    // A kernel thread's (or a zombie's) cmdline is empty: no words.
    if raw.is_empty() {
        return Vec::new();
    }
    raw.strip_suffix(&[0])
        .unwrap_or(raw)
        .split(|&byte| byte == 0)
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect()
}

/// The value of variable `name` in a process's environment (as it was
/// started: a change it made itself is not seen), where /proc lets us read
/// it: our own user's processes, or everyone's for root.
pub fn environment_variable(pid: i32, name: &str) -> Option<Vec<u8>> {
    let environment = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environment.split(|&byte| byte == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(value.to_vec())
    })
}

/// The parent of a process, from its /proc/PID/stat.
pub fn parent_pid(pid: i32) -> Option<i32> {
    parent_in_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent pid field of a /proc/PID/stat line: `pid (comm) state ppid
/// ...`, where the name may hold spaces and ')'.
pub fn parent_in_stat(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Every pid /proc lists.
pub fn pids() -> Vec<i32> {
    all_pids().unwrap_or_default()
}

/// Every pid /proc lists; None where it cannot be read (no descriptor left).
pub fn all_pids() -> Option<Vec<i32>> {
    let entries = fs::read_dir("/proc").ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// Every process's pid and parent pid, as /proc shows them; None where a
/// process's could not be read for want of a descriptor (one that has
/// exited meanwhile is left out).
pub fn parent_pids() -> Option<Vec<(i32, i32)>> {
    let mut parents = Vec::new();
    for pid in all_pids()? {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => parents.extend(parent_in_stat(&stat).map(|parent| (pid, parent))),
            Err(err) if is_out_of_descriptors(&err) => return None,
            Err(_) => {}
        }
    }
    Some(parents)
}

/// The pids and parent pids of the descendants of `roots`, found through
/// the children that each of their threads lists
/// (/proc/PID/task/TID/children): a walk of the tree alone, where
/// parent_pids reads every process on the host (slow on a busy one, and
/// the last round of a fence has a deadline). None where the kernel lists
/// no children (built without CONFIG_PROC_CHILDREN), a list cannot be read,
/// or a descriptor was lacking: parent_pids is then the way.
pub fn descendants_with_parents(roots: &[i32]) -> Option<Vec<(i32, i32)>> {
    let mut found = Vec::new();
    let mut seen: std::collections::HashSet<i32> = roots.iter().copied().collect();
    let mut to_look_at = roots.to_vec();
    while let Some(parent) = to_look_at.pop() {
        for child in listed_children(parent)? {
            if seen.insert(child) {
                found.push((child, parent));
                to_look_at.push(child);
            }
        }
    }
    Some(found)
}

/// The children of every thread of `pid`; none once it is gone; None
/// where they cannot be known (see descendants_with_parents).
fn listed_children(pid: i32) -> Option<Vec<i32>> {
    let tasks = match fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Some(Vec::new()),
        Err(_) => return None,
    };
    let mut children = Vec::new();
    for task in tasks {
        let task = task.ok()?.path();
        match fs::read_to_string(task.join("children")) {
            Ok(list) => children.extend(
                list.split_whitespace()
                    .filter_map(|pid| pid.parse::<i32>().ok()),
            ),
            // A thread that ended meanwhile; but where the thread is still
            // there, the kernel has no such lists.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !task.exists() => {}
            Err(_) => return None,
        }
    }
    Some(children)
}

/// EMFILE, ENFILE: a look that failed for want of a descriptor, which says
/// nothing of what was looked for.
fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn the_children_lists_give_a_tree_to_its_deepest_descendants() {
        use std::io::Read;
        // sh, its child sh, and that one's sleep: printed once all run.
        let mut tree = std::process::Command::new("sh")
            .args(["-c", "sh -c 'sleep 30 & echo $!; wait' & wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0; 32];
        let read = tree.stdout.as_mut().unwrap().read(&mut line).unwrap();
        let sleep: i32 = String::from_utf8_lossy(&line[..read])
            .trim()
            .parse()
            .unwrap();
        let root = tree.id() as i32;
        let found = descendants_with_parents(&[root]).expect("the kernel lists children");
        let middle = parent_pid(sleep).unwrap();
        assert!(found.contains(&(middle, root)), "{found:?}");
        assert!(found.contains(&(sleep, middle)), "{found:?}");
        // The same pairs as the walk of all /proc finds, for this tree.
        let all = parent_pids().unwrap();
        assert!(all.contains(&(middle, root)) && all.contains(&(sleep, middle)));
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleep), nix::sys::signal::SIGKILL);
        tree.wait().unwrap();
        // Gone: no children, not an error.
        assert_eq!(descendants_with_parents(&[root]), Some(Vec::new()));
    }

    #[test]
    fn empty_arguments_are_words_too() {
        assert_eq!(
            cmdline_words(b"sh\0-c\0x\0\0mid\0\0"),
            ["sh", "-c", "x", "", "mid", ""]
        );
        assert_eq!(cmdline_words(b"\0"), [""]);
        assert_eq!(cmdline_words(b""), Vec::<String>::new());
        // Retitled without a final NUL.
        assert_eq!(cmdline_words(b"nginx: master"), ["nginx: master"]);
    }

    #[test]
    fn start_time_is_counted_after_the_command_name() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(start_ticks(stat), Some(987654));
        assert_eq!(start_ticks("4242 (cut short) S 1"), None);
    }

    #[test]
    fn our_own_age_is_a_moment() {
        let age = process_age(std::process::id() as i32).expect("our own /proc/PID/stat");
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }

    #[test]
    fn addresses_parse_in_host_byte_order() {
        let localhost = u32::from_ne_bytes([127, 0, 0, 1]);
        let text = format!("{localhost:08X}:1F90");
        assert_eq!(
            parse_socket_address(&text),
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080))
        );
        assert_eq!(
            parse_socket_address("00000000000000000000000000000000:0050"),
            Some((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 80))
        );
        assert_eq!(parse_socket_address("nonsense"), None);
    }

    #[test]
    fn wildcards_and_mapped_addresses_conflict() {
        let ours = Ipv4Addr::new(127, 3, 232, 1);
        assert!(conflicts_with(&IpAddr::V4(ours), &ours));
        assert!(conflicts_with(&IpAddr::V4(Ipv4Addr::UNSPECIFIED), &ours));
        assert!(!conflicts_with(&IpAddr::V4(Ipv4Addr::LOCALHOST), &ours));
        assert!(conflicts_with(&IpAddr::V6(Ipv6Addr::UNSPECIFIED), &ours));
        assert!(conflicts_with(&IpAddr::V6(ours.to_ipv6_mapped()), &ours));
        assert!(!conflicts_with(&IpAddr::V6(Ipv6Addr::LOCALHOST), &ours));
    }

    #[test]
    fn flock_lines_give_pid_mode_device_inode_and_whether_waiting() {
        assert_eq!(
            parse_flock_line("1: FLOCK  ADVISORY  WRITE 4242 fe:00:10010630 0 EOF"),
            Some(FlockEntry {
                pid: 4242,
                waiting: false,
                exclusive: true,
                device: (0xfe, 0),
                inode: 10010630
            })
        );
        assert_eq!(
            parse_flock_line("2: FLOCK  ADVISORY  READ 77 103:0a:12 0 EOF"),
            Some(FlockEntry {
                pid: 77,
                waiting: false,
                exclusive: false,
                device: (0x103, 0x0a),
                inode: 12
            })
        );
        assert_eq!(
            parse_flock_line("1: -> FLOCK  ADVISORY  WRITE 4243 fe:00:10010630 0 EOF"),
            Some(FlockEntry {
                pid: 4243,
                waiting: true,
                exclusive: true,
                device: (0xfe, 0),
                inode: 10010630
            })
        );
        assert_eq!(
            parse_flock_line("3: POSIX  ADVISORY  WRITE 9 fe:00:10010630 0 EOF"),
            None
        );
    }

    #[test]
    fn a_mounts_device_is_its_third_field() {
        let mountinfo = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                         27 1 254:0 / / rw,relatime - ext4 /dev/vda1 rw\n\
                         61 27 0:55 /@home /home rw - btrfs /dev/vdb rw\n";
        assert_eq!(mount_device(mountinfo, 27), Some((254, 0)));
        assert_eq!(mount_device(mountinfo, 61), Some((0, 55)));
        assert_eq!(mount_device(mountinfo, 2), None);
    }

    #[test]
    fn the_unix_table_lists_a_bound_name_and_whether_it_listens() {
        use std::os::unix::ffi::OsStrExt;

        let name = format!("me-only-unit/{}/procfs", std::process::id());
        assert_eq!(abstract_sockets(name.as_bytes()), Some(Vec::new()));
        let socket =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        let path = format!("\0{name}");
        socket
            .bind(&socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(path.as_bytes())).unwrap())
            .unwrap();
        let found = abstract_sockets(name.as_bytes()).unwrap();
        assert_eq!(found.len(), 1);
        assert!(!found[0].listening);
        socket.listen(1).unwrap();
        assert!(abstract_sockets(name.as_bytes()).unwrap()[0].listening);
        let client =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        client
            .connect(
                &socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(path.as_bytes())).unwrap(),
            )
            .unwrap();
        drop(client);
        let found = abstract_sockets(name.as_bytes()).unwrap();
        let listener = found.iter().find(|socket| socket.listening).unwrap();
        assert_eq!(listener.queued, 1, "a connection let go stays queued");
    }

    #[test]
    fn a_pipe_is_held_through_its_write_end_only() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let inode = nix::sys::stat::fstat(&read).unwrap().st_ino;
        let me = std::process::id() as i32;
        assert!(has_open(me, Opened::PipeWriter(inode)));
        drop(write);
        assert!(!has_open(me, Opened::PipeWriter(inode)), "the read end");
        drop(read);
    }

    #[test]
    fn unix_table_path_is_the_rest_of_the_line() {
        let line = b"0000000000000000: 00000002 00000000 00010000 0001 01 12345 @my lock";
        assert_eq!(nth_field_rest(line, 7), Some(&b"@my lock"[..]));
        let unnamed = b"0000000000000000: 00000002 00000000 00000000 0001 03 12346";
        assert_eq!(nth_field_rest(unnamed, 7), None);
    }
}
