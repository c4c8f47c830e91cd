//! A phone's life through the session engine and the simulated server, in memory: push settings
//! told on every new session, a wake-up that resumes, stores, acks exactly what it committed and
//! suspends keeping the stream (also when its deadline comes mid-catch-up), the quick probe after
//! a network change, and what an idle hour costs in each keepalive profile.

use std::time::Duration;

use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::sim::{Pair, Server};
use crate::config::{ClientConfig, Profile};
use crate::events::{Event, SocialEvent};
use crate::store::{PushState, PushWant};

const BOB: &str = "bob@localhost/phone";

fn online(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
}

fn push_events(pair: &Pair) -> Vec<(&'static str, Option<String>)> {
    pair.events
        .iter()
        .filter_map(|e| match e {
            Event::Social(SocialEvent::Push { state, error, .. }) => Some((*state, error.clone())),
            _ => None,
        })
        .collect()
}

fn resumed(pair: &Pair) -> Vec<bool> {
    pair.online_resumed()
}

fn enable(pair: &mut Pair) {
    let account = pair.account_id();
    pair.store
        .set_push(account, "push.localhost", "node-1", Some("s3cret"))
        .unwrap();
}

#[test]
fn push_is_told_on_every_new_session_with_its_secret_and_not_on_a_resume() {
    let mut pair = Pair::new(Server::new());
    enable(&mut pair);
    online(&mut pair);
    assert_eq!(
        pair.server.push_requests,
        vec![(
            true,
            "push.localhost".to_owned(),
            Some("node-1".to_owned()),
            Some("s3cret".to_owned())
        )]
    );
    assert_eq!(push_events(&pair), vec![("enabled", None)]);
    let settings = pair.store.push(pair.account_id()).unwrap().unwrap();
    assert_eq!(settings.state, PushState::Enabled);
    // A resumed stream is the same session: the server still has it.
    pair.cut(true);
    online(&mut pair);
    assert_eq!(resumed(&pair).last(), Some(&true));
    assert_eq!(pair.server.push_requests.len(), 1, "not told on a resume");
    // A new session (the server forgot the old one): told again.
    pair.cut(false);
    online(&mut pair);
    assert_eq!(resumed(&pair).last(), Some(&false));
    assert_eq!(
        pair.server.push_requests.len(),
        2,
        "told on the new session"
    );
    // Restarts keep the wish (it is in the store).
    pair.kill();
    pair.server.cut(false);
    online(&mut pair);
    assert_eq!(pair.server.push_requests.len(), 3);
}

#[test]
fn a_refused_push_says_why_and_the_session_goes_on() {
    let mut server = Server::new();
    server.push_error = Some(DefinedCondition::NotAllowed);
    let mut pair = Pair::new(server);
    enable(&mut pair);
    online(&mut pair);
    let events = push_events(&pair);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "refused");
    assert!(
        events[0].1.as_deref().unwrap().contains("NotAllowed"),
        "{events:?}"
    );
    let settings = pair.store.push(pair.account_id()).unwrap().unwrap();
    assert_eq!(settings.state, PushState::Refused);
    assert!(settings.error.unwrap().contains("push is not allowed here"));
    // The session is fine: a message goes and is acked.
    let id = pair.send("bob@localhost", "still here");
    pair.run();
    assert_eq!(pair.state(&id), crate::State::Acked);
}

#[test]
fn a_change_while_online_is_told_at_once_and_disabling_is_idempotent() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    assert!(pair.server.push_requests.is_empty(), "nothing to tell");
    let account = pair.account_id();
    assert!(!pair.store.unset_push(account).unwrap(), "nothing enabled");
    enable(&mut pair);
    pair.wishes_changed();
    assert_eq!(pair.server.push_requests.len(), 1);
    assert!(pair.store.unset_push(account).unwrap());
    pair.wishes_changed();
    assert_eq!(
        pair.server.push_requests[1],
        (
            false,
            "push.localhost".to_owned(),
            Some("node-1".to_owned()),
            None
        )
    );
    assert_eq!(pair.store.push(account).unwrap(), None, "confirmed: gone");
    assert_eq!(
        push_events(&pair).iter().map(|e| e.0).collect::<Vec<_>>(),
        ["enabled", "disabled"]
    );
    // Again: nothing to do, nothing sent.
    assert!(!pair.store.unset_push(account).unwrap());
    pair.wishes_changed();
    assert_eq!(pair.server.push_requests.len(), 2);
}

#[test]
fn a_disable_the_server_does_not_know_is_done() {
    let mut pair = Pair::new(Server::new());
    enable(&mut pair);
    online(&mut pair);
    pair.server.push_error = Some(DefinedCondition::ItemNotFound);
    let account = pair.account_id();
    pair.store.unset_push(account).unwrap();
    pair.wishes_changed();
    assert_eq!(pair.store.push(account).unwrap(), None);
    assert_eq!(push_events(&pair).last().unwrap().0, "disabled");
}

