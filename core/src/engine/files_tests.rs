//! Files through the session engine and the simulated server's upload service, in memory: the
//! message waits for its upload and goes once with its link and hash; kills and refusals at each
//! step; hostile slots and links. (The HTTP transfer itself is the worker's, tested end to end
//! against Prosody's own upload service in `tests/tests/files.rs`.)

use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::{
    message::{Id, Lang, Message},
    ns,
    stanza::Stanza,
    stanza_error::DefinedCondition,
};

use super::sim::{Pair, Server};
use super::xeps;
use crate::store::NewFile;
use crate::State;

const BOB: &str = "bob@localhost";

fn online(pair: &mut Pair) {
    pair.connect();
    assert!(pair.engine.is_online(), "negotiated: {:?}", pair.errors);
}

/// Commits a file message of `size` bytes (as `Client::send_file` does). Returns (id, key).
fn send_file(pair: &mut Pair, size: usize) -> (String, i64) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("holiday photo.jpg");
    std::fs::write(&src, vec![7u8; size]).unwrap();
    let stored = pair.store.blobs().put_file(&src).unwrap();
    let change = pair
        .store
        .enqueue_file(
            pair.account_id(),
            BOB,
            &NewFile {
                name: "holiday photo.jpg".into(),
                size: stored.size,
                media_type: "image/jpeg".into(),
                sha256: stored.sha256,
            },
        )
        .unwrap();
    (change.id, change.key)
}

fn file_messages(pair: &Pair) -> Vec<Message> {
    pair.server
        .delivered
        .iter()
        .filter(|m| m.payloads.iter().any(|p| p.is("x", ns::OOB)))
        .cloned()
        .collect()
}

/// Why message `id` failed.
fn failure(pair: &Pair, id: &str) -> String {
    let row = pair.store.message(pair.account_id(), id).unwrap();
    row.error.expect("a failed message says why")
}

/// What the transfer worker does once its PUT succeeded.
fn put_done(pair: &mut Pair, key: i64) {
    assert!(pair.store.uploaded(key).unwrap(), "it was uploading");
    let now = pair.now;
    let r = pair.engine.handle_outbox(&mut pair.store, now);
    pair.run_after(r);
}

#[test]
fn a_file_waits_for_its_upload_then_goes_once_with_its_link_and_hash() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    let (id, key) = send_file(&mut pair, 5000);
    pair.run();
    assert_eq!(
        pair.server.slot_requests,
        [("holiday photo.jpg".into(), 5000)]
    );
    let ups = pair.store.uploads(pair.account_id()).unwrap();
    assert_eq!(ups.len(), 1, "a slot: the upload may start");
    assert_eq!(ups[0].put_url, "https://localhost:5281/share/1/file");
    assert_eq!(
        pair.state(&id),
        State::Queued,
        "the message waits for its file"
    );
    assert!(file_messages(&pair).is_empty());
    assert_eq!(pair.events_named("file:slot"), 1);
    put_done(&mut pair, key);
    let sent = file_messages(&pair);
    assert_eq!(sent.len(), 1);
    let m = &sent[0];
    assert_eq!(m.bodies[""], "https://localhost:5281/share/1/file");
    let meta = m
        .payloads
        .iter()
        .find(|p| p.is("file-metadata", xeps::FILE_METADATA))
        .map(xeps::parse_file_metadata)
        .expect("metadata");
    assert_eq!(meta.size, Some(5000));
    assert_eq!(meta.name.as_deref(), Some("holiday photo.jpg"));
    assert_eq!(meta.sha256.as_deref().map(str::len), Some(64));
    assert_eq!(pair.state(&id), State::Acked);
    // Nothing more goes out for it.
    pair.run();
    assert_eq!(file_messages(&pair).len(), 1);
    assert_eq!(pair.store.transfers_pending(pair.account_id()).unwrap(), 0);
}

#[test]
fn a_kill_at_each_step_of_the_upload_loses_nothing_and_sends_once() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    // A first file finds the upload service.
    let (_, first) = send_file(&mut pair, 10);
    pair.run();
    put_done(&mut pair, first);
    assert_eq!(pair.server.slot_requests.len(), 1);
    // Killed before the slot's answer came in: the new process asks again.
    pair.server.rx_budget = Some(0);
    let (id, key) = send_file(&mut pair, 100);
    pair.run();
    assert_eq!(pair.server.slot_requests.len(), 2);
    pair.kill();
    online(&mut pair);
    assert_eq!(
        pair.server.slot_requests.len(),
        3,
        "asked again after the kill"
    );
    assert_eq!(pair.store.uploads(pair.account_id()).unwrap().len(), 1);
    // Killed mid-PUT (the slot is in the store): the new process PUTs again, no new slot.
    pair.kill();
    online(&mut pair);
    assert_eq!(pair.server.slot_requests.len(), 3);
    assert_eq!(pair.store.uploads(pair.account_id()).unwrap().len(), 1);
    put_done(&mut pair, key);
    assert_eq!(file_messages(&pair).len(), 2, "each file once");
    assert_eq!(pair.state(&id), State::Acked);
}

