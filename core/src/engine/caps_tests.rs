//! Service discovery and entity capabilities through the session engine and the simulated server:
//! what we answer and announce, what a peer's hash is verified against, what is kept, what a
//! flood or a forgery gets, and what the verified features change (chat states, markers).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    caps::{compute_disco, hash_caps, Caps},
    disco::{DiscoInfoQuery, DiscoInfoResult, Identity},
    hashes::{Algo, Hash},
    iq::Iq,
    message::{Id, Lang, Message},
    ns,
    presence::Presence,
    stanza::Stanza,
    stanza_error::DefinedCondition,
};

use super::caps::{our_caps, our_info, DISCO_PER_SENDER, DISCO_TOTAL, DISCO_WINDOW, NODE};
use super::sim::{Pair, Server};
use crate::chat_state::ChatState;
use crate::config::Device;

const BOB: &str = "bob@localhost";

fn online() -> Pair {
    let mut pair = Pair::new(Server::new());
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
    pair
}

fn disco_get(from: &str, id: &str, node: Option<&str>) -> Stanza {
    let mut iq = Iq::from_get(
        id.to_owned(),
        DiscoInfoQuery {
            node: node.map(str::to_owned),
        },
    );
    if let Iq::Get { from: f, to, .. } = &mut iq {
        *f = Some(from.parse().unwrap());
        *to = Some("alice@localhost/tether".parse().unwrap());
    }
    Stanza::Iq(iq)
}

/// What the client answered to the query `id`.
fn answer_to(pair: &Pair, id: &str) -> Option<Iq> {
    pair.server
        .iqs
        .iter()
        .find(|iq| match iq {
            Iq::Result { id: i, .. } | Iq::Error { id: i, .. } => i == id,
            _ => false,
        })
        .cloned()
}

fn ver(caps: &Caps) -> String {
    Hash {
        algo: caps.hash.clone(),
        hash: caps.ver.clone(),
    }
    .to_base64()
}

/// A peer client's disco#info answer with `features`.
fn peer_info(features: &[&str]) -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("client", "phone", "en", "Peer")],
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        extensions: vec![],
    }
}

fn caps_of(info: &DiscoInfoResult) -> Caps {
    Caps::new(
        "https://peer.example",
        hash_caps(&compute_disco(info), Algo::Sha_1).unwrap(),
    )
}

/// `from` comes online announcing `caps`.
fn presence_with(pair: &mut Pair, from: &str, caps: &Caps) {
    let mut p = Presence::available().with_payload(caps.clone());
    p.from = Some(from.parse().unwrap());
    pair.server.send(Stanza::Presence(p));
    pair.run();
}

/// The capability queries the client sent to `to`: (id, node).
fn caps_queries(pair: &Pair, to: &str) -> Vec<(String, Option<String>)> {
    pair.server
        .iqs
        .iter()
        .filter_map(|iq| match iq {
            Iq::Get {
                id,
                to: Some(t),
                payload,
                ..
            } if t.to_string() == to && payload.is("query", ns::DISCO_INFO) => {
                let q = DiscoInfoQuery::try_from(payload.clone()).unwrap();
                Some((id.clone(), q.node))
            }
            _ => None,
        })
        .collect()
}

fn answer(pair: &mut Pair, from: &str, id: &str, payload: Element) {
    pair.server.send(Stanza::Iq(Iq::Result {
        from: Some(from.parse().unwrap()),
        to: Some("alice@localhost/tether".parse().unwrap()),
        id: id.to_owned(),
        payload: Some(payload),
    }));
    pair.run();
}

fn kept_caps(pair: &Pair) -> i64 {
    pair.count_sql("SELECT count(*) FROM caps")
}

fn chat_states_written(pair: &Pair) -> usize {
    pair.server
        .delivered
        .iter()
        .filter(|m| m.bodies.is_empty() && m.payloads.iter().any(|p| p.ns() == ns::CHATSTATES))
        .count()
}

fn type_to_bob(pair: &mut Pair) {
    let bob = BOB.parse().unwrap();
    let now = pair.now;
    let r = pair
        .engine
        .handle_chat_state(&mut pair.store, now, &bob, ChatState::Composing);
    pair.run_after(r);
}

