//! A hostile or broken server, scripted in process (`tether_e2e::scripted`): each case must end
//! with a clear error or a clean recovery, and nothing the user wrote lost. The client under test
//! is the `tether` CLI on its own SQLite store, over STARTTLS with the scripted server's test CA.
//!
//! The invariants checked after every case:
//! - every outgoing message ends `acked`, or `failed` with a reason (never silently gone);
//! - nothing failed is resent until the user says so; after `resend --all-failed` all are acked;
//! - the server holds every body, and a second copy only ever carries the same id (the receiver's
//!   de-duplication key); where the server's `h` was truthful, exactly one copy.

use std::collections::HashMap;
use std::time::Duration;

use tether_e2e::scripted::{AckPolicy, Behavior, ResumePolicy, ScriptedServer};
use tether_e2e::tether::{Node, Running};

const BOB: &str = "bob@localhost";
const LONG: Duration = Duration::from_secs(120);

struct Case {
    server: ScriptedServer,
    alice: Node,
    _dir: tempfile::TempDir,
}

fn case(script: Vec<Behavior>) -> Case {
    let server = ScriptedServer::start(script);
    let dir = tempfile::tempdir().unwrap();
    let alice = server.alice(dir.path());
    Case {
        server,
        alice,
        _dir: dir,
    }
}

fn run_until_idle(c: &Case, extra: &[&str]) -> Running {
    let node = &c.alice;
    let mut args = vec![
        "--until-idle",
        "--keepalive-secs",
        "1",
        "--dead-after-secs",
        "2",
    ];
    args.extend_from_slice(extra);
    let mut run = node.spawn_run(&args);
    run.finish(LONG, &format!("run (server notes: {:?})", c.server.notes()));
    run
}

/// Every outgoing row is acked or failed-with-a-reason; returns (acked, failed).
fn settled(node: &Node) -> (usize, usize) {
    let rows = node.messages(&["--direction", "out"]);
    let mut acked = 0;
    let mut failed = 0;
    for r in &rows {
        match r["state"].as_str() {
            Some("acked") => acked += 1,
            Some("failed") => {
                assert!(r["error"].is_string(), "failed without a reason: {r}");
                failed += 1
            }
            other => panic!("message left in state {other:?}: {r}"),
        }
    }
    (acked, failed)
}

/// The server got every body; copies of one body share its id. With `exact`, one copy each.
fn server_has_all(c: &Case, bodies: &[String], exact: bool) {
    let mut ids: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for m in c.server.messages() {
        ids.entry(m.body.clone().unwrap_or_default())
            .or_default()
            .push(m.id);
    }
    for b in bodies {
        let copies = ids
            .get(b)
            .unwrap_or_else(|| panic!("the server never got {b:?}: {:?}", c.server.notes()));
        assert!(
            copies.iter().all(|id| id == &copies[0]),
            "copies of {b:?} with different ids: {copies:?}"
        );
        if exact {
            assert_eq!(copies.len(), 1, "{b:?} arrived {} times", copies.len());
        }
    }
}

