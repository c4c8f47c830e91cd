//! The public API: one [`Client`] per account database, an event stream, and the calls every front end
//! (CLI, desktop, mobile bindings) makes. No front end holds a delivery rule: they all live here and in
//! the modules this drives.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};

use crate::error::{Error, Result};
use crate::events::Event;
use crate::sm::SmConfig;
use crate::store::{
    Account, MessageFilter, MessageRow, NewAccount, StateChange, Store, StoreOptions,
};

/// How the client connects and reconnects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Stream-management tunables.
    pub sm: SmConfig,
    /// First reconnect delay; doubles per failure (with jitter) up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Silence after which we ask the server for an ack (`<r/>`) to check the link.
    pub keepalive: Duration,
    /// Time the server has to answer that before the link counts as dead.
    pub dead_after: Duration,
    /// How often to look for messages committed by another process.
    pub outbox_poll: Duration,
    /// How far back the first archive sync of an archive reaches.
    pub mam_first_sync: Duration,
    /// How many events a subscriber may fall behind before it is told it missed some (and should
    /// reload from the store). Bounds the event stream's memory.
    pub event_buffer: usize,
    /// The most the server may send without completing an element (a stanza or nonza), in bytes.
    /// More ends the stream (an error event; the client reconnects with backoff) instead of
    /// buffering without bound.
    pub max_stanza_bytes: usize,
}

/// Default of [`ClientConfig::max_stanza_bytes`]: 4 MiB, room for a large roster or vCard.
pub const MAX_STANZA_BYTES: usize = 4 << 20;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            sm: SmConfig::default(),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
            keepalive: Duration::from_secs(20),
            dead_after: Duration::from_secs(10),
            outbox_poll: Duration::from_millis(200),
            mam_first_sync: Duration::from_secs(7 * 24 * 3600),
            event_buffer: EVENT_BUFFER,
            max_stanza_bytes: MAX_STANZA_BYTES,
        }
    }
}

/// State shared by the API handle and the connection driver.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// Signalled when a group commit ends (see [`Shared::store`]).
    pub group_done: Condvar,
    pub account: Account,
    pub config: ClientConfig,
    pub events: broadcast::Sender<Event>,
    /// Woken when the outbox gains messages.
    pub outbox: Notify,
    /// Woken to skip the reconnect delay (the network changed).
    pub wake: Notify,
    /// Exit once nothing is pending (`run --until-idle`).
    pub exit_when_idle: AtomicBool,
    /// The app is in the background (CSI inactive wanted).
    pub inactive: AtomicBool,
    /// The last connection event, for front ends that subscribe late.
    pub connection: Mutex<Option<Event>>,
    /// The password when the front end keeps it outside the database (an OS keyring).
    pub password: Mutex<Option<String>>,
    pub shutdown: watch::Sender<bool>,
    /// The store's integrity check, run in the background from [`Client::open`].
    pub integrity: Arc<Integrity>,
}

/// The outcome of the background integrity check ([`Store::verify_file`]) that
/// [`Client::open`] starts. Reads do not wait for it; every write and every session does, so
/// nothing is written to, and nothing is acked into, a damaged file.
pub(crate) struct Integrity {
    path: PathBuf,
    /// `None` while the check runs; then `Ok`, or SQLite's report.
    outcome: Mutex<Option<std::result::Result<(), String>>>,
    done: Condvar,
}

impl Integrity {
    /// Starts the check on a thread of its own.
    fn start(path: PathBuf) -> Arc<Integrity> {
        let gate = Arc::new(Integrity {
            path,
            outcome: Mutex::new(None),
            done: Condvar::new(),
        });
        let worker = gate.clone();
        let spawned = std::thread::Builder::new()
            .name("tether-integrity".into())
            .spawn(move || worker.check());
        if let Err(e) = spawned {
            // No thread to spare: check here, before the client is handed out.
            tracing::warn!("no thread for the integrity check ({e}); checking before open returns");
            gate.check();
        }
        gate
    }

    /// Runs the check and records its verdict (SQLite's report when it fails).
    fn check(&self) {
        let outcome = Store::verify_file(&self.path).map_err(|e| match e {
            crate::store::StoreError::Corrupt { detail, .. } => detail,
            other => format!("the integrity check could not run: {other}"),
        });
        if let Err(detail) = &outcome {
            tracing::error!(path = %self.path.display(), %detail, "the store failed its integrity check");
        }
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.done.notify_all();
    }

