//! Several accounts in one store and one app: the [`Inbox`].
//!
//! A store holds any number of accounts; every row in it belongs to one (`account_id`), so each
//! account keeps its own queue, stream state, archive position and stream lock, and the
//! delivery rules apply to each exactly as they do to a store with one account. The inbox opens
//! a [`Client`] per account, runs one session per enabled account side by side, tags each
//! client's events with its account, and answers the questions that span accounts: which
//! accounts there are and how each is connected, and the unified conversation list.
//!
//! One account failing (a wrong password, a server that is down, a refused certificate) ends or
//! delays that account's session only: each session is its own task, and its final error
//! becomes that account's [`AccountEvent`], never another's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use ts_rs::TS;

use crate::client::{Client, ClientConfig};
use crate::error::{Error, Result};
use crate::events::{ConnState, Event, SocialEvent};
use crate::shared::Integrity;
use crate::store::{Conversation, NewAccount, Store, StoreOptions, StreamLock};

/// One event of one account: the account's bare JID beside the client's event, flattened
/// (`{"account":"alice@example.org","event":"message:acked",...}`).
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct AccountEvent {
    /// The account's bare JID.
    pub account: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// An account as the account list shows it.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct AccountStatus {
    /// The bare JID.
    pub jid: String,
    /// Whether it connects (a disabled account keeps its history and queue).
    pub enabled: bool,
    /// Its last connection event, `None` while it has not run.
    pub connection: Option<Event>,
    /// Its session's final error, if it ended with one (a wrong password, a refused
    /// certificate): it stays until the account is started again.
    pub stopped: Option<String>,
}

/// A row of the unified conversation list: a conversation and the account it belongs to.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct InboxConversation {
    /// The account's bare JID.
    pub account: String,
    /// The conversation.
    #[serde(flatten)]
    pub conversation: Conversation,
}

