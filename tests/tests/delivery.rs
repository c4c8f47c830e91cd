//! End-to-end delivery scenarios against a real Prosody, with faults injected by the test proxy and
//! by SIGKILL. Each asserts exact counts at the receiver (its SQLite store) and at the sender.
//!
//! Alice (the sender) connects through the proxy; Bob (the receiver) connects to Prosody directly.

use std::time::Duration;

use tether_e2e::pair::Pair;
use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::tether::{Node, Running};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
/// Time limits are generous: they only bound a broken run, they are not what is measured.
const LONG: Duration = Duration::from_secs(120);

type World = Pair<Prosody>;

fn world(opts: ProsodyOptions) -> World {
    Pair::new(Prosody::start(opts).expect("start prosody"))
}

fn bob_online(w: &World) -> Running {
    w.bob.spawn_run(&[]).online(LONG, "bob")
}

fn finish(run: &mut Running, what: &str) {
    run.finish(LONG, what)
}

#[test]
fn sent_while_offline_is_delivered_once_when_the_network_returns() {
    let w = world(ProsodyOptions::default());
    let mut bob = bob_online(&w);
    w.proxy.set_refuse(true);
    w.alice.send_many(BOB, 3, "before run");
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    // Alice keeps retrying while the network is down; her messages stay queued.
    assert!(alice.wait_for(LONG, |evs| evs
        .iter()
        .filter(|e| e["event"] == "connection" && e["state"] == "offline")
        .count()
        >= 3));
    // A message committed by another process while `run` is offline is picked up too.
    w.alice.send_many(BOB, 2, "during run");
    assert_eq!(w.alice.count_out("queued"), 5);
    assert_eq!(w.bob.received_from(ALICE).0, 0);

    w.proxy.set_refuse(false);
    finish(&mut alice, "alice");
    assert_eq!(w.alice.confirmed(), 5);
    let (rows, distinct) = w.bob.wait_received(ALICE, 5, LONG);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.bob.received_from(ALICE), (5, 5));
    assert_eq!((rows, distinct), (5, 5));
    eprintln!("offline: alice acked 5, bob stored 5 distinct");
    bob.terminate(LONG);
}

#[test]
fn link_dropped_mid_burst_resumes_and_delivers_each_once() {
    let w = world(ProsodyOptions::default());
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 500, "burst");
    // Slow the link so the burst takes a few seconds, and cut it once 100 are confirmed.
    w.proxy.set_rate_limit(Some(60_000));
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(alice.wait_confirmed(100, LONG), "{}", alice.stderr());
    w.proxy.drop_all();
    w.proxy.set_rate_limit(None);
    finish(&mut alice, "alice");
    assert!(
        alice.count("message:hibernated") > 0,
        "the drop did not land mid-burst"
    );
    assert!(alice.saw_online(true), "the stream was not resumed");
    assert_eq!(w.alice.confirmed(), 500);
    assert_eq!(w.bob.wait_received(ALICE, 500, LONG), (500, 500));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.bob.received_from(ALICE), (500, 500));
    eprintln!(
        "drop: hibernated={} retry={} acked=500, bob stored 500 distinct",
        alice.count("message:hibernated"),
        alice.count("message:retry")
    );
    bob.terminate(LONG);
}

