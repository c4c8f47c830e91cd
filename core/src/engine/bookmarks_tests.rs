//! Bookmarks (XEP-0402) through the session engine and the simulated server, in memory: a room
//! joined here is published, one bookmarked on another device is joined at login, one removed
//! elsewhere is left here unless the user's own wish waits, and notifications apply from our own
//! account only.

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    bookmarks2::Conference,
    message::Message,
    ns,
    pubsub::{
        event::{Event as PubSubEvent, Item, Payload},
        ItemId, NodeName,
    },
    stanza::Stanza,
};

use super::sim::{Pair, Server};
use crate::events::{Event, SocialEvent};

const DEN: &str = "den@conference.localhost";
const LOUNGE: &str = "lounge@conference.localhost";
const KITCHEN: &str = "kitchen@conference.localhost";

fn online(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
    pair.run();
}

/// The rooms of the store as (room, nick), by room.
fn rooms(pair: &Pair) -> Vec<(String, String)> {
    pair.store
        .rooms(pair.account_id())
        .unwrap()
        .into_iter()
        .map(|r| (r.jid, r.nick))
        .collect()
}

/// Join presences the client sent to `occupant`.
fn joins_to(pair: &Pair, occupant: &str) -> usize {
    pair.server
        .presences
        .iter()
        .filter(|p| p.to.as_ref().is_some_and(|t| t.to_string() == occupant))
        .count()
}

/// The room confirms our presence.
fn self_presence(pair: &mut Pair, room: &str, nick: &str) {
    use tokio_xmpp::parsers::muc::user::{Affiliation, Item as MucItem, MucUser, Role, Status};
    let muc = MucUser {
        status: vec![Status::SelfPresence],
        items: vec![MucItem::new(Affiliation::Member, Role::Participant)],
        ..MucUser::new()
    };
    let p = tokio_xmpp::parsers::presence::Presence::available()
        .with_from(format!("{room}/{nick}").parse::<Jid>().unwrap())
        .with_payloads(vec![muc.into()]);
    pair.server.send(Stanza::Presence(p));
    pair.run();
}

fn bookmark_events(pair: &Pair) -> Vec<(String, bool)> {
    pair.events
        .iter()
        .filter_map(|e| match e {
            Event::Social(SocialEvent::RoomBookmark { room, joined }) => {
                Some((room.clone(), *joined))
            }
            _ => None,
        })
        .collect()
}

/// A notification of the bookmarks node from `from`: `published` rooms to autojoin, `retracted`.
fn notify(pair: &mut Pair, from: &str, published: &[&str], retracted: &[&str]) {
    let published = published
        .iter()
        .map(|room| Item {
            id: Some(ItemId((*room).to_owned())),
            publisher: None,
            payload: Some(Element::from(Conference {
                autojoin: true,
                ..Conference::new()
            })),
        })
        .collect();
    let event = PubSubEvent {
        payload: Payload::Items {
            node: NodeName(ns::BOOKMARKS2.to_owned()),
            published,
            retracted: retracted.iter().map(|r| ItemId((*r).to_owned())).collect(),
        },
    };
    let mut m = Message::headline(Some("alice@localhost/tether".parse::<Jid>().unwrap()));
    m.from = Some(from.parse().unwrap());
    m.payloads.push(event.into());
    pair.server.send(Stanza::Message(m));
    pair.run();
}

