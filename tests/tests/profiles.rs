//! Profiles against a real Prosody, with slixmpp clients on the other side: Bob's XEP-0084 avatar
//! and XEP-0172 nickname reach Tether and are stored as published (the bytes compared); Carol's
//! XEP-0054 vCard photo, announced by XEP-0153 in her presence, is fetched with her names;
//! Alice's own avatar and nickname, changed offline, are published on the next session and
//! slixmpp fetches exactly her bytes; a change made while the link is down is published once it
//! comes back; a non-image avatar and a nickname with control characters from a contact are
//! refused with a security event and nothing of them stored; hostile files picked by the user
//! are refused with the reason.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tether_e2e::pair::Pair;
use tether_e2e::slix_peer::SlixPeer;
use tether_e2e::tether::Node;
use tether_e2e::{Prosody, ProsodyOptions};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const CAROL: &str = "carol@localhost";
const LONG: Duration = Duration::from_secs(60);

/// Three real 16x16 PNGs (red, blue, green).
const PNGS: [&str; 3] = [
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAFklEQVR4nGO4Y2NDEmIY1TCqYfhqAABhl1QQ50OvrwAAAABJRU5ErkJggg==",
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAFklEQVR4nGOwqbhDEmIY1TCqYfhqAAAG7JAQ/FOYfgAAAABJRU5ErkJggg==",
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAFklEQVR4nGOw2RJFEmIY1TCqYfhqAABSp0oQg96U2AAAAABJRU5ErkJggg==",
];

fn png(i: usize) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(PNGS[i])
        .unwrap()
}

fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn profile(node: &Node, jid: Option<&str>) -> Value {
    let mut args = vec!["profile", "show"];
    if let Some(jid) = jid {
        args.extend(["--jid", jid]);
    }
    node.json_lines(&args).remove(0)
}