/// The user confirms resending whatever failed; then everything must be acked.
fn user_resends(c: &Case) {
    let out = c.alice.exec(&["resend", "--all-failed"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    run_until_idle(c, &[]);
    let (acked, failed) = settled(&c.alice);
    assert_eq!(failed, 0);
    assert!(acked > 0);
}

fn send(c: &Case, n: usize, prefix: &str) -> Vec<String> {
    c.alice.send_many(BOB, n, prefix);
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

fn protocol_errors(run: &Running) -> usize {
    run.events()
        .iter()
        .filter(|e| e["event"] == "error" && e["kind"] == "protocol")
        .count()
}

#[test]
fn h_above_what_was_sent_is_refused_and_nothing_is_lost() {
    let c = case(vec![
        Behavior {
            ack: AckPolicy::TooHigh,
            ..Behavior::default()
        },
        Behavior::default(),
    ]);
    let bodies = send(&c, 20, "too-high");
    let run = run_until_idle(&c, &[]);
    assert!(
        protocol_errors(&run) > 0 || run.stderr().contains("handled-count-too-high"),
        "{}",
        run.diagnostics()
    );
    assert!(
        c.server
            .notes()
            .iter()
            .any(|n| n.contains("client stream error")),
        "the client did not tell the server: {:?}",
        c.server.notes()
    );
    assert!(c.server.connections() >= 2, "the client did not carry on");
    let (_, failed) = settled(&c.alice);
    if failed > 0 {
        user_resends(&c);
    }
    server_has_all(&c, &bodies, false);
}

#[test]
fn h_going_backwards_is_refused_and_nothing_is_lost() {
    let c = case(vec![
        Behavior {
            ack: AckPolicy::BackwardsAfter(6),
            ..Behavior::default()
        },
        Behavior::default(),
    ]);
    // Two bursts on one connection: the first is acked honestly, the ack of the second goes
    // backwards (a burst asks for one ack at its end).
    let bodies: Vec<String> = (0..30).map(|i| format!("backwards {i}")).collect();
    let mut run = c.alice.spawn_run(&[
        "--stdin",
        "--until-idle",
        "--keepalive-secs",
        "1",
        "--dead-after-secs",
        "2",
    ]);
    let line = |b: &String| serde_json::json!({"to": BOB, "body": b}).to_string();
    for b in &bodies[..5] {
        run.write_line(&line(b));
    }
    assert!(
        run.wait_count("message:acked", 5, LONG),
        "the first burst acked: {}",
        run.diagnostics()
    );
    for b in &bodies[5..] {
        run.write_line(&line(b));
    }
    run.close_stdin();
    run.finish(LONG, &format!("run (server notes: {:?})", c.server.notes()));
    assert!(
        c.server.connections() >= 2,
        "a backwards h went unnoticed: {}",
        run.diagnostics()
    );
    let (_, failed) = settled(&c.alice);
    if failed > 0 {
        user_resends(&c);
    }
    server_has_all(&c, &bodies, false);
}

/// Connection 0 drops after `cut` stanzas; connection 1 answers the resumption with `resume`.
fn cut_then(resume: ResumePolicy, cut: usize) -> Case {
    case(vec![
        Behavior {
            close_after: Some(cut),
            ..Behavior::default()
        },
        Behavior {
            resume,
            ..Behavior::default()
        },
        Behavior::default(),
    ])
}

#[test]
fn failed_with_h_acks_what_the_server_had_and_fails_only_the_rest() {
    let c = cut_then(ResumePolicy::FailedWithH, 12);
    let bodies = send(&c, 40, "failed-h");
    run_until_idle(&c, &[]);
    let (acked, failed) = settled(&c.alice);
    assert!(failed > 0, "nothing failed: the cut came too late");
    // With a truthful h, the server's copy and the client's acks agree exactly.
    let got_first: usize = c
        .server
        .messages()
        .iter()
        .filter(|m| m.connection == 0)
        .count();
    assert!(
        acked >= got_first,
        "acked {acked} < {got_first} the server confirmed"
    );
    user_resends(&c);
    server_has_all(&c, &bodies, true);
}

#[test]
fn failed_without_h_fails_every_unconfirmed_message_until_the_user_resends() {
    let c = cut_then(ResumePolicy::FailedWithoutH, 12);
    let bodies = send(&c, 40, "failed-no-h");
    run_until_idle(&c, &[]);
    let (_, failed) = settled(&c.alice);
    assert!(failed > 0);
    let before = c.server.messages().len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        c.server.messages().len(),
        before,
        "something was resent without the user"
    );
    user_resends(&c);
    server_has_all(&c, &bodies, false);
}

#[test]
fn resumed_for_another_stream_is_a_protocol_error_and_nothing_is_lost() {
    let c = cut_then(ResumePolicy::OtherStreamId, 12);
    let bodies = send(&c, 40, "other-id");
    let run = run_until_idle(&c, &[]);
    assert!(c.server.connections() >= 3, "{}", run.diagnostics());
    let (_, failed) = settled(&c.alice);
    if failed > 0 {
        user_resends(&c);
    }
    server_has_all(&c, &bodies, false);
}

#[test]
fn dropped_after_the_nth_stanza_resumes_with_each_message_once() {
    let c = cut_then(ResumePolicy::Honest, 15);
    let bodies = send(&c, 60, "cut");
    let run = run_until_idle(&c, &[]);
    assert!(run.saw_online(true), "not resumed: {}", run.diagnostics());
    assert_eq!(settled(&c.alice), (60, 0));
    server_has_all(&c, &bodies, true);
}

#[test]
fn a_server_that_stalls_forever_is_noticed_and_the_stream_resumed() {
    let c = case(vec![
        Behavior {
            stall_after: Some(10),
            ..Behavior::default()
        },
        Behavior::default(),
    ]);
    let bodies = send(&c, 30, "stall");
    let run = run_until_idle(&c, &[]);
    assert!(
        run.saw_online(true),
        "not resumed after the stall: {}",
        run.diagnostics()
    );
    assert_eq!(settled(&c.alice), (30, 0));
    server_has_all(&c, &bodies, true);
}

#[test]
fn a_flood_of_ack_requests_is_answered_and_harms_nothing() {
    let c = case(vec![Behavior {
        flood_r: 2000,
        ..Behavior::default()
    }]);
    let bodies = send(&c, 20, "flood");
    run_until_idle(&c, &[]);
    assert_eq!(settled(&c.alice), (20, 0));
    server_has_all(&c, &bodies, true);
    assert!(
        c.server.client_acks().len() >= 2000,
        "{} acks",
        c.server.client_acks().len()
    );
    assert_eq!(c.server.connections(), 1);
}

#[test]
fn a_stream_error_mid_burst_is_reported_and_the_stream_resumed() {
    let c = case(vec![
        Behavior {
            stream_error_after: Some(10),
            ..Behavior::default()
        },
        Behavior::default(),
    ]);
    let bodies = send(&c, 40, "stream-error");
    let run = run_until_idle(&c, &[]);
    assert!(
        run.events().iter().any(|e| e["event"] == "connection"
            && e["state"] == "offline"
            && e["reason"].as_str().is_some_and(
                |r| r.contains("internal-server-error") || r.contains("InternalServerError")
            )),
        "the stream error was not reported: {}",
        run.diagnostics()
    );
    let (_, failed) = settled(&c.alice);
    if failed > 0 {
        user_resends(&c);
    }
    server_has_all(&c, &bodies, false);
}

fn garbage_case(bytes: &[u8], prefix: &str) {
    let c = case(vec![
        Behavior {
            raw_after: Some((8, bytes.to_vec())),
            ..Behavior::default()
        },
        Behavior::default(),
    ]);
    let bodies = send(&c, 30, prefix);
    let run = run_until_idle(&c, &[]);
    assert!(
        c.server.connections() >= 2,
        "the bad input went unnoticed: {}",
        run.diagnostics()
    );
    let (_, failed) = settled(&c.alice);
    if failed > 0 {
        user_resends(&c);
    }
    server_has_all(&c, &bodies, false);
}

#[test]
fn garbage_bytes_end_the_stream_and_nothing_is_lost() {
    garbage_case(b"\x00\x01 this is not <xml at all >>> \xff", "garbage");
}

#[test]
fn invalid_utf8_ends_the_stream_and_nothing_is_lost() {
    garbage_case(b"<message><body>\xc3\x28\xa0\xa1</body></message>", "utf8");
}

#[test]
fn a_dtd_with_entity_expansion_is_refused_and_nothing_is_lost() {
    garbage_case(
        b"<!DOCTYPE lol [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]><message><body>&b;</body></message>",
        "dtd",
    );
}

#[test]
fn an_oversized_stanza_is_refused_at_the_cap_and_nothing_is_lost() {
    let c = case(vec![
        Behavior {
            // 2 MiB, against a 256 KiB cap.
            oversized_after: Some((8, 2 << 20)),
            ..Behavior::default()
        },
        Behavior::default(),
    ]);
    let bodies = send(&c, 30, "oversized");
    let run = run_until_idle(&c, &["--max-stanza-kib", "256"]);
    assert!(
        run.events().iter().any(|e| e["event"] == "connection"
            && e["state"] == "offline"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("size limit"))),
        "the cap did not end the stream: {}",
        run.diagnostics()
    );
    // The client read at most the cap plus one buffer, never the whole 2 MiB stanza.
    assert!(c.alice.received_from("bob@localhost").0 == 0);
    let (_, failed) = settled(&c.alice);
    if failed > 0 {
        user_resends(&c);
    }
    server_has_all(&c, &bodies, false);
    assert!(c.server.connections() >= 2);
}

/// A server that does not strip stanza-ids (XEP-0359 says it must) lets carol forge one "by"
/// alice's account. Carol copies the id the server will stamp on bob's next message (she may have
/// seen it, e.g. in a shared archive): bob's message must still be stored, not dropped as a
/// duplicate of hers.
#[test]
fn a_forged_stanza_id_cannot_shadow_another_peers_message() {
    let msg = |from: &str, id: &str, body: &str| {
        format!(
            "<message xmlns='jabber:client' from='{from}' to='alice@localhost/t' type='chat' id='{id}'>\
             <body>{body}</body><stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='S-1'/></message>"
        )
    };
    let c = case(vec![Behavior {
        inject_after: Some((
            3,
            vec![
                msg("carol@localhost/x", "c1", "carol with a forged stanza-id"),
                msg("bob@localhost/y", "b1", "bob's real message"),
            ],
        )),
        ..Behavior::default()
    }]);
    let bodies = send(&c, 5, "sid");
    run_until_idle(&c, &[]);
    server_has_all(&c, &bodies, true);
    let rows = c.alice.messages(&["--direction", "in"]);
    let got: Vec<&str> = rows.iter().filter_map(|r| r["body"].as_str()).collect();
    assert!(
        got.contains(&"bob's real message"),
        "bob's message was dropped: {rows:?}"
    );
    assert!(got.contains(&"carol with a forged stanza-id"), "{rows:?}");
    assert_eq!(rows.len(), 2, "{rows:?}");
}

/// The bodies of the messages `node` received, in the store's order.
fn inbound_bodies(node: &Node) -> Vec<String> {
    node.messages(&["--direction", "in"])
        .iter()
        .filter_map(|r| r["body"].as_str().map(str::to_owned))
        .collect()
}

/// A burst of `n` chat messages from bob, the `poison`th with the body `poison`.
fn burst(n: usize, poison: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let body = if i == poison {
                "poison".to_owned()
            } else {
                format!("burst {i}")
            };
            format!(
                "<message xmlns='jabber:client' from='bob@localhost/b' to='alice@localhost/t' \
                 type='chat' id='burst-{i}'><body>{body}</body></message>"
            )
        })
        .collect()
}

