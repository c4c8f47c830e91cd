//! Profiles (XEP-0084, XEP-0153, XEP-0172, XEP-0292, XEP-0054) through the session engine and the
//! simulated server, in memory: a contact's avatar is fetched once, checked and stored; forged,
//! oversized, non-image avatars, names with control characters and strangers' notifications are
//! refused with nothing stored; the vCard photo is read when there is no PEP avatar; the user's
//! own change is committed first and published until the server confirms it.

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    avatar::{Data, Info, Metadata},
    message::Message,
    nick::Nick,
    ns,
    presence::Presence,
    pubsub::{
        event::{Event as PubSubEvent, Item, Payload},
        ItemId, NodeName,
    },
    stanza::Stanza,
    stanza_error::DefinedCondition,
};

use super::profiles::{VCARD4_NODE, VCARD4_NS};
use super::sim::{Pair, Server};
use crate::profile::{sha1_hex, AVATAR_MAX_BYTES};
use crate::store::{Contact, ProfileWish};

const BOB: &str = "bob@localhost";
const EVE: &str = "eve@evil.example";

/// A small PNG (signature and IHDR) that differs by `seed`.
fn png(seed: u8) -> Vec<u8> {
    let mut d = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x20\0\0\0\x20".to_vec();
    d.extend_from_slice(&[8, 6, 0, 0, 0, seed, seed, seed]);
    d
}

fn online_with_bob(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
    pair.run();
    let bob = Contact {
        jid: BOB.into(),
        name: None,
        subscription: "both".into(),
        ask: false,
        presence: "unavailable".into(),
        nick: None,
        avatar: None,
    };
    let account = pair.account_id();
    pair.store
        .update_roster(account, &[bob], None, false)
        .unwrap();
}

/// A PEP notification of `node` from `from` with one item.
fn notify(pair: &mut Pair, from: &str, node: &str, id: &str, payload: Element) {
    let event = PubSubEvent {
        payload: Payload::Items {
            node: NodeName(node.to_owned()),
            published: vec![Item {
                id: Some(ItemId(id.to_owned())),
                publisher: None,
                payload: Some(payload),
            }],
            retracted: vec![],
        },
    };
    let mut m = Message::headline(Some("alice@localhost/tether".parse::<Jid>().unwrap()));
    m.from = Some(from.parse().unwrap());
    m.payloads.push(event.into());
    pair.server.send(Stanza::Message(m));
    pair.run();
}

fn metadata(data: &[u8], bytes: u32, mime: &str) -> Element {
    Metadata {
        infos: vec![Info {
            bytes,
            width: Some(32),
            height: Some(32),
            id: sha1_hex(data).parse().unwrap(),
            type_: mime.into(),
            url: None,
        }],
    }
    .into()
}

/// `owner` has `data` on its avatar data node under `id`.
fn host_avatar(pair: &mut Pair, owner: &str, id: &str, data: &[u8]) {
    pair.server.peer_items.push((
        owner.into(),
        ns::AVATAR_DATA.into(),
        id.into(),
        Data {
            data: data.to_vec(),
        }
        .into(),
    ));
}

fn avatar_requests(pair: &Pair) -> usize {
    pair.server
        .items_requests
        .iter()
        .filter(|(_, node)| node == ns::AVATAR_DATA)
        .count()
}