#[test]
fn a_wish_changed_while_the_last_was_on_its_way_is_told_after_its_answer() {
    let mut server = Server::new();
    server.push_silent = true;
    let mut pair = Pair::new(server);
    enable(&mut pair);
    online(&mut pair);
    assert_eq!(pair.server.push_requests.len(), 1);
    let account = pair.account_id();
    pair.store
        .set_push(account, "push.localhost", "node-2", None)
        .unwrap();
    pair.wishes_changed();
    assert_eq!(pair.server.push_requests.len(), 1, "one request at a time");
    // The first answer comes late: it settles nothing (the wish changed), and the new one goes.
    pair.server.push_silent = false;
    let id = pair
        .server
        .iqs
        .iter()
        .rev()
        .find_map(|iq| match iq {
            tokio_xmpp::parsers::iq::Iq::Set { id, payload, .. }
                if payload.is("enable", tokio_xmpp::parsers::ns::PUSH) =>
            {
                Some(id.clone())
            }
            _ => None,
        })
        .unwrap();
    pair.server.send(tokio_xmpp::parsers::stanza::Stanza::Iq(
        tokio_xmpp::parsers::iq::Iq::Result {
            from: None,
            to: None,
            id,
            payload: None,
        },
    ));
    pair.run();
    assert_eq!(pair.server.push_requests.len(), 2);
    assert_eq!(pair.server.push_requests[1].2.as_deref(), Some("node-2"));
    let settings = pair.store.push(account).unwrap().unwrap();
    assert_eq!(
        (settings.node.as_str(), settings.state),
        ("node-2", PushState::Enabled)
    );
    assert_eq!(settings.want, PushWant::Enable);
}

/// The app is killed while its stream is hibernated; a message arrives (the server would push);
/// a wake process restores from the same file, resumes, stores the message, asks for an ack,
/// and once the server's answer shows it sent all it held, acks exactly that and drops the link
/// without closing. The app process afterwards resumes the same stream: the message once.
#[test]
fn a_wake_resumes_stores_acks_and_suspends_keeping_the_stream() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.kill();
    pair.server
        .send_chat_hibernated(BOB, "m1", "while you slept");
    // The wake process.
    let deadline = pair.now + Duration::from_secs(25);
    pair.engine.set_suspend_when_idle(Some(deadline));
    pair.connect();
    assert_eq!(resumed(&pair), vec![false, true]);
    assert!(!pair.connected, "suspended");
    assert!(!pair.server.closed, "no footer: the stream is kept");
    assert_eq!(pair.inbound_bodies(), ["while you slept"]);
    let h = pair.server.client_h.expect("acked");
    pair.server.assert_acked_are_stored(&pair.inbound_bodies());
    assert!(pair.server.has_session(), "the session is kept");
    assert!(pair.events.iter().any(|e| matches!(e, Event::Received(_))));
    // The app process: resumes the stream the wake left, nothing twice.
    pair.kill();
    online(&mut pair);
    assert_eq!(resumed(&pair).last(), Some(&true));
    assert_eq!(pair.inbound_bodies(), ["while you slept"]);
    assert!(pair.server.client_h.unwrap() >= h);
    // And it goes on as usual.
    pair.server.send_chat(BOB, "m2", "good morning");
    pair.run();
    assert_eq!(pair.inbound_bodies(), ["while you slept", "good morning"]);
}

/// Killed right after the commit, before the `<a/>` went out (Monal#295's shape): the server
/// still holds the message and sends it again on resumption; the store keeps it once.
#[test]
fn a_wake_killed_after_its_commit_loses_nothing_and_shows_nothing_twice() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.kill();
    pair.server.send_chat_hibernated(BOB, "m1", "ping me once");
    pair.engine
        .set_suspend_when_idle(Some(pair.now + Duration::from_secs(25)));
    // The resumption and the message reach the engine; its commit is done, then the process
    // dies before anything more is written.
    pair.connect_partial(2);
    assert_eq!(pair.inbound_bodies(), ["ping me once"]);
    pair.kill();
    online(&mut pair);
    assert_eq!(pair.inbound_bodies(), ["ping me once"], "once");
    let received = pair
        .events
        .iter()
        .filter(|e| matches!(e, Event::Received(_)))
        .count();
    assert_eq!(received, 1, "announced once");
}

