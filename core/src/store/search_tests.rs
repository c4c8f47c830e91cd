//! Full-text search (store/search.rs) on a real SQLite file.

use super::tests::new_store;
use super::*;
use crate::delivery::Direction;

const BOB: &str = "bob@localhost";
const CAROL: &str = "carol@localhost";

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

fn act(mut m: InboundMessage, action: Action, target: &str) -> InboundMessage {
    m.action = Some(action);
    m.target = Some(target.into());
    m
}

fn query(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        limit: 50,
        ..SearchQuery::default()
    }
}

/// The ids and texts found for `text`, newest first.
fn found(store: &Store, text: &str) -> Vec<(String, String)> {
    store
        .search(&query(text))
        .unwrap()
        .into_iter()
        .map(|h| (h.message.id, h.message.body))
        .collect()
}

fn ids(store: &Store, text: &str) -> Vec<String> {
    found(store, text).into_iter().map(|(id, _)| id).collect()
}

/// SQLite's own check that the index matches the messages it was built from.
fn index_is_consistent(store: &Store) {
    store
        .conn
        .execute(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .expect("the search index matches the messages");
}

#[test]
fn every_word_must_appear_the_last_as_a_prefix_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "Lunch at the Café tomorrow?"), None)
        .unwrap();
    let out = store
        .enqueue(acc, BOB, "yes, lunch tomorrow at noon")
        .unwrap();
    store
        .store_inbound_full(
            acc,
            &chat(CAROL, "m3", "the lunchbox is in the fridge"),
            None,
        )
        .unwrap();
    store
        .store_inbound_full(acc, &chat(CAROL, "m4", "nothing to see"), None)
        .unwrap();

    // Newest first; the last word is a prefix (search as one types); case and accents do not
    // matter.
    assert_eq!(ids(&store, "lunch"), ["m3", out.id.as_str(), "m1"]);
    assert_eq!(ids(&store, "LUNCH tomorrow"), [out.id.as_str(), "m1"]);
    assert_eq!(ids(&store, "cafe"), ["m1"]);
    assert_eq!(ids(&store, "tomorrow lunch"), [out.id.as_str(), "m1"]);
    assert_eq!(ids(&store, "lunch tom"), [out.id.as_str(), "m1"]);
    assert!(ids(&store, "dinner").is_empty());
    // One conversation, and one account.
    let only_bob = store
        .search(&SearchQuery {
            peer: Some(BOB.into()),
            ..query("lunch")
        })
        .unwrap();
    assert_eq!(only_bob.len(), 2);
    assert!(only_bob
        .iter()
        .all(|h| h.message.peer == BOB && h.account == acc));
    let other_account = store
        .search(&SearchQuery {
            account: Some(acc + 1),
            ..query("lunch")
        })
        .unwrap();
    assert!(other_account.is_empty());
    // An outgoing message is found as it is: direction and state come with it.
    let mine = &store.search(&query("noon")).unwrap()[0].message;
    assert_eq!(
        (mine.direction, mine.id.as_str()),
        (Direction::Out, out.id.as_str())
    );
    index_is_consistent(&store);
}

#[test]
fn only_the_current_text_is_found_a_retracted_message_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "see you at the stadium"), None)
        .unwrap();
    store
        .store_inbound_full(
            acc,
            &act(
                chat(BOB, "c1", "see you at the museum"),
                Action::Correct,
                "m1",
            ),
            None,
        )
        .unwrap();
    // The old version is in the edit history, not in the search.
    assert!(ids(&store, "stadium").is_empty());
    // The new one is found as the message it corrects, with its current text.
    assert_eq!(
        found(&store, "museum"),
        [("m1".to_string(), "see you at the museum".to_string())]
    );
    // Words both versions share find the message once.
    assert_eq!(ids(&store, "see you"), ["m1"]);
    // A correction waiting for its target is not shown as anything until the target comes.
    store
        .store_inbound_full(
            acc,
            &act(
                chat(BOB, "c2", "the concert is at nine"),
                Action::Correct,
                "m2",
            ),
            None,
        )
        .unwrap();
    assert!(ids(&store, "concert").is_empty());
    store
        .store_inbound_full(acc, &chat(BOB, "m2", "the concert is at eight"), None)
        .unwrap();
    assert_eq!(ids(&store, "concert nine"), ["m2"]);
    assert!(ids(&store, "eight").is_empty());

    // A retracted message is found no more, by any of its versions.
    store
        .store_inbound_full(acc, &act(chat(BOB, "r1", ""), Action::Retract, "m1"), None)
        .unwrap();
    assert!(ids(&store, "museum").is_empty());
    assert!(ids(&store, "see").is_empty());
    // Our own correction, before the server has it, already counts (it is what the user reads).
    let out = store.enqueue(acc, BOB, "the train leaves at 7").unwrap();
    store
        .enqueue_reference(
            acc,
            BOB,
            &out.id,
            &Reference::Correct("the bus leaves at 7".into()),
        )
        .unwrap();
    assert_eq!(ids(&store, "bus"), [out.id.clone()]);
    assert!(ids(&store, "train").is_empty());
    // Reactions carry no text to find.
    store
        .enqueue_reference(acc, BOB, "m2", &Reference::React(vec!["👍".into()]))
        .unwrap();
    assert!(ids(&store, "👍").is_empty());
    index_is_consistent(&store);
}

