//! The core's end-to-end delivery scenarios against the second server, ejabberd 24.12 (Debian
//! bookworm-backports), with the same fault proxy and the same exact counts as `delivery.rs` runs
//! against Prosody. Known differences this exercises: ejabberd's `<failed/>` carries a text, and
//! it answers a resumption after a restart differently.

use std::time::Duration;

use tether_e2e::ejabberd::{Ejabberd, EjabberdOptions};
use tether_e2e::pair::Pair;
use tether_e2e::tether::{Node, Running};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const LONG: Duration = Duration::from_secs(120);

type World = Pair<Ejabberd>;

fn world(opts: EjabberdOptions) -> World {
    Pair::new(Ejabberd::start(opts).expect("start ejabberd"))
}

fn bob_online(w: &World) -> Running {
    w.bob.spawn_run(&[]).online(LONG, "bob")
}

fn finish(run: &mut Running, what: &str, w: &World) {
    run.finish(
        LONG,
        &format!("{what} (ejabberd log: {})", w.server.log_tail(30)),
    )
}

/// Bob ends with exactly `n` distinct messages from alice, one row each.
fn bob_has_exactly(w: &World, n: usize) {
    assert_eq!(w.bob.wait_received(ALICE, n, LONG), (n, n));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.bob.received_from(ALICE), (n, n));
}

#[test]
fn ejabberd_sent_offline_is_delivered_once() {
    let w = world(EjabberdOptions::default());
    let mut bob = bob_online(&w);
    w.proxy.set_refuse(true);
    w.alice.send_many(BOB, 5, "offline");
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(alice.wait_for(LONG, |evs| evs
        .iter()
        .any(|e| e["event"] == "connection" && e["state"] == "offline")));
    w.proxy.set_refuse(false);
    finish(&mut alice, "alice", &w);
    assert_eq!(w.alice.confirmed(), 5);
    bob_has_exactly(&w, 5);
    bob.terminate(LONG);
}

#[test]
fn ejabberd_link_dropped_mid_burst_resumes_and_delivers_each_once() {
    let w = world(EjabberdOptions::default());
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 300, "burst");
    w.proxy.set_rate_limit(Some(40_000));
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(alice.wait_confirmed(60, LONG), "{}", alice.diagnostics());
    w.proxy.drop_all();
    w.proxy.set_rate_limit(None);
    finish(&mut alice, "alice", &w);
    assert!(
        alice.count("message:hibernated") > 0,
        "the drop came too late"
    );
    assert!(
        alice.saw_online(true),
        "not resumed: {}",
        alice.diagnostics()
    );
    assert_eq!(w.alice.confirmed(), 300);
    bob_has_exactly(&w, 300);
    bob.terminate(LONG);
}

#[test]
fn ejabberd_sender_killed_mid_burst_resumes_on_restart() {
    let w = world(EjabberdOptions::default());
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 300, "kill");
    w.proxy.set_rate_limit(Some(30_000));
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(alice.wait_confirmed(60, LONG), "{}", alice.diagnostics());
    alice.kill9();
    let before = w.alice.confirmed();
    assert!(before < 300, "the kill came too late");
    w.proxy.set_rate_limit(None);
    let mut again = w.alice.spawn_run(&["--until-idle"]);
    finish(&mut again, "alice after restart", &w);
    assert!(
        again.saw_online(true),
        "not resumed: {}",
        again.diagnostics()
    );
    assert_eq!(w.alice.confirmed(), 300);
    bob_has_exactly(&w, 300);
    eprintln!("ejabberd kill: {before} acked before the kill, 300 after, bob 300 distinct");
    bob.terminate(LONG);
}

