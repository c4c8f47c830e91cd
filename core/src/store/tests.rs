use super::*;
use crate::delivery::State;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;

/// A new store with the account `alice@localhost` (shared with the other store test files).
pub(super) fn new_store(dir: &tempfile::TempDir) -> (Store, i64) {
    let mut store = Store::open(dir.path().join("t.db"), &StoreOptions::default()).unwrap();
    let acc = store
        .add_account(&NewAccount {
            jid: "alice@localhost".into(),
            password: "pw".into(),
            server: None,
            ca_file: None,
            insecure_plaintext: false,
            direct_tls: false,
        })
        .unwrap();
    (store, acc.id)
}

#[test]
fn new_database_is_owner_only_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store.enqueue(acc, "bob@localhost", "hi").unwrap();
    drop(store);
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(dir.path().join("t.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = Store::open(dir.path().join("t.db"), &StoreOptions::default()).unwrap();
    assert_eq!(store.pending_count(acc).unwrap(), 1);
}

#[test]
fn refuses_foreign_newer_and_corrupt_files_without_touching_them() {
    let dir = tempfile::tempdir().unwrap();
    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let err = Store::open(&junk, &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::NotTether { .. }), "{err}");
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x42u8; 8192]);

    // Another application's SQLite database.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE x (y)")
        .unwrap();
    let err = Store::open(&other, &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::NotTether { .. }), "{err}");

    // A newer Tether.
    let (store, _) = new_store(&dir);
    drop(store);
    let path = dir.path().join("t.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");

    // Missing, without create.
    let err = Store::open(
        dir.path().join("nope.db"),
        &StoreOptions {
            create: false,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Missing(_)));
}

/// A store of 2,000 messages with 8 KiB in the middle of the file (message pages) smashed.
fn damaged_store(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let (mut store, acc) = new_store(dir);
    for i in 0..2000 {
        store
            .enqueue(
                acc,
                "bob@localhost",
                &format!("message number {i} {}", "x".repeat(100)),
            )
            .unwrap();
    }
    drop(store);
    let path = dir.path().join("t.db");
    // Checkpoint the WAL so the pages are in the main file, then smash some of them.
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 8192] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    path
}

#[test]
fn corrupt_pages_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_store(&dir);
    let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt { .. } | StoreError::NotTether { .. }
        ),
        "{err}"
    );
    let err = Store::verify_file(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn a_client_on_a_damaged_store_refuses_every_write_and_the_session_untouched() {
    use crate::{Client, ClientConfig, Error};
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_store(&dir);
    let before = std::fs::read(&path).unwrap();
    // The header, the schema and the account are intact, so the open itself succeeds (reads are
    // served while the check runs in the background)...
    let client = Client::open(&path, ClientConfig::default()).unwrap();
    assert_eq!(client.account().jid, "alice@localhost");
    // ...but nothing is written to it, and no session starts on it.
    let corrupt = |r: crate::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert!(
            matches!(e, Error::Store(StoreError::Corrupt { .. })),
            "{what}: {e}"
        );
        assert_eq!(e.exit_code(), 5);
    };
    corrupt(client.verify(), "verify");
    corrupt(client.send("bob@localhost", "hello").map(|_| ()), "send");
    corrupt(client.resend(&["x".into()]), "resend");
    corrupt(client.discard(&["x".into()]), "discard");
    corrupt(
        client.mark_read("bob@localhost", None).map(|_| ()),
        "mark_read",
    );
    corrupt(client.join_room("room@muc.localhost", "alice"), "join");
    corrupt(client.request_subscription("carol@localhost"), "subscribe");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut events = client.subscribe();
    corrupt(rt.block_on(client.run()), "run");
    let event = events.try_recv().expect("an error event");
    assert!(
        format!("{event:?}").contains("damaged"),
        "the run says why: {event:?}"
    );
    drop(client);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was not modified"
    );
}