#[test]
fn sender_killed_mid_burst_resumes_on_restart_with_nothing_lost_or_doubled() {
    let w = world(ProsodyOptions {
        debug_log: true,
        ..ProsodyOptions::default()
    });
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 500, "kill");
    // ~300 bytes per message: 500 take several seconds at 30 kB/s.
    w.proxy.set_rate_limit(Some(30_000));
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(alice.wait_confirmed(100, LONG), "{}", alice.stderr());
    alice.kill9();
    let mark = w.server.log_mark();
    let acked_before = w.alice.confirmed();
    assert!(acked_before < 500, "the kill came too late");
    let sm = w.alice.sm();
    assert_eq!(sm["resumable"], true, "SM state not persisted: {sm}");
    w.proxy.set_rate_limit(None);

    let mut again = w.alice.spawn_run(&["--until-idle"]);
    finish(&mut again, "alice after restart");
    let failed = w.alice.count_out("failed");
    if !again.saw_online(true) || failed > 0 {
        // Only Prosody 13.0.1's parser bug may lose this session (ARCHITECTURE.md, "Server and
        // library bugs met"): then what it never confirmed failed, and the user resends it.
        assert!(
            w.server.resumption_bug_since(mark),
            "the restarted process did not resume the stream, and not because of Prosody's bug in this resumption: {}",
            again.diagnostics()
        );
        let out = w.alice.exec(&["resend", "--all-failed"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        finish(&mut w.alice.spawn_run(&["--until-idle"]), "alice resend");
    }
    assert_eq!(w.alice.confirmed(), 500);
    assert_eq!(w.bob.wait_received(ALICE, 500, LONG), (500, 500));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.bob.received_from(ALICE), (500, 500));
    eprintln!(
        "kill: acked before kill={acked_before}, failed by Prosody's bug={failed}, after restart=500, bob stored 500 distinct"
    );
    bob.terminate(LONG);
}

#[test]
fn expired_resumption_fails_messages_until_the_user_resends_them() {
    let w = world(ProsodyOptions {
        hibernation_secs: 2,
        ..ProsodyOptions::default()
    });
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 300, "expire");
    w.proxy.set_rate_limit(Some(20_000));
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(alice.wait_confirmed(50, LONG), "{}", alice.stderr());
    // The network goes away for longer than the server keeps the session.
    w.proxy.set_refuse(true);
    w.proxy.drop_all();
    std::thread::sleep(Duration::from_secs(6));
    w.proxy.set_rate_limit(None);
    w.proxy.set_refuse(false);
    finish(&mut alice, "alice");
    assert!(alice.saw_online(false) && alice.count("message:failed") > 0);
    let acked = w.alice.confirmed();
    let failed = w.alice.count_out("failed");
    assert!(failed > 0, "nothing failed: the expiry did not bite");
    assert_eq!(acked + failed, 300);

    // Nothing failed is resent without the user: Bob's count stays put.
    std::thread::sleep(Duration::from_secs(2));
    let (bob_before, distinct) = w.bob.received_from(ALICE);
    assert_eq!(bob_before, distinct, "bob stored a duplicate");
    assert!(
        bob_before >= acked && bob_before < 300,
        "bob has {bob_before}, acked {acked}"
    );
    assert_eq!(w.alice.count_out("failed"), failed);

    let out = w.alice.exec(&["resend", "--all-failed"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut again = w.alice.spawn_run(&["--until-idle"]);
    finish(&mut again, "alice resend");
    assert_eq!(w.alice.confirmed(), 300);
    assert_eq!(w.bob.wait_received(ALICE, 300, LONG), (300, 300));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.bob.received_from(ALICE), (300, 300));
    eprintln!(
        "expiry: acked={acked} failed={failed} bob-before-resend={bob_before}; after resend acked=300, bob stored 300 distinct"
    );
    bob.terminate(LONG);
    drop(w.server);
}

#[test]
fn receiver_killed_while_messages_arrive_loses_and_doubles_nothing() {
    let w = world(ProsodyOptions::default());
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 500, "to-bob");
    w.proxy.set_rate_limit(Some(30_000));
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(bob.wait_count("message:received", 100, LONG));
    bob.kill9();
    let before = w.bob.received_from(ALICE);
    assert!(before.0 < 500, "the kill came too late");
    std::thread::sleep(Duration::from_secs(1));
    let mut bob2 = w.bob.spawn_run(&[]);
    w.proxy.set_rate_limit(None);
    finish(&mut alice, "alice");
    assert_eq!(w.alice.confirmed(), 500);
    assert_eq!(w.bob.wait_received(ALICE, 500, LONG), (500, 500));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.bob.received_from(ALICE), (500, 500));
    assert!(bob2.saw_online(true), "bob did not resume his stream");
    eprintln!(
        "receiver kill: bob had {} before the kill, 500 distinct after",
        before.0
    );
    bob2.terminate(LONG);
}

