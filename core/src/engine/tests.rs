//! The in-memory session suite: the engine against the simulated server ([`super::sim`]) over a
//! real SQLite file, with simulated time. No socket and no server process.

use std::time::Duration;

use proptest::prelude::*;
use tokio_xmpp::parsers::{
    carbons,
    forwarding::Forwarded,
    iq::Iq,
    message::{Id, Lang, Message, MessageType},
    muc::user::{Affiliation, Item, MucUser, Role, Status},
    presence::{self, Presence},
    receipts,
    stanza::Stanza,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};
use tokio_xmpp::xmlstream::XmppStreamElement;

use super::sim::{Pair, ResumeAnswer, Server};
use super::{Incoming, Transmit};
use crate::config::ClientConfig;
use crate::events::{ConnState, Event};
use crate::sm::SmSnapshot;
use crate::State;

const BOB: &str = "bob@localhost";

fn online(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
}

fn resumed_events(pair: &Pair) -> Vec<bool> {
    pair.events
        .iter()
        .filter_map(|e| match e {
            Event::Connection(c) if c.state == ConnState::Online => c.resumed,
            _ => None,
        })
        .collect()
}

fn count(bodies: &[String], body: &str) -> usize {
    bodies.iter().filter(|b| *b == body).count()
}

// ----------------------------------------------------------------------------- negotiation

/// From now on the store refuses to insert a message whose body is `poison` (a write that fails
/// mid-burst); `DROP TRIGGER poison;` heals it.
fn poison(pair: &Pair) {
    pair.sql(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
    );
}

/// A message written but never acked, then a cut link with the session kept by the server: the
/// start of every resumption scenario. The server answers requests again afterwards.
fn unacked_then_cut(pair: &mut Pair, body: &str) -> String {
    pair.server.answer_requests = false;
    let id = pair.send(BOB, body);
    pair.run();
    pair.cut(true);
    pair.server.answer_requests = true;
    id
}

#[test]
fn a_new_session_binds_enables_and_sends_roster_carbons_presence_and_the_catch_up() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    assert_eq!(resumed_events(&pair), vec![false]);
    let snap = pair.store.load_sm(pair.account_id()).unwrap();
    assert_eq!(snap.stream_id.as_deref(), Some("stream-1"));
    assert!(snap.resumable);
    // Own archive queried (empty) and the catch-up done.
    assert_eq!(pair.events_named("mam:synced"), 1);
    assert!(!pair.engine.catching_up());
}

#[test]
fn resume_ok_acks_what_the_server_has_and_resends_the_rest_once() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let ids: Vec<String> = (0..6).map(|i| pair.send(BOB, &format!("m{i}"))).collect();
    // Only the first three stanzas of the batch reach the server; the link dies.
    let r = pair.engine.handle_outbox(&mut pair.store, pair.now);
    r.unwrap();
    let mut reached = 0;
    while let Some(t) = pair.engine.poll_transmit() {
        if matches!(&t, Transmit::Element(XmppStreamElement::Stanza(_))) {
            if reached == 3 {
                continue;
            }
            reached += 1;
        }
        pair.server.receive(t);
    }
    pair.cut(true);
    for id in &ids {
        assert_eq!(pair.state(id), State::Hibernated);
    }
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(resumed_events(&pair), vec![false, true]);
    for id in &ids {
        assert_eq!(pair.state(id), State::Acked, "{id}");
    }
    let bodies = pair.server.bodies();
    for i in 0..6 {
        assert_eq!(count(&bodies, &format!("m{i}")), 1, "m{i} in {bodies:?}");
    }
    assert_eq!(pair.events_named("message:retry"), 3);
}

#[test]
fn resume_failed_with_h_acks_what_h_covers_and_fails_the_rest_for_the_user() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let a = pair.send(BOB, "reached");
    pair.run();
    // The second never reaches the server.
    let b = pair.send(BOB, "lost");
    pair.engine
        .handle_outbox(&mut pair.store, pair.now)
        .unwrap();
    while pair.engine.poll_transmit().is_some() {}
    pair.cut(true);
    pair.server.resume = ResumeAnswer::FailWithH;
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(pair.state(&a), State::Acked);
    assert_eq!(pair.state(&b), State::Failed);
    let row = pair.store.message(pair.account_id(), &b).unwrap();
    assert!(row.error.unwrap().contains("resumption failed"));
    // Never resent without the user; a new session was bound and enabled.
    assert_eq!(count(&pair.server.bodies(), "lost"), 0);
    assert_eq!(resumed_events(&pair), vec![false, false]);
    let snap = pair.store.load_sm(pair.account_id()).unwrap();
    assert_eq!(snap.stream_id.as_deref(), Some("stream-2"));
}

/// Writes a message the server never gets (lost on the wire with the rest of the link).
fn lost_on_the_wire(pair: &mut Pair, body: &str) -> String {
    let id = pair.send(BOB, body);
    pair.engine
        .handle_outbox(&mut pair.store, pair.now)
        .unwrap();
    while pair.engine.poll_transmit().is_some() {}
    id
}

/// Bodies of what the server received, each with how often.
fn delivered_once(pair: &Pair, bodies: &[&str]) {
    for b in bodies {
        assert_eq!(count(&pair.server.bodies(), b), 1, "{b} at the server");
    }
}

