//! Corrections and reactions against a real Prosody (issue 14, part 2): sent while the recipient
//! is offline, they reach it through offline storage and again through its archive catch-up, and
//! are applied exactly once; a second device with an empty database gets them from the archive
//! alone, in the archive's order, and shows the same.

use std::time::Duration;

use serde_json::Value;
use tether_e2e::pair::Pair;
use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::tether::Node;

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
/// Time limits only bound a broken run; nothing here is timed.
const LONG: Duration = Duration::from_secs(120);

fn ok(node: &Node, args: &[&str]) -> String {
    let out = node.exec(args);
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

fn with_action<'a>(rows: &'a [Value], action: Option<&str>) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["action"].as_str() == action)
        .collect()
}

/// What bob's store shows of alice's message: one message, corrected, with alice's reaction, and
/// one row each for the correction and the reaction, whatever path brought them.
fn assert_applied_once(bob: &Node, id: &str) {
    let rows = bob.messages(&["--direction", "in", "--peer", ALICE]);
    let plain = with_action(&rows, None);
    assert_eq!(plain.len(), 1, "one message: {rows:#?}");
    assert_eq!(with_action(&rows, Some("correct")).len(), 1, "{rows:#?}");
    assert_eq!(with_action(&rows, Some("react")).len(), 1, "{rows:#?}");
    let m = plain[0];
    assert_eq!(m["id"], id);
    assert_eq!(m["body"], "hello", "the corrected text");
    assert_eq!(m["edited"], true);
    assert_eq!(
        m["reactions"],
        serde_json::json!([{"emoji": "👍", "count": 1, "mine": false}])
    );
    let edits = bob.json_lines(&["edits", "--peer", ALICE, "--id", id]);
    let bodies: Vec<&str> = edits.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies, ["helo", "hello"], "the edit history");
}

#[test]
fn a_correction_and_a_reaction_sent_while_the_recipient_is_offline_arrive_once() {
    let w = Pair::new(
        Prosody::start(ProsodyOptions {
            mam: true,
            ..ProsodyOptions::default()
        })
        .expect("start prosody"),
    );
    // Alice writes, corrects and reacts while bob has no session at all.
    let id = w.alice.send_bodies(BOB, &["helo".to_owned()]).remove(0);
    let fix = ok(
        &w.alice,
        &["correct", "--peer", BOB, "--id", &id, "--body", "hello"],
    );
    let react = ok(
        &w.alice,
        &["react", "--peer", BOB, "--id", &id, "--emoji", "👍"],
    );
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    alice.finish(LONG, "alice delivers");
    for x in [&id, &fix, &react] {
        let row = w.alice.message(x).expect("alice's row");
        assert_eq!(row["state"], "acked", "{x}: {row}");
    }
    let mine = w.alice.messages(&["--direction", "out"]);
    assert_eq!(mine[0]["body"], "hello", "alice sees her correction");

    // Bob comes online: offline storage delivers the three, then his first archive sync the same
    // three again.
    let mut bob = w.bob.spawn_run(&["--until-idle"]);
    bob.finish(LONG, "bob catches up");
    assert!(bob.count("mam:synced") >= 1, "{}", bob.stderr());
    // Our presence goes before the archive query, so offline storage delivers first and every
    // archive result is a copy of what is stored already.
    let synced = bob.named("mam:synced");
    assert_eq!(
        synced[0]["count"], 0,
        "the archive's copies were duplicates: {synced:?}"
    );
    assert_applied_once(&w.bob, &id);
    let updated = bob.named("message:updated");
    assert!(
        !updated.is_empty() && updated.iter().all(|u| u["id"] == id.as_str()),
        "{updated:?}"
    );
    assert_eq!(bob.count("message:received"), 1, "only the message is news");

    // Again: nothing new (each path de-duplicates).
    let mut again = w.bob.spawn_run(&["--until-idle"]);
    again.finish(LONG, "bob again");
    assert_applied_once(&w.bob, &id);

    // Bob's second device, with an empty database: the archive alone.
    let dir = tempfile::tempdir().unwrap();
    let phone = Node::new(
        dir.path(),
        "bob",
        "bob-secret",
        w.server.addr(),
        &w.server.ca_file(),
    );
    let mut run = phone.spawn_run(&["--until-idle"]);
    run.finish(LONG, "bob's phone catches up");
    let synced = run.named("mam:synced");
    assert_eq!(
        synced[0]["count"], 3,
        "the archive holds all three: {synced:?}"
    );
    assert_applied_once(&phone, &id);
}

/// Chat states over a real server (part 3): once each side has seen the other's `<active/>` (on
/// every message), a reported `composing` reaches the contact, becomes `paused` by itself, and
/// nothing of it is stored.
#[test]
fn typing_reaches_a_contact_that_understands_it_and_stops_by_itself() {
    let w = Pair::new(Prosody::start(ProsodyOptions::default()).expect("start prosody"));
    let mut alice = w.alice.spawn_run(&["--stdin"]).online(LONG, "alice");
    let mut bob = w.bob.spawn_run(&["--stdin"]).online(LONG, "bob");
    // Before bob ever showed support, alice's typing goes nowhere.
    alice.write_line(r#"{"to": "bob@localhost", "chat_state": "composing"}"#);
    std::thread::sleep(Duration::from_secs(1));
    w.bob.send_bodies(ALICE, &["hi".to_owned()]);
    assert!(
        alice.wait_count("message:received", 1, LONG),
        "{}",
        alice.stderr()
    );
    assert_eq!(bob.count("chat:state"), 0, "sent before support was known");
    // Bob's message carried <active/>: now alice's typing goes out, once, then pauses by itself.
    for _ in 0..5 {
        alice.write_line(r#"{"to": "bob@localhost", "chat_state": "composing"}"#);
        std::thread::sleep(Duration::from_millis(100));
    }
    let typed = |evs: &[Value], state: &str| {
        evs.iter()
            .filter(|e| e["event"] == "chat:state" && e["from"] == ALICE && e["state"] == state)
            .count()
    };
    assert!(
        bob.wait_for(LONG, |evs| typed(evs, "composing") >= 1),
        "bob never saw alice typing: {}",
        alice.stderr()
    );
    assert!(
        bob.wait_for(LONG, |evs| typed(evs, "paused") >= 1),
        "no paused"
    );
    assert_eq!(typed(&bob.events(), "composing"), 1, "one per change");
    let stored = w.bob.messages(&["--direction", "in"]);
    assert_eq!(stored.len(), 0, "bob stored nothing from alice: {stored:?}");
    alice.stop(LONG, "alice");
    bob.stop(LONG, "bob");
}