#[test]
fn a_contacts_avatar_nickname_and_vcard4_name_are_fetched_checked_and_stored_once() {
    let mut pair = Pair::new(Server::new());
    online_with_bob(&mut pair);
    let account = pair.account_id();
    let image = png(1);
    let sha1 = sha1_hex(&image);
    host_avatar(&mut pair, BOB, &sha1, &image);
    announce(&mut pair, BOB, &image);
    assert_eq!(
        avatar_requests(&pair),
        1,
        "{:?} {:?}",
        pair.events,
        pair.server.iqs
    );
    let profile = pair.store.profile(account, BOB).unwrap().unwrap();
    assert_eq!(profile.avatar.as_deref(), Some(sha1.as_str()));
    assert_eq!(profile.avatar_mime.as_deref(), Some("image/png"));
    assert_eq!(pair.store.avatar(&sha1).unwrap().unwrap().1, image);
    // Announced again (a reconnect, another resource): not fetched again.
    announce(&mut pair, BOB, &image);
    assert_eq!(avatar_requests(&pair), 1);
    notify(
        &mut pair,
        BOB,
        ns::NICK,
        "current",
        Nick("Bobby".into()).into(),
    );
    let vcard = Element::builder("vcard", VCARD4_NS)
        .append(
            Element::builder("fn", VCARD4_NS)
                .append(Element::builder("text", VCARD4_NS).append("Robert Tables")),
        )
        .append(
            Element::builder("nickname", VCARD4_NS)
                .append(Element::builder("text", VCARD4_NS).append("Bob from the vCard")),
        )
        .build();
    notify(&mut pair, BOB, VCARD4_NODE, "current", vcard);
    let profile = pair.store.profile(account, BOB).unwrap().unwrap();
    assert_eq!(
        profile.nick.as_deref(),
        Some("Bobby"),
        "XEP-0172's nick is kept over the vCard's"
    );
    assert_eq!(profile.full_name.as_deref(), Some("Robert Tables"));
    let contact = pair.store.contact(account, BOB).unwrap().unwrap();
    assert_eq!(contact.nick.as_deref(), Some("Bobby"));
    assert_eq!(contact.avatar.as_deref(), Some(sha1.as_str()));
    assert!(pair.events_named("profile") >= 3, "{:?}", pair.events);
    // The avatar removed: the profile has none, and its bytes are gone with it.
    notify(
        &mut pair,
        BOB,
        ns::AVATAR_METADATA,
        "current",
        Metadata { infos: vec![] }.into(),
    );
    assert_eq!(
        pair.store.profile(account, BOB).unwrap().unwrap().avatar,
        None
    );
    assert_eq!(pair.store.avatar(&sha1).unwrap(), None);
    assert!(pair.errors.is_empty(), "{:?}", pair.errors);
}

#[test]
fn forged_oversized_and_non_image_avatars_hostile_names_and_strangers_are_refused_with_nothing_stored(
) {
    let mut pair = Pair::new(Server::new());
    online_with_bob(&mut pair);
    let account = pair.account_id();
    // Larger than the cap: not even asked for.
    let image = png(2);
    notify(
        &mut pair,
        BOB,
        ns::AVATAR_METADATA,
        "x",
        metadata(&image, AVATAR_MAX_BYTES as u32 + 1, "image/png"),
    );
    assert_eq!(avatar_requests(&pair), 0);
    assert_eq!(pair.error_events("protocol").len(), 1, "{:?}", pair.events);
    // Announced as one image, the data another: a forgery.
    let other = png(3);
    let sha1 = sha1_hex(&image);
    host_avatar(&mut pair, BOB, &sha1, &other);
    announce(&mut pair, BOB, &image);
    assert_eq!(avatar_requests(&pair), 1);
    let security = pair.error_events("security");
    assert!(
        security.last().unwrap().contains("does not match"),
        "{security:?}"
    );
    // Not an image at all, with its own hash.
    let script = b"<svg onload='alert(1)'/>".to_vec();
    let script_sha1 = sha1_hex(&script);
    host_avatar(&mut pair, BOB, &script_sha1, &script);
    announce(&mut pair, BOB, &script);
    let security = pair.error_events("security");
    assert!(
        security.last().unwrap().contains("not an image"),
        "{security:?}"
    );
    // A nickname with an escape sequence and a line break.
    notify(
        &mut pair,
        BOB,
        ns::NICK,
        "current",
        Nick("Bob\u{1b}[2J\nadmin".into()).into(),
    );
    let security = pair.error_events("security");
    assert!(
        security.last().unwrap().contains("control characters"),
        "{security:?}"
    );
    // A stranger's avatar: dropped without a request.
    let requests = avatar_requests(&pair);
    host_avatar(&mut pair, EVE, &sha1, &image);
    announce(&mut pair, EVE, &image);
    assert_eq!(avatar_requests(&pair), requests);
    assert!(pair
        .error_events("security")
        .last()
        .unwrap()
        .contains("not a contact"));
    // Nothing of any of it was stored.
    let profile = pair
        .store
        .profile(account, BOB)
        .unwrap()
        .unwrap_or_default();
    assert_eq!((profile.avatar, profile.nick), (None, None));
    assert_eq!(pair.store.profile(account, EVE).unwrap(), None);
    assert_eq!(pair.count_sql("SELECT count(*) FROM avatars"), 0);
    assert!(pair.errors.is_empty(), "{:?}", pair.errors);
}

