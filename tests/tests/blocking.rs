//! Blocking (XEP-0191) against real servers, with third-party clients around Tether: a block
//! made offline reaches the server on the next session (a slixmpp client on Alice's own account
//! reads the server's list), a blocked sender's messages (from offline storage, the archive and
//! live) are neither stored nor shown, a block made on Alice's other device reaches Tether as a
//! push, a forged push from someone else is refused, and an unblock lets messages through again.

use std::time::Duration;

use serde_json::Value;
use tether_e2e::ejabberd::{Ejabberd, EjabberdOptions};
use tether_e2e::pair::{Pair, TestServer};
use tether_e2e::slix_peer::SlixPeer;
use tether_e2e::{Prosody, ProsodyOptions};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const CAROL: &str = "carol@localhost";
const LONG: Duration = Duration::from_secs(60);

/// The bodies Alice's store holds from `peer`.
fn bodies_from(w: &Pair<impl TestServer>, peer: &str) -> Vec<String> {
    w.alice
        .messages(&["--direction", "in", "--peer", peer])
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `tether blocklist` as `(jid, want, state)`.
fn tether_blocklist(w: &Pair<impl TestServer>) -> Vec<(String, String, String)> {
    w.alice
        .json_lines(&["blocklist"])
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("jid"), s("want"), s("state"))
        })
        .collect()
}

fn blocking_event(jid: &'static str, state: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events| {
        events
            .iter()
            .any(|e| e["event"] == "blocking" && e["jid"] == jid && e["state"] == state)
    }
}

fn blocking(w: Pair<impl TestServer>, server: &str) {
    w.server
        .register("carol", "carol-secret")
        .expect("register carol");
    let (addr, ca) = (w.server.addr(), w.server.ca_file());
    let mut bob = SlixPeer::start(addr, BOB, "bob-secret", &ca).expect("bob");
    let mut carol = SlixPeer::start(addr, CAROL, "carol-secret", &ca).expect("carol");

    // 1. Bob writes while Alice is away (offline storage, and the archive); then Alice blocks
    // him, offline. Writing to him is refused at once.
    bob.send(ALICE, "written before the block");
    let listed = w.alice.json_lines(&["block", "--jid", BOB]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["want"].as_str(), listed[0]["state"].as_str()),
        (Some("block"), Some("pending"))
    );
    let refused = w.alice.exec(&["send", "--to", BOB, "--body", "hi"]);
    assert_ne!(
        refused.code,
        Some(0),
        "{server}: writing to a blocked contact"
    );
    assert!(refused.stderr.contains("blocked"), "{}", refused.stderr);

    // 2. The next session tells the server; what Bob wrote before is not shown.
    let mut alice = w.alice.spawn_run(&["--stdin"]).online(LONG, "alice");
    assert!(
        alice.wait_for(LONG, blocking_event(BOB, "blocked")),
        "{server}: the block was never confirmed: {}",
        alice.diagnostics()
    );
    assert!(
        alice.wait_for(LONG, |ev| ev.iter().any(|e| e["event"] == "mam:synced")),
        "{server}: no archive catch-up: {}",
        alice.diagnostics()
    );
    carol.send(ALICE, "carol 1");
    assert_eq!(w.alice.wait_received(CAROL, 1, LONG).0, 1, "{server}");
    assert_eq!(
        tether_blocklist(&w),
        vec![(BOB.into(), "block".into(), "confirmed".into())]
    );
    // The server has it: Alice's other device (slixmpp) reads the list.
    let mut phone = SlixPeer::start(addr, ALICE, "alice-secret", &ca).expect("alice's phone");
    assert_eq!(phone.blocklist(), vec![BOB.to_owned()], "{server}");

    // 3. Live: still nothing of Bob's (the server drops it, and Tether would).
    bob.send(ALICE, "written while blocked");
    carol.send(ALICE, "carol 2");
    assert_eq!(w.alice.wait_received(CAROL, 2, LONG).0, 2, "{server}");
    assert!(
        bodies_from(&w, BOB).is_empty(),
        "{server}: {:?}",
        bodies_from(&w, BOB)
    );
    assert!(
        !alice
            .events()
            .iter()
            .any(|e| e["event"] == "message:received" && e["from"] == BOB),
        "{server}: nothing of Bob's announced"
    );

    // 4. Carol forges a blocklist push to Alice's client: refused, reported, nothing changed.
    let phone_jid = phone.jid.clone();
    let tether_jid = phone
        .wait_line(LONG, |v| {
            v["event"] == "presence"
                && v["type"] == "available"
                && v["from"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("alice@localhost/") && f != phone_jid)
        })
        .and_then(|v| v["from"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{server}: the phone never saw Tether's presence"));
    let answer = carol.forge_block_push(&tether_jid, &["dave@localhost"]);
    assert_eq!(answer, "forbidden", "{server}");
    let security = alice.errors("security");
    assert_eq!(security.len(), 1, "{server}: {security:?}");

    // 5. Alice's phone blocks Carol: the server pushes it to Tether, which applies it.
    phone.set_blocked(true, &[CAROL]);
    assert!(
        alice.wait_for(LONG, blocking_event(CAROL, "blocked")),
        "{server}: the phone's block never reached Tether: {}",
        alice.diagnostics()
    );
    assert_eq!(
        tether_blocklist(&w),
        vec![
            (BOB.into(), "block".into(), "confirmed".into()),
            (CAROL.into(), "block".into(), "confirmed".into()),
        ],
        "{server}: dave (the forged push) is not there"
    );

    // 6. Alice unblocks Bob from Tether: told at once, and his next message arrives once.
    alice.write_line(r#"{"cmd": "unblock", "jid": "bob@localhost"}"#);
    assert!(
        alice.wait_for(LONG, blocking_event(BOB, "unblocked")),
        "{server}: the unblock was never confirmed: {}",
        alice.diagnostics()
    );
    assert_eq!(phone.blocklist(), vec![CAROL.to_owned()], "{server}");
    bob.send(ALICE, "written after the unblock");
    assert_eq!(w.alice.wait_received(BOB, 1, LONG).0, 1, "{server}");
    alice.close_stdin();
    alice.stop(LONG, "alice");
    assert_eq!(
        bodies_from(&w, BOB),
        vec!["written after the unblock".to_owned()],
        "{server}: only what Bob wrote after the unblock"
    );
}

#[test]
fn prosody_blocking_is_told_learnt_and_applied_with_nothing_of_the_blocked_shown() {
    let prosody = Prosody::start(ProsodyOptions {
        mam: true,
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    blocking(Pair::new(prosody), "prosody");
}

#[test]
fn ejabberd_blocking_is_told_learnt_and_applied_with_nothing_of_the_blocked_shown() {
    let ejabberd = Ejabberd::start(EjabberdOptions::default()).expect("start ejabberd");
    blocking(Pair::new(ejabberd), "ejabberd");
}