#[test]
fn resume_failed_without_h_as_prosody_sends_it_asks_the_archive_and_fails_only_what_it_lacks() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let a = pair.send(BOB, "reached");
    pair.run();
    let b = lost_on_the_wire(&mut pair, "lost");
    pair.cut(true);
    pair.server.answer_requests = true;
    pair.server.resume = ResumeAnswer::FailWithoutH;
    let checking_before = pair.events_named("message:checking");
    online(&mut pair);
    // Both were checked (with an event each), before the user was asked about any.
    assert_eq!(pair.events_named("message:checking") - checking_before, 2);
    assert_eq!(pair.state(&a), State::Acked, "the archive has it");
    let row = pair.store.message(pair.account_id(), &a).unwrap();
    assert_eq!(row.stanza_id.as_deref(), Some("own-0"), "the archive's id");
    assert_eq!(row.error, None);
    assert_eq!(pair.state(&b), State::Failed, "the archive lacks it");
    let row = pair.store.message(pair.account_id(), &b).unwrap();
    assert!(row.error.unwrap().contains("resumption failed"));
    // The failed event tells the user why, as the row does.
    let told: Vec<Option<String>> = pair
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.state == State::Failed => Some(m.error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 1);
    assert!(told[0]
        .as_deref()
        .is_some_and(|e| e.contains("resumption failed")));
    assert!(
        pair.engine.is_online(),
        "bound and enabled after the failure"
    );
    // The user resends what failed: same id, and every body is at the server exactly once.
    let changes = pair
        .store
        .resend(pair.account_id(), std::slice::from_ref(&b))
        .unwrap();
    assert_eq!(changes[0].state, State::Queued);
    pair.run();
    assert_eq!(pair.state(&b), State::Acked);
    delivered_once(&pair, &["reached", "lost"]);
    let ids: Vec<_> = pair
        .server
        .delivered
        .iter()
        .filter_map(|m| m.id.clone().map(|i| i.0))
        .collect();
    assert_eq!(ids, vec![a, b], "the resend keeps the id");
}

#[test]
fn without_an_archive_every_unconfirmed_message_fails_as_before() {
    let mut server = Server::new();
    server.mam_offered = false;
    let mut pair = Pair::new(server);
    online(&mut pair);
    let a = unacked_then_cut(&mut pair, "reached, unknowable");
    pair.server.resume = ResumeAnswer::FailWithoutH;
    online(&mut pair);
    assert_eq!(pair.state(&a), State::Failed);
    assert!(
        pair.error_events("mam").is_empty(),
        "no archive is no error"
    );
    assert!(!pair.engine.catching_up());
}

#[test]
fn an_archive_that_does_not_answer_fails_what_it_was_asked_about() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let a = unacked_then_cut(&mut pair, "reached, but nobody says so");
    pair.server.resume = ResumeAnswer::FailWithoutH;
    pair.server.drop_all_mam = true;
    online(&mut pair);
    assert_eq!(pair.state(&a), State::Checking, "while the check runs");
    pair.advance(super::IQ_TIMEOUT * 4);
    assert_eq!(pair.state(&a), State::Failed);
    assert_eq!(pair.error_events("mam").len(), 1, "the skip is reported");
}

#[test]
fn a_check_killed_mid_way_goes_on_after_the_restart() {
    let mut server = Server::new();
    server.page_max = 2;
    let mut pair = Pair::new(server);
    online(&mut pair);
    pair.server.answer_requests = false;
    let sent: Vec<String> = (0..5).map(|i| pair.send(BOB, &format!("r{i}"))).collect();
    pair.run();
    let lost = lost_on_the_wire(&mut pair, "never there");
    pair.cut(true);
    pair.server.answer_requests = true;
    pair.server.resume = ResumeAnswer::FailWithoutH;
    // The new session gets its negotiation and part of the first page, then the process dies.
    pair.connect_partial(6);
    assert!(pair.engine.catching_up());
    pair.kill();
    pair.server.resume = ResumeAnswer::Honour;
    for id in sent.iter().chain([&lost]) {
        let st = pair.state(id);
        assert!(matches!(st, State::Checking | State::Acked), "{id}: {st}");
    }
    // The restart resumes the new session: its catch-up goes on and the check ends.
    pair.connect();
    assert_eq!(resumed_events(&pair).last(), Some(&true));
    for id in &sent {
        assert_eq!(pair.state(id), State::Acked);
    }
    assert_eq!(pair.state(&lost), State::Failed);
}

#[test]
fn an_archive_result_of_a_message_still_in_flight_is_its_ack() {
    let mut server = Server::new();
    server.fill_archive(BOB, 150);
    let mut pair = Pair::new(server);
    // The catch-up's first page is on its way when the message goes out, unacked by the server.
    pair.connect_partial(10);
    assert!(pair.engine.catching_up());
    pair.server.answer_requests = false;
    let a = pair.send(BOB, "in flight");
    let r = pair.engine.handle_outbox(&mut pair.store, pair.now);
    pair.run_after(r);
    assert_eq!(pair.state(&a), State::Sent);
    pair.server.rx_budget = None;
    pair.run();
    assert!(!pair.engine.catching_up());
    assert_eq!(
        pair.state(&a),
        State::Acked,
        "seen in the archive's last page"
    );
    // A later loss of the stream has nothing left to check or fail.
    pair.cut(false);
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(pair.state(&a), State::Acked);
    assert_eq!(pair.events_named("message:failed"), 0);
    delivered_once(&pair, &["in flight"]);
}

