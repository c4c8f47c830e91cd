//! Corrections, retractions, reactions, replies and chat states through the session engine and
//! the simulated server, in memory: what goes out, in which order, how often; what comes in live,
//! through a carbon and from the archive, applied once; and the forgeries, refused.

use std::time::Duration;

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    carbons,
    chatstates::ChatState as Cs,
    forwarding::Forwarded,
    message::{Id, Lang, Message},
    message_correct::Replace,
    ns,
    reactions::{Reaction, Reactions},
    stanza::Stanza,
    stanza_id::OriginId,
};

use super::sim::{Pair, ResumeAnswer, Server};
use super::xeps;
use crate::chat_state::ChatState;
use crate::events::{Event, SocialEvent};
use crate::store::{Action, MessageRow, Reference};
use crate::State;

const BOB: &str = "bob@localhost";

fn online(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
}

/// A chat message to us from `from` (a full JID), with origin-id = id.
fn chat_from(from: &str, id: &str, body: &str) -> Message {
    let mut m = Message::chat(Some("alice@localhost".parse::<Jid>().unwrap()));
    m.from = Some(from.parse().unwrap());
    m.id = Some(Id(id.into()));
    if !body.is_empty() {
        m.bodies.insert(Lang::new(), body.into());
    }
    m.payloads.push(OriginId { id: id.into() }.into());
    m
}

fn with(mut m: Message, payload: impl Into<Element>) -> Message {
    m.payloads.push(payload.into());
    m
}

fn correction(from: &str, id: &str, of: &str, body: &str) -> Message {
    with(chat_from(from, id, body), Replace { id: Id(of.into()) })
}

fn reaction(from: &str, id: &str, to: &str, emoji: &[&str]) -> Message {
    let r = Reactions {
        id: to.into(),
        reactions: emoji
            .iter()
            .map(|e| Reaction {
                emoji: e.to_string(),
            })
            .collect(),
    };
    with(chat_from(from, id, ""), r)
}

fn carbon_received(inner: Message) -> Message {
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

fn shown(pair: &Pair, peer: &str) -> Vec<MessageRow> {
    pair.store.page(pair.account_id(), peer, None, 100).unwrap()
}

fn actions(pair: &Pair, action: &str) -> i64 {
    pair.count_sql(&format!(
        "SELECT count(*) FROM messages WHERE action = '{action}'"
    ))
}

fn updated(pair: &Pair, action: Action) -> usize {
    pair.events
        .iter()
        .filter(|e| matches!(e, Event::Updated(u) if u.action == action))
        .count()
}

/// What the server got, as (kind, target): `msg`, `correct`, `react`, `retract`, `reply`.
fn delivered_kinds(pair: &Pair) -> Vec<(String, Option<String>)> {
    pair.server
        .delivered
        .iter()
        .filter(|m| {
            !m.bodies.is_empty() || m.payloads.iter().any(|p| p.is("reactions", ns::REACTIONS))
        })
        .map(|m| {
            let find = |name: &str, ns: &str| {
                m.payloads
                    .iter()
                    .find(|p| p.is(name, ns))
                    .and_then(|p| p.attr("id").map(str::to_owned))
            };
            if let Some(t) = find("replace", ns::MESSAGE_CORRECT) {
                ("correct".into(), Some(t))
            } else if let Some(t) = find("reactions", ns::REACTIONS) {
                ("react".into(), Some(t))
            } else if let Some(t) = find("retract", xeps::RETRACT) {
                ("retract".into(), Some(t))
            } else if let Some(t) = find("reply", xeps::REPLY) {
                ("reply".into(), Some(t))
            } else {
                ("msg".into(), m.id.clone().map(|i| i.0))
            }
        })
        .collect()
}

#[test]
fn every_kind_goes_out_after_its_message_once_each_even_through_a_failed_resumption() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.answer_requests = false;
    let acc = pair.account_id();
    let m = pair.send(BOB, "helo");
    let fix = pair
        .store
        .enqueue_reference(acc, BOB, &m, &Reference::Correct("hello".into()))
        .unwrap();
    let react = pair
        .store
        .enqueue_reference(acc, BOB, &m, &Reference::React(vec!["👍".into()]))
        .unwrap();
    let reply = pair
        .store
        .enqueue_reference(acc, BOB, &m, &Reference::Reply("and more".into()))
        .unwrap();
    let back = pair
        .store
        .enqueue_reference(acc, BOB, &m, &Reference::Retract)
        .unwrap();
    pair.run();
    // The server lost the session before acking any: the archive proves what it has.
    pair.cut(true);
    pair.server.answer_requests = true;
    pair.server.resume = ResumeAnswer::FailWithoutH;
    online(&mut pair);
    for id in [&m, &fix.id, &react.id, &reply.id, &back.id] {
        assert_eq!(pair.state(id), State::Acked, "{id}: the archive has it");
    }
    let t = Some(m.clone());
    assert_eq!(
        delivered_kinds(&pair),
        vec![
            ("msg".into(), t.clone()),
            ("correct".into(), t.clone()),
            ("react".into(), t.clone()),
            ("reply".into(), t.clone()),
            ("retract".into(), t),
        ],
        "each once, after its message, naming it"
    );
    // The stanzas carry what a receiver needs: a store hint on the bodiless ones, the reply's
    // quote marked as fallback, <active/> on every one-to-one message.
    let stanza = |id: &str| {
        pair.server
            .delivered
            .iter()
            .find(|x| x.id.as_ref().map(|i| i.0.as_str()) == Some(id))
            .unwrap()
            .clone()
    };
    let r = stanza(&react.id);
    assert!(r.bodies.is_empty());
    assert!(r.payloads.iter().any(|p| p.is("store", xeps::HINTS)));
    assert!(!r.payloads.iter().any(|p| p.is("request", ns::RECEIPTS)));
    let q = stanza(&reply.id);
    assert_eq!(q.bodies[""], "> hello\nand more");
    assert!(q.payloads.iter().any(|p| p.is("fallback", xeps::FALLBACK)));
    for x in &pair.server.delivered {
        assert!(x.payloads.iter().any(|p| p.is("active", ns::CHATSTATES)));
    }
    let rows = shown(&pair, BOB);
    assert_eq!(rows.len(), 2, "the message and the reply");
    assert!(rows[0].retracted && rows[0].edited);
    assert_eq!(rows[0].reactions[0].emoji, "👍");
    assert_eq!(rows[1].reply_to.as_ref().unwrap().id, m);
}