/// Waits until `jid`'s profile in `node`'s store satisfies `pred`; returns it either way.
fn wait_profile(node: &Node, jid: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let p = profile(node, Some(jid));
        if pred(&p) || start.elapsed() > LONG {
            return p;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The avatar `node` stores for `jid`, read back through the CLI.
fn stored_avatar(node: &Node, dir: &std::path::Path, jid: &str) -> Vec<u8> {
    let out = dir.join(format!("{jid}.avatar"));
    let written = node.json_lines(&[
        "profile",
        "avatar",
        "--jid",
        jid,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(written[0]["jid"], jid, "{written:?}");
    std::fs::read(out).unwrap()
}

/// Alice's avatar `id` as slixmpp fetches it from her PEP node (its SHA-1 checked to be `id`).
fn fetch_alices_avatar(bob: &mut SlixPeer, id: &str) -> Vec<u8> {
    let fetched = bob.command(json!({"cmd": "avatar_data", "jid": ALICE, "id": id}));
    assert_eq!(fetched["sha1"], id, "{fetched}");
    base64::engine::general_purpose::STANDARD
        .decode(fetched["data"].as_str().unwrap())
        .unwrap()
}

/// Bob's `avatar` or `nick` notifications from Alice.
fn from_alice(bob: &SlixPeer, event: &str) -> Vec<Value> {
    bob.events(event)
        .into_iter()
        .filter(|e| e["from"].as_str().is_some_and(|f| f.starts_with(ALICE)))
        .collect()
}

#[test]
fn avatars_and_nicknames_travel_both_ways_with_slixmpp_and_hostile_ones_are_refused() {
    let server = Prosody::start(ProsodyOptions::default()).expect("prosody");
    let w = Pair::new(server);
    w.server.register("carol", "carol-secret").expect("carol");
    let (addr, ca) = (w.server.addr(), w.server.ca_file());
    let dir = tempfile::tempdir().unwrap();
    let mut bob =
        SlixPeer::start_with(addr, BOB, "bob-secret", &ca, &["xep_0084", "xep_0172"]).expect("bob");
    let mut carol =
        SlixPeer::start_with(addr, CAROL, "carol-secret", &ca, &["xep_0054", "xep_0153"])
            .expect("carol");

    // 1. Offline, Alice asks Bob and Carol for their presence and changes her own profile.
    // Hostile picks are refused with the reason, and change nothing.
    w.alice.json_lines(&["subscribe", "--jid", BOB]);
    w.alice.json_lines(&["subscribe", "--jid", CAROL]);
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a picture").unwrap();
    let refused = w
        .alice
        .exec(&["profile", "set", "--avatar", notes.to_str().unwrap()]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("not an image"),
        "{}",
        refused.stderr
    );
    let huge = dir.path().join("huge.png");
    let mut big = png(0);
    big.resize(600 * 1024, 0);
    std::fs::write(&huge, big).unwrap();
    let refused = w
        .alice
        .exec(&["profile", "set", "--avatar", huge.to_str().unwrap()]);
    assert!(refused.stderr.contains("more than"), "{}", refused.stderr);
    let refused = w
        .alice
        .exec(&["profile", "set", "--nick", "Alice\u{1b}[2J"]);
    assert!(
        refused.stderr.contains("control characters"),
        "{}",
        refused.stderr
    );
    assert_eq!(profile(&w.alice, None)["avatar"], Value::Null);
    let mine = dir.path().join("alice.png");
    std::fs::write(&mine, png(0)).unwrap();
    let set = w.alice.json_lines(&[
        "profile",
        "set",
        "--nick",
        "Alice A.",
        "--avatar",
        mine.to_str().unwrap(),
    ]);
    assert_eq!(set[0]["avatar"], sha1_hex(&png(0)), "{set:?}");
    assert_eq!(set[0]["nick"], "Alice A.");
    assert_eq!(set[0]["told"], false, "nothing is told offline");

    // 2. Online: the change is published, and slixmpp gets exactly Alice's bytes.
    let mut alice = w.alice.spawn_run(&["--stdin"]).online(LONG, "alice");
    // Our own profile, shown with `--jid` too, says whether the server has it all.
    let told = wait_profile(&w.alice, ALICE, |p| p["told"] == true);
    assert_eq!(told["told"], true, "{told} / {}", alice.diagnostics());
    let announced = bob.wait_line(LONG, |v| {
        v["event"] == "avatar" && v["from"].as_str().is_some_and(|f| f.starts_with(ALICE))
    });
    let id = sha1_hex(&png(0));
    assert_eq!(
        announced.as_ref().map(|a| a["ids"].clone()),
        Some(json!([id])),
        "{:?}",
        bob.lines()
    );
    assert_eq!(fetch_alices_avatar(&mut bob, &id), png(0));
    assert!(
        bob.wait_line(LONG, |v| v["event"] == "nick" && v["nick"] == "Alice A.")
            .is_some(),
        "{:?}",
        bob.lines()
    );

    // 3. Bob publishes his (XEP-0084, XEP-0172): Tether stores it as published.
    let published =
        bob.command(json!({"cmd": "publish_avatar", "data": PNGS[1], "type": "image/png"}));
    assert_eq!(published["id"], sha1_hex(&png(1)), "{published}");
    bob.command(json!({"cmd": "publish_nick", "nick": "Bobby Tables"}));
    let theirs = wait_profile(&w.alice, BOB, |p| {
        p["avatar"] == sha1_hex(&png(1)) && p["nick"] == "Bobby Tables"
    });
    assert_eq!(
        theirs["avatar"],
        sha1_hex(&png(1)),
        "{theirs} / {}",
        alice.diagnostics()
    );
    assert_eq!(theirs["nick"], "Bobby Tables");
    assert_eq!(theirs["avatar_mime"], "image/png");
    assert_eq!(stored_avatar(&w.alice, dir.path(), BOB), png(1));
    let contacts = w.alice.json_lines(&["contacts"]);
    let bob_row = contacts
        .iter()
        .find(|c| c["jid"] == BOB)
        .expect("bob in the roster");
    assert_eq!(bob_row["nick"], "Bobby Tables", "{bob_row}");

    // 4. Carol has only a vCard photo (XEP-0153): fetched with her names.
    let vcard = carol.command(json!({
        "cmd": "vcard_avatar", "data": PNGS[2], "type": "image/png",
        "fn": "Carol Singer", "nickname": "Caz",
    }));
    assert!(vcard["error"].is_null(), "{vcard}");
    let hers = wait_profile(&w.alice, CAROL, |p| p["avatar"] == sha1_hex(&png(2)));
    assert_eq!(
        hers["avatar"],
        sha1_hex(&png(2)),
        "{hers} / {}",
        alice.diagnostics()
    );
    assert_eq!(
        (hers["full_name"].as_str(), hers["nick"].as_str()),
        (Some("Carol Singer"), Some("Caz"))
    );
    assert_eq!(stored_avatar(&w.alice, dir.path(), CAROL), png(2));

    // 5. A change made while Alice's link is down (from another process, beside `run`) is
    // published once it is back, and Bob hears it once.
    w.proxy.set_blackhole(true);
    w.proxy.drop_all();
    // As large as Tether lets the user publish (a PNG's header and IHDR, padded: neither the
    // server nor slixmpp decodes it), to show that it fits Prosody's 256 KiB stanza limit
    // once base64-encoded.
    let mut largest = png(2);
    largest.resize(128 * 1024, 7);
    let second = dir.path().join("alice2.png");
    std::fs::write(&second, &largest).unwrap();
    w.alice
        .json_lines(&["profile", "set", "--avatar", second.to_str().unwrap()]);
    assert_eq!(profile(&w.alice, None)["told"], false);
    std::thread::sleep(Duration::from_secs(2));
    w.proxy.set_blackhole(false);
    // Our own profile, shown with `--jid` too, says whether the server has it all.
    let told = wait_profile(&w.alice, ALICE, |p| p["told"] == true);
    assert_eq!(told["told"], true, "{told} / {}", alice.diagnostics());
    let id2 = sha1_hex(&largest);
    assert!(
        bob.wait_line(LONG, |v| v["event"] == "avatar" && v["ids"] == json!([id2]))
            .is_some(),
        "{:?}",
        bob.lines()
    );
    assert_eq!(fetch_alices_avatar(&mut bob, &id2), largest);
    let over = dir.path().join("over.png");
    largest.push(0);
    std::fs::write(&over, &largest).unwrap();
    let refused = w
        .alice
        .exec(&["profile", "set", "--avatar", over.to_str().unwrap()]);
    assert!(
        refused.stderr.contains("more than the 131072"),
        "one byte more is refused: {}",
        refused.stderr
    );
    let announced: Vec<Value> = from_alice(&bob, "avatar")
        .into_iter()
        .filter(|v| v["ids"] == json!([id2]))
        .collect();
    assert_eq!(announced.len(), 1, "published once: {announced:?}");

    // 6. Hostile input from a contact, through the real server: an avatar that is not an
    // image (its hash is right), a nickname with control characters. Refused, said, and what
    // Bob had stays as it was.
    let script = base64::engine::general_purpose::STANDARD.encode(b"<svg onload='alert(1)'/>");
    let before = alice.errors("security").len();
    bob.command(json!({"cmd": "publish_avatar", "data": script, "type": "image/png"}));
    // (XML cannot carry C0 controls but a line break; C1's CSI, a terminal escape, it can.)
    bob.command(json!({"cmd": "publish_nick", "nick": "Bob\u{9b}2J\nroot"}));
    assert!(
        alice.wait_for(LONG, |events| {
            events
                .iter()
                .filter(|e| e["event"] == "error" && e["kind"] == "security")
                .count()
                >= before + 2
        }),
        "{}",
        alice.diagnostics()
    );
    let security: Vec<String> = alice
        .errors("security")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        security.iter().any(|m| m.contains("not an image")),
        "{security:?}"
    );
    assert!(
        security.iter().any(|m| m.contains("control characters")),
        "{security:?}"
    );
    let theirs = profile(&w.alice, Some(BOB));
    assert_eq!(theirs["avatar"], sha1_hex(&png(1)), "{theirs}");
    assert_eq!(theirs["nick"], "Bobby Tables");
    assert_eq!(stored_avatar(&w.alice, dir.path(), BOB), png(1));
    assert!(
        alice.errors("internal").is_empty(),
        "{}",
        alice.diagnostics()
    );
    alice.stop(LONG, "alice");
}