#[test]
fn resumed_for_another_stream_is_a_protocol_violation_that_checks_the_unconfirmed() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let a = pair.send(BOB, "x");
    pair.run();
    let b = lost_on_the_wire(&mut pair, "y");
    pair.cut(true);
    pair.server.answer_requests = true;
    pair.server.resume = ResumeAnswer::WrongStream;
    pair.connect();
    assert!(
        pair.errors
            .iter()
            .any(|e| e.to_string().contains("another-stream")),
        "{:?}",
        pair.errors
    );
    let snap = pair.store.load_sm(pair.account_id()).unwrap();
    assert_eq!(snap, SmSnapshot::default(), "the SM state is dropped");
    // Checked on the next (new) session: the archive has x, not y.
    assert_eq!(pair.state(&a), State::Checking);
    online(&mut pair);
    assert_eq!(pair.state(&a), State::Acked);
    assert_eq!(pair.state(&b), State::Failed);
}

#[test]
fn acks_across_the_2_pow_32_wrap() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    // Move both sides' counters to just below the wrap, as after a very long stream.
    let near = u32::MAX - 3;
    let snap = SmSnapshot {
        outbound_count: near,
        acked_h: near,
        ..pair.store.load_sm(pair.account_id()).unwrap()
    };
    pair.store.save_sm(pair.account_id(), &snap).unwrap();
    pair.cut(true);
    pair.kill();
    pair.server.set_inbound_count(near);
    online(&mut pair);
    assert_eq!(resumed_events(&pair).last(), Some(&true));
    let ids: Vec<String> = (0..10).map(|i| pair.send(BOB, &format!("w{i}"))).collect();
    pair.run();
    for id in &ids {
        assert_eq!(pair.state(id), State::Acked);
    }
    let snap = pair.store.load_sm(pair.account_id()).unwrap();
    assert!(snap.acked_h < 100, "wrapped: {snap:?}");
    assert_eq!(snap.acked_h, snap.outbound_count);
}

#[test]
fn flow_control_keeps_the_window_and_the_rest_flows_as_acks_come() {
    let mut config = ClientConfig::default();
    config.sm.max_in_flight = 8;
    let mut pair = Pair::with_config(Server::new(), config);
    online(&mut pair);
    pair.server.answer_requests = false;
    for i in 0..20 {
        pair.send(BOB, &format!("f{i}"));
    }
    pair.run();
    assert!(pair.engine.sm().in_flight() <= 8);
    let written = pair.server.bodies().len();
    assert!(written <= 8 && written > 0, "{written}");
    // The server's acks resume: the requests it ignored are not asked again until the keepalive
    // probe, whose answer opens the window; the rest then flows, a window at a time.
    pair.server.answer_requests = true;
    pair.advance(pair.config.keepalive + Duration::from_millis(1));
    assert_eq!(pair.server.bodies().len(), 20);
    assert!(pair.rows().iter().all(|r| r.state == State::Acked));
}

// ------------------------------------------------------------------------ commit, then write

#[test]
fn nothing_is_written_before_its_row_is_committed_with_its_seq() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let id = pair.send(BOB, "committed first");
    pair.engine
        .handle_outbox(&mut pair.store, pair.now)
        .unwrap();
    // Before a byte is released: another connection to the file sees the row written.
    let other = rusqlite::Connection::open(pair.db_path()).unwrap();
    let (state, seq): (String, Option<i64>) = other
        .query_row(
            "SELECT state, sm_seq FROM messages WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "sent");
    assert!(seq.is_some());
    let written: Vec<Transmit> = std::iter::from_fn(|| pair.engine.poll_transmit()).collect();
    assert!(written.iter().any(|t| matches!(
        t,
        Transmit::Element(XmppStreamElement::Stanza(Stanza::Message(_)))
    )));
}

#[test]
fn a_write_whose_commit_fails_is_never_released_and_its_count_is_taken_back() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let before = pair.engine.sm().snapshot().clone();
    let id = pair.send(BOB, "poison");
    pair.sql(
        "CREATE TRIGGER no_write BEFORE UPDATE OF state ON messages WHEN NEW.state = 'sent'
         BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
    );
    let r = pair.engine.handle_outbox(&mut pair.store, pair.now);
    assert!(r.is_err());
    assert!(pair.engine.poll_transmit().is_none(), "nothing released");
    assert_eq!(pair.engine.sm().snapshot(), &before, "numbering taken back");
    assert_eq!(pair.state(&id), State::Queued);
    pair.sql("DROP TRIGGER no_write;");
    pair.engine
        .handle_outbox(&mut pair.store, pair.now)
        .unwrap();
    pair.run();
    assert_eq!(pair.state(&id), State::Acked);
    assert_eq!(count(&pair.server.bodies(), "poison"), 1);
}