#[test]
fn what_comes_live_through_a_carbon_and_from_the_archive_is_applied_once() {
    let mut server = Server::new();
    // The archive holds the correction and a reaction before their message (archive order is
    // not send order), and the correction twice.
    server.archive = vec![
        (
            "a1".into(),
            correction("bob@localhost/phone", "c1", "m1", "hello"),
        ),
        (
            "a2".into(),
            reaction("bob@localhost/phone", "r1", "m1", &["👍"]),
        ),
        ("a3".into(), chat_from("bob@localhost/phone", "m1", "helo")),
        (
            "a4".into(),
            correction("bob@localhost/phone", "c1", "m1", "hello"),
        ),
    ];
    let mut pair = Pair::new(server);
    online(&mut pair);
    let rows = shown(&pair, BOB);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].body.as_str(), rows[0].edited), ("hello", true));
    assert_eq!(rows[0].reactions.len(), 1);
    // Offline storage delivers the same again, live; another device's carbon once more.
    pair.server.send(Stanza::Message(correction(
        "bob@localhost/phone",
        "c1",
        "m1",
        "hello",
    )));
    pair.server.send(Stanza::Message(carbon_received(correction(
        "bob@localhost/phone",
        "c1",
        "m1",
        "hello",
    ))));
    pair.server.send(Stanza::Message(reaction(
        "bob@localhost/phone",
        "r1",
        "m1",
        &["👍"],
    )));
    pair.run();
    assert_eq!(actions(&pair, "correct"), 1, "one correction row");
    assert_eq!(actions(&pair, "react"), 1, "one reaction row");
    assert_eq!(updated(&pair, Action::Correct), 1, "announced once");
    assert_eq!(
        pair.events_named("message:received"),
        1,
        "only the message itself"
    );
    // A new reaction set replaces Bob's old one.
    pair.server.send(Stanza::Message(reaction(
        "bob@localhost/phone",
        "r2",
        "m1",
        &["😂", "🎉"],
    )));
    pair.run();
    let emoji: Vec<String> = shown(&pair, BOB)[0]
        .reactions
        .iter()
        .map(|r| r.emoji.clone())
        .collect();
    assert_eq!(emoji, ["😂", "🎉"]);
}

