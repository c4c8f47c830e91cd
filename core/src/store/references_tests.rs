//! The store's rules for corrections, retractions, reactions and replies, on a real SQLite file.

use super::tests::new_store;
use super::*;
use crate::delivery::{Direction, State};

const BOB: &str = "bob@localhost";
const ROOM: &str = "room@muc.localhost";

fn chat(peer: &str, id: &str, body: &str) -> InboundMessage {
    InboundMessage {
        direction: Direction::In,
        kind: "chat",
        from_nick: None,
        receipt_to: None,
        id: Some(id.into()),
        origin_id: Some(id.into()),
        stanza_id: None,
        peer: peer.into(),
        body: body.into(),
        server_ts: None,
        action: None,
        target: None,
        reactions: vec![],
        file: None,
        invite: None,
    }
}

fn act(mut m: InboundMessage, action: Option<Action>, target: &str) -> InboundMessage {
    m.action = action;
    m.target = Some(target.into());
    m
}

fn room(nick: &str, id: &str, sid: &str, body: &str) -> InboundMessage {
    InboundMessage {
        kind: "groupchat",
        from_nick: Some(nick.into()),
        stanza_id: Some(sid.into()),
        ..chat(ROOM, id, body)
    }
}

fn shown(store: &Store, acc: i64, peer: &str) -> Vec<MessageRow> {
    store.page(acc, peer, None, 100).unwrap()
}

fn rows(store: &Store, acc: i64) -> i64 {
    store
        .messages(acc, &MessageFilter::default())
        .unwrap()
        .len() as i64
}

#[test]
fn a_correction_applies_once_in_either_order_and_keeps_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "helo"), None)
        .unwrap();
    let fix = act(chat(BOB, "c1", "hello"), Some(Action::Correct), "m1");
    let first = store.store_inbound_full(acc, &fix, None).unwrap();
    assert_eq!(
        first.updated,
        vec![Updated {
            peer: BOB.into(),
            id: "m1".into(),
            action: Action::Correct
        }]
    );
    let again = store.store_inbound_full(acc, &fix, None).unwrap();
    assert_eq!(
        again,
        Stored::default(),
        "the same correction again is a duplicate"
    );
    let page = shown(&store, acc, BOB);
    assert_eq!(page.len(), 1, "a correction is not a message of its own");
    assert_eq!((page[0].body.as_str(), page[0].edited), ("hello", true));
    let history: Vec<String> = store
        .edits(acc, BOB, "m1")
        .unwrap()
        .into_iter()
        .map(|e| e.body)
        .collect();
    assert_eq!(history, ["helo", "hello"]);

    // The other order (the archive can deliver a correction before its message).
    let early = act(chat(BOB, "c2", "world!"), Some(Action::Correct), "m2");
    let waiting = store.store_inbound_full(acc, &early, None).unwrap();
    assert!(waiting.change.is_some() && waiting.updated.is_empty());
    let target = store
        .store_inbound_full(acc, &chat(BOB, "m2", "wrold"), None)
        .unwrap();
    assert_eq!(target.updated.len(), 1, "the waiting correction is linked");
    let page = shown(&store, acc, BOB);
    assert_eq!(page[1].body, "world!");
    // A correction of the correction (older clients name the last version) is the same message.
    let chained = act(chat(BOB, "c3", "world!!"), Some(Action::Correct), "c2");
    store.store_inbound_full(acc, &chained, None).unwrap();
    assert_eq!(shown(&store, acc, BOB)[1].body, "world!!");
    assert_eq!(store.edits(acc, BOB, "m2").unwrap().len(), 3);
}

