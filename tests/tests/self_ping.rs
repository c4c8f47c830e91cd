//! MUC self-ping (XEP-0410) against a real Prosody: the room forgets Alice without a word (the
//! Conversations#2197 shape: a member silently dropped after a network loss while others keep
//! posting), Bob posts more than the room's join history holds, and Alice's client, asked to
//! check the link, finds out, rejoins and catches up from the room's archive: every message once.

use std::time::Duration;

use tether_e2e::pair::Pair;
use tether_e2e::tether::Running;
use tether_e2e::{Prosody, ProsodyOptions};

const ROOM: &str = "lounge@conference.localhost";
const LONG: Duration = Duration::from_secs(60);
/// More than the 20 messages of history a join asks for: the rest must come from the archive.
const MISSED: usize = 30;

fn joined_count(run: &Running) -> usize {
    run.events()
        .iter()
        .filter(|e| e["event"] == "room:joined" && e["room"] == ROOM)
        .count()
}

/// The bodies of Alice's incoming rows from the room.
fn room_bodies(w: &Pair<Prosody>) -> Vec<String> {
    w.alice
        .messages(&["--direction", "in", "--peer", ROOM])
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn post(bob: &mut Running, body: &str) {
    bob.write_line(&serde_json::json!({"to": ROOM, "body": body}).to_string());
}

#[test]
fn a_room_that_dropped_us_silently_is_found_rejoined_and_caught_up_with_every_message_once() {
    let prosody = Prosody::start(ProsodyOptions {
        muc: true,
        mam: true,
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    let w = Pair::new(prosody);
    w.alice
        .json_lines(&["room", "join", ROOM, "--nick", "alice"]);
    w.bob.json_lines(&["room", "join", ROOM, "--nick", "bob"]);
    let mut alice = w.alice.spawn_run(&["--stdin"]).online(LONG, "alice");
    assert!(
        alice.wait_count("room:joined", 1, LONG),
        "alice never joined: {}",
        alice.diagnostics()
    );
    // The creator's instant configuration unlocks the room before Bob comes.
    std::thread::sleep(Duration::from_secs(1));
    let mut bob = w.bob.spawn_run(&["--stdin"]).online(LONG, "bob");
    assert!(
        bob.wait_count("room:joined", 1, LONG),
        "{}",
        bob.diagnostics()
    );
    post(&mut bob, "before");
    assert!(
        w.alice.wait_until(LONG, |_| room_bodies(&w).len() == 1),
        "{}",
        alice.diagnostics()
    );

    let joins = joined_count(&alice);
    // The room forgets Alice; nobody is told. Bob goes on posting.
    w.server
        .drop_occupant_silently(ROOM, "alice")
        .expect("drop alice from the room");
    for i in 0..MISSED {
        post(&mut bob, &format!("while alice was gone {i}"));
    }
    assert!(
        bob.wait_count("message:reflected", MISSED + 1, LONG),
        "{}",
        bob.diagnostics()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        room_bodies(&w),
        vec!["before".to_owned()],
        "nothing reached her"
    );
    assert_eq!(joined_count(&alice), joins, "no word from the room");

    // The network changed (or a keepalive probe came round): the room is asked, answers that
    // Alice is not in it, and she joins again and catches up from its archive.
    alice.write_line(r#"{"cmd": "network-changed"}"#);
    assert!(
        alice.wait_for(LONG, |ev| ev
            .iter()
            .any(|e| e["event"] == "room:rejoining" && e["room"] == ROOM)),
        "the self-ping never found it: {}\nProsody:\n{}",
        alice.diagnostics(),
        w.server.log_tail(60)
    );
    assert!(
        alice.wait_count("room:joined", joins + 1, LONG),
        "{}",
        alice.diagnostics()
    );
    let want = MISSED + 1;
    assert!(
        w.alice.wait_until(LONG, |_| room_bodies(&w).len() >= want),
        "{} of {want}: {}",
        room_bodies(&w).len(),
        alice.diagnostics()
    );
    // And live again.
    post(&mut bob, "after");
    assert!(w.alice.wait_until(LONG, |_| room_bodies(&w).len() > want));
    std::thread::sleep(Duration::from_secs(1));
    let bodies = room_bodies(&w);
    let mut unique = bodies.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(bodies.len(), MISSED + 2, "each once: {bodies:?}");
    assert_eq!(unique.len(), bodies.len(), "no duplicate: {bodies:?}");
    for i in 0..MISSED {
        let body = format!("while alice was gone {i}");
        assert!(bodies.contains(&body), "{body} missing: {bodies:?}");
    }
    let security = alice.errors("security");
    assert!(security.is_empty(), "{security:?}");
    alice.close_stdin();
    alice.stop(LONG, "alice");
    bob.close_stdin();
    bob.stop(LONG, "bob");
}

/// Carol, a slixmpp client with rooms and direct invitations (registered by the caller).
fn carol(w: &Pair<Prosody>) -> tether_e2e::slix_peer::SlixPeer {
    tether_e2e::slix_peer::SlixPeer::start_with(
        w.server.addr(),
        "carol@localhost",
        "carol-secret",
        &w.server.ca_file(),
        &["xep_0045", "xep_0249"],
    )
    .expect("carol")
}

/// The occupant list (XEP-0045) against a real Prosody, with a third-party client in the room:
/// Tether lists who is there as the room says it (slixmpp's Carol comes, then goes), and only
/// for the room it is in.
#[test]
fn the_occupant_list_shows_who_the_room_says_is_there() {
    let prosody = Prosody::start(ProsodyOptions {
        muc: true,
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    prosody.register("carol", "carol-secret").unwrap();
    let w = Pair::new(prosody);
    w.alice
        .json_lines(&["room", "join", ROOM, "--nick", "alice"]);
    let mut alice = w.alice.spawn_run(&["--stdin"]).online(LONG, "alice");
    assert!(
        alice.wait_count("room:joined", 1, LONG),
        "{}",
        alice.diagnostics()
    );
    std::thread::sleep(Duration::from_secs(1));
    let nicks = || -> Vec<String> {
        w.alice
            .json_lines(&["room", "occupants", ROOM])
            .iter()
            .map(|o| o["nick"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(nicks(), ["alice"]);
    let mut carol = carol(&w);
    carol.join(ROOM, "carol");
    assert!(
        w.alice.wait_until(LONG, |_| nicks() == ["alice", "carol"]),
        "{:?}",
        nicks()
    );
    // Alice created the room: she owns it and sees Carol's real JID.
    let listed = w.alice.json_lines(&["room", "occupants", ROOM]);
    assert_eq!(listed[1]["jid"], "carol@localhost", "{listed:?}");
    assert_eq!(listed[0]["affiliation"], "owner", "{listed:?}");
    carol.leave(ROOM, "carol");
    assert!(
        w.alice.wait_until(LONG, |_| nicks() == ["alice"]),
        "{:?}",
        nicks()
    );
    assert!(
        alice
            .events()
            .iter()
            .any(|e| e["event"] == "presence" && e["from"] == format!("{ROOM}/carol")),
        "the front ends are told"
    );
    alice.stop(LONG, "alice");
}

/// Direct invitations (XEP-0249) both ways with a third-party client (slixmpp): Tether's goes
/// out once, with its room, and reaches Carol as an invitation; Carol's reaches Tether as a
/// message carrying the room, which Tether then joins.
#[test]
fn direct_invitations_go_both_ways_with_a_third_party_client() {
    let prosody = Prosody::start(ProsodyOptions {
        muc: true,
        // Carol (slixmpp) creates a room without configuring it: unlocked at once.
        extra_config: "muc_room_locking = false\n".into(),
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    prosody.register("carol", "carol-secret").unwrap();
    let w = Pair::new(prosody);
    let mut carol = carol(&w);
    w.alice
        .json_lines(&["room", "join", ROOM, "--nick", "alice"]);
    let id = w.alice.exec(&[
        "invite",
        "--room",
        ROOM,
        "--to",
        "carol@localhost",
        "--reason",
        "come in",
    ]);
    assert_eq!(id.code, Some(0), "{}", id.stderr);
    let id = id.stdout.trim().to_owned();
    let mut alice = w.alice.spawn_run(&["--stdin"]).online(LONG, "alice");
    let got = carol
        .wait_line(LONG, |v| v["event"] == "invite")
        .expect("carol gets the invitation");
    assert_eq!(got["room"], ROOM);
    assert_eq!(got["id"], id.as_str());
    assert_eq!(
        got["reason"], "come in",
        "the invitation's own reason attribute"
    );
    assert!(alice.wait_confirmed(1, LONG), "{}", alice.diagnostics());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(carol.events("invite").len(), 1, "once");

    let party = "party@conference.localhost";
    carol.join(party, "carol");
    carol.invite("alice@localhost", party, "a party");
    assert!(
        w.alice.wait_until(LONG, |n| n
            .messages(&["--direction", "in", "--peer", "carol@localhost"])
            .iter()
            .any(|m| m["invite"] == party)),
        "alice never got carol's invitation"
    );
    let row = &w
        .alice
        .messages(&["--direction", "in", "--peer", "carol@localhost"])[0];
    assert_eq!(row["body"], "a party");
    // Accepting it is joining the room.
    w.alice
        .json_lines(&["room", "join", party, "--nick", "alice"]);
    assert!(
        alice.wait_for(LONG, |evs| evs
            .iter()
            .any(|e| e["event"] == "room:joined" && e["room"] == party)),
        "{}",
        alice.diagnostics()
    );
    alice.stop(LONG, "alice");
}
