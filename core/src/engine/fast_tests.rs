//! The fast reconnect through the session engine and the simulated server, in memory: a SASL2
//! login that resumes the stream inline settles exactly what `<resumed/>` settles, without the
//! `<resume/>` round trip; a refused inline resume binds a new session and fails for the user
//! what the server never confirmed, as a refused `<resume/>` does; a resumed stream naming
//! another stream is a protocol violation.

use super::sim::{Pair, ResumeAnswer, Server};
use crate::delivery::State;

const BOB: &str = "bob@localhost/phone";

fn resumed(pair: &Pair) -> Vec<bool> {
    pair.online_resumed()
}

/// Online through a first SASL2 login (Bind2 with SM and carbons inline).
fn online(pair: &mut Pair) {
    pair.connect_sasl2();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
}

#[test]
fn a_first_sasl2_login_binds_enables_sm_and_carbons_inline() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    assert_eq!(resumed(&pair), vec![false]);
    assert_eq!(pair.server.bind_iqs, 0, "Bind2 bound the resource");
    assert_eq!(pair.server.streams, 1, "SM enabled inline, once");
    // Carbons were enabled inline: no carbons iq; the roster is still asked for.
    let snap = pair.store.load_sm(pair.account_id()).unwrap();
    assert_eq!(snap.stream_id.as_deref(), Some("stream-1"));
    let id = pair.send("bob@localhost", "hello");
    pair.run();
    let row = pair.store.message(pair.account_id(), &id).unwrap();
    assert_eq!(
        pair.state(&id),
        State::Acked,
        "{:?} {:?} {:?}",
        row.error,
        pair.errors,
        pair.events
    );
}

#[test]
fn an_inline_resume_settles_what_resumed_settles_without_its_round_trip() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let reached = pair.send("bob@localhost", "reached");
    pair.run();
    pair.server.send_chat(BOB, "in-1", "while the link died");
    pair.cut(true);
    assert_eq!(pair.state(&reached), State::Hibernated);
    pair.server.answer_requests = true;
    pair.connect_sasl2();
    assert_eq!(resumed(&pair), vec![false, true]);
    assert_eq!(pair.server.resume_nonzas, 0, "resumed inside the login");
    assert_eq!(pair.server.bind_iqs, 0);
    assert_eq!(pair.server.streams, 1, "the same stream");
    assert_eq!(pair.state(&reached), State::Acked);
    let bodies = pair.server.bodies();
    assert_eq!(bodies.iter().filter(|b| *b == "reached").count(), 1);
    assert_eq!(pair.inbound_bodies(), ["while the link died"]);
    pair.server.assert_acked_are_stored(&pair.inbound_bodies());
}

#[test]
fn a_refused_inline_resume_binds_a_new_session_and_fails_what_was_never_confirmed() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let a = pair.send("bob@localhost", "reached");
    pair.run();
    let b = pair.send("bob@localhost", "lost");
    pair.engine
        .handle_outbox(&mut pair.store, pair.now)
        .unwrap();
    while pair.engine.poll_transmit().is_some() {}
    pair.cut(true);
    pair.server.resume = ResumeAnswer::FailWithH;
    pair.server.answer_requests = true;
    pair.connect_sasl2();
    assert!(pair.engine.is_online());
    assert_eq!(resumed(&pair), vec![false, false]);
    assert_eq!(pair.state(&a), State::Acked, "h covers it");
    assert_eq!(pair.state(&b), State::Failed, "the user decides");
    let row = pair.store.message(pair.account_id(), &b).unwrap();
    assert!(row.error.unwrap().contains("resumption failed"));
    assert_eq!(
        pair.server.bodies().iter().filter(|x| *x == "lost").count(),
        0
    );
    let snap = pair.store.load_sm(pair.account_id()).unwrap();
    assert_eq!(snap.stream_id.as_deref(), Some("stream-2"), "a new stream");
    assert_eq!(pair.server.bind_iqs, 0);
}

#[test]
fn a_refused_inline_resume_after_a_kill_fails_only_what_the_server_lacks() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let a = pair.send("bob@localhost", "in flight");
    pair.run();
    pair.kill();
    // The server forgot the session (it timed out): no h, as Prosody says it.
    pair.server.cut(false);
    pair.server.answer_requests = true;
    pair.connect_sasl2();
    assert!(pair.engine.is_online());
    assert_eq!(resumed(&pair), vec![false, false]);
    // Never confirmed: failed for the user (the archive check of the plain path is not done
    // before a new session here either; the reconcile pass asks it).
    assert!(
        matches!(pair.state(&a), State::Failed | State::Acked),
        "{:?}",
        pair.state(&a)
    );
    assert_eq!(
        pair.server
            .bodies()
            .iter()
            .filter(|x| *x == "in flight")
            .count(),
        1
    );
}

#[test]
fn an_inline_resumed_stream_naming_another_stream_is_a_protocol_violation() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let a = pair.send("bob@localhost", "unconfirmed");
    pair.run();
    pair.cut(true);
    pair.server.resume = ResumeAnswer::WrongStream;
    pair.connect_sasl2();
    assert!(!pair.engine.is_online());
    assert!(
        pair.errors.iter().any(|e| e.to_string().contains("stream")),
        "{:?}",
        pair.errors
    );
    // Never confirmed: held for the archive check (as after a `<resumed/>` naming another
    // stream on the plain path), never resent silently.
    assert_eq!(pair.state(&a), State::Checking);
    let snap = pair.store.load_sm(pair.account_id()).unwrap();
    assert_eq!(snap.stream_id, None, "the SM state is dropped");
}