#[test]
fn only_the_sender_corrects_or_retracts_and_a_forgery_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "I owe you nothing"), None)
        .unwrap();
    let before = rows(&store, acc);
    // Mallory names Bob's message from her own conversation.
    let mallory = act(
        chat("mallory@localhost", "x1", "I owe you 100"),
        Some(Action::Correct),
        "m1",
    );
    let r = store.store_inbound_full(acc, &mallory, None).unwrap();
    assert!(
        matches!(r.refused.as_slice(), [Refusal::Forged(_)]),
        "{r:?}"
    );
    // Our own other device (a carbon) cannot retract Bob's message either.
    let mut ours = act(chat(BOB, "x2", ""), Some(Action::Retract), "m1");
    ours.direction = Direction::Out;
    let r = store.store_inbound_full(acc, &ours, None).unwrap();
    assert!(
        matches!(r.refused.as_slice(), [Refusal::Forged(_)]),
        "{r:?}"
    );
    assert_eq!(rows(&store, acc), before, "nothing stored");
    let page = shown(&store, acc, BOB);
    assert_eq!(page[0].body, "I owe you nothing");
    assert!(!page[0].retracted && !page[0].edited);

    // In a room the sender is the nick; a waiting forgery is deleted when its target arrives.
    store.join_room(acc, ROOM, "alice").unwrap();
    let early = act(
        room("eve", "e1", "s-e1", "took it back"),
        Some(Action::Retract),
        "s-a1",
    );
    store.store_inbound_full(acc, &early, None).unwrap();
    let arrived = store
        .store_inbound_full(acc, &room("anna", "a1", "s-a1", "my words"), None)
        .unwrap();
    assert!(
        matches!(arrived.refused.as_slice(), [Refusal::Forged(_)]),
        "{arrived:?}"
    );
    assert!(arrived.updated.is_empty());
    let page = shown(&store, acc, ROOM);
    assert_eq!(page.len(), 1);
    assert!(!page[0].retracted);
    let live = act(room("eve", "e2", "s-e2", "x"), Some(Action::Correct), "a1");
    let r = store.store_inbound_full(acc, &live, None).unwrap();
    assert!(matches!(r.refused.as_slice(), [Refusal::Forged(_)]));
    // Anna herself may.
    let own = act(
        room("anna", "a2", "s-a2", ""),
        Some(Action::Retract),
        "s-a1",
    );
    let r = store.store_inbound_full(acc, &own, None).unwrap();
    assert!(r.refused.is_empty() && r.updated.len() == 1, "{r:?}");
    assert!(shown(&store, acc, ROOM)[0].retracted);
}

#[test]
fn reactions_are_each_senders_newest_set_and_wait_for_an_unknown_target() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    let react = |store: &mut Store, id: &str, target: &str, emoji: &[&str]| {
        let mut m = act(chat(BOB, id, ""), Some(Action::React), target);
        m.reactions = emoji.iter().map(|e| e.to_string()).collect();
        store.store_inbound_full(acc, &m, None).unwrap()
    };
    // Before the message is here: kept, applied when it comes.
    let early = react(&mut store, "r1", "m1", &["👍", "❤️"]);
    assert!(early.change.is_some() && early.updated.is_empty());
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "lunch?"), None)
        .unwrap();
    react(&mut store, "r2", "m1", &["👍"]);
    react(&mut store, "r2", "m1", &["👍"]);
    store
        .enqueue_reference(acc, BOB, "m1", &Reference::React(vec!["👍".into()]))
        .unwrap();
    let m = &shown(&store, acc, BOB)[0];
    assert_eq!(
        m.reactions,
        vec![ReactionCount {
            emoji: "👍".into(),
            count: 2,
            mine: true
        }]
    );
    assert_eq!(
        shown(&store, acc, BOB).len(),
        1,
        "reactions are not messages"
    );
    let conv = store.conversations(acc).unwrap();
    assert_eq!(conv[0].last_body, "lunch?");
    assert_eq!(conv[0].unread, 1, "a reaction is not an unread message");
    // Emptying our set takes our reaction away.
    store
        .enqueue_reference(acc, BOB, "m1", &Reference::React(vec![]))
        .unwrap();
    assert_eq!(shown(&store, acc, BOB)[0].reactions[0].count, 1);
    assert!(!shown(&store, acc, BOB)[0].reactions[0].mine);
}