/// Runs alice (who sends one message, so the scripted server injects `burst` after her first
/// stanzas) on a store where `poison_sql` makes storing the message `poison` fail, and checks the
/// invariant of group commits: the persisted `h` covers exactly what the store holds, and an event
/// was announced for exactly what it holds. Returns how many of the burst were stored.
fn poisoned_burst(poison_sql: &str, n: usize, poison: usize) -> usize {
    let c = case(vec![Behavior {
        inject_after: Some((4, burst(n, poison))),
        ..Behavior::default()
    }]);
    send(&c, 1, "before the burst");
    rusqlite::Connection::open(&c.alice.db)
        .unwrap()
        .execute_batch(poison_sql)
        .unwrap();
    // Not --until-idle: the run could end before the burst arrives.
    let mut run = c.alice.spawn_run(&[]);
    let status = run.wait_exit(LONG).expect("the run ends by itself");
    assert_eq!(
        status.code(),
        Some(5),
        "a store that refuses a message is a database error: {}",
        run.diagnostics()
    );
    let sent_before = c
        .server
        .sent_before_injection()
        .expect("the burst was injected");
    let stored = inbound_bodies(&c.alice);
    assert!(!stored.contains(&"poison".to_owned()), "{stored:?}");
    // Stored in order, none skipped: a prefix of the burst.
    let expected: Vec<String> = (0..stored.len()).map(|i| format!("burst {i}")).collect();
    assert_eq!(stored, expected);
    let h = c.alice.sm()["inbound_h"].as_u64().expect("inbound_h");
    assert_eq!(
        h,
        u64::from(sent_before) + stored.len() as u64,
        "the persisted h covers exactly the {} stored (the server sent {sent_before} before)",
        stored.len()
    );
    assert_eq!(
        run.count("message:received"),
        stored.len(),
        "an event for exactly what was stored: {}",
        run.diagnostics()
    );
    stored.len()
}