#[test]
fn a_client_on_a_healthy_store_passes_the_background_check() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    store.enqueue(acc, "bob@localhost", "hi").unwrap();
    drop(store);
    let client =
        crate::Client::open(dir.path().join("t.db"), crate::ClientConfig::default()).unwrap();
    client.verify().unwrap();
    client.send("bob@localhost", "again").unwrap();
    assert_eq!(client.pending_count().unwrap(), 2);
}

#[test]
fn only_legal_moves_happen_and_failed_waits_for_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    let m = store.enqueue(acc, "bob@localhost", "hi").unwrap();
    assert_eq!(m.origin_id.as_deref(), Some(m.id.as_str()));
    let key = store.queued(acc, 10).unwrap()[0].key;
    // queued -> acked is not a legal move
    assert!(store
        .transition(acc, &[key], State::Acked, None, None)
        .unwrap()
        .is_empty());
    let snap = SmSnapshot {
        stream_id: Some("s".into()),
        outbound_count: 1,
        ..Default::default()
    };
    let c = store
        .apply(
            acc,
            &[Move {
                key,
                to: State::Sent,
                error: None,
                seq: Some(1),
            }],
            Some(&snap),
        )
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(store.load_sm(acc).unwrap(), snap);
    assert_eq!(store.in_flight(acc).unwrap(), vec![(Some(1), key)]);
    store
        .transition(acc, &[key], State::Failed, Some("lost"), None)
        .unwrap();
    // a late ack does not revive it
    assert!(store
        .transition(acc, &[key], State::Acked, None, None)
        .unwrap()
        .is_empty());
    let row = store.message(acc, &m.id).unwrap();
    assert_eq!(
        (row.state, row.error.as_deref()),
        (State::Failed, Some("lost"))
    );
    // resend keeps the id, clears the error
    store.resend(acc, std::slice::from_ref(&m.id)).unwrap();
    let row = store.message(acc, &m.id).unwrap();
    assert_eq!((row.state, row.error), (State::Queued, None));
    assert_eq!(row.origin_id.as_deref(), Some(m.id.as_str()));
    // resend of a non-failed message is refused and changes nothing
    let err = store.resend(acc, std::slice::from_ref(&m.id)).unwrap_err();
    assert!(matches!(err, StoreError::WrongState { .. }));
    let err = store.discard(acc, &["nope".into()]).unwrap_err();
    assert!(matches!(err, StoreError::UnknownMessage(_)));
}

#[test]
fn inbound_is_deduplicated_and_counted_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    let msg = InboundMessage {
        direction: crate::delivery::Direction::In,
        kind: "chat",
        from_nick: None,
        receipt_to: None,
        id: Some("m1".into()),
        origin_id: Some("o1".into()),
        stanza_id: Some("s1".into()),
        peer: "bob@localhost".into(),
        body: "hello".into(),
        server_ts: None,
        action: None,
        target: None,
        reactions: vec![],
        file: None,
        invite: None,
    };
    let mut snap = SmSnapshot {
        inbound_h: 1,
        ..Default::default()
    };
    assert!(store
        .store_inbound(acc, &msg, Some(&snap))
        .unwrap()
        .is_some());
    snap.inbound_h = 2;
    // same origin-id, new stanza id: duplicate, but counted
    let dup = InboundMessage {
        id: Some("m1-resent".into()),
        stanza_id: Some("s2".into()),
        ..msg.clone()
    };
    assert!(store
        .store_inbound(acc, &dup, Some(&snap))
        .unwrap()
        .is_none());
    assert_eq!(store.load_sm(acc).unwrap().inbound_h, 2);
    // same server stanza-id, no origin-id: duplicate
    let dup2 = InboundMessage {
        id: Some("zzz".into()),
        origin_id: None,
        stanza_id: Some("s1".into()),
        ..msg.clone()
    };
    assert!(store
        .store_inbound(acc, &dup2, Some(&snap))
        .unwrap()
        .is_none());
    // same origin-id from another peer is a different message
    let other = InboundMessage {
        peer: "carol@localhost".into(),
        stanza_id: None,
        ..msg.clone()
    };
    assert!(store
        .store_inbound(acc, &other, Some(&snap))
        .unwrap()
        .is_some());
    let all = store.messages(acc, &MessageFilter::default()).unwrap();
    assert_eq!(all.len(), 2);
}

