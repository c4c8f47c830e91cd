//! Full-text search against a real Prosody (issue 16, item 7): what arrived live, through offline
//! storage, and from the archive on a second device is found by its current text (a correction's,
//! never the version it replaced), newest first, in pages; words with FTS5 syntax in them are
//! plain words; a bad query is a clear usage error that changes nothing.

use std::time::Duration;

use serde_json::Value;
use tether_e2e::pair::Pair;
use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::tether::Node;

const BOB: &str = "bob@localhost";
/// Time limits only bound a broken run; nothing here is timed.
const LONG: Duration = Duration::from_secs(120);

fn ok(node: &Node, args: &[&str]) -> String {
    let out = node.exec(args);
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

/// The ids and texts `tether search` prints for `args`, in its order.
fn search(node: &Node, args: &[&str]) -> Vec<(String, String)> {
    let mut all = vec!["search"];
    all.extend_from_slice(args);
    node.json_lines(&all)
        .iter()
        .map(|h: &Value| {
            (
                h["message"]["id"].as_str().unwrap().to_owned(),
                h["message"]["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ids(node: &Node, args: &[&str]) -> Vec<String> {
    search(node, args).into_iter().map(|(id, _)| id).collect()
}

/// What bob's devices find, whichever path brought the messages.
fn assert_found(bob: &Node, sent: &[String], fixed: &str) {
    // Newest first; the last word a prefix.
    assert_eq!(
        ids(bob, &["picnic"]),
        [sent[2].clone(), sent[0].clone()],
        "both picnic messages, newest first"
    );
    assert_eq!(ids(bob, &["picnic sat"]), [sent[0].clone()]);
    // The corrected message is found by its new text only, and shown with it.
    assert!(
        ids(bob, &["lake"]).is_empty(),
        "the replaced text is not found"
    );
    assert_eq!(
        search(bob, &["river"]),
        [(sent[1].clone(), fixed.to_owned())]
    );
    // FTS5 syntax typed by the user is plain text.
    assert_eq!(ids(bob, &["\"bring"]), [sent[2].clone()]);
    // A word with punctuation inside is its parts, in order (a phrase).
    assert_eq!(ids(bob, &["NEAR(the"]), [sent[2].clone()]);
    assert!(ids(bob, &["NEAR(snacks"]).is_empty());
    assert_eq!(ids(bob, &["picnic OR river"]), Vec::<String>::new());
    // One conversation only.
    assert!(ids(bob, &["picnic", "--peer", "carol@localhost"]).is_empty());
}

#[test]
fn messages_are_found_by_their_current_text_on_every_device() {
    let w = Pair::new(
        Prosody::start(ProsodyOptions {
            mam: true,
            ..ProsodyOptions::default()
        })
        .expect("start prosody"),
    );
    let bodies = [
        "picnic on saturday?".to_owned(),
        "meet at the lake".to_owned(),
        "\"bring snacks\" NEAR(the picnic) AND drinks*".to_owned(),
    ];
    let sent = w.alice.send_bodies(BOB, &bodies);
    let fixed = "meet at the river";
    ok(
        &w.alice,
        &["correct", "--peer", BOB, "--id", &sent[1], "--body", fixed],
    );
    // Alice finds her own messages at once, before any of them left (the index is written with
    // the message, offline).
    assert_eq!(
        ids(&w.alice, &["picnic"]),
        [sent[2].clone(), sent[0].clone()]
    );
    assert_eq!(ids(&w.alice, &["river"]), [sent[1].clone()]);
    assert!(ids(&w.alice, &["lake"]).is_empty());
    let mut alice = w.alice.spawn_run(&["--until-idle"]);
    alice.finish(LONG, "alice delivers");

    // Bob: offline storage, then his archive sync (copies, de-duplicated).
    let mut bob = w.bob.spawn_run(&["--until-idle"]);
    bob.finish(LONG, "bob catches up");
    assert_found(&w.bob, &sent, fixed);

    // Bob's second device, empty: the archive alone.
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
    assert_eq!(run.named("mam:synced")[0]["count"], 4, "{}", run.stderr());
    assert_found(&phone, &sent, fixed);

    // Pages: the cursor of one page's last hit starts the next; no hit twice.
    let first = phone.json_lines(&["search", "picnic", "--limit", "1"]);
    assert_eq!(first.len(), 1);
    let cursor = first[0]["cursor"].as_i64().unwrap().to_string();
    let second = ids(&phone, &["picnic", "--limit", "1", "--before", &cursor]);
    assert_eq!(second, [sent[0].clone()]);
    assert_eq!(first[0]["message"]["id"], sent[2].as_str());

    // A bad query is a usage error with a reason, and changes nothing.
    let before = phone.messages(&[]).len();
    for (args, why) in [
        (vec!["search", "   "], "at least one word"),
        (vec!["search", "x", "--limit", "0"], "1 to 200"),
        (vec!["search", "nul\u{1}byte"], "control characters"),
    ] {
        let out = phone.exec(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
    }
    assert_eq!(phone.messages(&[]).len(), before);
}