#[test]
fn a_stanza_that_fails_to_store_mid_burst_rolls_back_its_group_and_is_never_counted() {
    // The poisoned message's own write fails: its group (it may have written part of itself into
    // it) is rolled back whole, counts and events included; earlier groups stand.
    let stored = poisoned_burst(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END;",
        200,
        150,
    );
    assert!(stored < 150, "the poisoned message's group was rolled back");
}

#[test]
fn a_group_commit_that_fails_mid_burst_takes_back_every_count_and_every_event() {
    // The poisoned message's write succeeds, but breaks a deferred constraint, so the group's
    // COMMIT fails: everything of that group is rolled back, counts and events included.
    let stored = poisoned_burst(
        "CREATE TABLE poison_box (account INTEGER REFERENCES accounts(id)
            DEFERRABLE INITIALLY DEFERRED);
         CREATE TRIGGER poison AFTER INSERT ON messages WHEN NEW.body = 'poison'
         BEGIN INSERT INTO poison_box VALUES (-1); END;",
        200,
        150,
    );
    assert!(
        stored < 150,
        "the poisoned group was rolled back, not just its last message"
    );
}

#[test]
fn a_message_delivered_before_stream_management_is_on_is_stored() {
    // Injected right after the bind request, so they arrive while the client waits for the bind
    // result or for <enabled/>: not counted by SM, but still the user's to keep.
    let c = case(vec![Behavior {
        inject_after: Some((1, burst(3, usize::MAX))),
        ..Behavior::default()
    }]);
    let bodies = send(&c, 1, "after negotiation");
    run_until_idle(&c, &[]);
    server_has_all(&c, &bodies, true);
    let stored = inbound_bodies(&c.alice);
    assert_eq!(stored, ["burst 0", "burst 1", "burst 2"], "{stored:?}");
}