#[test]
fn ejabberd_expired_resumption_fails_until_the_user_resends() {
    let w = world(EjabberdOptions {
        resume_timeout_secs: 2,
        ..EjabberdOptions::default()
    });
    let mut bob = bob_online(&w);
    w.alice.send_many(BOB, 200, "expire");
    w.proxy.set_rate_limit(Some(15_000));
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    assert!(alice.wait_confirmed(30, LONG), "{}", alice.diagnostics());
    w.proxy.set_refuse(true);
    w.proxy.drop_all();
    std::thread::sleep(Duration::from_secs(6));
    w.proxy.set_rate_limit(None);
    w.proxy.set_refuse(false);
    finish(&mut alice, "alice", &w);
    let failed = w.alice.count_out("failed");
    assert!(failed > 0, "nothing failed: {}", alice.diagnostics());
    assert_eq!(w.alice.confirmed() + failed, 200);
    for r in w.alice.messages(&["--direction", "out"]) {
        if r["state"] == "failed" {
            assert!(r["error"].is_string(), "failed without a reason: {r}");
        }
    }
    let (before, distinct) = w.bob.received_from(ALICE);
    assert_eq!(before, distinct, "bob stored a duplicate");
    let out = w.alice.exec(&["resend", "--all-failed"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut again = w.alice.spawn_run(&["--until-idle"]);
    finish(&mut again, "alice resend", &w);
    assert_eq!(w.alice.confirmed(), 200);
    bob_has_exactly(&w, 200);
    eprintln!("ejabberd expiry: {failed} failed, resent; bob 200 distinct");
    bob.terminate(LONG);
}

#[test]
fn ejabberd_wrong_password_is_final() {
    let w = world(EjabberdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mallory = Node::new(
        dir.path(),
        "alice",
        "not-her-password",
        w.proxy.addr(),
        &w.server.ca_file(),
    );
    let mut run = mallory.spawn_run(&[]);
    let status = run
        .wait_exit(Duration::from_secs(30))
        .expect("exits by itself");
    assert_eq!(status.code(), Some(3), "{}", run.diagnostics());
    assert_eq!(w.proxy.connections_accepted(), 1, "it retried");
}

#[test]
fn ejabberd_restart_loses_sessions_not_messages() {
    let mut w = world(EjabberdOptions::default());
    w.alice.send_many(BOB, 100, "restart");
    w.proxy.set_rate_limit(Some(15_000));
    let mut alice = w.alice.spawn_run(&[]);
    assert!(alice.wait_confirmed(20, LONG), "{}", alice.diagnostics());
    w.server.restart().expect("restart ejabberd");
    w.proxy.set_rate_limit(None);
    // Alice carries on by herself: a new session after the refused resumption.
    assert!(
        alice.wait_for(LONG, |evs| evs
            .iter()
            .filter(|e| e["event"] == "connection" && e["state"] == "online")
            .count()
            >= 2),
        "{}",
        alice.diagnostics()
    );
    let deadline = std::time::Instant::now() + LONG;
    while w.alice.pending() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            alice.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    alice.terminate(LONG);
    let failed = w.alice.count_out("failed");
    if failed > 0 {
        let out = w.alice.exec(&["resend", "--all-failed"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let mut again = w.alice.spawn_run(&["--until-idle"]);
        finish(&mut again, "alice resend", &w);
    }
    assert_eq!(w.alice.confirmed(), 100);
    // Bob comes online only now: what the server stored offline (or archived) reaches him once.
    let mut bob = bob_online(&w);
    bob_has_exactly(&w, 100);
    eprintln!("ejabberd restart: {failed} failed and resent; bob 100 distinct");
    bob.terminate(LONG);
}

/// Without TLS (the loopback test option), SCRAM must say it does not do channel binding ('n'):
/// ejabberd checks the flag, unlike Prosody.
#[test]
fn ejabberd_scram_over_plaintext_with_the_insecure_option() {
    let server = Ejabberd::start(EjabberdOptions {
        starttls: false,
        ..EjabberdOptions::default()
    })
    .expect("start ejabberd");
    server.register("alice", "alice-secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Without the option: refused, no password sent in the clear.
    let careful = Node::new(
        dir.path(),
        "alice",
        "alice-secret",
        server.addr(),
        &server.ca_file(),
    );
    let mut run = careful.spawn_run(&[]);
    let status = run
        .wait_exit(Duration::from_secs(30))
        .expect("exits by itself");
    assert_eq!(status.code(), Some(6), "{}", run.diagnostics());
    let dir2 = tempfile::tempdir().unwrap();
    let loopback = Node::with_args(
        dir2.path(),
        "alice",
        "alice-secret",
        server.addr(),
        &["--insecure-plaintext"],
    );
    loopback.send_many(ALICE, 2, "note to self");
    loopback.spawn_run(&["--until-idle"]).finish(
        LONG,
        &format!("plaintext run (ejabberd log: {})", server.log_tail(30)),
    );
    assert_eq!(loopback.confirmed(), 2);
}

/// A silently dead link: ejabberd still holds the old connection when the client comes back and
/// resumes, so it takes the session over (and sends the old stream a `<conflict/>`, which nobody
/// reads). The client must see a resumption, and nothing lost or doubled.
#[test]
fn ejabberd_takeover_of_a_dead_link_resumes_without_loss() {
    let w = world(EjabberdOptions::default());
    let mut bob = bob_online(&w);
    let mut alice = w
        .alice
        .spawn_run(&["--keepalive-secs", "1", "--dead-after-secs", "2"]);
    assert!(alice.wait_online(LONG), "{}", alice.diagnostics());
    w.proxy.blackhole_current();
    w.alice.send_many(BOB, 20, "takeover");
    assert!(
        alice.wait_for(LONG, |evs| evs.iter().any(|e| e["event"] == "connection"
            && e["state"] == "online"
            && e["resumed"] == true)),
        "no resumption: {}\nejabberd: {}",
        alice.diagnostics(),
        w.server.log_tail(30)
    );
    assert!(alice.wait_confirmed(20, LONG), "{}", alice.diagnostics());
    bob_has_exactly(&w, 20);
    assert_eq!(w.alice.count_out("failed"), 0);
    alice.terminate(LONG);
    bob.terminate(LONG);
}
