//! What the API handle ([`crate::Client`]) and the connection driver share: the store behind
//! one lock, the event channel, the app's wishes, and the background integrity check. Neither
//! imports the other; both import this.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch, Notify};

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::store::{Account, StateChange, Store};

/// State shared by the API handle and the connection driver.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub account: Account,
    pub config: ClientConfig,
    pub events: broadcast::Sender<Event>,
    /// Woken when the outbox gains messages.
    pub outbox: Notify,
    /// Woken to skip the reconnect delay (the network changed).
    pub wake: Notify,
    /// Woken when a file transfer may start (a slot was granted, a file arrived).
    pub transfers: Notify,
    /// Exit once nothing is pending (`run --until-idle`).
    pub exit_when_idle: AtomicBool,
    /// The app is in the background (CSI inactive wanted).
    pub inactive: AtomicBool,
    /// Check the link now with a short timeout (the network changed, the app came back).
    pub probe_now: AtomicBool,
    /// The app changed a wish the server keeps (push, the blocklist): tell the server.
    pub wishes_changed: AtomicBool,
    /// How many times the connection loop woke up (timers, reads, the app): what an idle
    /// session costs the battery ([`crate::Client::wakeups`]).
    pub wakeups: AtomicU64,
    /// Of those, the ones for a timer of its own (a keepalive probe, an ack request, the outbox
    /// poll): what wakes an idle phone ([`crate::Client::timer_wakeups`]).
    pub timer_wakeups: AtomicU64,
    /// The last connection event, for front ends that subscribe late.
    pub connection: Mutex<Option<Event>>,
    /// The password when the front end keeps it outside the database (an OS keyring).
    pub password: Mutex<Option<String>>,
    /// Where the FAST token's secret goes when the front end keeps secrets outside the database.
    pub vault: Mutex<Option<Arc<dyn crate::auth::SecretVault>>>,
    pub shutdown: watch::Sender<bool>,
    /// The store's integrity check, run in the background from [`Client::open`].
    pub integrity: Arc<Integrity>,
    /// Chat states the front end reported, for the driver to hand to the engine (never stored:
    /// dropped when they are older than [`CHAT_STATE_TTL`]).
    pub chat_states: Mutex<
        Vec<(
            tokio_xmpp::jid::BareJid,
            crate::chat_state::ChatState,
            std::time::Instant,
        )>,
    >,
}

/// How old a reported chat state may be and still go out (a stale "typing" is worse than none).
pub(crate) const CHAT_STATE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

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
    pub fn start(path: PathBuf) -> Arc<Integrity> {
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
    /// The session engine holds this lock for the whole of each of its calls, which is one
    /// transaction ([`crate::engine::Engine`]): a message the app sends meanwhile waits, so it
    /// never joins a transaction that may be rolled back, and no reader sees what is not yet
    /// committed.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The front end's vault for the FAST token, if it gave one.
    pub fn vault(&self) -> Option<Arc<dyn crate::auth::SecretVault>> {
        self.vault.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        // A slot granted, or a message with a file stored: the transfer worker has work.
        match &event {
            Event::Transfer(t) if t.event == "file:slot" => self.transfers.notify_one(),
            Event::Received(_) => self.transfers.notify_one(),
            _ => {}
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