#[test]
fn forgeries_live_in_a_carbon_or_in_the_archive_are_security_events_that_change_nothing() {
    let mut server = Server::new();
    server.archive = vec![
        (
            "a1".into(),
            chat_from("bob@localhost/phone", "m1", "I owe you nothing"),
        ),
        // Mallory, through our own archive, claims to correct Bob's message.
        (
            "a2".into(),
            correction("mallory@localhost/x", "f1", "m1", "I owe you 100"),
        ),
    ];
    let mut pair = Pair::new(server);
    online(&mut pair);
    // Live, and wrapped in a genuine carbon from our own account.
    pair.server.send(Stanza::Message(with(
        chat_from("mallory@localhost/x", "f2", ""),
        xeps::Retract { id: "m1".into() },
    )));
    pair.server.send(Stanza::Message(carbon_received(correction(
        "mallory@localhost/x",
        "f3",
        "m1",
        "forged",
    ))));
    pair.run();
    let security = pair.error_events("security");
    assert_eq!(security.len(), 3, "{security:?}");
    assert!(security.iter().all(|s| s.contains("only its sender")));
    let rows = shown(&pair, BOB);
    assert_eq!(rows[0].body, "I owe you nothing");
    assert!(!rows[0].edited && !rows[0].retracted);
    assert_eq!(pair.count_sql("SELECT count(*) FROM messages"), 1);
    assert!(
        pair.engine.is_online(),
        "a forgery does not end the session"
    );
}

#[test]
fn a_reply_shows_our_copy_of_the_message_not_the_quote_the_sender_forged() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.send(Stanza::Message(chat_from(
        "bob@localhost/phone",
        "m1",
        "lunch?",
    )));
    let forged_quote = "> I owe you 100\n";
    let body = format!("{forged_quote}sure");
    let mut reply = chat_from("bob@localhost/phone", "m2", &body);
    reply.payloads.push(
        xeps::Reply {
            to: Some("alice@localhost".into()),
            id: "m1".into(),
        }
        .into(),
    );
    reply.payloads.push(
        xeps::Fallback {
            for_: xeps::REPLY.into(),
            bodies: vec![xeps::FallbackBody {
                start: Some(0),
                end: Some(forged_quote.chars().count()),
            }],
        }
        .into(),
    );
    pair.server.send(Stanza::Message(reply));
    pair.run();
    let rows = shown(&pair, BOB);
    assert_eq!(rows[1].body, "sure", "the fallback quote is not the text");
    let quoted = rows[1].reply_to.as_ref().unwrap();
    assert_eq!(quoted.body.as_deref(), Some("lunch?"), "our own copy");
}

#[test]
fn an_oversized_reaction_set_is_refused_and_one_to_an_unknown_message_waits() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let many: Vec<String> = (0..100).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    pair.server.send(Stanza::Message(reaction(
        "bob@localhost/phone",
        "r1",
        "m1",
        &refs,
    )));
    pair.server.send(Stanza::Message(reaction(
        "bob@localhost/phone",
        "r2",
        "m9",
        &["👍"],
    )));
    pair.run();
    let protocol = pair.error_events("protocol");
    assert!(
        protocol.iter().any(|p| p.contains("at most")),
        "{protocol:?}"
    );
    assert_eq!(actions(&pair, "react"), 1, "only the usable one is kept");
    assert!(shown(&pair, BOB).is_empty(), "nothing to show yet");
    pair.server.send(Stanza::Message(chat_from(
        "bob@localhost/phone",
        "m9",
        "later",
    )));
    pair.run();
    assert_eq!(shown(&pair, BOB)[0].reactions[0].emoji, "👍");
    assert_eq!(updated(&pair, Action::React), 1);
}

fn chat_states_written(pair: &Pair) -> Vec<String> {
    pair.server
        .delivered
        .iter()
        .filter(|m| m.bodies.is_empty())
        .filter_map(|m| {
            m.payloads
                .iter()
                .find(|p| p.ns() == ns::CHATSTATES)
                .map(|p| p.name().to_owned())
        })
        .collect()
}