#[test]
fn pages_and_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    for i in 0..25 {
        store
            .enqueue(acc, "bob@localhost", &format!("to bob {i}"))
            .unwrap();
    }
    store.enqueue(acc, "carol@localhost", "to carol").unwrap();
    let newest = store.page(acc, "bob@localhost", None, 10).unwrap();
    assert_eq!(newest.len(), 10);
    assert_eq!(newest[0].body, "to bob 15");
    assert_eq!(newest[9].body, "to bob 24");
    let older = store
        .page(acc, "bob@localhost", Some(newest[0].seq), 10)
        .unwrap();
    assert_eq!(older.last().unwrap().body, "to bob 14");
    let oldest = store
        .page(acc, "bob@localhost", Some(older[0].seq), 10)
        .unwrap();
    assert_eq!(oldest.len(), 5);
    let convs = store.conversations(acc).unwrap();
    assert_eq!(convs.len(), 2);
    assert_eq!(convs[0].peer, "carol@localhost");
    assert_eq!(convs[1].last_body, "to bob 24");
    assert_eq!((convs[1].unread, convs[1].failed), (0, 0));
}

/// The hot queries seek by index instead of scanning: a scan made the CPU per message grow with
/// the store (the outbox query on every pump, de-duplication on every inbound message).
#[test]
fn hot_queries_use_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(&dir);
    let plan = |sql: &str| -> String {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let rows: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        rows.join(" | ")
    };
    let cases = [
        (messages::QUEUED_SQL, "messages_pending"),
        (messages::DEDUPE_IN_SQL[0], "messages_in_origin"),
        (messages::DEDUPE_IN_SQL[1], "messages_in_id"),
        (messages::DEDUPE_OUT_SQL[0], "messages_out_origin"),
        (messages::DEDUPE_OUT_SQL[1], "messages_out_id"),
        (attachments::NEEDING_SLOT_SQL, "attachments_work"),
        (messages::CONVERSATIONS_SQL, "messages_peer"),
        (messages::CONVERSATIONS_SQL, "messages_unread"),
        (messages::CONVERSATIONS_SQL, "messages_failed"),
    ];
    for (sql, index) in cases {
        let p = plan(sql);
        assert!(p.contains(&format!("INDEX {index} ")), "{sql}\n=> {p}");
        assert!(
            !p.contains("SCAN m") && !p.contains("SCAN messages"),
            "{sql}\n=> {p}"
        );
    }
}

fn chat_in(i: u32) -> InboundMessage {
    InboundMessage {
        direction: crate::delivery::Direction::In,
        kind: "chat",
        from_nick: None,
        receipt_to: None,
        id: Some(format!("m{i}")),
        origin_id: None,
        stanza_id: None,
        peer: "bob@localhost".into(),
        body: format!("hello {i}"),
        server_ts: None,
        action: None,
        target: None,
        reactions: vec![],
        file: None,
        invite: None,
    }
}