fn vcard_presence(pair: &mut Pair, from: &str, photo: &[u8]) {
    let x = Element::builder("x", ns::VCARD_UPDATE)
        .append(Element::builder("photo", ns::VCARD_UPDATE).append(sha1_hex(photo)))
        .build();
    let p = Presence::available()
        .with_from(from.parse::<Jid>().unwrap())
        .with_payloads(vec![x]);
    pair.server.send(Stanza::Presence(p));
    pair.run();
}

fn vcard_temp(photo: &[u8], nick: &str, full_name: &str) -> Element {
    use tokio_xmpp::parsers::vcard::{Binval, Photo, Type, VCard};
    VCard {
        photo: Some(Photo {
            type_: Type {
                data: "image/png".into(),
            },
            binval: Binval {
                data: photo.to_vec(),
            },
        }),
        payloads: vec![
            Element::builder("FN", ns::VCARD).append(full_name).build(),
            Element::builder("NICKNAME", ns::VCARD).append(nick).build(),
        ],
    }
    .into()
}

#[test]
fn a_vcard_photo_is_read_when_there_is_no_pep_avatar_and_a_pep_one_wins() {
    let mut pair = Pair::new(Server::new());
    online_with_bob(&mut pair);
    let account = pair.account_id();
    let photo = png(4);
    pair.server
        .vcards
        .push((BOB.into(), vcard_temp(&photo, "Bob\u{7}", "Robert")));
    vcard_presence(&mut pair, &format!("{BOB}/desk"), &photo);
    let profile = pair.store.profile(account, BOB).unwrap().unwrap();
    assert_eq!(profile.avatar.as_deref(), Some(sha1_hex(&photo).as_str()));
    assert_eq!(profile.full_name.as_deref(), Some("Robert"));
    assert_eq!(
        profile.nick, None,
        "the nickname with a control character is refused"
    );
    assert!(pair
        .error_events("security")
        .last()
        .unwrap()
        .contains("control characters"));
    // The same hash again: no second vCard request.
    let vcard_gets = |pair: &Pair| {
        pair.server
            .iqs
            .iter()
            .filter(|iq| matches!(iq, tokio_xmpp::parsers::iq::Iq::Get { payload, .. } if payload.is("vCard", ns::VCARD)))
            .count()
    };
    let before = vcard_gets(&pair);
    vcard_presence(&mut pair, &format!("{BOB}/phone"), &photo);
    assert_eq!(vcard_gets(&pair), before);
    // A PEP avatar replaces it, and a vCard photo does not come back over it.
    let image = png(5);
    let sha1 = sha1_hex(&image);
    host_avatar(&mut pair, BOB, &sha1, &image);
    announce(&mut pair, BOB, &image);
    let newer = png(6);
    pair.server.vcards[0].1 = vcard_temp(&newer, "Bob", "Robert");
    vcard_presence(&mut pair, &format!("{BOB}/desk"), &newer);
    let profile = pair.store.profile(account, BOB).unwrap().unwrap();
    assert_eq!(profile.avatar.as_deref(), Some(sha1.as_str()));
    // A vCard photo that is not the announced one is refused.
    let mut pair = Pair::new(Server::new());
    online_with_bob(&mut pair);
    pair.server
        .vcards
        .push((BOB.into(), vcard_temp(&png(7), "Bob", "Robert")));
    vcard_presence(&mut pair, BOB, &png(8));
    assert!(pair
        .error_events("security")
        .last()
        .unwrap()
        .contains("does not match"));
    assert_eq!(pair.count_sql("SELECT count(*) FROM avatars"), 0);
}

