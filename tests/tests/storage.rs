//! Broken storage under a running client, against a real Prosody: a full disk, a read-only file
//! system, a database locked by another process. Each must give a clear error at the moment it
//! bites, lose nothing (an inbound message that could not be committed is not acked, so the server
//! keeps it), and the client carries on by itself once the cause is gone.
//!
//! A corrupt file and a file from a newer schema are refused at open without being touched: the
//! core's store tests cover those (`refuses_foreign_newer_and_corrupt_files_without_touching_them`,
//! `corrupt_pages_are_reported`), and so do the FFI tests through the generated bindings.
//!
//! The small file system is a tmpfs in a private mount namespace ([`SmallDisk`]).

use std::time::{Duration, Instant};

use serde_json::Value;
use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::small_disk::SmallDisk;
use tether_e2e::tether::{Node, Running};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const LONG: Duration = Duration::from_secs(120);
/// The exit code of a store error (README).
const EXIT_STORE: i32 = 5;

struct World {
    prosody: Prosody,
    bob: Node,
    _dir: tempfile::TempDir,
}

fn world() -> (World, impl Fn(&std::path::Path, Vec<String>) -> Node) {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("start prosody");
    prosody.register("alice", "alice-secret").unwrap();
    prosody.register("bob", "bob-secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = prosody.ca_file();
    let addr = prosody.addr();
    let bob = Node::new(dir.path(), "bob", "bob-secret", addr, &ca);
    let alice_in = move |d: &std::path::Path, wrapper: Vec<String>| {
        let ca = ca.to_str().expect("utf-8 path").to_owned();
        Node::with_wrapper(
            d,
            "alice",
            "alice-secret",
            addr,
            &["--ca-file", &ca],
            wrapper,
        )
    };
    (
        World {
            prosody,
            bob,
            _dir: dir,
        },
        alice_in,
    )
}

/// Large bodies, so that storing them must grow the database (or its WAL).
fn big_bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix} {i} {}", "x".repeat(4000)))
        .collect()
}

fn online(run: Running, who: &str) -> Running {
    run.online(LONG, who)
}

/// Bob delivers `bodies` to alice (his run ends once the server acked all).
fn bob_sends(bob: &Node, bodies: &[String]) {
    bob.send_bodies(ALICE, bodies);
    bob.spawn_run(&["--until-idle"]).finish(LONG, "bob");
}

/// A database error event whose text contains `needle`.
fn store_error(run: &Running, needle: &str) -> bool {
    run.wait_for(LONG, |evs| {
        evs.iter().any(|e| {
            e["event"] == "error"
                && e["kind"] == "database"
                && e["message"].as_str().is_some_and(|m| m.contains(needle))
        })
    })
}