#[test]
fn a_room_joined_here_is_published_and_one_bookmarked_on_another_device_is_joined_at_login() {
    let mut server = Server::new();
    server.bookmarks = vec![(DEN.into(), true, Some("al".into()))];
    let mut pair = Pair::new(server);
    let account = pair.account_id();
    pair.store.join_room(account, LOUNGE, "alice").unwrap();
    online(&mut pair);
    assert!(
        pair.server.bookmark_requests.is_empty(),
        "not advertised before the room let us in"
    );
    self_presence(&mut pair, LOUNGE, "alice");
    assert_eq!(
        pair.server.bookmark_requests,
        vec![(true, LOUNGE.to_owned())]
    );
    assert!(pair
        .server
        .bookmarks
        .contains(&(LOUNGE.into(), true, Some("alice".into()))));
    assert_eq!(
        rooms(&pair),
        vec![(DEN.into(), "al".into()), (LOUNGE.into(), "alice".into())]
    );
    assert_eq!(
        joins_to(&pair, &format!("{DEN}/al")),
        1,
        "joined with the bookmark's nick"
    );
    assert!(
        pair.store.bookmark_wishes(account).unwrap().is_empty(),
        "told"
    );
    assert_eq!(bookmark_events(&pair), vec![(DEN.into(), true)]);
    // Told once: a new session publishes nothing again.
    pair.cut(false);
    online(&mut pair);
    assert_eq!(pair.server.bookmark_requests.len(), 1);
    assert_eq!(rooms(&pair).len(), 2);
}

#[test]
fn a_room_left_on_another_device_is_left_here_unless_our_own_wish_waits() {
    let mut server = Server::new();
    server.bookmarks = vec![(DEN.into(), true, None)];
    let mut pair = Pair::new(server);
    online(&mut pair);
    assert_eq!(rooms(&pair), vec![(DEN.into(), "alice".into())]);
    // While we were away another device left the den (we missed the notification), and this
    // device's user joined the lounge offline.
    pair.cut(false);
    pair.server.bookmarks.clear();
    let account = pair.account_id();
    pair.store.join_room(account, LOUNGE, "alice").unwrap();
    online(&mut pair);
    assert_eq!(
        rooms(&pair),
        vec![(LOUNGE.into(), "alice".into())],
        "den left, lounge kept"
    );
    assert!(pair.server.presences.iter().any(|p| p
        .to
        .as_ref()
        .is_some_and(|t| t.to_string() == format!("{DEN}/alice"))
        && p.type_ == tokio_xmpp::parsers::presence::Type::Unavailable));
    assert!(bookmark_events(&pair).contains(&(DEN.into(), false)));
    // Leaving here retracts it for the other devices.
    pair.store.leave_room(account, LOUNGE).unwrap();
    pair.wishes_changed();
    assert_eq!(
        pair.server.bookmark_requests.last(),
        Some(&(false, LOUNGE.to_owned()))
    );
    assert!(pair.server.bookmarks.is_empty());
}

#[test]
fn notifications_from_our_account_apply_and_from_anyone_else_are_refused() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    notify(&mut pair, "alice@localhost", &[KITCHEN], &[]);
    assert_eq!(rooms(&pair), vec![(KITCHEN.into(), "alice".into())]);
    assert_eq!(joins_to(&pair, &format!("{KITCHEN}/alice")), 1);
    // Bob may not put us in a room, nor take us out of one.
    notify(&mut pair, "bob@localhost/phone", &[DEN], &[KITCHEN]);
    assert_eq!(rooms(&pair), vec![(KITCHEN.into(), "alice".into())]);
    assert_eq!(pair.error_events("security").len(), 1, "{:?}", pair.events);
    // Retracted by another device of ours: left here.
    notify(&mut pair, "alice@localhost", &[], &[KITCHEN]);
    assert!(rooms(&pair).is_empty());
    assert_eq!(
        bookmark_events(&pair),
        vec![(KITCHEN.into(), true), (KITCHEN.into(), false)]
    );
    // Nothing of this was ours to tell the server.
    assert!(pair.server.bookmark_requests.is_empty());
}