#[test]
fn a_group_commit_that_fails_mid_burst_keeps_what_committed_before_and_answers_only_that() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let h_before = pair.engine.sm().snapshot().inbound_h;
    poison(&pair);
    for i in 0..10 {
        let body = if i == 5 {
            "poison".into()
        } else {
            format!("in{i}")
        };
        pair.server
            .send_chat("bob@localhost/phone", &format!("b{i}"), &body);
        if i == 2 {
            // The server asks for an ack mid-burst: b0..b2 commit first, then the answer
            // covers exactly them.
            pair.server
                .push_raw(Incoming::Element(XmppStreamElement::SM(
                    tokio_xmpp::parsers::sm::Nonza::Req(tokio_xmpp::parsers::sm::R),
                )));
        }
    }
    let burst: Vec<Incoming> = pair.server.take_to_client();
    let r = pair
        .engine
        .handle_incoming(&mut pair.store, pair.now, burst);
    assert!(r.is_err());
    // Released: the one answer, covering only the three committed before it.
    let out: Vec<Transmit> = std::iter::from_fn(|| pair.engine.poll_transmit()).collect();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        matches!(&out[0], Transmit::Element(XmppStreamElement::SM(
            tokio_xmpp::parsers::sm::Nonza::Ack(a))) if a.h == h_before.wrapping_add(3)),
        "{out:?}"
    );
    // Announced: exactly the three stored; the poisoned group (b3..b9) left nothing.
    let events: Vec<Event> = std::iter::from_fn(|| pair.engine.poll_event()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(pair.inbound_bodies(), vec!["in0", "in1", "in2"]);
    assert_eq!(
        pair.engine.sm().snapshot().inbound_h,
        h_before.wrapping_add(3)
    );
    assert_eq!(
        pair.store.load_sm(pair.account_id()).unwrap().inbound_h,
        h_before.wrapping_add(3)
    );
    // The link goes; the server re-sends the rest on resumption once the store is fixed.
    pair.sql("DROP TRIGGER poison;");
    pair.cut(true);
    online(&mut pair);
    let bodies = pair.inbound_bodies();
    assert_eq!(bodies.len(), 10, "{bodies:?}");
    assert_eq!(count(&bodies, "poison"), 1);
}

#[test]
fn a_failed_group_releases_nothing_it_queued() {
    // A room we created (its self-presence asks for the instant configuration, an iq written
    // at once) and a message that cannot be stored, in one group: the iq must not go out.
    let room = "den@conference.localhost";
    let mut pair = Pair::new(Server::new());
    pair.store
        .join_room(pair.account_id(), room, "alice")
        .unwrap();
    online(&mut pair);
    let iqs_before = pair.server.iq_sets_to(room);
    poison(&pair);
    pair.server
        .send(Stanza::Presence(self_presence(room, "alice", true)));
    pair.server.send_chat("bob@localhost/phone", "p1", "poison");
    let burst = pair.server.take_to_client();
    assert!(pair
        .engine
        .handle_incoming(&mut pair.store, pair.now, burst)
        .is_err());
    assert!(pair.engine.poll_transmit().is_none(), "nothing released");
    assert!(pair.engine.poll_event().is_none(), "nothing announced");
    assert_eq!(pair.server.iq_sets_to(room), iqs_before);
}

#[test]
fn a_burst_writes_the_sm_state_once_whatever_it_holds() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.sql(
        "CREATE TABLE sm_writes (n INTEGER NOT NULL); INSERT INTO sm_writes VALUES (0);
         CREATE TRIGGER count_sm AFTER UPDATE ON sm_state BEGIN UPDATE sm_writes SET n = n + 1; END;",
    );
    // Ten messages acked one by one, and ten incoming: twenty moves of the SM state.
    pair.server.answer_requests = false;
    for i in 0..10 {
        pair.send(BOB, &format!("a{i}"));
    }
    pair.run();
    let sent = pair.engine.sm().snapshot().outbound_count;
    let mut burst = Vec::new();
    for k in (0..10).rev() {
        burst.push(Incoming::Element(XmppStreamElement::SM(
            tokio_xmpp::parsers::sm::Nonza::Ack(tokio_xmpp::parsers::sm::A::new(sent - k)),
        )));
        pair.server
            .send_chat("bob@localhost/phone", &format!("i{k}"), &format!("i{k}"));
        burst.extend(pair.server.take_to_client());
    }
    let before: i64 = pair.count_sql("SELECT n FROM sm_writes");
    pair.engine
        .handle_incoming(&mut pair.store, pair.now, burst)
        .unwrap();
    let writes = pair.count_sql("SELECT n FROM sm_writes") - before;
    assert_eq!(writes, 1, "one write of the SM state for the whole burst");
    assert!(pair
        .rows()
        .iter()
        .filter(|r| r.direction == crate::Direction::Out)
        .all(|r| r.state == State::Acked));
    assert_eq!(pair.inbound_bodies().len(), 10);
}

#[test]
fn a_subscription_request_in_a_burst_that_is_rolled_back_is_not_announced() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    poison(&pair);
    pair.server.send(Stanza::Presence(
        Presence::new(presence::Type::Subscribe)
            .with_from("carol@localhost".parse::<tokio_xmpp::jid::Jid>().unwrap()),
    ));
    pair.server.send_chat("bob@localhost/phone", "p1", "poison");
    let burst = pair.server.take_to_client();
    assert!(pair
        .engine
        .handle_incoming(&mut pair.store, pair.now, burst)
        .is_err());
    assert!(pair.engine.poll_event().is_none(), "nothing announced");
    assert!(pair
        .store
        .subscription_requests(pair.account_id())
        .unwrap()
        .is_empty());
    // Once the store heals, the resumed stream brings both again: announced once, stored once.
    pair.sql("DROP TRIGGER poison;");
    pair.cut(true);
    online(&mut pair);
    assert_eq!(pair.events_named("subscription:request"), 1);
    assert_eq!(
        pair.store.subscription_requests(pair.account_id()).unwrap(),
        vec!["carol@localhost".to_owned()]
    );
}