#[test]
fn a_disco_query_gets_what_tether_supports_and_every_presence_carries_its_hash() {
    let mut pair = online();
    // The initial presence carries caps whose hash is the hash of our answer.
    let presence = pair.server.presences.first().expect("an initial presence");
    let caps = presence
        .payloads
        .iter()
        .find(|p| p.is("c", ns::CAPS))
        .map(|c| Caps::try_from(c.clone()).unwrap())
        .expect("caps in the initial presence");
    assert_eq!(caps.node, NODE);
    assert_eq!(caps.hash, Algo::Sha_1);
    pair.server
        .send(disco_get("bob@localhost/phone", "q1", None));
    pair.run();
    let Some(Iq::Result {
        payload: Some(p),
        to,
        ..
    }) = answer_to(&pair, "q1")
    else {
        panic!("no result for q1: {:?}", answer_to(&pair, "q1"));
    };
    assert_eq!(to, Some("bob@localhost/phone".parse::<Jid>().unwrap()));
    let info = DiscoInfoResult::try_from(p).unwrap();
    for f in [
        ns::DISCO_INFO,
        ns::CAPS,
        ns::RECEIPTS,
        ns::CHATSTATES,
        "urn:xmpp:chat-markers:0",
    ] {
        assert!(info.features.contains(f), "{f} is announced");
    }
    assert_eq!(info.identities[0].category, "client");
    assert_eq!(info.identities[0].type_, "pc");
    let computed = hash_caps(&compute_disco(&info), Algo::Sha_1).unwrap();
    assert_eq!(
        computed.hash, caps.ver,
        "the announced hash is the answer's"
    );
    // The caps node with its hash is answered the same, naming the node; another node is not.
    let node = format!("{NODE}#{}", ver(&caps));
    pair.server
        .send(disco_get("bob@localhost/phone", "q2", Some(&node)));
    pair.server
        .send(disco_get("bob@localhost/phone", "q3", Some("urn:other")));
    pair.run();
    match answer_to(&pair, "q2") {
        Some(Iq::Result {
            payload: Some(p), ..
        }) => {
            let i = DiscoInfoResult::try_from(p).unwrap();
            assert_eq!(i.node.as_deref(), Some(node.as_str()));
            assert_eq!(i.features, info.features);
        }
        other => panic!("q2: {other:?}"),
    }
    match answer_to(&pair, "q3") {
        Some(Iq::Error { error, .. }) => {
            assert_eq!(error.defined_condition, DefinedCondition::ItemNotFound)
        }
        other => panic!("q3: {other:?}"),
    }
    // A phone says so; the hash differs with it.
    assert_eq!(our_info(Device::Phone, None).identities[0].type_, "phone");
    assert_ne!(our_caps(Device::Phone).ver, our_caps(Device::Pc).ver);
    // A room join carries our caps too.
    pair.store
        .join_room(pair.account_id(), "room@muc.localhost", "alice")
        .unwrap();
    pair.run();
    let join = pair
        .server
        .presences
        .iter()
        .find(|p| {
            p.to.as_ref()
                .is_some_and(|t| t.to_string().starts_with("room@"))
        })
        .expect("a join presence");
    assert!(join.payloads.iter().any(|p| p.is("c", ns::CAPS)));
    assert!(join.payloads.iter().any(|p| p.is("x", ns::MUC)));
}

#[test]
fn a_disco_flood_gets_one_security_event_and_no_more_answers_until_the_window_ends() {
    let mut pair = online();
    for i in 0..100 {
        pair.server
            .send(disco_get("mallory@evil.example/x", &format!("f{i}"), None));
    }
    pair.run();
    let answered = (0..100)
        .filter(|i| answer_to(&pair, &format!("f{i}")).is_some())
        .count();
    assert_eq!(answered, DISCO_PER_SENDER as usize);
    let security = pair.error_events("security");
    assert_eq!(security.len(), 1, "one event for the flood: {security:?}");
    assert!(security[0].contains("mallory@evil.example"), "{security:?}");
    // Every query was still counted (the server's h is right).
    assert!(pair.engine.is_online());
    // Someone else is answered meanwhile.
    pair.server
        .send(disco_get("bob@localhost/phone", "b1", None));
    pair.run();
    assert!(answer_to(&pair, "b1").is_some());
    // Many senders together stop at the total.
    for i in 0..(DISCO_TOTAL + 20) {
        pair.server.send(disco_get(
            &format!("u{i}@evil.example/x"),
            &format!("t{i}"),
            None,
        ));
    }
    pair.run();
    let total = pair
        .server
        .iqs
        .iter()
        .filter(
            |iq| matches!(iq, Iq::Result { payload: Some(p), .. } if p.is("query", ns::DISCO_INFO)),
        )
        .count();
    assert_eq!(total, DISCO_TOTAL as usize);
    // The next window answers Mallory again.
    pair.advance(DISCO_WINDOW + Duration::from_secs(1));
    pair.server
        .send(disco_get("mallory@evil.example/x", "later", None));
    pair.run();
    assert!(answer_to(&pair, "later").is_some());
}

