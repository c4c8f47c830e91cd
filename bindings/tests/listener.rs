//! The FFI layer's own plumbing, without a server: the listener thread, typed errors, close().
//! (Everything against a real server runs through the generated bindings: tests/tests/ffi.rs.)

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tether_ffi::*;

struct Collect {
    tx: Mutex<mpsc::Sender<(TetherEvent, Option<String>)>>,
    /// Set to call close() from inside the listener on the first event.
    close_from_inside: Mutex<Option<Arc<TetherClient>>>,
}

impl EventListener for Collect {
    fn on_event(&self, event: TetherEvent) {
        let thread = std::thread::current().name().map(str::to_owned);
        self.tx.lock().unwrap().send((event, thread)).unwrap();
        if let Some(client) = self.close_from_inside.lock().unwrap().take() {
            client.close();
        }
    }
}

fn account(dir: &tempfile::TempDir) -> String {
    let db = dir.path().join("a.db").to_str().unwrap().to_owned();
    add_account(
        db.clone(),
        AccountSettings {
            jid: "alice@localhost".into(),
            password: "secret".into(),
            server: Some("127.0.0.1:9".into()),
            ca_file: None,
            insecure_plaintext_for_tests: false,
            direct_tls: false,
        },
    )
    .unwrap();
    db
}

fn listen(
    client: &Arc<TetherClient>,
) -> (Arc<Collect>, mpsc::Receiver<(TetherEvent, Option<String>)>) {
    let (tx, rx) = mpsc::channel();
    let l = Arc::new(Collect {
        tx: Mutex::new(tx),
        close_from_inside: Mutex::new(None),
    });
    client.set_listener(l.clone());
    (l, rx)
}

#[test]
fn events_come_on_the_listener_thread_and_close_says_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let client = TetherClient::open(account(&dir), ClientOptions::default()).unwrap();
    let (_l, rx) = listen(&client);
    let id = client.send("bob@localhost".into(), "hi".into()).unwrap();
    let (event, thread) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(thread.as_deref(), Some(LISTENER_THREAD));
    match event {
        TetherEvent::MessageState {
            name,
            id: got,
            state,
            ..
        } => {
            assert_eq!(
                (name.as_str(), got.as_str(), state),
                ("message:sent", id.as_str(), DeliveryState::Queued)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    client.close();
    let (event, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(event, TetherEvent::Stopped { error: None });
    // Closed for good, and said so with a typed error; queries still work.
    assert!(matches!(client.connect(), Err(TetherError::Closed { .. })));
    assert_eq!(client.pending_count().unwrap(), 1);
}

#[test]
fn typed_errors_for_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.db").to_str().unwrap().to_owned();
    assert!(matches!(
        TetherClient::open(missing, ClientOptions::default()),
        Err(TetherError::Database { .. })
    ));
    let client = TetherClient::open(account(&dir), ClientOptions::default()).unwrap();
    assert!(matches!(
        client.send("bob@@localhost".into(), "x".into()),
        Err(TetherError::Usage { .. })
    ));
    assert!(matches!(
        client.join_room("room@conference.localhost".into(), String::new()),
        Err(TetherError::Usage { .. })
    ));
    assert_eq!(client.pending_count().unwrap(), 0);
}

#[test]
fn the_listener_may_close_the_client_from_inside() {
    let dir = tempfile::tempdir().unwrap();
    let client = TetherClient::open(account(&dir), ClientOptions::default()).unwrap();
    let (l, rx) = listen(&client);
    *l.close_from_inside.lock().unwrap() = Some(client.clone());
    client.send("bob@localhost".into(), "hi".into()).unwrap();
    // The first event closes the client from the listener thread; Stopped still arrives.
    let mut saw_stopped = false;
    while let Ok((event, _)) = rx.recv_timeout(Duration::from_secs(10)) {
        if event == (TetherEvent::Stopped { error: None }) {
            saw_stopped = true;
            break;
        }
    }
    assert!(
        saw_stopped,
        "no Stopped after close() from inside the listener"
    );
}

#[test]
fn search_finds_what_was_written_offline_and_refuses_an_empty_query() {
    let dir = tempfile::tempdir().unwrap();
    let client = TetherClient::open(account(&dir), ClientOptions::default()).unwrap();
    let first = client
        .send("bob@localhost".into(), "picnic on saturday".into())
        .unwrap();
    let second = client
        .send("carol@localhost".into(), "the picnic basket".into())
        .unwrap();
    let hits = client.search("picn".into(), None, None, 50).unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.message.id.as_str()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    let only_bob = client
        .search("picnic".into(), Some("bob@localhost".into()), None, 50)
        .unwrap();
    assert_eq!(only_bob.len(), 1);
    let next = client
        .search("picnic".into(), None, Some(hits[0].cursor), 50)
        .unwrap();
    assert_eq!(next[0].message.id, first);
    assert!(matches!(
        client.search("   ".into(), None, None, 50),
        Err(TetherError::Usage { .. })
    ));
    client.close();
}