#[test]
fn a_group_commits_as_one_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    let snap = |h: u32| SmSnapshot {
        inbound_h: h,
        ..Default::default()
    };
    let stored = |store: &Store| {
        store
            .messages(acc, &MessageFilter::default())
            .unwrap()
            .len()
    };
    let on_disk = || -> i64 {
        rusqlite::Connection::open(dir.path().join("t.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap()
    };

    // Rolled back: nothing of it stays, and nothing was visible to another connection meanwhile.
    store.begin_group().unwrap();
    assert_eq!(store.group_owner(), Some(std::thread::current().id()));
    assert!(
        matches!(store.begin_group(), Err(StoreError::Group(_))),
        "groups do not nest"
    );
    for i in 0..3 {
        store
            .store_inbound(acc, &chat_in(i), Some(&snap(i + 1)))
            .unwrap();
    }
    assert_eq!(stored(&store), 3, "the group sees its own writes");
    assert_eq!(on_disk(), 0, "another connection does not");
    store.rollback_group();
    assert_eq!(store.group_owner(), None);
    assert_eq!(stored(&store), 0);
    assert_eq!(store.load_sm(acc).unwrap().inbound_h, 0);

    // A failing statement writes nothing (SQLite undoes the statement), and the rest of the group
    // commits at once. (A method whose later statement fails may leave its earlier ones in the
    // group: the session then rolls the whole group back, as above.)
    store.begin_group().unwrap();
    store
        .store_inbound(acc, &chat_in(0), Some(&snap(1)))
        .unwrap();
    assert!(store.store_inbound(acc + 99, &chat_in(1), None).is_err());
    store
        .store_inbound(acc, &chat_in(2), Some(&snap(2)))
        .unwrap();
    assert!(store.commit_group().unwrap());
    assert_eq!(store.group_owner(), None);
    assert_eq!(on_disk(), 2);
    assert_eq!(store.load_sm(acc).unwrap().inbound_h, 2);
    // Outside a group each method commits by itself, as before.
    store
        .store_inbound(acc, &chat_in(3), Some(&snap(3)))
        .unwrap();
    assert_eq!(on_disk(), 3);
}

#[test]
fn other_threads_wait_for_a_group_commit_and_their_writes_survive_its_rollback() {
    use std::sync::mpsc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = new_store(&dir);
    drop(store);
    let client =
        crate::Client::open(dir.path().join("t.db"), crate::ClientConfig::default()).unwrap();
    client.verify().unwrap();
    let shared = client.shared();
    let acc = client.account().id;
    // As the session engine does: the lock is held for the whole group.
    let mut store = shared.store();
    store.begin_group().unwrap();
    store.store_inbound(acc, &chat_in(1), None).unwrap();
    let app = client.clone();
    let (done, sent) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        app.send("bob@localhost", "written while the group was open")
            .unwrap();
        done.send(()).unwrap();
    });
    assert!(
        sent.recv_timeout(Duration::from_millis(300)).is_err(),
        "the app's send waits for the group to end"
    );
    // Rolled back, not committed (the group's message is absent below), and ended.
    store.rollback_group();
    assert!(store.group_owner().is_none());
    drop(store);
    sent.recv_timeout(Duration::from_secs(10))
        .expect("the send goes on once the group ended");
    writer.join().unwrap();
    // The group's message was rolled back; the app's message was not (it never joined the group).
    let all = client.messages(&MessageFilter::default()).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].body, "written while the group was open");
}

/// The fast-reconnect state: a stable client id, a FAST token kept until replaced or
/// forgotten, its replay counter committed before each use, an expired token never offered.
#[test]
fn the_client_id_is_stable_and_the_fast_token_is_kept_counted_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    let id = store.login_client_id(acc).unwrap();
    assert_eq!(store.login_client_id(acc).unwrap(), id);
    assert_eq!(store.fast_token(acc, 0).unwrap(), None);
    assert_eq!(store.use_fast_token(acc, 0).unwrap(), None);
    let token = crate::auth::FastToken {
        mechanism: crate::auth::FAST_MECHANISM.into(),
        secret: "secret-token:fast-1".into(),
        expires_ms: 1_000,
        count: 0,
    };
    store.set_fast_token(acc, Some(&token)).unwrap();
    assert_eq!(store.use_fast_token(acc, 10).unwrap().unwrap().count, 1);
    assert_eq!(store.use_fast_token(acc, 10).unwrap().unwrap().count, 2);
    drop(store);
    let mut store = Store::open(dir.path().join("t.db"), &StoreOptions::default()).unwrap();
    assert_eq!(
        store.login_client_id(acc).unwrap(),
        id,
        "the id survives a restart"
    );
    assert_eq!(store.fast_token(acc, 10).unwrap().unwrap().count, 2);
    assert_eq!(store.fast_token(acc, 1_000).unwrap(), None, "expired");
    let rotated = crate::auth::FastToken {
        secret: "secret-token:fast-2".into(),
        expires_ms: 5_000,
        ..token
    };
    store.set_fast_token(acc, Some(&rotated)).unwrap();
    let now = store.fast_token(acc, 10).unwrap().unwrap();
    assert_eq!((now.secret.as_str(), now.count), ("secret-token:fast-2", 0));
    store.set_fast_token(acc, None).unwrap();
    assert_eq!(store.fast_token(acc, 10).unwrap(), None);
    assert_eq!(store.login_client_id(acc).unwrap(), id);
}