#[test]
fn an_ack_answer_covers_only_what_its_call_committed() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    for i in 0..5 {
        pair.server
            .send_chat("bob@localhost/phone", &format!("c{i}"), &format!("c{i}"));
    }
    pair.server
        .push_raw(Incoming::Element(XmppStreamElement::SM(
            tokio_xmpp::parsers::sm::Nonza::Req(tokio_xmpp::parsers::sm::R),
        )));
    pair.run();
    assert!(pair.server.client_h.is_some(), "answered");
    // Every chat stanza the answer covers is in the store.
    pair.server.assert_acked_are_stored(&pair.inbound_bodies());
    assert_eq!(pair.inbound_bodies().len(), 5);
}

// ----------------------------------------------------------------------------- the archive

#[test]
fn archive_catch_up_over_several_pages_stores_each_once() {
    let mut server = Server::new();
    server.fill_archive("carol@localhost", 250);
    let mut pair = Pair::new(server);
    online(&mut pair);
    let bodies = pair.inbound_bodies();
    assert_eq!(bodies.len(), 250);
    for i in 0..250 {
        assert_eq!(count(&bodies, &format!("archived {i}")), 1);
    }
    assert!(!pair.engine.catching_up());
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::Social(crate::events::SocialEvent::MamSynced { count: 250, .. })
    )));
}

#[test]
fn a_catch_up_interrupted_by_a_kill_continues_on_the_resumed_stream() {
    let mut server = Server::new();
    server.fill_archive("carol@localhost", 250);
    let mut pair = Pair::new(server);
    pair.server.answer_requests = false;
    pair.connect_partial(60);
    // The process dies mid-page: 60 stanzas of the first page were handled and committed, the
    // rest of the page was on the wire; the server still has all of it unacked.
    assert!(pair.engine.catching_up());
    let stored = pair.inbound_bodies().len();
    assert!(stored > 0 && stored < 100, "{stored}");
    pair.kill();
    assert!(pair.engine.catching_up(), "the catch-up survives the kill");
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(resumed_events(&pair).last(), Some(&true));
    assert!(
        pair.error_events("security").is_empty(),
        "{:?}",
        pair.error_events("security")
    );
    let bodies = pair.inbound_bodies();
    assert_eq!(bodies.len(), 250, "finished on the resumed stream");
    for i in 0..250 {
        assert_eq!(count(&bodies, &format!("archived {i}")), 1);
    }
    assert!(!pair.engine.catching_up());
}

#[test]
fn a_page_query_lost_with_the_link_is_asked_again_after_its_timeout() {
    let mut server = Server::new();
    server.fill_archive("carol@localhost", 150);
    let mut pair = Pair::new(server);
    pair.server.answer_requests = false;
    // The link dies right after the page query was committed, before it reached the server.
    pair.connect_partial(4);
    pair.cut(true);
    pair.server.drop_mam_answers();
    pair.server.answer_requests = true;
    online(&mut pair);
    assert!(pair.engine.catching_up());
    pair.advance(super::IQ_TIMEOUT + Duration::from_secs(1));
    assert_eq!(pair.inbound_bodies().len(), 150);
    assert!(!pair.engine.catching_up());
}

#[test]
fn forged_archive_results_and_carbons_are_refused_and_store_nothing() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let h = pair.engine.sm().snapshot().inbound_h;
    // A result for a query we never sent, from our own server.
    let mut inner = Message::chat(Some("alice@localhost".parse().unwrap()));
    inner.from = Some("mallory@localhost/x".parse().unwrap());
    inner.bodies.insert(Lang::new(), "forged archive".into());
    let result = tokio_xmpp::parsers::mam::Result_ {
        id: "x1".into(),
        queryid: Some(tokio_xmpp::parsers::mam::QueryId("not-ours".into())),
        forwarded: Forwarded {
            delay: None,
            message: inner.clone(),
        },
    };
    let mut m = Message::normal(Some("alice@localhost".parse().unwrap()));
    m.payloads.push(result.into());
    pair.server.send(Stanza::Message(m));
    // A carbon from someone other than our own account.
    let mut c = Message::chat(Some("alice@localhost".parse().unwrap()));
    c.from = Some("mallory@localhost".parse().unwrap());
    let mut carried = inner;
    carried.bodies.insert(Lang::new(), "forged carbon".into());
    c.payloads.push(
        carbons::Received {
            forwarded: Forwarded {
                delay: None,
                message: carried,
            },
        }
        .into(),
    );
    pair.server.send(Stanza::Message(c));
    pair.run();
    assert!(pair.inbound_bodies().is_empty());
    assert_eq!(pair.error_events("security").len(), 2, "{:?}", pair.events);
    // Both still counted: our h matches the server's.
    assert_eq!(pair.engine.sm().snapshot().inbound_h, h.wrapping_add(2));
}

// ----------------------------------------------------------------------- receipts, rooms