/// The deadline comes mid-catch-up (the server hands over only part of what it holds before
/// time is up): what is committed is acked, nothing else, and the next process gets the rest.
#[test]
fn a_wake_whose_deadline_comes_mid_catch_up_acks_only_what_it_committed() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.kill();
    for i in 0..20 {
        pair.server
            .send_chat_hibernated(BOB, &format!("m{i}"), &format!("body {i}"));
    }
    let deadline = pair.now + Duration::from_secs(5);
    pair.engine.set_suspend_when_idle(Some(deadline));
    // Only the resumption and 7 of the 20 arrive before the deadline.
    pair.connect_partial(8);
    assert_eq!(pair.inbound_bodies().len(), 7);
    pair.advance(Duration::from_secs(6));
    assert!(!pair.connected, "suspended at the deadline");
    assert!(!pair.server.closed);
    pair.server.assert_acked_are_stored(&pair.inbound_bodies());
    assert_eq!(
        pair.server.unacked(),
        13,
        "the ack covers exactly the 7 committed, and the server keeps the 13 others"
    );
    // The app gets the rest, each once.
    pair.kill();
    online(&mut pair);
    let mut bodies = pair.inbound_bodies();
    bodies.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("body {i}")).collect();
    want.sort();
    assert_eq!(bodies, want);
}

/// Nothing waiting: the wake still sees the server's answer before it leaves.
#[test]
fn a_wake_with_nothing_waiting_suspends_after_one_round_trip() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.kill();
    let requests = pair.server.requests;
    pair.engine
        .set_suspend_when_idle(Some(pair.now + Duration::from_secs(25)));
    pair.connect();
    assert!(!pair.connected);
    assert!(pair.server.requests > requests, "asked the server");
    assert!(pair.inbound_bodies().is_empty());
    assert!(pair.server.has_session());
}

/// The link is still up just before `timeout` from now and found dead just after it (not after
/// the profile's `keepalive` + `dead_after` of silence).
fn assert_dead_after(pair: &mut Pair, timeout: Duration, what: &str) {
    pair.advance(timeout - Duration::from_millis(100));
    assert!(pair.connected, "not before {what}");
    pair.advance(Duration::from_millis(200));
    assert!(
        !pair.connected,
        "dead after {what} ({timeout:?}), not keepalive + dead_after ({:?})",
        pair.config.keepalive + pair.config.dead_after
    );
}

#[test]
fn a_network_change_probes_at_once_and_finds_a_dead_link_in_seconds() {
    let mut pair = Pair::with_config(Server::new(), ClientConfig::profile(Profile::Mobile));
    online(&mut pair);
    pair.advance(Duration::from_millis(200));
    let requests = pair.server.requests;
    let now = pair.now;
    pair.engine.handle_probe(&mut pair.store, now).unwrap();
    pair.run();
    assert_eq!(pair.server.requests, requests + 1, "probed at once");
    assert!(pair.connected, "answered");
    // Now the network change killed the link silently.
    pair.server.answer_requests = false;
    let now = pair.now;
    pair.engine.handle_probe(&mut pair.store, now).unwrap();
    pair.run();
    assert_eq!(pair.server.requests, requests + 2);
    // A second call while the probe is out sends nothing more.
    pair.engine.handle_probe(&mut pair.store, now).unwrap();
    pair.run();
    assert_eq!(pair.server.requests, requests + 2, "one probe at a time");
    let timeout = pair.config.quick_probe;
    assert_dead_after(&mut pair, timeout, "quick_probe");
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(resumed(&pair).last(), Some(&true));
}

/// Prosody 13.0.1's silent resumption bug (ARCHITECTURE.md): the resumed stream answers
/// nothing. Even in the mobile profile (a probe only after 300 s of silence) the client finds it
/// dead after `dead_after`, and resumes again once the server answers.
#[test]
fn a_resumed_stream_that_answers_nothing_is_found_dead_in_seconds_in_the_mobile_profile() {
    let mut pair = Pair::with_config(Server::new(), ClientConfig::profile(Profile::Mobile));
    online(&mut pair);
    pair.server.answer_requests = false;
    pair.cut(true);
    online(&mut pair);
    assert_eq!(resumed(&pair).last(), Some(&true));
    let timeout = pair.config.dead_after;
    assert_dead_after(&mut pair, timeout, "dead_after");
    // The server answers again: the stream resumes.
    pair.server.answer_requests = true;
    online(&mut pair);
    assert_eq!(resumed(&pair).last(), Some(&true));
    let id = pair.send("bob@localhost", "after");
    pair.run();
    assert_eq!(pair.state(&id), crate::State::Acked);
}

/// The engine's deadlines in an idle hour, each profile: the mobile profile wakes at most 12
/// times (one probe every 300 s), the desktop one 180 (every 20 s). The figure for a real
/// process over a real link is the benchmark's (`tether-bench-wakeups`).
#[test]
fn an_idle_hour_costs_twelve_wake_ups_in_the_mobile_profile() {
    for (profile, most) in [(Profile::Mobile, 12), (Profile::Desktop, 180)] {
        let mut pair = Pair::with_config(Server::new(), ClientConfig::profile(profile));
        online(&mut pair);
        pair.advance(Duration::from_millis(200));
        let wakeups = pair.idle(Duration::from_secs(3600));
        assert!(pair.connected, "{profile:?}: still online");
        assert!(
            wakeups <= most && wakeups >= most - 1,
            "{profile:?}: {wakeups} wake-ups in an idle hour (want {most})"
        );
    }
}