/// Our own profile as the store has it.
fn own_profile(pair: &Pair) -> crate::store::Profile {
    pair.store
        .profile(pair.account_id(), "alice@localhost")
        .unwrap()
        .unwrap()
}

fn published_nodes(pair: &Pair) -> Vec<String> {
    pair.server
        .published
        .iter()
        .map(|(n, _, _)| n.clone())
        .collect()
}

#[test]
fn our_change_made_offline_is_published_data_first_and_kept_until_the_server_confirms_it() {
    let mut server = Server::new();
    server.publish_silent = true;
    let mut pair = Pair::new(server);
    let account = pair.account_id();
    let image = crate::profile::check_avatar(png(9), None, None).unwrap();
    let sha1 = image.sha1.clone();
    pair.store
        .wish_profile(
            account,
            "alice@localhost",
            &ProfileWish::Avatar(Some(sha1.clone())),
            Some(&image),
        )
        .unwrap();
    pair.store
        .wish_profile(
            account,
            "alice@localhost",
            &ProfileWish::Nick(Some("Al".into())),
            None,
        )
        .unwrap();
    // Shown at once, before any server heard of it.
    let own = own_profile(&pair);
    assert_eq!(
        (own.nick.as_deref(), own.avatar.as_deref()),
        (Some("Al"), Some(sha1.as_str()))
    );
    // Online, the server takes the publishes and the link dies before it answers.
    pair.connect();
    pair.run();
    assert_eq!(
        published_nodes(&pair),
        vec![ns::NICK.to_owned(), ns::AVATAR_DATA.to_owned()]
    );
    pair.cut(false);
    assert_eq!(
        pair.store.profile_wishes(account).unwrap().len(),
        2,
        "kept: not confirmed"
    );
    // The next session tells them again; this time the server confirms.
    pair.server.publish_silent = false;
    pair.server.published.clear();
    pair.connect();
    pair.run();
    assert_eq!(
        published_nodes(&pair),
        vec![
            ns::NICK.to_owned(),
            ns::AVATAR_DATA.to_owned(),
            ns::AVATAR_METADATA.to_owned()
        ]
    );
    let (_, id, meta) = &pair.server.published[2];
    assert_eq!(id, &sha1);
    let meta = Metadata::try_from(meta.clone()).unwrap();
    assert_eq!(meta.infos[0].id.to_hex(), sha1);
    assert_eq!(meta.infos[0].bytes as usize, image.data.len());
    assert_eq!(
        (meta.infos[0].width, meta.infos[0].height),
        (Some(32), Some(32))
    );
    let (_, _, data) = &pair.server.published[1];
    assert_eq!(Data::try_from(data.clone()).unwrap().data, image.data);
    assert!(pair.store.profile_wishes(account).unwrap().is_empty());
    // Our own notification echoing back keeps the profile as it is.
    notify(
        &mut pair,
        "alice@localhost",
        ns::NICK,
        "current",
        Nick("Al".into()).into(),
    );
    assert_eq!(own_profile(&pair).nick.as_deref(), Some("Al"));
    // Removing the avatar publishes empty metadata; the bytes go once told.
    pair.store
        .wish_profile(account, "alice@localhost", &ProfileWish::Avatar(None), None)
        .unwrap();
    pair.wishes_changed();
    let (node, _, meta) = pair.server.published.last().unwrap();
    assert_eq!(node, ns::AVATAR_METADATA);
    assert!(Metadata::try_from(meta.clone()).unwrap().infos.is_empty());
    assert!(pair.store.profile_wishes(account).unwrap().is_empty());
    assert_eq!(pair.count_sql("SELECT count(*) FROM avatars"), 0);
    assert!(pair.errors.is_empty(), "{:?}", pair.errors);
}