/// Alice's stored incoming bodies from bob, each with its count.
fn alice_has(alice: &Node) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for r in alice.messages(&["--direction", "in", "--peer", BOB]) {
        *seen
            .entry(r["body"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    seen
}

/// Waits until alice has stored each of `bodies` once; on failure the message says what the
/// client and the server logged (`context`).
fn wait_alice_has(alice: &Node, bodies: &[String], context: impl Fn() -> String) {
    let deadline = Instant::now() + LONG;
    loop {
        let seen = alice_has(alice);
        if bodies.iter().all(|b| seen.contains_key(b)) {
            for b in bodies {
                assert_eq!(seen[b], 1, "stored twice: {}", &b[..20]);
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "alice has {} of {} messages\n{}",
            bodies.iter().filter(|b| seen.contains_key(*b)).count(),
            bodies.len(),
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_full_disk_is_reported_loses_nothing_and_the_client_carries_on_once_freed() {
    let (w, alice_in) = world();
    let disk = SmallDisk::new(4096);
    let alice = alice_in(disk.mount_point(), disk.enter());
    let run = online(alice.spawn_run(&[]), "alice");
    let filled = disk.fill();
    assert!(filled > 0);

    // Messages arrive while nothing can be committed: an error, and nothing acked.
    let first = big_bodies("while full", 30);
    bob_sends(&w.bob, &first);
    assert!(
        store_error(&run, "full"),
        "no database-full error: {}",
        run.diagnostics()
    );
    // What the user writes now is refused with a clear error, not dropped silently.
    let out = alice.exec(&["send", "--to", BOB, "--body", "written on a full disk"]);
    assert_eq!(out.code, Some(EXIT_STORE), "{}", out.stderr);
    assert!(out.stderr.contains("full"), "{}", out.stderr);

    // Space comes back: the running client stores everything, once.
    disk.free();
    wait_alice_has(&alice, &first, || run.diagnostics());
    let out = alice.exec(&["send", "--to", BOB, "--body", "written after"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let id = out.stdout.trim().to_owned();
    assert!(
        run.wait_for(LONG, |evs| evs
            .iter()
            .any(|e| e["event"] == "message:acked" && e["id"] == id.as_str())),
        "{}",
        run.diagnostics()
    );
    // Bob's side: every message he sent was acked by the server.
    let bob_rows = w.bob.messages(&["--direction", "out"]);
    assert_eq!(bob_rows.len(), first.len());
    assert!(
        bob_rows.iter().all(|r| r["state"] != "failed"),
        "{bob_rows:?}"
    );
    let reconnects = run
        .named("connection")
        .iter()
        .filter(|e| e["state"] == "online")
        .count();
    eprintln!(
        "full disk: filled {filled} bytes; {} messages stored once after freeing; {reconnects} sessions",
        first.len()
    );
}

#[test]
fn a_read_only_file_system_is_a_clear_error_and_work_resumes_when_writable() {
    let (w, alice_in) = world();
    let mut disk = SmallDisk::new(4096);
    let alice = alice_in(disk.mount_point(), disk.enter());
    disk.set_read_only(true);

    let out = alice.exec(&["send", "--to", BOB, "--body", "on a read-only disk"]);
    assert_eq!(out.code, Some(EXIT_STORE), "{}", out.stderr);
    assert!(
        out.stderr.contains("database"),
        "not a clear database error: {}",
        out.stderr
    );
    let out = alice.exec(&["run", "--until-idle"]);
    assert_eq!(out.code, Some(EXIT_STORE), "{}", out.stderr);

    disk.set_read_only(false);
    let out = alice.exec(&["send", "--to", BOB, "--body", "on a writable disk"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut run = alice.spawn_run(&["--until-idle"]);
    run.finish(LONG, "alice on a writable disk");
    let rows = alice.messages(&["--direction", "out"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["body"], "on a writable disk");
    assert_ne!(rows[0]["state"], "failed");
    drop(w);
}

#[test]
fn a_database_locked_by_another_process_delays_work_and_loses_nothing() {
    let (w, alice_in) = world();
    let dir = tempfile::tempdir().unwrap();
    let alice = alice_in(dir.path(), Vec::new());
    let run = online(alice.spawn_run(&[]), "alice");

    // Another process takes the write lock and keeps it longer than the client's busy timeout.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let db = alice.db.clone();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();

    let bodies = big_bodies("while locked", 5);
    bob_sends(&w.bob, &bodies);
    assert!(
        store_error(&run, "locked"),
        "no database-locked error: {}",
        run.diagnostics()
    );
    let out = alice.exec(&["send", "--to", BOB, "--body", "written while locked"]);
    assert_eq!(out.code, Some(EXIT_STORE), "{}", out.stderr);
    assert!(out.stderr.contains("locked"), "{}", out.stderr);

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    wait_alice_has(&alice, &bodies, || {
        format!(
            "{}\nprosody's log:\n{}",
            run.diagnostics(),
            w.prosody.log_tail(80)
        )
    });
    // The send refused while locked left no row behind (nothing half-written).
    let outgoing: Vec<Value> = alice.messages(&["--direction", "out"]);
    assert!(outgoing.is_empty(), "{outgoing:?}");
}
