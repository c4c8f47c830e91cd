//! Blocking (XEP-0191) through the session engine and the simulated server, in memory: a wish
//! kept offline and told on the next session, the server's list learnt, pushes of our other
//! devices applied and forged ones refused, a refusal reported and told again, and a blocked
//! sender's messages (live, carbon, archive) and requests neither stored nor announced.

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    blocking::{Block, Unblock},
    carbons,
    forwarding::Forwarded,
    iq::Iq,
    message::{Id, Lang, Message},
    presence::{Presence, Type as PresenceType},
    stanza::Stanza,
    stanza_error::DefinedCondition,
};

use super::sim::{Pair, Server};
use super::Incoming;
use crate::events::{Event, SocialEvent};
use crate::store::{BlockState, BlockWant};
use tokio_xmpp::parsers::sm::{Nonza, R};
use tokio_xmpp::xmlstream::XmppStreamElement;

const BOB: &str = "bob@localhost";

fn online(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
}

fn blocking_events(pair: &Pair) -> Vec<(String, &'static str, Option<String>)> {
    pair.events
        .iter()
        .filter_map(|e| match e {
            Event::Social(SocialEvent::Blocking { jid, state, error }) => {
                Some((jid.clone(), *state, error.clone()))
            }
            _ => None,
        })
        .collect()
}

fn received_from(pair: &Pair, peer: &str) -> usize {
    pair.events
        .iter()
        .filter(|e| matches!(e, Event::Received(r) if r.from == peer))
        .count()
}

/// The store's blocklist as `(jid, want, state)`.
fn list(pair: &Pair) -> Vec<(String, BlockWant, BlockState)> {
    pair.store
        .blocklist(pair.account_id())
        .unwrap()
        .into_iter()
        .map(|e| (e.jid, e.want, e.state))
        .collect()
}

fn wish(pair: &mut Pair, jid: &str, want: BlockWant) {
    let account = pair.account_id();
    pair.store
        .set_block(account, &[jid.to_owned()], want)
        .unwrap();
}

fn carbon_received(from: &str, body: &str) -> Message {
    let mut inner = Message::chat(Some("alice@localhost/tether".parse::<Jid>().unwrap()));
    inner.from = Some(from.parse().unwrap());
    inner.id = Some(Id("carbon-1".into()));
    inner.bodies.insert(Lang::new(), body.into());
    let mut m = Message::normal(Some("alice@localhost/tether".parse::<Jid>().unwrap()));
    m.from = Some("alice@localhost".parse().unwrap());
    m.payloads.push(
        carbons::Received {
            forwarded: Forwarded {
                delay: None,
                message: inner,
            },
        }
        .into(),
    );
    m
}

/// A blocklist push to the client, from `from` (`None`: the server on our account's behalf).
fn push(pair: &mut Pair, from: Option<&str>, id: &str, payload: impl Into<Element>) {
    pair.server.send(Stanza::Iq(Iq::Set {
        from: from.map(|f| f.parse().unwrap()),
        to: None,
        id: id.into(),
        payload: payload.into(),
    }));
    pair.run();
}

fn jids(v: &[&str]) -> Vec<Jid> {
    v.iter().map(|j| j.parse().unwrap()).collect()
}

