//! Service discovery (XEP-0030) and entity capabilities (XEP-0115) against real servers, with a
//! third-party client on the other end: slixmpp verifies the hash Tether announces (its own
//! code, not ours), Tether verifies slixmpp's and uses it (a chat state goes to a contact that
//! never sent one), and a flood of queries through the server is bounded.

use std::time::{Duration, Instant};

use serde_json::Value;
use tether_core::engine::caps::{DISCO_PER_SENDER, DISCO_WINDOW, FEATURES};
use tether_e2e::ejabberd::{Ejabberd, EjabberdOptions};
use tether_e2e::pair::{Pair, TestServer};
use tether_e2e::slix_peer::SlixPeer;
use tether_e2e::{Prosody, ProsodyOptions};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const LONG: Duration = Duration::from_secs(60);

/// What `tether features --jid` says, once it knows (at most `timeout`).
fn tether_features(w: &Pair<impl TestServer>, jid: &str, timeout: Duration) -> Option<Vec<String>> {
    let start = Instant::now();
    loop {
        let out = w.alice.json_lines(&["features", "--jid", jid]);
        let v = &out[0];
        if v["known"] == true {
            return Some(
                v["features"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned())
                    .collect(),
            );
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn capabilities_both_ways(w: Pair<impl TestServer>, server: &str) {
    // Bob is slixmpp; he approves Alice's request and asks back (Tether accepts that at once,
    // since Alice asked first).
    let mut bob = SlixPeer::start(w.server.addr(), BOB, "bob-secret", &w.server.ca_file())
        .expect("slixmpp peer");
    w.alice.json_lines(&["subscribe", "--jid", BOB]);
    let mut alice = w.alice.spawn_run(&["--stdin"]).online(LONG, "alice");

    // 1. slixmpp hears Alice's presence, asks for her hash and verifies it with its own code.
    let presence = bob
        .wait_line(LONG, |v| {
            v["event"] == "presence"
                && v["from"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("alice@localhost/"))
                && v["type"] == "available"
        })
        .unwrap_or_else(|| panic!("{server}: no presence from Alice: {:?}", bob.lines()));
    let alice_full = presence["from"].as_str().unwrap().to_owned();
    let verified = bob
        .verified_caps(&alice_full, LONG)
        .unwrap_or_else(|| panic!("{server}: slixmpp did not verify Alice's caps hash"));
    let mut ours: Vec<String> = FEATURES.iter().map(|f| (*f).to_owned()).collect();
    ours.sort();
    assert_eq!(
        verified, ours,
        "{server}: what slixmpp verified is exactly what Tether supports"
    );
    // A direct query says the same, and who Tether is.
    let info = bob.disco_info(&alice_full, None);
    assert_eq!(
        info["features"],
        serde_json::json!(ours),
        "{server}: {info}"
    );
    assert_eq!(info["identities"][0][0], "client", "{info}");
    assert_eq!(info["identities"][0][1], "pc", "{info}");
    assert_eq!(info["identities"][0][3], "Tether", "{info}");
    let unknown = bob.disco_info(&alice_full, Some("urn:nothing-here"));
    assert!(
        unknown["error"].is_string(),
        "{server}: an unknown node is an error: {unknown}"
    );

    // 2. Tether verifies slixmpp's hash and keeps its features.
    let theirs = tether_features(&w, BOB, LONG).unwrap_or_else(|| {
        panic!(
            "{server}: Tether never verified Bob's caps: {}",
            alice.diagnostics()
        )
    });
    for f in [
        "http://jabber.org/protocol/chatstates",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/caps",
        "urn:xmpp:ping",
    ] {
        assert!(theirs.iter().any(|x| x == f), "{server}: {f} in {theirs:?}");
    }
    assert!(
        alice.errors("security").is_empty(),
        "{server}: a genuine client is no forgery: {}",
        alice.diagnostics()
    );

    // 3. His caps list chat states: typing reaches him though he never sent one.
    assert!(bob.events("chat_state").is_empty());
    alice.write_line(r#"{"to": "bob@localhost", "chat_state": "composing"}"#);
    let cs = bob.wait_line(LONG, |v| v["event"] == "chat_state");
    assert_eq!(
        cs.as_ref().map(|v| v["state"].clone()),
        Some(Value::from("composing")),
        "{server}: {:?} / {}",
        bob.lines(),
        alice.diagnostics()
    );

    // 4. A flood of queries through the server, in a window of its own: the budget is
    // answered, the rest is not, one security event, and Alice stays online and still delivers.
    std::thread::sleep(DISCO_WINDOW + Duration::from_secs(1));
    let (answered, unanswered, errors) = bob.disco_flood(&alice_full, 40, 5);
    let budget = DISCO_PER_SENDER as u64;
    assert_eq!(
        (answered, unanswered, errors),
        (budget, 40 - budget, 0),
        "{server}"
    );
    let security = alice.errors("security");
    assert_eq!(security.len(), 1, "{server}: {security:?}");
    bob.send(ALICE, "still here");
    assert_eq!(w.alice.wait_received(BOB, 1, LONG), (1, 1), "{server}");
    alice.close_stdin();
    alice.stop(LONG, "alice");
}

#[test]
fn prosody_capabilities_are_verified_both_ways_and_a_flood_is_bounded() {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("start prosody");
    capabilities_both_ways(Pair::new(prosody), "prosody");
}

#[test]
fn ejabberd_capabilities_are_verified_both_ways_and_a_flood_is_bounded() {
    let ejabberd = Ejabberd::start(EjabberdOptions::default()).expect("start ejabberd");
    capabilities_both_ways(Pair::new(ejabberd), "ejabberd");
}