/// A method's transaction takes the write lock first: while another process holds it, the method
/// waits (the busy timeout) and then succeeds. A deferred transaction that read before writing
/// failed at once with `SQLITE_BUSY` when the other process committed in between (the campaign's
/// `tether send` beside a running client).
#[test]
fn a_write_waits_for_another_processs_transaction_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    let first = store.enqueue(acc, "bob@localhost", "helo").unwrap();
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    other
        .execute("UPDATE accounts SET resource = 'elsewhere'", [])
        .unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    // A correction reads its target, then writes its row.
    let fixed = store.enqueue_reference(
        acc,
        "bob@localhost",
        &first.id,
        &Reference::Correct("hello".into()),
    );
    holder.join().unwrap();
    assert!(fixed.is_ok(), "{fixed:?}");
    assert_eq!(
        store.page(acc, "bob@localhost", None, 10).unwrap()[0].body,
        "hello"
    );
}

#[test]
fn a_blocklist_entry_matches_the_forms_xep_0191_names_and_only_while_wanted_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, acc) = new_store(&dir);
    let blocked = |store: &Store, jid: &str| store.is_blocked(acc, &jid.parse().unwrap()).unwrap();
    store
        .set_block(
            acc,
            &[
                "bob@localhost".into(),
                "carol@localhost/phone".into(),
                "spam.example".into(),
                "example.net/bot".into(),
            ],
            BlockWant::Block,
        )
        .unwrap();
    // A bare entry covers every resource; a full one only that resource.
    assert!(blocked(&store, "bob@localhost"));
    assert!(blocked(&store, "bob@localhost/laptop"));
    assert!(blocked(&store, "carol@localhost/phone"));
    assert!(!blocked(&store, "carol@localhost/pc"));
    assert!(!blocked(&store, "carol@localhost"));
    // A domain covers every JID of it; domain/resource that resource of every JID.
    assert!(blocked(&store, "eve@spam.example/x"));
    assert!(blocked(&store, "spam.example"));
    assert!(blocked(&store, "x@example.net/bot"));
    assert!(!blocked(&store, "x@example.net/human"));
    assert!(!blocked(&store, "dave@localhost"));
    // An unblock applies here at once, before the server confirms it.
    store
        .set_block(acc, &["bob@localhost".into()], BlockWant::Unblock)
        .unwrap();
    assert!(!blocked(&store, "bob@localhost/laptop"));
    // The server confirming a block that was since unblocked leaves the unblock to be told.
    let settled = store
        .block_answered(acc, BlockWant::Block, &["bob@localhost".into()], Ok(()))
        .unwrap();
    assert!(settled.is_empty());
    let (block, unblock) = store.block_pending(acc).unwrap();
    assert_eq!(unblock, vec!["bob@localhost".to_owned()]);
    assert_eq!(block.len(), 3);
    // Entries survive a reopen (the wish is durable).
    drop(store);
    let store = Store::open(dir.path().join("t.db"), &StoreOptions::default()).unwrap();
    assert!(blocked(&store, "eve@spam.example/x"));
    assert_eq!(store.blocklist(acc).unwrap().len(), 4);
}