#[test]
fn a_peers_hash_is_asked_once_verified_kept_and_lets_chat_states_go_to_it() {
    let mut pair = online();
    type_to_bob(&mut pair);
    assert_eq!(chat_states_written(&pair), 0, "Bob never showed support");
    let info = peer_info(&[ns::DISCO_INFO, ns::CAPS, ns::CHATSTATES, ns::RECEIPTS]);
    let caps = caps_of(&info);
    presence_with(&mut pair, "bob@localhost/phone", &caps);
    let asked = caps_queries(&pair, "bob@localhost/phone");
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].1.as_deref(),
        Some(format!("https://peer.example#{}", ver(&caps)).as_str())
    );
    let mut answer_info = info.clone();
    answer_info.node = asked[0].1.clone();
    answer(
        &mut pair,
        "bob@localhost/phone",
        &asked[0].0,
        answer_info.into(),
    );
    assert_eq!(kept_caps(&pair), 1);
    let features = pair
        .store
        .peer_features(pair.account_id(), BOB)
        .unwrap()
        .expect("Bob's features are known");
    assert_eq!(
        features,
        info.features.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(pair.error_events("security").is_empty());
    // His caps list chat states: typing now tells him, though he never sent one.
    type_to_bob(&mut pair);
    assert_eq!(chat_states_written(&pair), 1);
    // Another resource with the same hash, and a new session: never asked again.
    presence_with(&mut pair, "bob@localhost/laptop", &caps);
    pair.cut(false);
    pair.connect();
    presence_with(&mut pair, "bob@localhost/phone", &caps);
    assert_eq!(caps_queries(&pair, "bob@localhost/laptop").len(), 0);
    assert_eq!(caps_queries(&pair, "bob@localhost/phone").len(), 1);
    assert!(pair
        .store
        .peer_features(pair.account_id(), BOB)
        .unwrap()
        .is_some());
    // Offline: his features are unknown again.
    let mut gone = Presence::new(tokio_xmpp::parsers::presence::Type::Unavailable);
    gone.from = Some("bob@localhost/phone".parse().unwrap());
    pair.server.send(Stanza::Presence(gone));
    pair.run();
    assert_eq!(
        pair.store.peer_features(pair.account_id(), BOB).unwrap(),
        None
    );
}

