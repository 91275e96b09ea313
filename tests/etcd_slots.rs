//! `--slots --wait` with `--etcd`: a waiter queues on every slot at once,
//! a thread for each, and must end up holding exactly one slot, its key
//! renewed by a keeper, or wait on; the places it does not need are gone.
#![cfg(feature = "etcd")]

use crate::common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::etcd::{Etcd, hostname, keeper_of, lock_name, on};
use common::{KillOnDrop, pipe, text};

/// What the test hears from its waiters.
enum Heard {
    /// A COMMAND runs: the slot it was told, and its pid (me-only's).
    Ran { slot: String, pid: u32 },
    /// Waiter `index` and its helpers (keeper, sentry) have all ended,
    /// having said `stderr`.
    Ended { index: usize, stderr: String },
}

/// How long a test waits for the next thing a waiter does before it gives
/// up on it: far more than a launch takes, less than the TTL of a place
/// left behind.
const PATIENCE: Duration = Duration::from_secs(20);

/// Defect 6 of issue 22: a waiter queued on every slot could win one while
/// another of its threads was between entering a lease in the contest and
/// putting its key on it; the win revoked that lease, the put failed
/// ("requested lease not found"), and that error ended the wait: exit 3,
/// and the slot won was left to run out its TTL with no one renewing it.
/// Round after round, the holders of all the slots let go together while
/// the waiters are at a different point of their start (none started,
/// some, all), and the waiters that run are let go together once every
/// slot is taken: every waiter runs, in a slot no other COMMAND has
/// meanwhile, with its key first in line and kept by a keeper, and no key
/// is left once all have ended.
#[test]
fn slot_waiters_released_together_each_run_in_a_slot_of_their_own() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    for (round, &(slots, started_first)) in ROUNDS.iter().enumerate() {
        let lock = lock_name(&format!("slots-together-{round}"));
        let mut holders = Some(AllSlotsHeld::start(&etcd, &lock, slots));
        let mut waiters = Waiters::new(slots);
        for index in 0..WAITERS {
            if index == started_first {
                // Every slot comes free at once, whatever the waiters do.
                if let Some(holders) = holders.take() {
                    holders.let_go();
                }
            }
            waiters.start(&etcd, &lock);
        }
        waiters.run_all_together(&etcd, &lock);
        for slot in 1..=slots {
            let left = etcd.keys_under(&format!("{lock}.{slot}"));
            assert!(left.is_empty(), "round {round}: keys left: {left:?}");
        }
    }
}

/// Each round's slots, and how many waiters start before their holders let
/// go. With 2 slots the win revokes one place, and its thread's error came
/// after the win's report (0 failures in 100 rounds); with 8, the winner
/// revokes 7 places one after the other, and a revoked place's error was
/// reported first in 1 run of the test in 3.
const ROUNDS: [(usize, usize); 4] = [(2, 4), (8, 4), (2, 12), (8, 12)];
const WAITERS: usize = 24;

/// The holders of all LOCK's slots, whose COMMANDs end together when told.
struct AllSlotsHeld {
    /// Their stdin: its end is their cue.
    cue: File,
    holders: Vec<KillOnDrop>,
}

impl AllSlotsHeld {
    fn start(etcd: &Etcd, lock: &str, slots: usize) -> AllSlotsHeld {
        let (stdin, cue) = pipe();
        let count = slots.to_string();
        let holders = (0..slots)
            .map(|_| {
                let mut command = on(etcd, &["--slots", &count, lock, "sh", "-c", HOLD]);
                command.stdin(stdin.try_clone().unwrap());
                KillOnDrop(common::etcd::started(&mut command).0)
            })
            .collect();
        AllSlotsHeld { cue, holders }
    }

    /// Ends their COMMANDs at once, and returns once they have exited.
    fn let_go(mut self) {
        drop(self.cue);
        for holder in &mut self.holders {
            let status = holder.0.wait().unwrap();
            assert!(status.success(), "a holder: {status}");
        }
    }
}

/// A COMMAND that says `ready`, then waits for its stdin to end.
const HOLD: &str = "echo ready; read line || :";

/// A COMMAND that says which slot it holds and its pid, then waits for its
/// stdin to end.
const SAY_AND_HOLD: &str = "echo \"${ME_ONLY_SLOT:-unset} $$\"; read line || :";