    /// Blocks until the check is done; [`crate::store::StoreError::Corrupt`] if it failed.
    pub fn wait(&self) -> Result<()> {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        while outcome.is_none() {
            outcome = self.done.wait(outcome).unwrap_or_else(|p| p.into_inner());
        }
        match outcome.as_ref() {
            Some(Err(detail)) => Err(Error::Store(crate::store::StoreError::Corrupt {
                path: self.path.clone(),
                detail: detail.clone(),
            })),
            _ => Ok(()),
        }
    }
}

impl Shared {
    /// Locks the store. A poisoned lock means a panic mid-transaction; SQLite rolled it back, so the
    /// connection is still consistent and we keep using it.
    ///
    /// While the session has a group commit open (a burst of inbound stanzas in one transaction,
    /// [`Store::begin_group`]), other threads wait here until it ends: a message the app sends
    /// meanwhile must not join a transaction that may be rolled back, nor a reader see what is
    /// not yet committed. The session's thread itself goes through (the group never yields to the
    /// runtime, so it stays on one thread).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        let mut guard = self.store.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(owner) = guard.group_owner() {
            if owner == std::thread::current().id() {
                break;
            }
            guard = self
                .group_done
                .wait(guard)
                .unwrap_or_else(|p| p.into_inner());
        }
        guard
    }

    /// Commits the group commit this thread opened and lets other threads at the store again.
    /// An error when nothing of it was stored: the commit failed, or SQLite had already rolled
    /// it back (see [`Store::commit_group`]).
    pub fn commit_group(&self) -> Result<()> {
        let committed = self.store().commit_group();
        self.group_done.notify_all();
        match committed {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Store(crate::store::StoreError::Group(
                "SQLite rolled the transaction back",
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Rolls back the group commit this thread opened and lets other threads at the store again.
    pub fn rollback_group(&self) {
        self.store().rollback_group();
        self.group_done.notify_all();
    }

    /// The password to log in with: the front end's, else the one in the database.
    pub fn password(&self) -> Option<String> {
        let held = self
            .password
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        held.or_else(|| Some(self.account.password.clone()))
            .filter(|p| !p.is_empty())
    }

    /// Publishes one event. Having no subscriber is normal (a headless send), so a send error is
    /// not a failure: the store, not the event stream, is the record.
    pub fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        if matches!(event, Event::Connection(_)) {
            *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(event.clone());
        }
        let _no_subscriber_is_fine = self.events.send(event);
    }

    /// Publishes the events of state changes.
    pub fn emit_changes(&self, changes: &[StateChange]) {
        for c in changes {
            self.emit(Event::from_change(c));
        }
    }
}

/// A Tether client for one account database.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// Default capacity of the event channel ([`ClientConfig::event_buffer`]). Events are notifications; a subscriber that falls this far behind
/// is told how many it missed (and the store still has every state).
pub const EVENT_BUFFER: usize = 65_536;

impl Client {
    /// The state shared with the session (tests of the store lock).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Adds the account to a (new or empty) database at `path`. Does not connect.
    pub fn add_account(path: impl AsRef<Path>, account: &NewAccount) -> Result<Account> {
        let jid: tokio_xmpp::jid::BareJid = account
            .jid
            .parse()
            .map_err(|e| Error::Usage(format!("bad JID {:?}: {e}", account.jid)))?;
        if jid.node().is_none() {
            return Err(Error::Usage(format!("JID {jid} has no user part")));
        }
        if let Some(ca) = &account.ca_file {
            crate::connection::tls_config(Some(ca))?;
        }
        let mut store = Store::open(path, &StoreOptions::default())?;
        Ok(store.add_account(&NewAccount {
            jid: jid.to_string(),
            ..account.clone()
        })?)
    }

    /// Opens the account database at `path` (which must exist). Does not connect.
    ///
    /// A file that is not a Tether database, or one from a newer Tether, is refused here. SQLite's
    /// full integrity check reads every page, about a second for a 1,000,000-message store, so it
    /// runs in the background: reads (the conversation list, a page of history) are served at
    /// once, while every write and [`Client::run`] wait for it, and a damaged file is then refused
    /// with [`crate::store::StoreError::Corrupt`], untouched. [`Client::verify`] waits for it.
    pub fn open(path: impl AsRef<Path>, config: ClientConfig) -> Result<Client> {
        let store = Store::open(
            path.as_ref(),
            &StoreOptions {
                create: false,
                check_integrity: false,
                ..StoreOptions::default()
            },
        )?;
        let integrity = Integrity::start(store.path().to_path_buf());
        let account = store.account()?;
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        let (shutdown, _) = watch::channel(false);
        Ok(Client {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                group_done: Condvar::new(),
                account,
                config,
                events,
                outbox: Notify::new(),
                wake: Notify::new(),
                exit_when_idle: AtomicBool::new(false),
                inactive: AtomicBool::new(false),
                connection: Mutex::new(None),
                password: Mutex::new(None),
                shutdown,
                integrity,
            }),
        })
    }

    /// Waits for the store's integrity check (started by [`Client::open`]) and returns its
    /// verdict: [`crate::store::StoreError::Corrupt`] if the file is damaged.
    pub fn verify(&self) -> Result<()> {
        self.shared.integrity.wait()
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.shared.account
    }

    /// Gives the client the password when the front end keeps it outside the database (the
    /// desktop app's OS keyring). It is held in memory only.
    pub fn set_password(&self, password: String) {
        *self
            .shared
            .password
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(password);
        self.shared.wake.notify_one();
    }

    /// The last connection event (`None` before [`Client::run`] started).
    pub fn connection(&self) -> Option<Event> {
        self.shared
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Subscribes to events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Commits a message to `to` (state `queued`, event `message:sent`) and returns its id. It is
    /// written to the server as soon as a session allows; this works offline.
    pub fn send(&self, to: &str, body: &str) -> Result<String> {
        let mut ids = self.send_many(&[(to.to_owned(), body.to_owned())])?;
        Ok(ids.remove(0))
    }

    /// Commits many messages in one transaction, in order. Returns their ids.
    pub fn send_many(&self, messages: &[(String, String)]) -> Result<Vec<String>> {
        self.verify()?;
        let mut checked = Vec::with_capacity(messages.len());
        for (to, body) in messages {
            let to: tokio_xmpp::jid::BareJid = to
                .parse()
                .map_err(|e| Error::Usage(format!("bad recipient {to:?}: {e}")))?;
            checked.push((to.to_string(), body.clone()));
        }
        let changes = self
            .shared
            .store()
            .enqueue_many(self.shared.account.id, &checked)?;
        self.shared.emit_changes(&changes);
        self.shared.outbox.notify_one();
        Ok(changes.into_iter().map(|c| c.id).collect())
    }

    /// The user confirms resending failed messages: they are queued again with the same id and
    /// origin-id, so a receiver that already has one drops the duplicate.
    pub fn resend(&self, ids: &[String]) -> Result<()> {
        self.verify()?;
        let changes = self.shared.store().resend(self.shared.account.id, ids)?;
        self.shared.emit_changes(&changes);
        self.shared.outbox.notify_one();
        Ok(())
    }

    /// The user discards failed messages.
    pub fn discard(&self, ids: &[String]) -> Result<()> {
        self.verify()?;
        let changes = self.shared.store().discard(self.shared.account.id, ids)?;
        self.shared.emit_changes(&changes);
        Ok(())
    }

    /// Ids of every failed message, oldest first.
    pub fn failed_ids(&self) -> Result<Vec<String>> {
        Ok(self.shared.store().failed_ids(self.shared.account.id)?)
    }

    /// Messages matching `filter`.
    pub fn messages(&self, filter: &MessageFilter) -> Result<Vec<MessageRow>> {
        Ok(self
            .shared
            .store()
            .messages(self.shared.account.id, filter)?)
    }

    /// The conversation list, newest first.
    pub fn conversations(&self) -> Result<Vec<crate::store::Conversation>> {
        Ok(self.shared.store().conversations(self.shared.account.id)?)
    }

    /// A page of one conversation: up to `limit` messages before `before` (a `MessageRow::seq`, or
    /// `None` for the newest), oldest first.
    pub fn page(&self, peer: &str, before: Option<i64>, limit: usize) -> Result<Vec<MessageRow>> {
        let peer = bare(peer)?;
        Ok(self
            .shared
            .store()
            .page(self.shared.account.id, &peer, before, limit)?)
    }

    /// Outgoing messages still waiting for the server.
    pub fn pending_count(&self) -> Result<i64> {
        Ok(self.shared.store().pending_count(self.shared.account.id)?)
    }

    /// Connects and keeps the account online until [`Client::shutdown`], a final error (wrong
    /// password, untrusted certificate, broken store), or, with [`Client::set_exit_when_idle`],
    /// until nothing is pending.
    pub async fn run(&self) -> Result<()> {
        crate::connection::drive(self.shared.clone()).await
    }

    /// Exit [`Client::run`] once online and nothing is queued, sent, hibernated or retrying.
    pub fn set_exit_when_idle(&self, yes: bool) {
        self.shared.exit_when_idle.store(yes, Ordering::SeqCst);
        self.shared.outbox.notify_one();
    }

    /// The network changed (or the user pressed "retry now"): reconnect without waiting.
    pub fn network_changed(&self) {
        self.shared.wake.notify_one();
    }

    /// The app goes to the background: tell the server (CSI inactive) so it holds back what is not
    /// urgent. Every state is already on disk, so the process may be killed any time after.
    pub fn suspend(&self) {
        self.shared.inactive.store(true, Ordering::SeqCst);
        self.shared.outbox.notify_one();
    }

    /// [`Client::suspend`], then waits (at most `timeout`) until the server has been told: returns
    /// `true` once `<inactive/>` is flushed to the socket, or at once when there is no session to
    /// tell (the next session starts inactive). Also folds the write-ahead log into the database
    /// file, so that a mobile OS that kills the suspended app leaves one self-contained file.
    pub async fn suspend_flushed(&self, timeout: Duration) -> Result<bool> {
        let mut events = self.subscribe();
        let already = self.shared.inactive.load(Ordering::SeqCst);
        self.suspend();
        let told = if !self.is_online() {
            false
        } else if already {
            // The earlier call told (or is telling) the server.
            true
        } else {
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(e) if e == Event::csi(true) => return true,
                        Ok(Event::Connection(_)) if !self.is_online() => return false,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return false,
                    }
                }
            };
            tokio::time::timeout(timeout, wait).await.unwrap_or(false)
        };
        self.verify()?;
        self.shared.store().checkpoint()?;
        Ok(told)
    }

    /// Whether a session is up right now.
    pub fn is_online(&self) -> bool {
        matches!(
            self.connection(),
            Some(Event::Connection(crate::events::ConnectionEvent {
                state: crate::events::ConnState::Online,
                ..
            }))
        )
    }

    /// The app is in the foreground again (CSI active), and reconnects now if it was offline.
    pub fn resume(&self) {
        self.shared.inactive.store(false, Ordering::SeqCst);
        self.shared.outbox.notify_one();
        self.shared.wake.notify_one();
    }

    /// The user read the conversation with `peer` up to `up_to` (default: the newest incoming
    /// message): marks them displayed and sends a displayed marker. Returns (marked id, count).
    pub fn mark_read(&self, peer: &str, up_to: Option<&str>) -> Result<Option<(String, usize)>> {
        self.verify()?;
        let peer = bare(peer)?;
        let r = self
            .shared
            .store()
            .mark_read(self.shared.account.id, &peer, up_to)?;
        self.shared.outbox.notify_one();
        Ok(r)
    }

    /// Joins `room` as `nick` (persisted; rejoined on every new session).
    pub fn join_room(&self, room: &str, nick: &str) -> Result<()> {
        self.verify()?;
        let room = bare(room)?;
        if nick.is_empty() {
            return Err(Error::Usage("the nick is empty".into()));
        }
        self.shared
            .store()
            .join_room(self.shared.account.id, &room, nick)?;
        self.shared.outbox.notify_one();
        Ok(())
    }

    /// Leaves `room`.
    pub fn leave_room(&self, room: &str) -> Result<()> {
        self.verify()?;
        let room = bare(room)?;
        if !self
            .shared
            .store()
            .leave_room(self.shared.account.id, &room)?
        {
            return Err(Error::Usage(format!("not in room {room}")));
        }
        self.shared.outbox.notify_one();
        Ok(())
    }

    /// The rooms this account is in (or wants to be in).
    pub fn rooms(&self) -> Result<Vec<crate::store::Room>> {
        Ok(self.shared.store().rooms(self.shared.account.id)?)
    }

    /// The contact list.
    pub fn contacts(&self) -> Result<Vec<crate::store::Contact>> {
        Ok(self.shared.store().contacts(self.shared.account.id)?)
    }

    /// Pending incoming subscription requests.
    pub fn subscription_requests(&self) -> Result<Vec<String>> {
        Ok(self
            .shared
            .store()
            .subscription_requests(self.shared.account.id)?)
    }

    /// Asks `jid` to share its presence (adds it to the roster).
    pub fn request_subscription(&self, jid: &str) -> Result<()> {
        self.answer_subscription(jid, None)
    }

    /// Accepts (`true`, and asks back) or denies a subscription request from `jid`.
    pub fn answer_subscription_request(&self, jid: &str, accept: bool) -> Result<()> {
        self.answer_subscription(jid, Some(accept))
    }

    fn answer_subscription(&self, jid: &str, answer: Option<bool>) -> Result<()> {
        self.verify()?;
        let jid = bare(jid)?;
        self.shared
            .store()
            .subscription(self.shared.account.id, &jid, answer)?;
        self.shared.outbox.notify_one();
        Ok(())
    }

    /// Stops [`Client::run`]: closes the stream cleanly when nothing is in flight, otherwise drops
    /// it and keeps the SM state so the next run resumes.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

fn bare(jid: &str) -> Result<String> {
    let j: tokio_xmpp::jid::BareJid = jid
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID {jid:?}: {e}")))?;
    Ok(j.to_string())
}