#[test]
fn receipts_and_markers_move_a_message_forward_only() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let id = pair.send(BOB, "read me");
    pair.run();
    assert_eq!(pair.state(&id), State::Acked);
    let mut displayed = Message::chat(Some("alice@localhost".parse().unwrap()));
    displayed.from = Some("bob@localhost/phone".parse().unwrap());
    displayed
        .payloads
        .push(tokio_xmpp::parsers::displayed_markers::Displayed { id: Id(id.clone()) }.into());
    pair.server.send(Stanza::Message(displayed));
    pair.run();
    assert_eq!(pair.state(&id), State::Displayed);
    // A late receipt does not move it back.
    let mut receipt = Message::chat(Some("alice@localhost".parse().unwrap()));
    receipt.from = Some("bob@localhost/phone".parse().unwrap());
    receipt
        .payloads
        .push(receipts::Received { id: id.clone() }.into());
    pair.server.send(Stanza::Message(receipt));
    pair.run();
    assert_eq!(pair.state(&id), State::Displayed);
    // An incoming message asking for a receipt gets one, through the control outbox.
    let mut asks = Message::chat(Some("alice@localhost".parse().unwrap()));
    asks.from = Some("bob@localhost/phone".parse().unwrap());
    asks.id = Some(Id("ask-1".into()));
    asks.bodies.insert(Lang::new(), "ack this".into());
    asks.payloads.push(receipts::Request.into());
    pair.server.send(Stanza::Message(asks));
    pair.run();
    assert!(pair.server.delivered.iter().any(|m| m
        .payloads
        .iter()
        .any(|p| p.is("received", tokio_xmpp::parsers::ns::RECEIPTS))));
}

fn self_presence(room: &str, nick: &str, created: bool) -> Presence {
    let mut status = vec![Status::SelfPresence];
    if created {
        status.push(Status::RoomHasBeenCreated);
    }
    let muc = MucUser {
        status,
        items: vec![Item::new(Affiliation::Owner, Role::Moderator)],
        ..MucUser::new()
    };
    Presence::available()
        .with_from(
            format!("{room}/{nick}")
                .parse::<tokio_xmpp::jid::Jid>()
                .unwrap(),
        )
        .with_payloads(vec![muc.into()])
}

#[test]
fn rooms_gate_messages_on_the_join_match_the_echo_and_fail_on_refusal() {
    let room = "den@conference.localhost";
    let mut pair = Pair::new(Server::new());
    pair.store
        .join_room(pair.account_id(), room, "alice")
        .unwrap();
    online(&mut pair);
    let id = pair
        .store
        .enqueue_many(pair.account_id(), &[(room.into(), "hi room".into())])
        .unwrap()[0]
        .id
        .clone();
    pair.run();
    // Gated: not written until the room answers the join.
    assert_eq!(count(&pair.server.bodies(), "hi room"), 0);
    assert_eq!(pair.state(&id), State::Queued);
    pair.server
        .send(Stanza::Presence(self_presence(room, "alice", true)));
    pair.run();
    assert_eq!(pair.events_named("room:joined"), 1);
    // We created the room: the instant configuration went out.
    assert!(pair.server.iq_sets_to(room) >= 1);
    assert_eq!(count(&pair.server.bodies(), "hi room"), 1);
    // The room's echo from our own nick with our id: reflected, with the room's stanza-id.
    let sent = pair
        .server
        .delivered
        .iter()
        .find(|m| m.bodies.get("").map(String::as_str) == Some("hi room"))
        .unwrap()
        .clone();
    let mut echo = sent;
    echo.from = Some(format!("{room}/alice").parse().unwrap());
    echo.to = Some("alice@localhost/tether".parse().unwrap());
    echo.payloads.push(
        tokio_xmpp::parsers::stanza_id::StanzaId {
            id: "room-sid-1".into(),
            by: room.parse().unwrap(),
        }
        .into(),
    );
    pair.server.send(Stanza::Message(echo));
    pair.run();
    assert_eq!(pair.state(&id), State::Reflected);
    assert_eq!(pair.rows().len(), 1, "the echo is no second row");

    // Another room refuses us: what waits for it fails with the reason, nothing is written.
    let closed = "closed@conference.localhost";
    pair.store
        .join_room(pair.account_id(), closed, "alice")
        .unwrap();
    let waiting = pair
        .store
        .enqueue_many(pair.account_id(), &[(closed.into(), "let me in".into())])
        .unwrap()[0]
        .id
        .clone();
    pair.run();
    let refusal = Presence::new(presence::Type::Error)
        .with_from(
            format!("{closed}/alice")
                .parse::<tokio_xmpp::jid::Jid>()
                .unwrap(),
        )
        .with_payloads(vec![StanzaError::new(
            ErrorType::Auth,
            DefinedCondition::RegistrationRequired,
            "en",
            "members only",
        )
        .into()]);
    pair.server.send(Stanza::Presence(refusal));
    pair.run();
    assert_eq!(pair.state(&waiting), State::Failed);
    assert_eq!(count(&pair.server.bodies(), "let me in"), 0);
}

// ------------------------------------------------------------------------- the no-SM path

#[test]
fn without_sm_a_written_message_whose_link_breaks_is_failed_for_the_user() {
    let mut server = Server::new();
    server.sm_offered = false;
    let mut pair = Pair::new(server);
    online(&mut pair);
    assert_eq!(
        pair.store.load_sm(pair.account_id()).unwrap(),
        SmSnapshot::default()
    );
    let id = pair.send(BOB, "no sm");
    pair.run();
    assert_eq!(pair.state(&id), State::Sent);
    assert_eq!(count(&pair.server.bodies(), "no sm"), 1);
    let lost = lost_on_the_wire(&mut pair, "no sm, lost");
    pair.cut(false);
    // Nothing will ever ack them: the next session's archive decides.
    assert_eq!(pair.state(&id), State::Checking);
    assert_eq!(pair.state(&lost), State::Checking);
    online(&mut pair);
    assert_eq!(pair.state(&id), State::Acked);
    assert_eq!(pair.state(&lost), State::Failed);
    delivered_once(&pair, &["no sm"]);
}

