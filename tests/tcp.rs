//! `--tcp`: a loopback port as the lock.

use crate::common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};

use assert_cmd::prelude::*;
use common::{Holding, free_port, me_only, one_error_line, text};

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn held_port_exits_4_and_names_the_lock() {
    let address = loopback(free_port());
    let holder = Holding::start(["--tcp", &address]);
    let output = me_only()
        .args(["--tcp", &address, "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(
        one_error_line(&output.stderr),
        format!(
            "me-only: {address}: already held by pid {} (uid {})\n",
            holder.pid,
            nix::unistd::getuid()
        )
    );
    assert!(holder.release().success());
    me_only()
        .args(["--tcp", &address, "true"])
        .assert()
        .success();
}

/// Any listener holds the lock, me-only or not, on the address itself or on
/// the wildcard address.
#[test]
fn port_held_by_another_program_is_held() {
    for listen_on in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
        let port = free_port();
        let other_program = TcpListener::bind(SocketAddrV4::new(listen_on, port)).unwrap();
        me_only()
            .args(["--tcp", &loopback(port), "true"])
            .assert()
            .code(4);
        drop(other_program);
        me_only()
            .args(["--tcp", &loopback(port), "true"])
            .assert()
            .success();
    }
}

/// A client connected to the holder (queued, never accepted) does not keep
/// the port from the next instance once the holder is killed.
#[test]
fn kill_9_frees_the_port_even_with_a_client_connected() {
    let address = loopback(free_port());
    let holder = Holding::start(["--tcp", &address]);
    let _client = TcpStream::connect(&address).unwrap();
    holder.kill();
    me_only()
        .args(["--tcp", &address, "true"])
        .assert()
        .success();
}

/// The previous holder accepted a connection and closed it first, leaving
/// its side in FIN_WAIT2/TIME_WAIT on the lock's address: a plain bind is
/// refused then, but the lock must be taken at once.
#[test]
fn lock_is_retaken_despite_time_wait_of_the_last_holder() {
    let port = free_port();
    let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let previous_holder = TcpListener::bind(address).unwrap();
    let mut client = TcpStream::connect(address).unwrap();
    let (served, _) = previous_holder.accept().unwrap();
    drop(previous_holder);
    drop(served); // the holder's side closes first: it will linger
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap(); // its FIN arrived
    drop(client);

    let naive = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let refused = naive.bind(&address.into()).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::AddrInUse,
        "set-up failed: no lingering connection"
    );

    me_only()
        .args(["--tcp", &address.to_string(), "true"])
        .assert()
        .success();
}

/// The local address of the listening socket behind ME_ONLY_FD, from the
/// command's own view of /proc/net/tcp.
fn lock_address_seen_by_command(command: &mut std::process::Command) -> SocketAddrV4 {
    let output = command
        .args([
            "sh",
            "-c",
            "readlink /proc/$$/fd/$ME_ONLY_FD; cat /proc/net/tcp",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    let mut lines = stdout.lines();
    let inode = common::socket_inode(lines.next().unwrap());
    // sl local_address rem_address st ... inode (field 9); st 0A = LISTEN.
    let fields = common::proc_net_row(lines, 9, inode);
    let entry = fields.join(" ");
    assert_eq!(fields[3], "0A", "not listening: {entry}");
    let (ip, port) = fields[1].split_once(':').unwrap();
    // The address is printed as a word in host byte order.
    let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).unwrap().to_ne_bytes());
    SocketAddrV4::new(ip, u16::from_str_radix(port, 16).unwrap())
}

#[test]
fn command_holds_a_listening_socket_on_the_given_address() {
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let port = free_port();
    let mut command = me_only();
    command.args(["--tcp", &format!("{ip}:{port}")]);
    assert_eq!(
        lock_address_seen_by_command(&mut command),
        SocketAddrV4::new(ip, port)
    );
}

/// PORT alone binds 127.H.L.1, H.L from the real uid (Lock::Socket's
/// scheme): 127.0.0.1 for root, 127.3.232.1 for uid 1000.
#[test]
fn port_alone_binds_the_users_own_loopback_address() {
    let uid = nix::unistd::getuid().as_raw();
    let mut users = vec![uid];
    if uid == 0 {
        users.push(1000);
    }
    for user in users {
        let [_, _, high, low] = user.to_be_bytes();
        let ip = Ipv4Addr::new(127, high, low, 1);
        let port = free_port();
        let (_copy, mut command) = if user == uid {
            (tempfile::tempdir().unwrap(), me_only())
        } else {
            common::me_only_as_user(user)
        };
        command.args(["--tcp", &port.to_string()]);
        assert_eq!(
            lock_address_seen_by_command(&mut command),
            SocketAddrV4::new(ip, port),
            "uid {user}"
        );
    }
}