#[test]
fn an_oversized_file_fails_with_the_limit_in_the_reason_and_nothing_is_sent() {
    let mut server = Server::new();
    server.upload_max = Some(1000);
    let mut pair = Pair::new(server);
    online(&mut pair);
    let (id, _) = send_file(&mut pair, 1001);
    pair.run();
    assert_eq!(pair.state(&id), State::Failed);
    let row = pair.store.message(pair.account_id(), &id).unwrap();
    let why = row.error.unwrap();
    assert!(why.contains("at most 1000"), "{why}");
    assert!(pair.server.slot_requests.is_empty(), "not even asked");
    assert!(file_messages(&pair).is_empty());
    assert_eq!(row.file.unwrap().transfer, "failed");
}

#[test]
fn a_service_refusal_fails_with_its_reason_and_a_resend_asks_again() {
    let mut server = Server::new();
    server.slot_error = Some(DefinedCondition::NotAcceptable);
    let mut pair = Pair::new(server);
    online(&mut pair);
    let (id, _) = send_file(&mut pair, 10);
    pair.run();
    assert_eq!(pair.state(&id), State::Failed);
    let why = failure(&pair, &id);
    assert!(why.contains("File too large"), "{why}");
    // The user resends: the same message, the same blob, a new slot.
    pair.server.slot_error = None;
    pair.store
        .resend(pair.account_id(), std::slice::from_ref(&id))
        .unwrap();
    pair.run();
    assert_eq!(pair.server.slot_requests.len(), 2);
    let key = pair.store.uploads(pair.account_id()).unwrap()[0].key;
    put_done(&mut pair, key);
    let sent = file_messages(&pair);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, Some(Id(id)), "the resend keeps the id");
}

#[test]
fn hostile_slot_urls_are_refused_as_security_events() {
    for (url, says) in [
        ("http://localhost:5280/share/{n}", "only HTTPS"),
        ("https://evil.test/share/{n}", "evil.test"),
        ("https://user:pw@localhost/share/{n}", "credentials"),
    ] {
        let mut server = Server::new();
        server.slot_url = url.into();
        let mut pair = Pair::new(server);
        online(&mut pair);
        let (id, _) = send_file(&mut pair, 10);
        pair.run();
        assert_eq!(pair.state(&id), State::Failed, "{url}");
        let why = failure(&pair, &id);
        assert!(why.contains(says), "{url}: {why}");
        assert_eq!(pair.error_events("security").len(), 1, "{url}");
        assert!(pair.store.uploads(pair.account_id()).unwrap().is_empty());
    }
}

#[test]
fn without_an_upload_service_a_file_fails_for_the_user() {
    let mut server = Server::new();
    server.upload_max = None;
    let mut pair = Pair::new(server);
    online(&mut pair);
    let (id, _) = send_file(&mut pair, 10);
    pair.run();
    assert_eq!(pair.state(&id), State::Failed);
    let why = failure(&pair, &id);
    assert!(why.contains("no file upload"), "{why}");
}

fn file_from_bob(id: &str, url: &str, name: &str) -> Message {
    let mut m = Message::chat(Some("alice@localhost".parse::<Jid>().unwrap()));
    m.from = Some("bob@localhost/phone".parse().unwrap());
    m.id = Some(Id(id.into()));
    m.bodies.insert(Lang::new(), url.into());
    m.payloads.push(
        tokio_xmpp::parsers::oob::Oob {
            url: url.into(),
            desc: None,
        }
        .into(),
    );
    m.payloads.push(xeps::file_metadata(&xeps::FileMeta {
        name: Some(name.into()),
        size: Some(42),
        media_type: Some("image/png".into()),
        sha256: Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into()),
    }));
    m
}

#[test]
fn an_incoming_file_is_stored_to_fetch_with_a_safe_name_and_a_plain_http_link_is_refused() {
    let mut pair = Pair::new(Server::new());
    online(&mut pair);
    pair.server.send(Stanza::Message(file_from_bob(
        "f1",
        "https://localhost/share/a/cat.png",
        "../../.bashrc\n",
    )));
    pair.server.send(Stanza::Message(file_from_bob(
        "f2",
        "http://example.org/cat.png",
        "cat.png",
    )));
    pair.run();
    let rows = pair.store.page(pair.account_id(), BOB, None, 10).unwrap();
    let f1 = rows[0].file.as_ref().unwrap();
    assert_eq!(f1.transfer, "remote");
    assert_eq!(
        f1.name, "_.._.bashrc_",
        "no separators, no leading dots, no controls"
    );
    assert_eq!(f1.size, Some(42));
    let downloads = pair.store.downloads(pair.account_id()).unwrap();
    assert_eq!(downloads.len(), 1, "only the HTTPS one is fetched");
    assert_eq!(downloads[0].sha256.as_deref().map(str::len), Some(64));
    let f2 = rows[1].file.as_ref().unwrap();
    assert_eq!(f2.transfer, "failed");
    assert!(f2.error.as_deref().unwrap().contains("HTTPS"));
    assert_eq!(pair.error_events("security").len(), 1);
    assert_eq!(
        rows[1].body, "http://example.org/cat.png",
        "the text is kept"
    );
}