#[test]
fn a_block_made_offline_is_told_on_the_next_session_and_the_blocked_sender_is_never_stored() {
    let mut pair = Pair::new(Server::new());
    // Bob wrote while we were away: the archive has it. Then the user blocked him, offline.
    pair.server.fill_archive(BOB, 2);
    wish(&mut pair, BOB, BlockWant::Block);
    assert_eq!(
        list(&pair),
        vec![(BOB.into(), BlockWant::Block, BlockState::Pending)]
    );
    online(&mut pair);
    pair.run();
    assert_eq!(
        pair.server.block_requests,
        vec![(true, vec![BOB.to_owned()])],
        "told once, on the new session"
    );
    assert_eq!(pair.server.blocklist, vec![BOB.to_owned()]);
    assert_eq!(
        list(&pair),
        vec![(BOB.into(), BlockWant::Block, BlockState::Confirmed)]
    );
    assert_eq!(blocking_events(&pair), vec![(BOB.into(), "blocked", None)]);
    // Live, through a carbon, a request to see our presence: none of it is kept or shown.
    pair.server
        .send_chat("bob@localhost/phone", "b-1", "blocked live");
    pair.server.send(Stanza::Message(carbon_received(
        "bob@localhost/laptop",
        "blocked carbon",
    )));
    let mut ask = Presence::new(PresenceType::Subscribe);
    ask.from = Some("bob@localhost/phone".parse().unwrap());
    pair.server.send(Stanza::Presence(ask));
    // Carol is not blocked: she still gets through.
    pair.server
        .send_chat("carol@localhost/pc", "c-1", "from carol");
    pair.run();
    assert_eq!(pair.inbound_bodies(), vec!["from carol".to_owned()]);
    assert_eq!(received_from(&pair, BOB), 0, "nothing of Bob's announced");
    assert_eq!(received_from(&pair, "carol@localhost"), 1);
    assert_eq!(pair.events_named("subscription:request"), 0);
    assert_eq!(
        pair.count_sql("SELECT count(*) FROM subscription_requests"),
        0
    );
    // Everything was handled (counted): the client's answer covers it all, so the server keeps
    // nothing to send again.
    pair.server
        .push_raw(Incoming::Element(XmppStreamElement::SM(Nonza::Req(R))));
    pair.run();
    assert_eq!(pair.server.unacked(), 0);
    // The wish survives a restart and is not told again on a resume.
    pair.kill();
    online(&mut pair);
    assert_eq!(pair.online_resumed().last(), Some(&true));
    assert_eq!(pair.server.block_requests.len(), 1);
    assert_eq!(
        list(&pair),
        vec![(BOB.into(), BlockWant::Block, BlockState::Confirmed)]
    );
}

#[test]
fn an_unblock_is_told_at_once_and_what_they_send_is_stored_again() {
    let mut pair = Pair::new(Server::new());
    wish(&mut pair, BOB, BlockWant::Block);
    online(&mut pair);
    pair.run();
    wish(&mut pair, BOB, BlockWant::Unblock);
    // Until the server confirms it, the user's wish applies here already.
    pair.server
        .send_chat("bob@localhost/phone", "b-1", "unblocked already");
    pair.run();
    assert_eq!(pair.inbound_bodies(), vec!["unblocked already".to_owned()]);
    pair.wishes_changed();
    assert_eq!(
        pair.server.block_requests,
        vec![(true, vec![BOB.to_owned()]), (false, vec![BOB.to_owned()])]
    );
    assert!(pair.server.blocklist.is_empty());
    assert!(
        list(&pair).is_empty(),
        "a confirmed unblock leaves no entry"
    );
    assert_eq!(
        blocking_events(&pair),
        vec![
            (BOB.into(), "blocked", None),
            (BOB.into(), "unblocked", None)
        ]
    );
}

#[test]
fn the_servers_list_is_learnt_on_every_new_session_and_a_wish_not_told_yet_wins() {
    let mut pair = Pair::new(Server::new());
    // Another device blocked Carol and a whole domain; this one unblocked Carol while offline.
    pair.server.blocklist = vec!["carol@localhost".into(), "spam.example".into()];
    wish(&mut pair, "carol@localhost", BlockWant::Unblock);
    online(&mut pair);
    pair.run();
    assert_eq!(
        pair.server.block_requests,
        vec![(false, vec!["carol@localhost".to_owned()])],
        "the user's unblock, told"
    );
    assert_eq!(pair.server.blocklist, vec!["spam.example".to_owned()]);
    assert_eq!(
        list(&pair),
        vec![(
            "spam.example".into(),
            BlockWant::Block,
            BlockState::Confirmed
        )]
    );
    // A domain entry blocks every JID of it.
    pair.server.send_chat("eve@spam.example/x", "s-1", "spam");
    pair.server
        .send_chat("carol@localhost/pc", "c-1", "carol again");
    pair.run();
    assert_eq!(pair.inbound_bodies(), vec!["carol again".to_owned()]);
    // Unblocked elsewhere while we were away (we missed the push): the next session's list says so.
    pair.server.blocklist.clear();
    pair.cut(false);
    online(&mut pair);
    pair.run();
    assert!(list(&pair).is_empty());
    assert!(blocking_events(&pair).contains(&("spam.example".into(), "unblocked", None)));
}

