//! MUC self-ping (XEP-0410) through the session engine and the simulated server, in memory: a
//! room that dropped us is found after a resumption, rejoined (what we post meanwhile waits), and
//! caught up from its archive once it confirms; the answers that say we are in the room change
//! nothing, and an answer from anyone but the room is a security event; an idle session asks its
//! rooms on its keepalive probes and never wakes up for them.

use std::time::Duration;

use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::{
    delay::Delay,
    forwarding::Forwarded,
    iq::Iq,
    mam,
    message::{Id, Lang, Message, MessageType},
    muc::user::{Affiliation, Item, MucUser, Role, Status},
    ns,
    presence::Presence,
    stanza::Stanza,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::sim::{Pair, Server};
use crate::config::{ClientConfig, Profile};
use crate::events::{Event, SocialEvent};

const ROOM: &str = "den@conference.localhost";
const ME: &str = "den@conference.localhost/alice";

fn online(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
}

/// The room confirms our presence.
fn self_presence(pair: &mut Pair) {
    room_presence(pair, ME, None, vec![Status::SelfPresence], true);
}

/// A presence from the room about occupant `from` (a member, with its real JID if given).
fn room_presence(
    pair: &mut Pair,
    from: &str,
    real: Option<&str>,
    status: Vec<Status>,
    available: bool,
) {
    let mut item = Item::new(Affiliation::Member, Role::Participant);
    item.jid = real.map(|j| j.parse().unwrap());
    let muc = MucUser {
        status,
        items: vec![item],
        ..MucUser::new()
    };
    let p = if available {
        Presence::available()
    } else {
        Presence::new(tokio_xmpp::parsers::presence::Type::Unavailable)
    };
    let p = p
        .with_from(from.parse::<Jid>().unwrap())
        .with_payloads(vec![muc.into()]);
    pair.server.send(Stanza::Presence(p));
    pair.run();
}

/// In the room, on a live session.
fn joined(pair: &mut Pair) {
    let account = pair.account_id();
    pair.store.join_room(account, ROOM, "alice").unwrap();
    online(pair);
    self_presence(pair);
    assert!(pair.store.rooms(account).unwrap()[0].joined);
    // The new session's catch-up of the room's archive: nothing new.
    let query = room_query(pair).expect("a new session catches up the room");
    answer_room_archive(pair, query, &[]);
    assert_eq!(room_queries(pair), 1);
}

fn room_queries(pair: &Pair) -> usize {
    pair.server
        .iqs
        .iter()
        .filter(|iq| matches!(iq, Iq::Set { to: Some(to), payload, .. } if to.to_string() == ROOM && payload.is("query", ns::MAM)))
        .count()
}

/// The ids of the self-pings the client sent, oldest first.
fn pings(pair: &Pair) -> Vec<String> {
    pair.server
        .iqs
        .iter()
        .filter_map(|iq| match iq {
            Iq::Get {
                id,
                to: Some(to),
                payload,
                ..
            } if to.to_string() == ME && payload.is("ping", ns::PING) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn answer(pair: &mut Pair, id: &str, from: &str, error: Option<DefinedCondition>) {
    let from = Some(from.parse::<Jid>().unwrap());
    let iq = match error {
        None => Iq::Result {
            from,
            to: None,
            id: id.into(),
            payload: None,
        },
        Some(cond) => Iq::Error {
            from,
            to: None,
            id: id.into(),
            payload: None,
            error: StanzaError::new(
                ErrorType::Cancel,
                cond,
                "en",
                "You are not currently connected to this chat",
            ),
        },
    };
    pair.server.send(Stanza::Iq(iq));
    pair.run();
}

fn joins_sent(pair: &Pair) -> usize {
    pair.server
        .presences
        .iter()
        .filter(|p| p.to.as_ref().is_some_and(|t| t.to_string() == ME))
        .count()
}

fn rejoining(pair: &Pair) -> usize {
    pair.events
        .iter()
        .filter(
            |e| matches!(e, Event::Social(SocialEvent::RoomRejoining { room, .. }) if room == ROOM),
        )
        .count()
}

/// The client's archive query to the room, if it sent one: (iq id, query id).
fn room_query(pair: &Pair) -> Option<(String, String)> {
    pair.server.iqs.iter().rev().find_map(|iq| match iq {
        Iq::Set {
            id,
            to: Some(to),
            payload,
            ..
        } if to.to_string() == ROOM && payload.is("query", ns::MAM) => {
            let q = mam::Query::try_from(payload.clone()).unwrap();
            Some((id.clone(), q.queryid.unwrap().0))
        }
        _ => None,
    })
}

/// The room's archive answers `query` with `bodies` from bob, then says it is complete.
fn answer_room_archive(pair: &mut Pair, (iq_id, queryid): (String, String), bodies: &[&str]) {
    for (i, body) in bodies.iter().enumerate() {
        let mut inner = Message::new(None::<Jid>);
        inner.type_ = MessageType::Groupchat;
        inner.from = Some(format!("{ROOM}/bob").parse().unwrap());
        inner.id = Some(Id(format!("bob-{i}")));
        inner.bodies.insert(Lang::new(), (*body).into());
        let result = mam::Result_ {
            id: format!("room-{i}"),
            queryid: Some(mam::QueryId(queryid.clone())),
            forwarded: Forwarded {
                delay: Some(Delay {
                    from: None,
                    stamp: "2026-12-06T10:00:00Z".parse().unwrap(),
                    data: None,
                }),
                message: inner,
            },
        };
        let mut m = Message::normal(Some("alice@localhost/tether".parse::<Jid>().unwrap()));
        m.from = Some(ROOM.parse().unwrap());
        m.payloads.push(result.into());
        pair.server.send(Stanza::Message(m));
    }
    let fin = mam::Fin {
        complete: true,
        set: tokio_xmpp::parsers::rsm::SetResult {
            first: None,
            last: bodies.len().checked_sub(1).map(|i| format!("room-{i}")),
            count: None,
        },
    };
    pair.server.send(Stanza::Iq(Iq::Result {
        from: Some(ROOM.parse().unwrap()),
        to: None,
        id: iq_id,
        payload: Some(fin.into()),
    }));
    pair.run();
}

#[test]
fn a_room_that_dropped_us_is_found_after_a_resumption_rejoined_and_caught_up_from_its_archive() {
    let mut pair = Pair::new(Server::new());
    joined(&mut pair);
    assert!(
        pings(&pair).is_empty(),
        "a new session's join needs no self-ping"
    );
    // The link drops; while it is down the room loses us. The stream resumes: the room is asked.
    pair.cut(true);
    online(&mut pair);
    assert_eq!(pair.online_resumed().last(), Some(&true));
    let asked = pings(&pair);
    assert_eq!(asked.len(), 1, "one self-ping after the resumption");
    let joins = joins_sent(&pair);
    answer(
        &mut pair,
        &asked[0],
        ME,
        Some(DefinedCondition::NotAcceptable),
    );
    assert_eq!(rejoining(&pair), 1);
    assert_eq!(joins_sent(&pair), joins + 1, "joined again");
    let account = pair.account_id();
    assert!(!pair.store.rooms(account).unwrap()[0].joined);
    // What the user posts meanwhile waits for the room.
    pair.store
        .enqueue_many(account, &[(ROOM.into(), "posted while rejoining".into())])
        .unwrap();
    pair.run();
    let written = |pair: &Pair| {
        pair.server
            .delivered
            .iter()
            .filter(|m| m.bodies.values().any(|b| b == "posted while rejoining"))
            .count()
    };
    assert_eq!(written(&pair), 0, "held until the room confirms");
    assert_eq!(
        room_queries(&pair),
        1,
        "no catch-up before the room confirms"
    );
    // The room confirms: the post goes, and the room's archive is asked for what we missed.
    self_presence(&mut pair);
    assert_eq!(written(&pair), 1);
    assert_eq!(room_queries(&pair), 2, "the room's archive is asked");
    let query = room_query(&pair).unwrap();
    answer_room_archive(&mut pair, query, &["missed one", "missed two"]);
    let mut bodies = pair.inbound_bodies();
    bodies.sort();
    assert_eq!(
        bodies,
        vec!["missed one".to_owned(), "missed two".to_owned()]
    );
    assert!(pair
        .events
        .iter()
        .any(|e| matches!(e, Event::Social(SocialEvent::MamSynced { archive, count: 2 }) if archive == ROOM)));
}

#[test]
fn answers_that_say_we_are_in_the_room_change_nothing_and_one_from_anyone_else_is_a_forgery() {
    let mut pair = Pair::new(Server::new());
    joined(&mut pair);
    let joins = joins_sent(&pair);
    // The network changed: the link is probed and the rooms asked.
    let ask = |pair: &mut Pair| {
        pair.advance(Duration::from_secs(1));
        let now = pair.now;
        pair.engine.handle_probe(&mut pair.store, now).unwrap();
        pair.run();
        pings(pair).last().cloned().expect("a self-ping")
    };
    let id = ask(&mut pair);
    answer(&mut pair, &id, ME, None);
    for cond in [
        DefinedCondition::ServiceUnavailable,
        DefinedCondition::FeatureNotImplemented,
        DefinedCondition::ItemNotFound,
        DefinedCondition::RemoteServerTimeout,
    ] {
        let id = ask(&mut pair);
        answer(&mut pair, &id, ME, Some(cond));
    }
    assert_eq!(pings(&pair).len(), 5);
    assert_eq!(rejoining(&pair), 0);
    assert_eq!(joins_sent(&pair), joins, "never rejoined");
    // Someone else answers with the id: refused, reported, the room left as it is.
    let id = ask(&mut pair);
    answer(
        &mut pair,
        &id,
        "mallory@localhost/x",
        Some(DefinedCondition::NotAcceptable),
    );
    assert_eq!(pair.error_events("security").len(), 1, "{:?}", pair.events);
    assert_eq!(rejoining(&pair), 0);
    assert!(pair.store.rooms(pair.account_id()).unwrap()[0].joined);
}

#[test]
fn an_idle_session_asks_its_rooms_on_its_keepalive_probes_and_never_wakes_for_them() {
    let mut server = Server::new();
    server.answer_self_pings = true;
    let mut pair = Pair::with_config(server, ClientConfig::profile(Profile::Mobile));
    joined(&mut pair);
    pair.advance(Duration::from_millis(200));
    let wakeups = pair.idle(Duration::from_secs(3600));
    assert!(pair.connected);
    assert!(
        wakeups <= 12,
        "{wakeups} wake-ups in an idle hour with a room"
    );
    // Every 15 minutes, at the probe that follows: 4 in an hour of 300 s probes.
    assert_eq!(pair.server.self_pings, 4);
    assert_eq!(rejoining(&pair), 0);
}

/// An occupant's presence from the room (XEP-0045).
fn occupant(pair: &mut Pair, from: &str, real: Option<&str>, available: bool) {
    room_presence(pair, from, real, vec![], available);
}

fn nicks(pair: &Pair, room: &str) -> Vec<String> {
    pair.store
        .occupants(pair.account_id(), room)
        .unwrap()
        .into_iter()
        .map(|o| o.nick)
        .collect()
}

/// The occupant list: who the room says is there, with their real JID when the room shows it;
/// someone leaving goes; a presence in the name of a room we are not in is kept nowhere; a room
/// that dropped us is joined anew with an empty list, filled again by the room.
#[test]
fn the_occupant_list_follows_the_room_and_a_room_we_are_not_in_adds_nothing() {
    let mut pair = Pair::new(Server::new());
    joined(&mut pair);
    occupant(
        &mut pair,
        &format!("{ROOM}/bob"),
        Some("bob@localhost/phone"),
        true,
    );
    occupant(&mut pair, &format!("{ROOM}/carol"), None, true);
    assert_eq!(nicks(&pair, ROOM), ["alice", "bob", "carol"]);
    let bob = &pair.store.occupants(pair.account_id(), ROOM).unwrap()[1];
    assert_eq!(bob.jid.as_deref(), Some("bob@localhost"));
    assert_eq!(
        (bob.role.as_str(), bob.affiliation.as_str()),
        ("participant", "member")
    );
    assert!(pair.events.iter().any(|e| matches!(e,
        Event::Social(SocialEvent::Presence { from, available: true }) if from == &format!("{ROOM}/carol"))));

    occupant(&mut pair, &format!("{ROOM}/carol"), None, false);
    assert_eq!(nicks(&pair, ROOM), ["alice", "bob"]);
    occupant(&mut pair, "elsewhere@conference.localhost/eve", None, true);
    assert!(nicks(&pair, "elsewhere@conference.localhost").is_empty());

    // The room dropped us (a self-ping says so after a resumption): the list starts again.
    pair.cut(true);
    online(&mut pair);
    let asked = pings(&pair);
    answer(
        &mut pair,
        &asked[0],
        ME,
        Some(DefinedCondition::NotAcceptable),
    );
    assert_eq!(rejoining(&pair), 1);
    assert!(nicks(&pair, ROOM).is_empty(), "{:?}", nicks(&pair, ROOM));
    self_presence(&mut pair);
    occupant(&mut pair, &format!("{ROOM}/bob"), None, true);
    assert_eq!(nicks(&pair, ROOM), ["alice", "bob"]);
}