#[test]
fn a_refused_publish_is_said_and_kept_and_another_devices_change_does_not_override_ours() {
    let mut server = Server::new();
    server.publish_error = Some(DefinedCondition::NotAllowed);
    let mut pair = Pair::new(server);
    let account = pair.account_id();
    pair.store
        .wish_profile(
            account,
            "alice@localhost",
            &ProfileWish::Nick(Some("Alice A.".into())),
            None,
        )
        .unwrap();
    pair.connect();
    pair.run();
    let refused = pair.error_events("protocol");
    assert!(
        refused.iter().any(|e| e.contains("refused our nickname")),
        "{refused:?}"
    );
    assert_eq!(pair.store.profile_wishes(account).unwrap().len(), 1);
    // Another device's nickname arrives while ours is not told: ours stays shown.
    notify(
        &mut pair,
        "alice@localhost",
        ns::NICK,
        "current",
        Nick("Old".into()).into(),
    );
    let own = own_profile(&pair);
    assert_eq!(own.nick.as_deref(), Some("Alice A."));
    // Once told, another device's change applies.
    pair.server.publish_error = None;
    pair.wishes_changed();
    assert!(pair.store.profile_wishes(account).unwrap().is_empty());
    notify(
        &mut pair,
        "alice@localhost",
        ns::NICK,
        "current",
        Nick("From the phone".into()).into(),
    );
    let own = own_profile(&pair);
    assert_eq!(own.nick.as_deref(), Some("From the phone"));
}

/// `from` announces `data` as its avatar (XEP-0084 metadata), and the pair runs.
fn announce(pair: &mut Pair, from: &str, data: &[u8]) {
    queue_metadata(pair, from, data);
    pair.run();
}

/// A PEP notification of avatar metadata from `from`, queued (not yet delivered).
fn queue_metadata(pair: &mut Pair, from: &str, data: &[u8]) {
    let event = PubSubEvent {
        payload: Payload::Items {
            node: NodeName(ns::AVATAR_METADATA.to_owned()),
            published: vec![Item {
                id: Some(ItemId(sha1_hex(data))),
                publisher: None,
                payload: Some(metadata(data, data.len() as u32, "image/png")),
            }],
            retracted: vec![],
        },
    };
    let mut m = Message::headline(Some("alice@localhost/tether".parse::<Jid>().unwrap()));
    m.from = Some(from.parse().unwrap());
    m.payloads.push(event.into());
    pair.server.send(Stanza::Message(m));
}

#[test]
fn avatars_announced_in_a_burst_are_fetched_one_at_a_time_and_the_newest_wins() {
    let mut pair = Pair::new(Server::new());
    online_with_bob(&mut pair);
    let account = pair.account_id();
    let images: Vec<Vec<u8>> = (10..15).map(png).collect();
    for image in &images {
        host_avatar(&mut pair, BOB, &sha1_hex(image), image);
    }
    // Five announcements arrive together: the first is asked for, the others wait behind it.
    for image in &images {
        queue_metadata(&mut pair, BOB, image);
    }
    pair.run();
    // The first answer is stale: the newest is fetched, and only it is stored.
    assert_eq!(avatar_requests(&pair), 2);
    let newest = sha1_hex(images.last().unwrap());
    let profile = pair.store.profile(account, BOB).unwrap().unwrap();
    assert_eq!(profile.avatar.as_deref(), Some(newest.as_str()));
    assert_eq!(pair.count_sql("SELECT count(*) FROM avatars"), 1);
    // Announced, then removed before its bytes came: nothing is stored.
    let image = png(20);
    host_avatar(&mut pair, BOB, &sha1_hex(&image), &image);
    queue_metadata(&mut pair, BOB, &image);
    notify(
        &mut pair,
        BOB,
        ns::AVATAR_METADATA,
        "current",
        Metadata { infos: vec![] }.into(),
    );
    let profile = pair.store.profile(account, BOB).unwrap().unwrap();
    assert_eq!(profile.avatar, None);
    assert_eq!(pair.count_sql("SELECT count(*) FROM avatars"), 0);
    assert!(pair.errors.is_empty(), "{:?}", pair.errors);
}