// -------------------------------------------------------------- keepalive, dead link, CSI

#[test]
fn silence_brings_a_probe_and_no_answer_a_dead_link_that_resumes() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let keepalive = pair.config.keepalive;
    let dead = pair.config.dead_after;
    // Let the ack request of the new session's first stanzas go out and be answered.
    pair.advance(Duration::from_millis(200));
    let requests = pair.server.requests;
    let ms = Duration::from_millis;
    // Quiet, but the server answers: a probe once the keepalive period is silent.
    pair.advance(keepalive - ms(300));
    assert_eq!(
        pair.server.requests, requests,
        "no probe before the keepalive"
    );
    pair.advance(ms(400));
    assert_eq!(pair.server.requests, requests + 1, "one probe");
    assert!(pair.connected);
    // Now the link is silently dead: nothing reaches the client.
    pair.server.answer_requests = false;
    pair.advance(keepalive);
    assert_eq!(pair.server.requests, requests + 2, "the next probe");
    pair.advance(dead - ms(400));
    assert!(
        pair.connected,
        "not dead before dead_after: {:?}",
        pair.errors
    );
    pair.advance(ms(400));
    assert!(!pair.connected, "dead after keepalive + dead_after");
    assert!(pair
        .errors
        .iter()
        .any(|e| e.to_string().contains("link is dead")));
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(resumed_events(&pair).last(), Some(&true));
}

#[test]
fn without_sm_the_probe_is_a_ping() {
    let mut server = Server::new();
    server.sm_offered = false;
    let mut pair = Pair::new(server);
    online(&mut pair);
    pair.advance(pair.config.keepalive + Duration::from_millis(1));
    assert_eq!(pair.server.pings, 1);
    assert!(pair.connected);
}

#[test]
fn suspend_tells_the_server_once_and_resume_tells_it_again() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.engine.set_inactive(true);
    pair.run();
    pair.run();
    assert_eq!(pair.server.csi_inactive, Some(true));
    assert_eq!(
        pair.events
            .iter()
            .filter(|e| **e == Event::csi(true))
            .count(),
        1
    );
    pair.engine.set_inactive(false);
    pair.run();
    assert_eq!(pair.server.csi_inactive, Some(false));
    // A server without CSI is not told (and nothing breaks).
    let mut server = Server::new();
    server.csi_offered = false;
    let mut quiet = Pair::new(server);
    online(&mut quiet);
    quiet.engine.set_inactive(true);
    quiet.run();
    assert_eq!(quiet.server.csi_inactive, None);
}

#[test]
fn an_iq_during_negotiation_is_answered_and_a_ping_too() {
    let mut pair = Pair::new(Server::new());
    // A ping from the server before it answered the bind.
    pair.server
        .push_raw(Incoming::Element(XmppStreamElement::Stanza(Stanza::Iq(
            Iq::from_get("srv-ping", tokio_xmpp::parsers::ping::Ping)
                .with_from("localhost".parse().unwrap()),
        ))));
    online(&mut pair);
    assert!(pair.server.iq_results_for("srv-ping") == 1);
}

#[test]
fn stop_with_nothing_in_flight_closes_cleanly_and_forgets_the_stream() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.send(BOB, "before stop");
    pair.run();
    let r = pair.engine.handle_stop(&mut pair.store, pair.now);
    pair.run_after(r);
    assert!(pair.server.closed);
    pair.finish_close();
    assert_eq!(
        pair.store.load_sm(pair.account_id()).unwrap(),
        SmSnapshot::default()
    );
}

#[test]
fn stop_with_unacked_waits_a_moment_then_keeps_the_stream_resumable() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let id = pair.send(BOB, "unacked at stop");
    pair.run();
    let r = pair.engine.handle_stop(&mut pair.store, pair.now);
    pair.run_after(r);
    assert!(!pair.server.closed);
    pair.advance(super::STOP_CONFIRM + Duration::from_millis(1));
    assert!(!pair.connected);
    assert!(!pair.server.closed, "no footer: the stream stays resumable");
    assert!(pair.store.load_sm(pair.account_id()).unwrap().resumable);
    pair.kill();
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(pair.state(&id), State::Acked);
    assert_eq!(count(&pair.server.bodies(), "unacked at stop"), 1);
}

#[test]
fn exit_when_idle_closes_once_everything_is_confirmed() {
    let mut pair = Pair::new(Server::new());
    pair.engine.set_exit_when_idle(true);
    let id = pair.send(BOB, "then exit");
    online_or_closed(&mut pair);
    assert_eq!(pair.state(&id), State::Acked);
    // The last request of the login (the bookmarks, asked once the account's features are
    // known) is acked on the request timer.
    let delay = pair.config.sm.request_delay;
    pair.advance(delay);
    assert!(pair.server.closed);
}

fn online_or_closed(pair: &mut Pair) {
    pair.connect();
    assert!(pair.errors.is_empty(), "{:?}", pair.errors);
}

#[test]
fn an_error_bounce_fails_the_message_with_the_reason() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let id = pair.send(BOB, "bounced");
    pair.run();
    let mut bounce =
        Message::new_with_type(MessageType::Error, Some("alice@localhost".parse().unwrap()));
    bounce.from = Some(BOB.parse().unwrap());
    bounce.id = Some(Id(id.clone()));
    bounce.payloads.push(
        StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "offline",
        )
        .into(),
    );
    pair.server.send(Stanza::Message(bounce));
    pair.run();
    assert_eq!(pair.state(&id), State::Failed);
}

