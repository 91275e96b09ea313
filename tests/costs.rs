//! What a lock costs the machine, whatever others do (SPEC 7): a holder's
//! kernel resources stay bounded however many launches it turns away, and a
//! waiter costs no CPU while it waits, whatever the listener it waits on
//! does with its connection.

mod common;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use common::{Holding, me_only, text, unique_lock};

/// Refused launches run this many at a time.
const AT_ONCE: usize = 4;

/// The user of the refused launches that may not read the holder's /proc.
const NOBODY: u32 = 65534;

/// Each refused launch asked the holder who it was by connecting to its
/// listening socket, and an AF_UNIX connection stays in the listener's queue
/// until the listener accepts it, which a holder never does: after 4096
/// (somaxconn; a per-minute cron job against a holder of three days) the
/// queue was full, and --test, --list and --replace no longer learnt the
/// holder's pid. Launches by another user, who may not read the holder's
/// /proc, are among them where the tests run as root.
#[test]
fn ten_thousand_refused_launches_leave_the_holder_named_listed_and_replaceable() {
    if !common::programs_or_skip(&["ss"]) {
        return;
    }
    let lock = unique_lock("refused");
    let holder = Holding::with_script([&lock], "echo ready; read line");
    let another_user = nix::unistd::getuid().is_root();
    std::thread::scope(|scope| {
        for launcher in 0..AT_ONCE {
            let lock = &lock;
            scope.spawn(move || {
                let nobody = another_user && launcher % 2 == 1;
                let (_copy, program) = if nobody {
                    let (copy, command) = common::me_only_as_user(NOBODY);
                    (Some(copy), command.get_program().to_owned())
                } else {
                    (None, common::ME_ONLY.into())
                };
                for _ in 0..10_000 / AT_ONCE {
                    let mut launch = Command::new(&program);
                    if nobody {
                        launch.uid(NOBODY).gid(NOBODY).current_dir("/");
                    }
                    let output = launch.args([lock, "true"]).output().unwrap();
                    assert_eq!(output.status.code(), Some(4), "{output:?}");
                }
            });
        }
    });
    let test = me_only().args(["--test", &lock]).output().unwrap();
    assert_eq!(test.status.code(), Some(4), "{test:?}");
    assert_eq!(text(&test.stdout), format!("{}\n", holder.pid));

    let list = me_only().args(["--list", &lock]).output().unwrap();
    let listed = text(&list.stdout);
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(..3),
        Some(&[lock.as_str(), "abstract", &holder.pid.to_string()][..]),
        "{listed}"
    );

    let queued = common::queued_on(&lock);
    println!("{queued} connections queued on the holder");
    assert!(queued <= 40, "{queued} connections queued on the holder");

    let replace = me_only()
        .args(["--replace", &lock, "true"])
        .output()
        .unwrap();
    assert_eq!(replace.status.code(), Some(0), "{replace:?}");
    assert_eq!(
        holder.release().signal(),
        Some(15),
        "the holder was stopped"
    );
}