#[test]
fn a_blocklist_push_from_our_account_applies_and_one_from_anyone_else_is_a_security_event() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.run();
    push(
        &mut pair,
        None,
        "push-1",
        Block {
            items: jids(&["dave@localhost"]),
        },
    );
    assert_eq!(pair.server.iq_results_for("push-1"), 1);
    assert_eq!(
        list(&pair),
        vec![(
            "dave@localhost".into(),
            BlockWant::Block,
            BlockState::Confirmed
        )]
    );
    // From our own bare JID too (as Prosody sends them).
    push(
        &mut pair,
        Some("alice@localhost"),
        "push-2",
        Block {
            items: jids(&["erin@localhost"]),
        },
    );
    assert_eq!(pair.server.iq_results_for("push-2"), 1);
    // Bob may not change our list.
    push(
        &mut pair,
        Some("bob@localhost/phone"),
        "forged",
        Unblock {
            items: jids(&["dave@localhost"]),
        },
    );
    assert_eq!(
        pair.server.iq_results_for("forged"),
        0,
        "refused, not answered ok"
    );
    assert!(pair
        .server
        .iqs
        .iter()
        .any(|iq| matches!(iq, Iq::Error { id, .. } if id == "forged")));
    assert_eq!(pair.error_events("security").len(), 1, "{:?}", pair.events);
    assert_eq!(list(&pair).len(), 2, "nothing changed");
    // The user's own wish that the server refused stays through an "unblock everyone" push.
    pair.server.block_error = Some(DefinedCondition::NotAllowed);
    wish(&mut pair, "frank@localhost", BlockWant::Block);
    pair.wishes_changed();
    push(&mut pair, None, "push-3", Unblock { items: vec![] });
    assert_eq!(pair.server.iq_results_for("push-3"), 1);
    assert_eq!(
        list(&pair),
        vec![(
            "frank@localhost".into(),
            BlockWant::Block,
            BlockState::Refused
        )]
    );
    let events = blocking_events(&pair);
    assert!(events.contains(&("dave@localhost".into(), "unblocked", None)));
    assert!(events.contains(&("erin@localhost".into(), "unblocked", None)));
}

#[test]
fn a_refused_block_says_why_stays_blocked_here_and_is_told_again_on_the_next_session() {
    let mut pair = Pair::new(Server::new());
    pair.server.block_error = Some(DefinedCondition::NotAllowed);
    wish(&mut pair, BOB, BlockWant::Block);
    online(&mut pair);
    pair.run();
    let events = blocking_events(&pair);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "refused");
    assert!(
        events[0]
            .2
            .as_deref()
            .unwrap_or_default()
            .contains("not allowed"),
        "{events:?}"
    );
    let entry = &pair.store.blocklist(pair.account_id()).unwrap()[0];
    assert_eq!(entry.state, BlockState::Refused);
    assert!(entry.error.is_some());
    // The user's choice holds here while the server does not know it.
    pair.server
        .send_chat("bob@localhost/phone", "b-1", "still blocked here");
    pair.run();
    assert!(pair.inbound_bodies().is_empty());
    // Not told again on this session (it would be refused again) ...
    pair.wishes_changed();
    assert_eq!(pair.server.block_requests.len(), 1);
    // ... but on the next one.
    pair.server.block_error = None;
    pair.cut(false);
    online(&mut pair);
    pair.run();
    assert_eq!(pair.server.block_requests.len(), 2);
    assert_eq!(
        list(&pair),
        vec![(BOB.into(), BlockWant::Block, BlockState::Confirmed)]
    );
}

#[test]
fn an_unblock_never_goes_out_empty_so_it_never_unblocks_everyone() {
    let mut pair = Pair::new(Server::new());
    pair.server.blocklist = vec!["carol@localhost".into(), "dave@localhost".into()];
    online(&mut pair);
    pair.run();
    // A row no front end could have written (they check the JID): it cannot be told.
    let account = pair.account_id();
    pair.sql(&format!(
        "INSERT INTO blocklist (account_id, jid, want, state, updated_at)
         VALUES ({account}, 'not a jid@@', 'unblock', 'pending', 0)"
    ));
    pair.wishes_changed();
    assert!(
        pair.server.block_requests.is_empty(),
        "{:?}",
        pair.server.block_requests
    );
    assert_eq!(pair.server.blocklist.len(), 2, "nobody unblocked");
    assert_eq!(pair.error_events("usage").len(), 1);
    let entry = pair
        .store
        .blocklist(account)
        .unwrap()
        .into_iter()
        .find(|e| e.jid == "not a jid@@")
        .unwrap();
    assert_eq!(entry.state, BlockState::Refused);
}