#[test]
fn a_server_h_beyond_what_was_sent_ends_the_stream_and_acks_nothing() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let id = pair.send(BOB, "not acked by a lie");
    pair.run();
    pair.server
        .push_raw(Incoming::Element(XmppStreamElement::SM(
            tokio_xmpp::parsers::sm::Nonza::Ack(tokio_xmpp::parsers::sm::A::new(1000)),
        )));
    pair.run();
    assert_eq!(pair.state(&id), State::Checking, "the lie acks nothing");
    assert!(pair
        .errors
        .iter()
        .any(|e| e.to_string().contains("handled-count-too-high")));
    assert!(
        pair.server.closed,
        "the stream error and footer were written"
    );
    assert_eq!(pair.server.stream_errors.len(), 1);
    // The next session's archive shows whether the server has it (it does).
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(pair.state(&id), State::Acked);
}

// ------------------------------------------------------------------------ property test

#[derive(Clone, Debug)]
enum Op {
    Send,
    Inbound,
    Step,
    Deliver(u8),
    Cut,
    Kill,
    ServerForgets,
    StoreFails,
    StoreHeals,
    Advance(u16),
    ResendFailed,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Send),
        3 => Just(Op::Inbound),
        4 => Just(Op::Step),
        2 => (0u8..8).prop_map(Op::Deliver),
        1 => Just(Op::Cut),
        1 => Just(Op::Kill),
        1 => Just(Op::ServerForgets),
        1 => Just(Op::StoreFails),
        1 => Just(Op::StoreHeals),
        1 => (1u16..400).prop_map(Op::Advance),
        1 => Just(Op::ResendFailed),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any interleaving of sends, inbound traffic, partial deliveries, cuts, kills, lost server
    /// sessions, store failures and user resends: nothing is lost, nothing is acked before it is
    /// committed, nothing reaches the server twice unless the user resent it, and in the end
    /// every message is acked (or failed and shown to the user) and every inbound message is
    /// stored exactly once.
    #[test]
    fn the_whole_session_under_random_faults(ops in prop::collection::vec(op(), 1..60)) {
        let mut pair = Pair::new(Server::new());
        let mut sent = Vec::new();
        let mut inbound = 0u32;
        let mut resends: std::collections::HashMap<String, usize> = Default::default();
        let mut failing = false;
        pair.connect();
        for op in ops {
            match op {
                Op::Send => sent.push(pair.send(BOB, &format!("p{}", sent.len()))),
                Op::Inbound => {
                    if pair.connected {
                        pair.server.send_chat("bob@localhost/phone", &format!("i{inbound}"), &format!("i{inbound}"));
                        inbound += 1;
                    }
                }
                Op::Step => { pair.step(); }
                Op::Deliver(n) => pair.deliver_some(n as usize),
                Op::Cut => pair.cut(true),
                Op::Kill => pair.kill(),
                Op::ServerForgets => pair.cut(false),
                Op::StoreFails => {
                    if !failing {
                        pair.sql("CREATE TRIGGER fail_in BEFORE INSERT ON messages WHEN NEW.direction = 'in'
                                  BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;");
                        failing = true;
                    }
                }
                Op::StoreHeals => {
                    if failing {
                        pair.sql("DROP TRIGGER fail_in;");
                        failing = false;
                    }
                }
                Op::Advance(ms) => pair.advance(Duration::from_millis(ms as u64 * 100)),
                Op::ResendFailed => {
                    let failed = pair.store.failed_ids(pair.account_id()).unwrap();
                    for id in &failed { *resends.entry(id.clone()).or_default() += 1; }
                    pair.store.resend(pair.account_id(), &failed).unwrap();
                }
            }
            if !pair.connected {
                pair.connect();
            }
            // Nothing acked before it is committed: every chat stanza the client's last h
            // covers is in the store.
            pair.server.assert_acked_are_stored(&pair.inbound_bodies());
            // Nothing reaches the server twice unless the user resent it.
            for id in &sent {
                let n = pair.server.delivered.iter().filter(|m| m.id.as_ref().map(|i| &i.0) == Some(id)).count();
                prop_assert!(n <= 1 + resends.get(id).copied().unwrap_or(0), "{id} delivered {n} times");
            }
        }
        // Heal everything and let it settle.
        if failing { pair.sql("DROP TRIGGER fail_in;"); }
        if pair.connected { pair.cut(true); }
        pair.connect();
        for _ in 0..5 { pair.advance(Duration::from_secs(1)); }
        let rows = pair.rows();
        for id in &sent {
            let row = rows.iter().find(|r| &r.id == id).expect("never lost");
            prop_assert!(matches!(row.state, State::Acked | State::Failed | State::Delivered | State::Displayed),
                "{id} ended {:?}", row.state);
            if row.state != State::Failed {
                let n = pair.server.delivered.iter().filter(|m| m.id.as_ref().map(|i| &i.0) == Some(id)).count();
                prop_assert!(n >= 1, "{id} acked but never delivered");
            }
        }
        // Inbound: what the server still holds unacked it delivers on resumption; what it lost
        // with a forgotten session was never acked by us, so it is the server's to lose. Every
        // message that is stored is stored once.
        let bodies = pair.inbound_bodies();
        for b in &bodies {
            prop_assert_eq!(count(&bodies, b), 1, "{} stored twice", b);
        }
    }
}
