//! The archive check before the user is asked (issue 14, part 4): when a stream is lost for good,
//! the messages the server never confirmed are looked for in the account's archive; those it holds
//! are `acked`, only the rest `failed`. The receiver here is a raw client that never
//! de-duplicates, so a confirmed resend that showed twice anywhere would show twice here.

use std::time::Duration;

use tether_e2e::pair::Pair;
use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::raw::{assert_once_each, RawClient};
use tether_e2e::tether::Running;

const BOB: &str = "bob@localhost";
/// Time limits only bound a broken run; nothing here is timed.
const LONG: Duration = Duration::from_secs(120);

fn world(opts: ProsodyOptions) -> Pair<Prosody> {
    Pair::new(Prosody::start(opts).expect("start prosody"))
}

/// Bob as a plain client that counts every copy it gets.
fn raw_bob(w: &Pair<Prosody>) -> RawClient {
    RawClient::connect(
        w.server.addr(),
        "bob@localhost/raw",
        "bob-secret",
        &w.server.ca_file(),
    )
}

fn written(run: &Running) -> usize {
    run.count("message:written")
}

/// The server gets twenty messages whose acks never come back, and five more that never reach it;
/// then the session expires and the server forgets its counter, so the late `<resume/>` is
/// refused without h (as when Prosody destroys a session). The archive check acks exactly the twenty and fails exactly the five;
/// the user's resend of the five reaches the raw receiver once each: 25 bodies, each once.
#[test]
fn after_an_expired_session_the_archive_acks_what_arrived_and_only_the_rest_is_resent() {
    let w = world(ProsodyOptions {
        mam: true,
        hibernation_secs: 2,
        ..ProsodyOptions::default()
    });
    let mut bob = raw_bob(&w);
    let mut alice = w.alice.spawn_run(&[]).online(LONG, "alice");
    assert!(
        alice.wait_count("mam:synced", 1, LONG),
        "{}",
        alice.stderr()
    );

    // The server hears alice, alice hears nothing back: no ack comes.
    w.proxy.set_mute_downstream(true);
    let arrived = w.alice.send_many(BOB, 20, "arrived");
    let seen = bob.collect_bodies("arrived", 20, Duration::from_millis(300), LONG);
    assert_once_each(&seen, 20);
    assert!(alice.wait_for(LONG, |evs| evs
        .iter()
        .filter(|e| e["event"] == "message:written")
        .count()
        >= 20));
    // Then the link goes silent both ways: these never reach the server.
    w.proxy.set_blackhole(true);
    let lost = w.alice.send_many(BOB, 5, "lost");
    assert!(
        alice.wait_for(LONG, |evs| evs
            .iter()
            .filter(|e| e["event"] == "message:written")
            .count()
            >= 25),
        "written: {}",
        written(&alice)
    );
    assert_eq!(w.alice.count_out("acked"), 0, "an ack got through");

    // Gone for longer than the server keeps the session, and the server forgets the session's
    // counter too (Prosody would otherwise answer the late <resume/> with the h it saved): only
    // the archive can now tell which arrived.
    w.proxy.set_refuse(true);
    w.proxy.drop_all();
    assert!(
        w.server.forget_expired_session("alice", LONG),
        "the session did not expire: {}",
        w.server.log_tail(20)
    );
    w.proxy.set_blackhole(false);
    w.proxy.set_mute_downstream(false);
    w.proxy.set_refuse(false);

    assert!(
        w.alice.wait_until(LONG, |n| n.count_out("failed") == 5
            && n.count_out("checking") == 0),
        "failed {} checking {}: {}",
        w.alice.count_out("failed"),
        w.alice.count_out("checking"),
        alice.diagnostics()
    );
    assert!(alice.saw_online(false), "a new session after the expiry");
    for id in &arrived {
        let row = w.alice.message(id).expect("row");
        assert_eq!(row["state"], "acked", "{row}");
        assert!(row["stanza_id"].is_string(), "the archive's id: {row}");
    }
    for id in &lost {
        let row = w.alice.message(id).expect("row");
        assert_eq!(row["state"], "failed", "{row}");
        assert!(
            row["error"]
                .as_str()
                .is_some_and(|e| e.contains("resumption failed") || e.contains("lost")),
            "{row}"
        );
    }
    // Each was checked first, with its event.
    assert_eq!(alice.count("message:checking"), 25);
    alice.stop(LONG, "alice");

    // Nothing failed went out without the user; then the user resends.
    let out = w.alice.exec(&["resend", "--all-failed"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut again = w.alice.spawn_run(&["--until-idle"]);
    again.finish(LONG, "alice resend");
    let seen = bob.collect_bodies("lost", 5, Duration::from_secs(1), LONG);
    assert_once_each(&seen, 5);
    // And nothing of the first twenty came again.
    let again_arrived = bob.collect_bodies("arrived", 0, Duration::from_millis(500), LONG);
    assert!(again_arrived.is_empty(), "resent: {again_arrived:?}");
    assert_eq!(w.alice.confirmed(), 25);
    eprintln!(
        "expired session: 20 acked by the archive, 5 failed and resent; bob saw each of 25 once"
    );
    bob.close();
}

/// A cut that leaves half a stanza at the server (Prosody 13.0.1 may then destroy the resumed
/// session, ARCHITECTURE.md): whatever the server does, the raw receiver sees each of 500 bodies
/// exactly once, after the user resends what the archive does not hold.
#[test]
fn through_a_cut_mid_stanza_a_raw_receiver_sees_each_body_exactly_once() {
    let w = world(ProsodyOptions {
        mam: true,
        debug_log: true,
        ..ProsodyOptions::default()
    });
    let mut bob = raw_bob(&w);
    let mark = w.server.log_mark();
    w.alice.send_many(BOB, 500, "cut");
    w.proxy.drop_after_upstream_bytes(40_000);
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    alice.finish(LONG, "alice");
    let (confirmed, failed) = (w.alice.confirmed(), w.alice.count_out("failed"));
    assert_eq!(confirmed + failed, 500);
    let checked = alice.count("message:checking");
    if failed > 0 {
        let out = w.alice.exec(&["resend", "--all-failed"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let mut again = w.alice.spawn_run(&["--until-idle"]);
        again.finish(LONG, "alice resend");
    }
    assert_eq!(w.alice.confirmed(), 500);
    let seen = bob.collect_bodies("cut", 500, Duration::from_secs(2), LONG);
    assert_once_each(&seen, 500);
    eprintln!(
        "cut mid-stanza: resumed={} prosody-bug={} checked={checked} failed={failed}; bob saw each of 500 once",
        alice.saw_online(true),
        w.server.resumption_bug_since(mark),
    );
    bob.close();
}