#[test]
fn forged_capabilities_are_refused_keep_nothing_and_are_not_asked_again() {
    let mut pair = online();
    let claimed = peer_info(&[ns::DISCO_INFO, ns::CHATSTATES]);
    let caps = caps_of(&claimed);
    // 1. An answer that does not hash to the announced value.
    presence_with(&mut pair, "bob@localhost/a", &caps);
    let (id, _) = caps_queries(&pair, "bob@localhost/a").remove(0);
    let other = peer_info(&[ns::DISCO_INFO, ns::CHATSTATES, "urn:evil"]);
    answer(&mut pair, "bob@localhost/a", &id, other.into());
    assert_eq!(kept_caps(&pair), 0);
    let events = pair.error_events("security");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("do not match"), "{events:?}");
    assert_eq!(
        pair.store.peer_features(pair.account_id(), BOB).unwrap(),
        None
    );
    type_to_bob(&mut pair);
    assert_eq!(chat_states_written(&pair), 0, "nothing believed");
    // Announced again on this connection: not asked again.
    presence_with(&mut pair, "bob@localhost/a", &caps);
    assert_eq!(caps_queries(&pair, "bob@localhost/a").len(), 1);

    // 2. The right answer from another JID (a forged iq result).
    let info = peer_info(&[ns::DISCO_INFO, ns::RECEIPTS]);
    let caps2 = caps_of(&info);
    presence_with(&mut pair, "carol@localhost/c", &caps2);
    let (id, _) = caps_queries(&pair, "carol@localhost/c").remove(0);
    answer(
        &mut pair,
        "mallory@evil.example/x",
        &id,
        info.clone().into(),
    );
    assert_eq!(kept_caps(&pair), 0);
    assert!(pair
        .error_events("security")
        .last()
        .unwrap()
        .contains("instead"));

    // 3. A feature named twice (XEP-0115 §5.4) is refused though the hash of the set matches.
    let info3 = peer_info(&[ns::DISCO_INFO, ns::PING]);
    let caps3 = caps_of(&info3);
    presence_with(&mut pair, "dave@localhost/d", &caps3);
    let (id, _) = caps_queries(&pair, "dave@localhost/d").remove(0);
    let mut el: Element = info3.into();
    el.append_child(
        Element::builder("feature", ns::DISCO_INFO)
            .attr(
                tokio_xmpp::minidom::rxml::xml_ncname!("var").into(),
                ns::PING,
            )
            .build(),
    );
    answer(&mut pair, "dave@localhost/d", &id, el);
    assert_eq!(kept_caps(&pair), 0);
    assert!(pair
        .error_events("security")
        .last()
        .unwrap()
        .contains("duplicated"));

    // 4. A hash with an unknown algorithm is never asked for.
    let md4 = Caps {
        hash: Algo::Unknown("md4".into()),
        ..caps.clone()
    };
    presence_with(&mut pair, "erin@localhost/e", &md4);
    assert!(caps_queries(&pair, "erin@localhost/e").is_empty());
    assert!(pair.engine.is_online(), "nothing of it ends the session");
}

#[test]
fn a_peer_whose_verified_caps_lack_markers_gets_no_displayed_marker() {
    let mut pair = online();
    let send_from_bob = |pair: &mut Pair, id: &str| {
        let mut m = Message::chat(Some("alice@localhost".parse::<Jid>().unwrap()));
        m.from = Some("bob@localhost/phone".parse().unwrap());
        m.id = Some(Id(id.into()));
        m.bodies.insert(Lang::new(), "hi".into());
        pair.server.send(Stanza::Message(m));
        pair.run();
    };
    let markers_sent = |pair: &Pair| {
        pair.server
            .delivered
            .iter()
            .filter(|m| {
                m.payloads
                    .iter()
                    .any(|p| p.is("displayed", ns::DISPLAYED_MARKERS))
            })
            .count()
    };
    // Unknown capabilities: the marker goes, as before.
    send_from_bob(&mut pair, "m1");
    pair.store.mark_read(pair.account_id(), BOB, None).unwrap();
    pair.run();
    assert_eq!(markers_sent(&pair), 1);
    // Verified capabilities without markers: none.
    let info = peer_info(&[ns::DISCO_INFO, ns::RECEIPTS]);
    presence_with(&mut pair, "bob@localhost/phone", &caps_of(&info));
    let (id, _) = caps_queries(&pair, "bob@localhost/phone").remove(0);
    answer(&mut pair, "bob@localhost/phone", &id, info.into());
    send_from_bob(&mut pair, "m2");
    let (marked, n) = pair
        .store
        .mark_read(pair.account_id(), BOB, None)
        .unwrap()
        .unwrap();
    assert_eq!((marked.as_str(), n), ("m2", 1), "read all the same");
    pair.run();
    assert_eq!(markers_sent(&pair), 1, "no marker to a client without them");
    // With markers: it goes.
    let with = peer_info(&[ns::DISCO_INFO, "urn:xmpp:chat-markers:0"]);
    presence_with(&mut pair, "bob@localhost/phone", &caps_of(&with));
    let queries = caps_queries(&pair, "bob@localhost/phone");
    answer(
        &mut pair,
        "bob@localhost/phone",
        &queries.last().unwrap().0,
        with.into(),
    );
    send_from_bob(&mut pair, "m3");
    pair.store.mark_read(pair.account_id(), BOB, None).unwrap();
    pair.run();
    assert_eq!(markers_sent(&pair), 2);
}