#[test]
fn a_vcard_nickname_shows_until_a_published_one_comes_and_again_once_that_is_removed() {
    let mut pair = Pair::new(Server::new());
    online_with_bob(&mut pair);
    let account = pair.account_id();
    let vcard = |nick: &str| {
        Element::builder("vcard", VCARD4_NS)
            .append(
                Element::builder("nickname", VCARD4_NS)
                    .append(Element::builder("text", VCARD4_NS).append(nick)),
            )
            .build()
    };
    let nick = |pair: &Pair| pair.store.profile(account, BOB).unwrap().unwrap().nick;
    notify(&mut pair, BOB, VCARD4_NODE, "current", vcard("Bob (vCard)"));
    assert_eq!(nick(&pair).as_deref(), Some("Bob (vCard)"));
    // Changed in the vCard: it follows.
    notify(
        &mut pair,
        BOB,
        VCARD4_NODE,
        "current",
        vcard("Robert (vCard)"),
    );
    assert_eq!(nick(&pair).as_deref(), Some("Robert (vCard)"));
    // A published nickname wins, and a vCard change does not override it.
    notify(
        &mut pair,
        BOB,
        ns::NICK,
        "current",
        Nick("Bobby".into()).into(),
    );
    notify(&mut pair, BOB, VCARD4_NODE, "current", vcard("Rob (vCard)"));
    assert_eq!(nick(&pair).as_deref(), Some("Bobby"));
    // Removed: the vCard's shows again with its next change.
    notify(
        &mut pair,
        BOB,
        ns::NICK,
        "current",
        Nick(String::new()).into(),
    );
    assert_eq!(nick(&pair), None);
    notify(&mut pair, BOB, VCARD4_NODE, "current", vcard("Rob (vCard)"));
    assert_eq!(nick(&pair).as_deref(), Some("Rob (vCard)"));
}

#[test]
fn an_avatar_to_publish_that_is_gone_from_the_store_is_said_and_dropped_not_retried_forever() {
    let mut pair = Pair::new(Server::new());
    let account = pair.account_id();
    let image = crate::profile::check_avatar(png(30), None, None).unwrap();
    pair.store
        .wish_profile(
            account,
            "alice@localhost",
            &ProfileWish::Avatar(Some(image.sha1.clone())),
            Some(&image),
        )
        .unwrap();
    // Damaged behind the store's back (a restored backup, a hand edit).
    pair.sql("UPDATE avatars SET data = x'00'");
    pair.connect();
    pair.run();
    assert!(
        pair.engine.is_online(),
        "the session goes on: {:?}",
        pair.errors
    );
    let said = pair.error_events("database");
    assert!(
        said.iter()
            .any(|m| m.contains("cannot be published") && m.contains("pick it again")),
        "{said:?}"
    );
    assert!(pair.store.profile_wishes(account).unwrap().is_empty());
    assert!(
        !published_nodes(&pair).contains(&ns::AVATAR_DATA.to_owned()),
        "nothing was published"
    );
}

#[test]
fn a_blocked_contacts_profile_is_not_fetched_nor_shown_and_is_no_security_event() {
    let mut pair = Pair::new(Server::new());
    online_with_bob(&mut pair);
    let account = pair.account_id();
    pair.store
        .set_block(account, &[BOB.to_owned()], crate::store::BlockWant::Block)
        .unwrap();
    let image = png(40);
    host_avatar(&mut pair, BOB, &sha1_hex(&image), &image);
    announce(&mut pair, BOB, &image);
    notify(
        &mut pair,
        BOB,
        ns::NICK,
        "current",
        Nick("Bobby".into()).into(),
    );
    pair.server
        .vcards
        .push((BOB.into(), vcard_temp(&image, "Bob", "Robert")));
    vcard_presence(&mut pair, &format!("{BOB}/desk"), &image);
    assert_eq!(avatar_requests(&pair), 0);
    assert_eq!(pair.store.profile(account, BOB).unwrap(), None);
    assert!(
        pair.error_events("security").is_empty(),
        "{:?}",
        pair.events
    );
}