/// Every account of one store: see the module's documentation.
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The clients' configuration: the config given, without a poller of their own.
    config: ClientConfig,
    /// How often the one poller looks for another process's commits (the config's
    /// [`ClientConfig::outbox_poll`]).
    poll_every: Option<Duration>,
    poller: std::sync::atomic::AtomicBool,
    /// A connection of the inbox's own, for the account rows and the unified list.
    store: Mutex<Store>,
    /// The one integrity check of the file, shared by every client (started with the first).
    integrity: std::sync::OnceLock<Arc<Integrity>>,
    clients: Mutex<BTreeMap<String, Client>>,
    /// The sessions this inbox runs, by account.
    running: Mutex<BTreeMap<String, tokio::task::JoinHandle<()>>>,
    /// Final errors by account.
    stopped: Mutex<BTreeMap<String, Error>>,
    /// How many sessions are running.
    live: tokio::sync::watch::Sender<usize>,
    events: broadcast::Sender<AccountEvent>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    /// Opens the store at `path`, creating an empty one (no accounts yet) if there is none.
    /// Does not connect: [`Inbox::run`] or [`Inbox::start`] do.
    pub fn open(path: impl AsRef<Path>, config: ClientConfig) -> Result<Inbox> {
        let store = Store::open(
            path.as_ref(),
            &StoreOptions {
                create: true,
                check_integrity: false,
                ..StoreOptions::default()
            },
        )?;
        let path = store.path().to_path_buf();
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        let poll_every = config.outbox_poll;
        // One poller for the whole store instead of one per session: a session wakes when the
        // file changed, not five times a second each.
        let config = ClientConfig {
            outbox_poll: None,
            ..config
        };
        Ok(Inbox {
            inner: Arc::new(Inner {
                poll_every,
                poller: std::sync::atomic::AtomicBool::new(false),
                integrity: std::sync::OnceLock::new(),
                path,
                config,
                store: Mutex::new(store),
                clients: Mutex::new(BTreeMap::new()),
                running: Mutex::new(BTreeMap::new()),
                stopped: Mutex::new(BTreeMap::new()),
                live: tokio::sync::watch::channel(0).0,
                events,
            }),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Every account, in the order they were added, with its connection state.
    pub fn accounts(&self) -> Result<Vec<AccountStatus>> {
        let accounts = lock(&self.inner.store).accounts()?;
        let clients = lock(&self.inner.clients);
        let stopped = lock(&self.inner.stopped);
        Ok(accounts
            .into_iter()
            .map(|a| AccountStatus {
                connection: clients.get(&a.jid).and_then(Client::connection),
                stopped: stopped.get(&a.jid).map(|e| e.to_string()),
                jid: a.jid,
                enabled: a.enabled,
            })
            .collect())
    }

    /// Adds an account (checked like [`Client::add_account`]) and returns its client. It does
    /// not connect until [`Inbox::start`] (or [`Inbox::run`]).
    pub fn add_account(&self, new: &NewAccount) -> Result<Client> {
        let account = {
            let mut store = lock(&self.inner.store);
            store.add_account(&crate::connection::checked_account(new)?)?
        };
        self.client(&account.jid)
    }

    /// Creates the account `new` on its server (XEP-0077 in-band registration; with an
    /// invitation link, XEP-0401, its token first) and then adds it here, as
    /// [`Inbox::add_account`] does. Nothing is stored unless the server created the account; a
    /// refusal says what to change ([`crate::register::RegistrationError`]).
    pub async fn register_account(&self, new: &NewAccount, invite: Option<&str>) -> Result<Client> {
        let new = crate::connection::checked_account(new)?;
        if lock(&self.inner.store)
            .accounts()?
            .iter()
            .any(|a| a.jid == new.jid)
        {
            return Err(crate::store::StoreError::AccountExists(new.jid).into());
        }
        let invite = invite
            .filter(|l| !l.trim().is_empty())
            .map(crate::register::Invite::parse)
            .transpose()
            .map_err(Error::Usage)?;
        crate::connection::register::register(&new, invite.as_ref()).await?;
        self.add_account(&new)
    }

    /// The client of account `jid` (opened once, then shared).
    pub fn client(&self, jid: &str) -> Result<Client> {
        if let Some(c) = lock(&self.inner.clients).get(jid) {
            return Ok(c.clone());
        }
        let client = Client::open_in(
            &self.inner.path,
            Some(jid),
            self.inner.config.clone(),
            Some(
                self.inner
                    .integrity
                    .get_or_init(|| Integrity::start(self.inner.path.clone()))
                    .clone(),
            ),
        )?;
        Ok(lock(&self.inner.clients)
            .entry(jid.to_owned())
            .or_insert(client)
            .clone())
    }

    /// The unified conversation list: every account's conversations, the newest first (by the
    /// time their newest message was sent), each with its account.
    pub fn conversations(&self) -> Result<Vec<InboxConversation>> {
        let store = lock(&self.inner.store);
        let mut all = Vec::new();
        for account in store.accounts()? {
            all.extend(
                store
                    .conversations(account.id)?
                    .into_iter()
                    .map(|conversation| InboxConversation {
                        account: account.jid.clone(),
                        conversation,
                    }),
            );
        }
        all.sort_by_key(|c| std::cmp::Reverse(c.conversation.last_at));
        Ok(all)
    }

    /// Every account's events, tagged with the account, from the sessions this inbox runs.
    pub fn subscribe(&self) -> broadcast::Receiver<AccountEvent> {
        self.inner.events.subscribe()
    }

    /// Enables or disables account `jid`. Disabling ends its session (cleanly: what is in flight
    /// stays queued for when it is enabled again); enabling starts it if this inbox is running
    /// (call it within a tokio runtime then).
    pub fn set_enabled(&self, jid: &str, enabled: bool) -> Result<()> {
        let account = {
            let mut store = lock(&self.inner.store);
            let account = store.account_by_jid(jid)?;
            store.set_account_enabled(account.id, enabled)?;
            account
        };
        if enabled {
            if tokio::runtime::Handle::try_current().is_ok() {
                self.start(&account.jid)?;
            }
        } else if let Some(c) = lock(&self.inner.clients).get(jid) {
            c.shutdown();
        }
        Ok(())
    }

    /// Removes account `jid` and everything it holds (its history, queue, files no other account
    /// has, stream state), after ending its session. Refused while another process drives its
    /// stream (`tether run` in a terminal, a push extension).
    pub async fn remove_account(&self, jid: &str) -> Result<()> {
        let account = lock(&self.inner.store).account_by_jid(jid)?;
        if let Some(c) = lock(&self.inner.clients).get(jid) {
            c.shutdown();
        }
        let handle = lock(&self.inner.running).remove(jid);
        if let Some(handle) = handle {
            if tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .is_err()
            {
                return Err(Error::Usage(format!(
                    "{jid}'s session did not end within 30 s: try again"
                )));
            }
        }
        let Some(_lock) = StreamLock::try_take(&self.inner.path, account.id)? else {
            return Err(Error::Usage(format!(
                "another process drives {jid}'s stream (a `tether run`?): stop it first"
            )));
        };
        let orphans = lock(&self.inner.store).remove_account(account.id)?;
        lock(&self.inner.clients).remove(jid);
        lock(&self.inner.stopped).remove(jid);
        let blobs = crate::store::Blobs::for_db(&self.inner.path);
        for sha in orphans {
            if let Err(e) = std::fs::remove_file(blobs.path(&sha)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("{jid} is removed, but its file {sha} could not be: {e}");
                }
            }
        }
        // The lock file was held above and is released now; a file left behind takes no room to
        // speak of and locks nothing, so failing to delete it is said, not fatal.
        if let Err(e) = std::fs::remove_file(StreamLock::path_for(&self.inner.path, account.id)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("{jid} is removed, but its lock file could not be: {e}");
            }
        }
        Ok(())
    }

    /// Starts the store's one poller (once): it looks at the file's `data_version` every
    /// `poll_every` and, when another process (`tether send`, a push extension) committed,
    /// wakes every session to look at its outbox. What the sessions commit themselves moves it
    /// too; a session then finds nothing new, at the cost of a query.
    fn start_poller(&self) {
        use std::sync::atomic::Ordering;
        let Some(every) = self.inner.poll_every else {
            return;
        };
        if self.inner.poller.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last = None;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let version = match lock(&inner.store).data_version() {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!("the store's poller cannot read it: {e}");
                        continue;
                    }
                };
                if last.is_some_and(|l| l != version) {
                    for c in lock(&inner.clients).values() {
                        c.poke_outbox();
                    }
                }
                last = Some(version);
            }
        });
    }

    /// Starts account `jid`'s session (if it is enabled and not running already): a task of
    /// its own that forwards its events, tagged, and turns its final error into an
    /// [`AccountEvent`] of that account. Call it within a tokio runtime.
    pub fn start(&self, jid: &str) -> Result<()> {
        let client = self.client(jid)?;
        self.start_poller();
        if !lock(&self.inner.store).account_by_jid(jid)?.enabled {
            return Ok(());
        }
        let mut running = lock(&self.inner.running);
        if running.get(jid).is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        lock(&self.inner.stopped).remove(jid);
        let mut events = client.subscribe();
        let tx = self.inner.events.clone();
        let account = jid.to_owned();
        let forward =
            tokio::spawn(async move { while forward_one(events.recv().await, &account, &tx) {} });
        let inner = self.inner.clone();
        let account = jid.to_owned();
        self.inner.live.send_modify(|n| *n += 1);
        running.insert(
            jid.to_owned(),
            tokio::spawn(async move {
                // A fresh run shuts down only when told to from now on.
                client.clear_shutdown();
                let result = client.run().await;
                // Let the forwarder pass on what the session said last.
                tokio::task::yield_now().await;
                forward.abort();
                if let Err(e) = result {
                    tracing::warn!("{account}: {e}");
                    for event in [
                        Event::error(e.kind(), e.to_string()),
                        Event::connection(ConnState::Offline, None, Some(e.to_string()), None),
                    ] {
                        // As above: nobody listening is not an error.
                        let _ = inner.events.send(AccountEvent {
                            account: account.clone(),
                            event,
                        });
                    }
                    lock(&inner.stopped).insert(account.clone(), e);
                }
                inner.live.send_modify(|n| *n -= 1);
            }),
        );
        Ok(())
    }

    /// Runs every enabled account side by side until each session has ended (by
    /// [`Inbox::shutdown`], a final error, or, with `exit_when_idle`, once nothing is pending).
    /// Returns each account's final error (taken: [`AccountStatus::stopped`] no longer shows
    /// it); one account's error never stops another.
    pub async fn run(&self, exit_when_idle: bool) -> Result<Vec<(String, Option<Error>)>> {
        let accounts = lock(&self.inner.store).accounts()?;
        let enabled: Vec<String> = accounts
            .into_iter()
            .filter(|a| a.enabled)
            .map(|a| a.jid)
            .collect();
        if enabled.is_empty() {
            return Err(Error::Usage(
                "no enabled account in this store (tether account list shows them)".into(),
            ));
        }
        for jid in &enabled {
            self.client(jid)?.set_exit_when_idle(exit_when_idle);
            self.start(jid)?;
        }
        let mut live = self.inner.live.subscribe();
        if live.wait_for(|n| *n == 0).await.is_err() {
            return Err(Error::Internal("the inbox's session count is gone".into()));
        }
        let mut stopped = lock(&self.inner.stopped);
        Ok(enabled
            .into_iter()
            .map(|jid| {
                let e = stopped.remove(&jid);
                (jid, e)
            })
            .collect())
    }

    /// Ends every session (each as [`Client::shutdown`] does).
    pub fn shutdown(&self) {
        for c in lock(&self.inner.clients).values() {
            c.shutdown();
        }
    }
}