#[test]
fn a_reply_shows_our_own_copy_of_what_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "are you coming?"), None)
        .unwrap();
    store
        .store_inbound_full(acc, &act(chat(BOB, "m2", "well?"), None, "m1"), None)
        .unwrap();
    let page = shown(&store, acc, BOB);
    let quoted = page[1].reply_to.as_ref().expect("linked");
    assert_eq!(
        (quoted.id.as_str(), quoted.body.as_deref()),
        ("m1", Some("are you coming?"))
    );
    // Our reply carries a quote for older clients and names the message by its id.
    store
        .enqueue_reference(acc, BOB, "m1", &Reference::Reply("yes".into()))
        .unwrap();
    let item = store.queued(acc, 10).unwrap().pop().unwrap();
    assert_eq!(item.action, None);
    assert_eq!(item.target.as_deref(), Some("m1"));
    assert_eq!(item.payload.as_deref(), Some("> are you coming?\n"));
    assert_eq!(item.reply_to_jid.as_deref(), Some(BOB));
}

#[test]
fn the_user_may_only_correct_or_retract_their_own_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "theirs"), None)
        .unwrap();
    let mine = store.enqueue(acc, BOB, "mine").unwrap();
    for what in [Reference::Correct("x".into()), Reference::Retract] {
        let e = store.enqueue_reference(acc, BOB, "m1", &what).unwrap_err();
        assert!(matches!(e, StoreError::Refused(_)), "{e}");
    }
    let e = store
        .enqueue_reference(acc, BOB, "nope", &Reference::Retract)
        .unwrap_err();
    assert!(matches!(e, StoreError::UnknownMessage(_)), "{e}");
    let e = store
        .enqueue_reference(acc, BOB, &mine.id, &Reference::Correct("  ".into()))
        .unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    let huge = vec!["x".repeat(MAX_REACTION_BYTES + 1)];
    let e = store
        .enqueue_reference(acc, BOB, "m1", &Reference::React(huge))
        .unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    let many: Vec<String> = (0..=MAX_REACTIONS).map(|i| i.to_string()).collect();
    assert!(store
        .enqueue_reference(acc, BOB, "m1", &Reference::React(many))
        .is_err());
    // Ours: queued after the message, naming it, with its own state.
    let fix = store
        .enqueue_reference(acc, BOB, &mine.id, &Reference::Correct("mine!".into()))
        .unwrap();
    assert_eq!(fix.state, State::Queued);
    let queued = store.queued(acc, 10).unwrap();
    assert_eq!(queued.len(), 2, "the message, then its correction");
    assert_eq!(queued[0].id, mine.id);
    assert_eq!(queued[1].action, Some(Action::Correct));
    assert_eq!(queued[1].target.as_deref(), Some(mine.id.as_str()));
    assert_eq!(shown(&store, acc, BOB)[1].body, "mine!");
    // Discarding a failed correction gives the old text back.
    store
        .transition(acc, &[fix.key], State::Sent, None, None)
        .unwrap();
    store
        .transition(acc, &[fix.key], State::Failed, Some("lost"), None)
        .unwrap();
    store.discard(acc, &[fix.id]).unwrap();
    assert_eq!(shown(&store, acc, BOB)[1].body, "mine");
    assert!(!shown(&store, acc, BOB)[1].edited);
}

#[test]
fn in_a_room_a_reaction_to_our_message_waits_for_the_rooms_stanza_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store.join_room(acc, ROOM, "alice").unwrap();
    store.room_joined(acc, ROOM).unwrap();
    let ours = store.enqueue(acc, ROOM, "hello room").unwrap();
    let fix = store
        .enqueue_reference(
            acc,
            ROOM,
            &ours.id,
            &Reference::Correct("hello, room".into()),
        )
        .unwrap();
    let react = store
        .enqueue_reference(acc, ROOM, &ours.id, &Reference::React(vec!["🎉".into()]))
        .unwrap();
    let queued: Vec<String> = store
        .queued(acc, 10)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        queued,
        [ours.id.clone(), fix.id.clone()],
        "a correction names the id; the reaction waits for the stanza-id"
    );
    store
        .transition(acc, &[ours.seq], State::Sent, None, None)
        .unwrap();
    store
        .reflect(acc, ROOM, &ours.id, Some("room-sid-1"), None)
        .unwrap();
    let item = store
        .queued(acc, 10)
        .unwrap()
        .into_iter()
        .find(|i| i.id == react.id)
        .expect("released by the reflection");
    assert_eq!(item.target.as_deref(), Some("room-sid-1"));
    assert_eq!(
        item.reply_to_jid, None,
        "our own message: no author to name"
    );
}