#[test]
fn fts_syntax_in_the_users_words_is_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store
        .store_inbound_full(acc, &chat(BOB, "m1", "apples or pears"), None)
        .unwrap();
    store
        .store_inbound_full(acc, &chat(BOB, "m2", "apples and pears"), None)
        .unwrap();
    store
        .store_inbound_full(
            acc,
            &chat(BOB, "m3", "body: \"quoted\" NEAR(the end) -minus *star"),
            None,
        )
        .unwrap();
    // `OR`, `AND` and `NOT` are words to find, not operators.
    assert_eq!(ids(&store, "apples OR pears"), ["m1"]);
    assert_eq!(ids(&store, "apples AND pears"), ["m2"]);
    assert!(ids(&store, "apples NOT pears").is_empty());
    // Quotes, parentheses, a column filter, a minus, a star, a caret: no syntax error, and each
    // finds the words in it.
    for q in [
        "\"quoted",
        "quoted\"",
        "NEAR(the",
        "body:",
        "body: quoted",
        "-minus",
        "*star",
        "^end",
        "(the end",
        "\"\"\"",
    ] {
        let hits = store.search(&query(q));
        assert!(hits.is_ok(), "{q:?}: {hits:?}");
    }
    assert_eq!(ids(&store, "\"quoted"), ["m3"]);
    assert_eq!(ids(&store, "NEAR(the end)"), ["m3"]);
    assert_eq!(ids(&store, "-minus"), ["m3"]);
    // Punctuation alone is no word: nothing is found, and nothing fails.
    assert!(ids(&store, "!!! ???").is_empty());
}

#[test]
fn a_bad_query_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _acc) = new_store(&dir);
    let refused = |q: SearchQuery| match store.search(&q) {
        Err(StoreError::Refused(why)) => why,
        other => panic!("{q:?} was not refused: {other:?}"),
    };
    assert!(refused(query("")).contains("at least one word"));
    assert!(refused(query("  \n\t ")).contains("at least one word"));
    assert!(refused(query(&"a".repeat(MAX_QUERY_BYTES + 1))).contains("at most"));
    assert!(refused(query(&"w ".repeat(MAX_QUERY_WORDS + 1))).contains("words"));
    assert!(refused(query("nul\u{0}byte")).contains("control"));
    assert!(refused(SearchQuery {
        limit: 0,
        ..query("a")
    })
    .contains("1 to"));
    assert!(refused(SearchQuery {
        limit: MAX_SEARCH_PAGE + 1,
        ..query("a")
    })
    .contains("1 to"));
}

#[test]
fn pages_follow_each_other_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    for i in 0..120 {
        store
            .store_inbound_full(
                acc,
                &chat(BOB, &format!("m{i}"), &format!("report {i}")),
                None,
            )
            .unwrap();
        store
            .store_inbound_full(acc, &chat(BOB, &format!("x{i}"), "unrelated"), None)
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .search(&SearchQuery {
                before,
                ..query("report")
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 50);
        before = Some(page.last().unwrap().cursor);
        seen.extend(page.into_iter().map(|h| h.message.id));
    }
    let expected: Vec<String> = (0..120).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(
        seen, expected,
        "every hit once, newest first, in pages of 50"
    );
}

#[test]
fn the_index_is_written_in_the_messages_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    // A group commit that is rolled back leaves no index entry.
    store.begin_group().unwrap();
    store.enqueue(acc, BOB, "never committed").unwrap();
    store.rollback_group();
    assert!(ids(&store, "committed").is_empty());
    index_is_consistent(&store);
    // One that commits is searchable at once, and so after a reopen.
    store.begin_group().unwrap();
    let row = store.enqueue(acc, BOB, "committed for good").unwrap();
    assert!(store.commit_group().unwrap());
    assert_eq!(ids(&store, "committed"), [row.id.clone()]);
    drop(store);
    let store = Store::open(dir.path().join("t.db"), &StoreOptions::default()).unwrap();
    assert_eq!(ids(&store, "good"), [row.id]);
    index_is_consistent(&store);
}