#[test]
fn wrong_password_is_final_with_its_exit_code_and_no_retry_loop() {
    let w = world(ProsodyOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mallory = Node::new(
        dir.path(),
        "alice",
        "not-the-password",
        w.proxy.addr(),
        &w.server.ca_file(),
    );
    mallory.send_many(BOB, 1, "never");
    let mut run = mallory.spawn_run(&[]);
    let status = run
        .wait_exit(Duration::from_secs(30))
        .expect("run must exit by itself");
    assert_eq!(status.code(), Some(3), "stderr: {}", run.stderr());
    assert!(
        run.stderr().contains("authentication failed"),
        "{}",
        run.stderr()
    );
    assert_eq!(w.proxy.connections_accepted(), 1, "it retried");
    assert!(run.count("error") >= 1);
    // The message is still there, queued, for when the password is fixed.
    assert_eq!(mallory.count_out("queued"), 1);
}

#[test]
fn untrusted_certificate_is_refused() {
    let w = world(ProsodyOptions::default());
    let other = Prosody::start(ProsodyOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Trusting another server's CA: the real server's certificate must not validate.
    let eve = Node::new(
        dir.path(),
        "alice",
        "alice-secret",
        w.proxy.addr(),
        &other.ca_file(),
    );
    let mut run = eve.spawn_run(&[]);
    let status = run
        .wait_exit(Duration::from_secs(30))
        .expect("run must exit by itself");
    assert_eq!(status.code(), Some(6), "stderr: {}", run.stderr());
    assert!(run.stderr().contains("TLS"), "{}", run.stderr());
}

#[test]
fn plaintext_only_with_the_insecure_flag() {
    // A server that offers no STARTTLS at all.
    let prosody = Prosody::start(ProsodyOptions {
        starttls: false,
        ..ProsodyOptions::default()
    })
    .unwrap();
    prosody.register("alice", "alice-secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let careful = Node::new(
        dir.path(),
        "alice",
        "alice-secret",
        prosody.addr(),
        &prosody.ca_file(),
    );
    let mut run = careful.spawn_run(&[]);
    let status = run
        .wait_exit(Duration::from_secs(30))
        .expect("run must exit by itself");
    assert_eq!(status.code(), Some(6), "stderr: {}", run.stderr());
    assert!(run.stderr().contains("STARTTLS"), "{}", run.stderr());

    let dir2 = tempfile::tempdir().unwrap();
    let loopback = Node::with_args(
        dir2.path(),
        "alice",
        "alice-secret",
        prosody.addr(),
        &["--insecure-plaintext"],
    );
    loopback.send_many(ALICE, 2, "note to self");
    let mut run = loopback.spawn_run(&["--until-idle"]);
    finish(&mut run, "plaintext run");
    assert_eq!(loopback.confirmed(), 2);
}

/// A cut that leaves half a stanza at the server. Prosody 13.0.1 then feeds the resumed connection
/// to the old connection's XML parser and kills the resumed session as not-well-formed (see
/// ARCHITECTURE.md), so resumption may fail: whatever the server does, nothing is lost or doubled,
/// and what failed arrives exactly once after the user's resend.
#[test]
fn cut_mid_stanza_loses_nothing_even_when_the_server_drops_the_session() {
    let w = world(ProsodyOptions::default());
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 500, "cut");
    w.proxy.drop_after_upstream_bytes(40_000);
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    finish(&mut alice, "alice");
    let (confirmed_first, failed) = (w.alice.confirmed(), w.alice.count_out("failed"));
    assert_eq!(confirmed_first + failed, 500);
    let (bob_first, distinct) = w.bob.received_from(ALICE);
    assert_eq!(bob_first, distinct, "bob stored a duplicate");
    if failed > 0 {
        let out = w.alice.exec(&["resend", "--all-failed"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let mut again = w.alice.spawn_run(&["--until-idle"]);
        finish(&mut again, "alice resend");
    }
    assert_eq!(w.alice.confirmed(), 500);
    assert_eq!(w.bob.wait_received(ALICE, 500, LONG), (500, 500));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.bob.received_from(ALICE), (500, 500));
    eprintln!(
        "cut mid-stanza: resumed={} confirmed={confirmed_first} failed={failed} bob-before-resend={bob_first}; after resend 500, bob 500 distinct",
        alice.saw_online(true)
    );
    bob.terminate(LONG);
}