/// Passes one of `account`'s events on to the inbox's listeners, tagged; events the forwarder
/// missed (it fell behind) become an `events:missed` event, so the front ends read the account
/// again. Returns `false` once the account's channel is closed.
fn forward_one(
    received: std::result::Result<Event, broadcast::error::RecvError>,
    account: &str,
    tx: &broadcast::Sender<AccountEvent>,
) -> bool {
    let event = match received {
        Ok(event) => event,
        Err(broadcast::error::RecvError::Lagged(n)) => {
            tracing::warn!("{account}: {n} events missed (the store has every state)");
            Event::Social(SocialEvent::EventsMissed { count: n })
        }
        Err(broadcast::error::RecvError::Closed) => return false,
    };
    // No receiver (no front end listening) is not an error: events are notifications, and the
    // store has every state.
    let _ = tx.send(AccountEvent {
        account: account.to_owned(),
        event,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{InboundMessage, StoreError};

    /// An account's events are passed on tagged; missed ones are said, not only logged.
    #[test]
    fn a_forwarder_that_fell_behind_says_so_to_the_front_ends() {
        let (tx, mut rx) = broadcast::channel(8);
        assert!(forward_one(
            Ok(Event::connection(ConnState::Online, None, None, None)),
            "a@localhost",
            &tx
        ));
        assert!(forward_one(
            Err(broadcast::error::RecvError::Lagged(7)),
            "a@localhost",
            &tx
        ));
        assert!(!forward_one(
            Err(broadcast::error::RecvError::Closed),
            "a@localhost",
            &tx
        ));
        let first = rx.try_recv().unwrap();
        assert_eq!(first.account, "a@localhost");
        let missed = rx.try_recv().unwrap();
        assert_eq!(missed.account, "a@localhost");
        assert_eq!(
            serde_json::to_value(&missed).unwrap(),
            serde_json::json!({"account": "a@localhost", "event": "events:missed", "count": 7})
        );
        assert!(rx.try_recv().is_err(), "nothing for the closed channel");
    }

    fn account(jid: &str) -> NewAccount {
        NewAccount {
            jid: jid.into(),
            password: "pw".into(),
            server: Some("127.0.0.1:1".into()),
            ca_file: None,
            insecure_plaintext: false,
            direct_tls: false,
        }
    }

    fn inbound(peer: &str, id: &str, at: i64) -> InboundMessage {
        InboundMessage {
            direction: crate::delivery::Direction::In,
            kind: "chat",
            from_nick: None,
            receipt_to: None,
            id: Some(id.into()),
            origin_id: None,
            stanza_id: None,
            peer: peer.into(),
            body: format!("{id} from {peer}"),
            server_ts: Some(at),
            action: None,
            target: None,
            reactions: vec![],
            file: None,
            invite: None,
        }
    }

    /// Two accounts in one store: each client sees only its own rows, a store with two is not
    /// opened without saying which, the same JID is not added twice, and the unified list has
    /// both accounts' conversations ordered by when their newest message was sent (not by when
    /// it was committed here).
    #[test]
    fn two_accounts_keep_their_rows_apart_and_the_list_is_unified_by_sent_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let inbox = Inbox::open(&path, ClientConfig::default()).unwrap();
        assert!(inbox.accounts().unwrap().is_empty());
        let alice = inbox.add_account(&account("alice@a.example")).unwrap();
        let carol = inbox.add_account(&account("Carol@c.example")).unwrap();
        assert_eq!(carol.account().jid, "carol@c.example", "normalised");
        assert!(matches!(
            inbox.add_account(&account("alice@a.example")),
            Err(Error::Store(StoreError::AccountExists(_)))
        ));
        assert!(matches!(
            inbox.add_account(&account("no-user-part")),
            Err(Error::Usage(_))
        ));
        match Client::open(&path, ClientConfig::default()) {
            Err(Error::Store(StoreError::WhichAccount(jids))) => {
                assert_eq!(jids, ["alice@a.example", "carol@c.example"])
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a store of two accounts without a choice"),
        }
        assert!(matches!(
            Client::open_account(&path, "dave@d.example", ClientConfig::default()),
            Err(Error::Store(StoreError::UnknownAccount(_)))
        ));

        alice.send("bob@b.example", "from alice").unwrap();
        carol.send("bob@b.example", "from carol").unwrap();
        {
            // An archive message sent long ago, committed after carol's: sorted by its time.
            let mut store = Store::open(&path, &StoreOptions::default()).unwrap();
            store
                .store_inbound(
                    alice.account().id,
                    &inbound("old@o.example", "x1", 1_000),
                    None,
                )
                .unwrap();
        }
        let mine = |c: &Client| {
            c.messages(&crate::store::MessageFilter::default())
                .unwrap()
                .into_iter()
                .map(|m| m.body)
                .collect::<Vec<_>>()
        };
        assert_eq!(mine(&alice), ["from alice", "x1 from old@o.example"]);
        assert_eq!(mine(&carol), ["from carol"]);

        let list: Vec<(String, String)> = inbox
            .conversations()
            .unwrap()
            .into_iter()
            .map(|c| (c.account, c.conversation.peer))
            .collect();
        assert_eq!(
            list,
            [
                ("carol@c.example".to_string(), "bob@b.example".to_string()),
                ("alice@a.example".to_string(), "bob@b.example".to_string()),
                ("alice@a.example".to_string(), "old@o.example".to_string()),
            ]
        );
        let json = serde_json::to_value(&inbox.conversations().unwrap()[0]).unwrap();
        assert_eq!(json["account"], "carol@c.example");
        assert_eq!(json["peer"], "bob@b.example", "flattened: {json}");
    }

    /// Removing an account takes its rows and the files only it had, and nothing of another
    /// account's; it is refused while another process drives its stream.
    #[tokio::test]
    async fn removing_an_account_takes_only_its_rows_and_unshared_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let inbox = Inbox::open(&path, ClientConfig::default()).unwrap();
        let alice = inbox.add_account(&account("alice@a.example")).unwrap();
        let carol = inbox.add_account(&account("carol@c.example")).unwrap();
        let shared = dir.path().join("shared.txt");
        let own = dir.path().join("own.txt");
        std::fs::write(&shared, b"both have this").unwrap();
        std::fs::write(&own, b"only alice has this").unwrap();
        alice.send_file("bob@b.example", &shared).unwrap();
        alice.send_file("bob@b.example", &own).unwrap();
        alice.send("bob@b.example", "text").unwrap();
        alice.block("spam@s.example").unwrap();
        carol.send_file("bob@b.example", &shared).unwrap();
        let blobs = crate::store::Blobs::for_db(&path);
        let hash = |p: &Path| {
            use sha2::Digest;
            crate::store::blobs::hex(&sha2::Sha256::digest(std::fs::read(p).unwrap()))
        };
        assert!(blobs.has(&hash(&shared)) && blobs.has(&hash(&own)));

        let held = StreamLock::try_take(&path, alice.account().id)
            .unwrap()
            .unwrap();
        let e = inbox.remove_account("alice@a.example").await.unwrap_err();
        assert!(e.to_string().contains("another process"), "{e}");
        assert_eq!(alice.messages(&Default::default()).unwrap().len(), 3);
        drop(held);

        inbox.remove_account("alice@a.example").await.unwrap();
        let jids: Vec<String> = inbox
            .accounts()
            .unwrap()
            .into_iter()
            .map(|a| a.jid)
            .collect();
        assert_eq!(jids, ["carol@c.example"]);
        assert!(blobs.has(&hash(&shared)), "carol's file stays");
        assert!(!blobs.has(&hash(&own)), "alice's own file goes");
        let left: i64 = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT (SELECT count(*) FROM messages WHERE account_id = ?1)
                      + (SELECT count(*) FROM attachments WHERE account_id = ?1)
                      + (SELECT count(*) FROM blocklist WHERE account_id = ?1)",
                [alice.account().id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(carol.messages(&Default::default()).unwrap().len(), 1);
        // The one account left is the store's only one again.
        assert_eq!(
            Client::open(&path, ClientConfig::default())
                .unwrap()
                .account()
                .jid,
            "carol@c.example"
        );
        assert!(matches!(
            inbox.remove_account("alice@a.example").await,
            Err(Error::Store(StoreError::UnknownAccount(_)))
        ));
    }

    /// A disabled account does not run, and keeps what it queued; a store with no enabled
    /// account says so instead of running nothing forever. A session that ends with a final
    /// error is that account's event, and the other account's session goes on.
    #[tokio::test]
    async fn a_disabled_account_does_not_run_and_a_failing_one_ends_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let inbox = Inbox::open(&path, ClientConfig::default()).unwrap();
        let alice = inbox.add_account(&account("alice@a.example")).unwrap();
        inbox.add_account(&account("carol@c.example")).unwrap();
        alice.send("bob@b.example", "kept").unwrap();
        inbox.set_enabled("alice@a.example", false).unwrap();
        inbox.set_enabled("carol@c.example", false).unwrap();
        assert!(matches!(inbox.run(false).await, Err(Error::Usage(_))));
        assert!(inbox.accounts().unwrap().iter().all(|a| !a.enabled));
        assert_eq!(alice.pending_count().unwrap(), 1);

        // carol gets a listener that accepts and says nothing: her session keeps trying. alice
        // gets a CA file that is not one: a final error at her first attempt.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        {
            let store = rusqlite::Connection::open(&path).unwrap();
            store
                .execute(
                    "UPDATE accounts SET server = ?1 WHERE jid = 'carol@c.example'",
                    [format!("127.0.0.1:{port}")],
                )
                .unwrap();
            let bad_ca = dir.path().join("not-a-ca.pem");
            std::fs::write(&bad_ca, "not a certificate").unwrap();
            store
                .execute(
                    "UPDATE accounts SET ca_file = ?1 WHERE jid = 'alice@a.example'",
                    [bad_ca.to_string_lossy()],
                )
                .unwrap();
        }
        let inbox = Inbox::open(&path, ClientConfig::default()).unwrap();
        inbox.set_enabled("alice@a.example", true).unwrap();
        inbox.set_enabled("carol@c.example", true).unwrap();
        let mut events = inbox.subscribe();
        let runner = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.run(false).await }
        });
        let accepted = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        // The session's final error comes as alice's last two events: the error, then offline
        // with no retry.
        let said = tokio::time::timeout(Duration::from_secs(20), async {
            let mut said = Vec::new();
            loop {
                let e = events.recv().await.unwrap();
                if e.account != "alice@a.example" {
                    continue;
                }
                let last = matches!(&e.event, Event::Connection(c)
                    if c.state == ConnState::Offline && c.retry_in_ms.is_none());
                said.push(e.event);
                if last {
                    break said;
                }
            }
        })
        .await
        .expect("alice's final error");
        assert!(
            matches!(&said[said.len() - 2], Event::Error(e) if e.message.contains("no certificate in CA file")),
            "{said:?}"
        );
        let _socket = tokio::time::timeout(Duration::from_secs(20), accepted)
            .await
            .expect("carol connects")
            .unwrap()
            .unwrap();
        let states = inbox.accounts().unwrap();
        assert!(states[0].stopped.is_some(), "{states:?}");
        assert!(states[1].stopped.is_none(), "{states:?}");
        assert!(!runner.is_finished(), "carol's session goes on");
        inbox.shutdown();
        let ended = tokio::time::timeout(Duration::from_secs(20), runner)
            .await
            .expect("ends")
            .unwrap()
            .unwrap();
        assert_eq!(ended[0].0, "alice@a.example");
        assert!(ended[0].1.is_some());
        assert!(
            ended[1].1.is_none(),
            "carol ended by the shutdown: {:?}",
            ended[1].1
        );
        assert_eq!(alice.pending_count().unwrap(), 1, "nothing lost");
    }
}