/// The XEP-0048 storage as `(room, autojoin, nick, name, password)`, by room.
fn legacy(pair: &Pair) -> Vec<(String, bool, Option<String>, Option<String>, Option<String>)> {
    let mut v: Vec<_> = pair
        .server
        .private_bookmarks
        .conferences
        .iter()
        .map(|c| {
            (
                c.jid.to_string(),
                c.autojoin,
                c.nick.as_ref().map(|n| n.to_string()),
                c.name.clone(),
                c.password.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn where_the_server_does_not_keep_xep_0048_in_step_the_rooms_live_in_private_storage_and_others_entries_stay(
) {
    use tokio_xmpp::parsers::bookmarks::{Conference as Legacy, Storage, Url};
    let mut server = Server::new();
    server.account_features = vec!["http://jabber.org/protocol/pubsub#publish".into()];
    // Written by an older client: a room to autojoin, one kept with a name and a password but
    // not joined, and a web bookmark.
    server.private_bookmarks = Storage {
        conferences: vec![
            Legacy {
                autojoin: true,
                jid: DEN.parse().unwrap(),
                name: Some("The den".into()),
                nick: Some("al".parse().unwrap()),
                password: None,
            },
            Legacy {
                autojoin: false,
                jid: KITCHEN.parse().unwrap(),
                name: Some("Kitchen".into()),
                nick: None,
                password: Some("s3cret".into()),
            },
        ],
        urls: vec![Url {
            name: Some("Docs".into()),
            url: "https://example.org/docs".into(),
        }],
    };
    let mut pair = Pair::new(server);
    let account = pair.account_id();
    online(&mut pair);
    assert_eq!(rooms(&pair), vec![(DEN.to_owned(), "al".to_owned())]);
    assert!(bookmark_events(&pair).contains(&(DEN.into(), true)));
    assert_eq!(pair.server.private_writes, 0, "nothing to tell yet");
    // A room joined here is written once it let us in, into the storage as read again, with
    // everything else as it was.
    pair.store.join_room(account, LOUNGE, "alice").unwrap();
    pair.wishes_changed();
    assert_eq!(
        pair.server.private_writes, 0,
        "not before the room let us in"
    );
    self_presence(&mut pair, DEN, "al");
    self_presence(&mut pair, LOUNGE, "alice");
    assert_eq!(pair.server.private_writes, 1);
    assert_eq!(
        legacy(&pair),
        vec![
            (
                DEN.into(),
                true,
                Some("al".into()),
                Some("The den".into()),
                None
            ),
            (
                KITCHEN.into(),
                false,
                None,
                Some("Kitchen".into()),
                Some("s3cret".into())
            ),
            (LOUNGE.into(), true, Some("alice".into()), None, None),
        ]
    );
    assert_eq!(
        pair.server.private_bookmarks.urls.len(),
        1,
        "the web bookmark stays"
    );
    assert!(pair.store.bookmark_wishes(account).unwrap().is_empty());
    // No XEP-0402 request went out at all.
    assert!(pair.server.bookmark_requests.is_empty());
    // Another client adds a room meanwhile; leaving the den here keeps its write.
    pair.server.private_bookmarks.conferences.push(Legacy {
        autojoin: false,
        jid: "attic@conference.localhost".parse().unwrap(),
        name: None,
        nick: None,
        password: None,
    });
    pair.store.leave_room(account, DEN).unwrap();
    pair.wishes_changed();
    let rooms_now: Vec<String> = legacy(&pair).into_iter().map(|r| r.0).collect();
    assert_eq!(
        rooms_now,
        vec![
            "attic@conference.localhost".to_owned(),
            KITCHEN.into(),
            LOUNGE.into()
        ]
    );
    assert!(pair.store.bookmark_wishes(account).unwrap().is_empty());
    assert!(pair.errors.is_empty(), "{:?}", pair.errors);
}

#[test]
fn a_server_with_neither_the_compat_feature_nor_private_storage_gets_xep_0402() {
    let mut server = Server::new();
    server.account_features = vec![];
    server.private_error =
        Some(tokio_xmpp::parsers::stanza_error::DefinedCondition::ServiceUnavailable);
    server.bookmarks = vec![(DEN.into(), true, None)];
    let mut pair = Pair::new(server);
    let account = pair.account_id();
    pair.store.join_room(account, LOUNGE, "alice").unwrap();
    online(&mut pair);
    assert!(
        rooms(&pair).iter().any(|(r, _)| r == DEN),
        "{:?}",
        rooms(&pair)
    );
    self_presence(&mut pair, LOUNGE, "alice");
    assert_eq!(
        pair.server.bookmark_requests,
        vec![(true, LOUNGE.to_owned())]
    );
    assert!(pair.store.bookmark_wishes(account).unwrap().is_empty());
    assert!(pair.errors.is_empty(), "{:?}", pair.errors);
}