/// The waiters of one round, on all the slots.
struct Waiters {
    slots: usize,
    children: Vec<KillOnDrop>,
    /// The write end of their stdout, while more may start.
    stdout: Option<File>,
    sender: mpsc::Sender<Heard>,
    heard: mpsc::Receiver<Heard>,
    /// The slot each running COMMAND holds, by waiter.
    running: HashMap<String, usize>,
    ran: Vec<bool>,
}

impl Waiters {
    fn new(slots: usize) -> Waiters {
        let (sender, heard) = mpsc::channel();
        let (said, stdout) = pipe();
        let ran_lines = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(said).lines() {
                let line = line.unwrap();
                let (slot, pid) = line.split_once(' ').unwrap();
                let ran = Heard::Ran {
                    slot: slot.to_owned(),
                    pid: pid.parse().unwrap(),
                };
                let _ = ran_lines.send(ran);
            }
        });
        Waiters {
            slots,
            children: Vec::new(),
            stdout: Some(stdout),
            sender,
            heard,
            running: HashMap::new(),
            ran: Vec::new(),
        }
    }

    /// Starts one more waiter on both slots; what it says on stderr (-v)
    /// is sent as `Heard::Ended` once it and its helpers have ended.
    fn start(&mut self, etcd: &Etcd, lock: &str) {
        let index = self.children.len();
        let stdout = self.stdout.as_ref().unwrap().try_clone().unwrap();
        let slots = self.slots.to_string();
        let words = [
            "-v",
            "--wait",
            "--slots",
            &slots,
            lock,
            "sh",
            "-c",
            SAY_AND_HOLD,
        ];
        let mut child = on(etcd, &words)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let sender = self.sender.clone();
        std::thread::spawn(move || {
            let mut said = String::new();
            let _ = stderr.read_to_string(&mut said);
            let _ = sender.send(Heard::Ended {
                index,
                stderr: said,
            });
        });
        self.children.push(KillOnDrop(child));
        self.ran.push(false);
    }

    /// Lets the waiters run, a slot each: those running are let go
    /// together once every slot is taken (or the last has run). Returns
    /// once every waiter and its helpers have ended.
    fn run_all_together(&mut self, etcd: &Etcd, lock: &str) {
        drop(self.stdout.take());
        let mut ended = 0;
        while ended < self.children.len() {
            let heard = self.heard.recv_timeout(PATIENCE);
            match heard.expect("no waiter ran or ended in time") {
                Heard::Ran { slot, pid } => {
                    let index = self.ran_in(etcd, lock, &slot, pid);
                    self.ran[index] = true;
                    let all_ran = self.ran.iter().all(|&ran| ran);
                    if self.running.len() == self.slots || all_ran {
                        self.let_running_go();
                    }
                }
                Heard::Ended { index, stderr } => {
                    assert!(self.ran[index], "waiter {index} ended unrun: {stderr}");
                    ended += 1;
                }
            }
        }
    }

    /// Checks a COMMAND that just started (its key is the first of its
    /// slot, and a keeper keeps it), and notes its slot taken; returns its
    /// waiter.
    fn ran_in(&mut self, etcd: &Etcd, lock: &str, slot: &str, pid: u32) -> usize {
        let index = self
            .children
            .iter()
            .position(|child| child.0.id() == pid)
            .unwrap_or_else(|| panic!("slot {slot} (pid {pid}): not a waiter's COMMAND"));
        assert!(
            slot.parse()
                .is_ok_and(|slot| (1..=self.slots).contains(&slot)),
            "ME_ONLY_SLOT {slot}"
        );
        if let Some(other) = self.running.insert(slot.to_owned(), index) {
            panic!("waiters {other} and {index} both run in slot {slot}");
        }
        let slot_lock = format!("{lock}.{slot}");
        let probe = on(etcd, &["--test", &slot_lock]).output().unwrap();
        assert_eq!(
            text(&probe.stdout),
            format!("{} {pid}\n", hostname()),
            "the holder of {slot_lock}: {probe:?}"
        );
        assert!(keeper_of(&slot_lock).is_some(), "no keeper for {slot_lock}");
        index
    }

    /// Ends the running COMMANDs together; returns once they have exited
    /// (each with 0: it ran, and did not fail), which frees their slots.
    fn let_running_go(&mut self) {
        let running: Vec<usize> = self.running.drain().map(|(_, index)| index).collect();
        for &index in &running {
            drop(self.children[index].0.stdin.take());
        }
        for index in running {
            let status = self.children[index].0.wait().unwrap();
            assert!(status.success(), "waiter {index}'s COMMAND: {status}");
        }
    }
}