#[test]
fn chat_states_go_only_to_a_contact_that_sent_one_pause_by_themselves_and_never_come_back() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let bob: tokio_xmpp::jid::BareJid = BOB.parse().unwrap();
    let typing = |pair: &mut Pair| {
        let now = pair.now;
        let r = pair
            .engine
            .handle_chat_state(&mut pair.store, now, &bob, ChatState::Composing);
        pair.run_after(r);
    };
    typing(&mut pair);
    assert!(
        chat_states_written(&pair).is_empty(),
        "Bob never showed support"
    );
    // Bob types: he understands them; the front end is told, nothing is stored.
    pair.server.send(Stanza::Message(with(
        chat_from("bob@localhost/phone", "s1", ""),
        Cs::Composing,
    )));
    pair.run();
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::Social(SocialEvent::ChatState { from, state: ChatState::Composing }) if from == BOB
    )));
    assert_eq!(pair.count_sql("SELECT count(*) FROM messages"), 0);
    for _ in 0..20 {
        typing(&mut pair);
        pair.advance(Duration::from_millis(100));
    }
    assert_eq!(chat_states_written(&pair), ["composing"], "one per change");
    let cs = pair.server.delivered.last().unwrap();
    assert!(cs.payloads.iter().any(|p| p.is("no-store", xeps::HINTS)));
    pair.advance(Duration::from_secs(6));
    assert_eq!(chat_states_written(&pair), ["composing", "paused"]);
    // Typing again, then the link drops: nothing is sent on the next one.
    typing(&mut pair);
    assert_eq!(chat_states_written(&pair).len(), 3);
    pair.cut(true);
    online(&mut pair);
    pair.advance(Duration::from_secs(10));
    assert_eq!(
        chat_states_written(&pair).len(),
        3,
        "no stale paused after the reconnect"
    );
}

/// Direct invitations (XEP-0249): ours goes out once as a message carrying the room (and a body
/// for clients without the feature), acked like any message; theirs is stored with its room, the
/// inviter's reason as its text; one naming something that is not a room is reported and stored
/// nowhere.
#[test]
fn a_direct_invitation_goes_out_once_and_one_received_is_kept_with_its_room() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let acc = pair.account_id();
    let ours = pair
        .store
        .enqueue_invite(acc, BOB, "den@conference.localhost", Some("come chat"))
        .unwrap();
    pair.run();
    assert_eq!(pair.state(&ours.id), State::Acked);
    let sent: Vec<&Message> = pair
        .server
        .delivered
        .iter()
        .filter(|m| m.id.as_ref().map(|i| i.0.as_str()) == Some(ours.id.as_str()))
        .collect();
    assert_eq!(sent.len(), 1, "once");
    let x = sent[0]
        .payloads
        .iter()
        .find(|p| p.is("x", xeps::DIRECT_INVITE))
        .expect("the invitation");
    assert_eq!(x.attr("jid"), Some("den@conference.localhost"));
    assert_eq!(
        sent[0].bodies.values().next().map(String::as_str),
        Some("come chat (den@conference.localhost)")
    );

    let invite = |id: &str, room: &str, reason: Option<&str>| {
        with(
            chat_from("bob@localhost/phone", id, ""),
            xeps::DirectInvite {
                jid: room.into(),
                reason: reason.map(str::to_owned),
                password: None,
            },
        )
    };
    pair.server.send(Stanza::Message(invite(
        "i1",
        "lounge@conference.localhost",
        Some("we talk here"),
    )));
    pair.server
        .send(Stanza::Message(invite("i2", "not a jid at all", None)));
    pair.run();
    let theirs: Vec<MessageRow> = pair
        .store
        .messages(
            acc,
            &crate::store::MessageFilter {
                peer: Some(BOB.into()),
                state: None,
                direction: Some(crate::Direction::In),
            },
        )
        .unwrap();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(
        theirs[0].invite.as_deref(),
        Some("lounge@conference.localhost")
    );
    assert_eq!(theirs[0].body, "we talk here");
    assert!(
        pair.events
            .iter()
            .any(|e| matches!(e, Event::Error(err) if err.message.contains("not a room"))),
        "the bad one is reported: {:?}",
        pair.errors
    );
}
