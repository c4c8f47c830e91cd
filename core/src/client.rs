//! The public API: one [`Client`] per account database, an event stream, and the calls every front end
//! (CLI, desktop, mobile bindings) makes. No front end holds a delivery rule: they all live here and in
//! the modules this drives.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch, Notify};

pub use crate::config::{ClientConfig, EVENT_BUFFER, MAX_STANZA_BYTES};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::shared::{Integrity, Shared};
use crate::store::{
    Account, BlockWant, MessageFilter, MessageRow, NewAccount, Reference, Store, StoreOptions,
};

/// A Tether client for one account of a store (the store may hold several: [`crate::Inbox`]).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// The state shared with the session (tests of the store lock).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    #[cfg(test)]
    pub(crate) fn shared_arc(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Adds the account to the store at `path` (created if missing; a store holds any number of
    /// accounts, each JID once). Does not connect.
    pub fn add_account(path: impl AsRef<Path>, account: &NewAccount) -> Result<Account> {
        let account = crate::connection::checked_account(account)?;
        let mut store = Store::open(path, &StoreOptions::default())?;
        Ok(store.add_account(&account)?)
    }

    /// Opens the store at `path` (which must exist) for its one account. A store with several
    /// accounts is refused with [`crate::store::StoreError::WhichAccount`]: name one with
    /// [`Client::open_account`]. Does not connect.
    ///
    /// A file that is not a Tether database, or one from a newer Tether, is refused here. SQLite's
    /// full integrity check reads every page, about a second for a 1,000,000-message store, so it
    /// runs in the background: reads (the conversation list, a page of history) are served at
    /// once, while every write and [`Client::run`] wait for it, and a damaged file is then refused
    /// with [`crate::store::StoreError::Corrupt`], untouched. [`Client::verify`] waits for it.
    pub fn open(path: impl AsRef<Path>, config: ClientConfig) -> Result<Client> {
        Self::open_in(path.as_ref(), None, config, None)
    }

    /// Opens the store at `path` for the account `jid` (a bare JID). Like [`Client::open`]
    /// otherwise; an account that is not there is
    /// [`crate::store::StoreError::UnknownAccount`].
    pub fn open_account(path: impl AsRef<Path>, jid: &str, config: ClientConfig) -> Result<Client> {
        Self::open_in(path.as_ref(), Some(jid), config, None)
    }

    /// Opens account `jid` (the only one when `None`), sharing `integrity` (the check of the
    /// file that an [`crate::Inbox`] runs once for all its clients) when given.
    pub(crate) fn open_in(
        path: &Path,
        jid: Option<&str>,
        config: ClientConfig,
        integrity: Option<Arc<Integrity>>,
    ) -> Result<Client> {
        let store = Store::open(
            path,
            &StoreOptions {
                create: false,
                check_integrity: false,
                ..StoreOptions::default()
            },
        )?;
        let account = match jid {
            Some(jid) => store.account_by_jid(jid)?,
            None => store.account()?,
        };
        let integrity = integrity.unwrap_or_else(|| Integrity::start(store.path().to_path_buf()));
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        let (shutdown, _) = watch::channel(false);
        Ok(Client {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                account,
                config,
                events,
                outbox: Notify::new(),
                wake: Notify::new(),
                transfers: Notify::new(),
                exit_when_idle: AtomicBool::new(false),
                inactive: AtomicBool::new(false),
                probe_now: AtomicBool::new(false),
                wishes_changed: AtomicBool::new(false),
                wakeups: std::sync::atomic::AtomicU64::new(0),
                timer_wakeups: std::sync::atomic::AtomicU64::new(0),
                connection: Mutex::new(None),
                password: Mutex::new(None),
                vault: Mutex::new(None),
                shutdown,
                integrity,
                chat_states: Mutex::new(Vec::new()),
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

    /// Keeps the FAST token's secret in `vault` (the front end's OS keyring) instead of the
    /// database: call it, like [`Client::set_password`], before [`Client::run`] when the password
    /// is kept outside the database. A secret already in the database moves to the vault at the
    /// next login that gives a token; until then it is used from where it is.
    pub fn set_secret_vault(&self, vault: std::sync::Arc<dyn crate::auth::SecretVault>) {
        *self.shared.vault.lock().unwrap_or_else(|p| p.into_inner()) = Some(vault);
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
        {
            let store = self.shared.store();
            for (to, _) in &checked {
                let jid: tokio_xmpp::jid::Jid = to.parse().expect("checked above");
                if store.is_blocked(self.shared.account.id, &jid)? {
                    return Err(Error::Usage(format!(
                        "{to} is blocked: unblock them to write to them"
                    )));
                }
            }
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

    /// One message by id (ours first, if an incoming one shares the id).
    pub fn message(&self, id: &str) -> Result<MessageRow> {
        Ok(self.shared.store().message(self.shared.account.id, id)?)
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

    /// Full-text search over this account's conversations (or one of them): the messages whose
    /// current text has every word of `text` (the last as a prefix), newest first, `limit` at a
    /// time; `before` is the last page's last [`crate::store::SearchHit::cursor`]. The words are
    /// never query syntax; an empty or oversized query is a [`crate::store::StoreError::Refused`].
    pub fn search(
        &self,
        text: &str,
        peer: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<crate::store::SearchHit>> {
        let peer = peer.map(bare).transpose()?;
        Ok(self.shared.store().search(&crate::store::SearchQuery {
            text: text.to_string(),
            account: Some(self.shared.account.id),
            peer,
            before,
            limit,
        })?)
    }

    /// Outgoing messages still waiting for the server.
    pub fn pending_count(&self) -> Result<i64> {
        Ok(self.shared.store().pending_count(self.shared.account.id)?)
    }

    /// Connects and keeps the account online until [`Client::shutdown`], a final error (wrong
    /// password, untrusted certificate, broken store), or, with [`Client::set_exit_when_idle`],
    /// until nothing is pending.
    pub async fn run(&self) -> Result<()> {
        // Files move beside the session: an upload needs no stream, and a stream no upload.
        let worker = tokio::spawn(crate::transfer::run(self.shared.clone()));
        let result =
            crate::connection::drive(self.shared.clone(), crate::connection::Mode::default()).await;
        worker.abort();
        result.map(|_| ())
    }

    /// A push arrived while the app is dead or suspended (an iOS Notification Service
    /// Extension, an Android push receiver, `tether wake`): within `deadline`, resume the
    /// persisted stream (or start a new session), take everything the server holds (its SM
    /// queue, offline messages, the archive), commit and ack it, send what is queued, and
    /// suspend, keeping the stream for the next process. Returns what arrived, per conversation
    /// (bodies only when `bodies`).
    ///
    /// Only one process drives the stream at a time (the store's [`crate::store::StreamLock`]): if
    /// the app holds it, this returns at once with [`crate::wake::WakeOutcome::Yielded`]; while
    /// this runs, an app that starts waits for it. If the deadline comes first, everything
    /// committed stays committed (and is acked), the rest is left for the next run; nothing is
    /// acked that is not committed. Files are not transferred here (the app does that).
    pub async fn wake(&self, deadline: Duration, bodies: bool) -> Result<crate::wake::WakeSummary> {
        use crate::wake::{WakeOutcome, WakeSummary};
        let started = Instant::now();
        let until = started + deadline;
        // Suspend a little before the deadline, so the ack is written in time.
        let margin = (deadline / 5).min(Duration::from_secs(2));
        let before = self.shared.store().last_key(self.shared.account.id)?;
        self.shared.probe_now.store(false, Ordering::SeqCst);
        // The driver hands the engine this wish on every turn: a wake ends when idle.
        self.shared.exit_when_idle.store(true, Ordering::SeqCst);
        let mode = crate::connection::Mode {
            yield_if_held: true,
            suspend: Some(Some(until - margin)),
        };
        let driven = tokio::time::timeout_at(
            until.into(),
            crate::connection::drive(self.shared.clone(), mode),
        )
        .await;
        let (outcome, error) = match driven {
            Ok(Ok(crate::connection::Driven::Yielded)) => (WakeOutcome::Yielded, None),
            Ok(Ok(crate::connection::Driven::Done)) if Instant::now() >= until - margin => {
                (WakeOutcome::Deadline, None)
            }
            Ok(Ok(crate::connection::Driven::Done)) => (WakeOutcome::Done, None),
            // No session in time (the login hung): what a session had committed stays.
            Err(_elapsed) => (
                WakeOutcome::Offline,
                Some(match self.connection() {
                    Some(Event::Connection(c)) => c
                        .reason
                        .unwrap_or_else(|| "no session before the deadline".into()),
                    _ => "no session before the deadline".into(),
                }),
            ),
            Ok(Err(e)) if e.is_retryable() => (WakeOutcome::Offline, Some(e.to_string())),
            Ok(Err(e)) => return Err(e),
        };
        let rows = self
            .shared
            .store()
            .received_after(self.shared.account.id, before)?;
        Ok(WakeSummary {
            outcome,
            new_messages: rows.len() as u64,
            conversations: crate::wake::conversations(&rows, bodies),
            error,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Push notifications (XEP-0357) to the app server `service` (a JID), on the `node` it
    /// provisioned for this device, with the `secret` it wants back. Kept in the store (the wish
    /// survives restarts) and told to the server now if online, and on every new session; the
    /// answer comes as a `push` event (`enabled` or `refused`).
    pub fn enable_push(&self, service: &str, node: &str, secret: Option<&str>) -> Result<()> {
        self.verify()?;
        let jid: tokio_xmpp::jid::Jid = service
            .parse()
            .map_err(|e| Error::Usage(format!("bad push service JID {service:?}: {e}")))?;
        if node.trim().is_empty() {
            return Err(Error::Usage("the push node is empty".into()));
        }
        self.shared.store().set_push(
            self.shared.account.id,
            jid.to_bare().as_str(),
            node,
            secret,
        )?;
        self.wishes_changed();
        Ok(())
    }

    /// Stops push notifications: kept in the store until the server confirmed it (a `push`
    /// event, `disabled`). Idempotent: `false` when push was not enabled.
    pub fn disable_push(&self) -> Result<bool> {
        self.verify()?;
        let had = self.shared.store().unset_push(self.shared.account.id)?;
        if had {
            self.wishes_changed();
        }
        Ok(had)
    }

    /// The push settings and what the server last said of them.
    pub fn push_settings(&self) -> Result<Option<crate::store::PushSettings>> {
        Ok(self.shared.store().push(self.shared.account.id)?)
    }

    /// Blocks `jid` (XEP-0191: a bare or full JID, or a domain): from now on nothing it sends
    /// is stored or shown, and nothing can be written to it. Kept in the store and told to the
    /// server now if online, else on the next session; the answer comes as a `blocking` event.
    pub fn block(&self, jid: &str) -> Result<()> {
        self.verify()?;
        let jid = block_entry(jid)?;
        if jid == self.shared.account.jid {
            return Err(Error::Usage("an account cannot block itself".into()));
        }
        self.shared
            .store()
            .set_block(self.shared.account.id, &[jid], BlockWant::Block)?;
        self.wishes_changed();
        Ok(())
    }

    /// Unblocks `jid`: what it sends is shown again (what it sent while blocked is gone: neither
    /// the server nor Tether kept it). Told like [`Client::block`]. `false` when it was not
    /// blocked (nothing to tell).
    pub fn unblock(&self, jid: &str) -> Result<bool> {
        self.verify()?;
        let jid = block_entry(jid)?;
        let mut store = self.shared.store();
        let known = store
            .blocklist(self.shared.account.id)?
            .iter()
            .any(|e| e.jid == jid && e.want == BlockWant::Block);
        if known {
            store.set_block(self.shared.account.id, &[jid], BlockWant::Unblock)?;
            drop(store);
            self.wishes_changed();
        }
        Ok(known)
    }

    /// The blocklist: every entry, with the user's wish and what the server said of it.
    pub fn blocklist(&self) -> Result<Vec<crate::store::BlockEntry>> {
        Ok(self.shared.store().blocklist(self.shared.account.id)?)
    }

    /// Sets (or with `None` removes) the user's nickname (XEP-0172): checked
    /// ([`crate::profile::check_name`]), shown on our own profile at once, and published now
    /// if online, else on the next session; it is kept until the server confirms it.
    pub fn set_nick(&self, nick: Option<&str>) -> Result<()> {
        self.verify()?;
        let nick = match nick {
            Some(n) => crate::profile::check_name(n, "nickname")
                .map_err(|r| Error::Usage(r.to_string()))?,
            None => None,
        };
        self.shared.store().wish_profile(
            self.shared.account.id,
            &self.shared.account.jid,
            &crate::store::ProfileWish::Nick(nick),
            None,
        )?;
        self.wishes_changed();
        Ok(())
    }

    /// Sets the user's avatar (XEP-0084) to `data`: it must be a PNG, JPEG, GIF or WebP image
    /// of at most [`crate::profile::OWN_AVATAR_MAX_BYTES`] (else a usage error says which, and
    /// nothing changes). Stored, shown at once and published like [`Client::set_nick`].
    /// Returns its SHA-1.
    pub fn set_avatar(&self, data: Vec<u8>) -> Result<String> {
        self.verify()?;
        let avatar =
            crate::profile::check_own_avatar(data).map_err(|r| Error::Usage(r.to_string()))?;
        self.shared.store().wish_profile(
            self.shared.account.id,
            &self.shared.account.jid,
            &crate::store::ProfileWish::Avatar(Some(avatar.sha1.clone())),
            Some(&avatar),
        )?;
        self.wishes_changed();
        Ok(avatar.sha1)
    }

    /// [`Client::set_avatar`] with the file at `path` (read whole only if it is within the
    /// cap).
    pub fn set_avatar_file(&self, path: &Path) -> Result<String> {
        let size = std::fs::metadata(path)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?
            .len();
        if size > crate::profile::OWN_AVATAR_MAX_BYTES as u64 {
            return Err(Error::Usage(
                crate::profile::Refusal::TooLarge {
                    size: size as usize,
                    max: crate::profile::OWN_AVATAR_MAX_BYTES,
                }
                .to_string(),
            ));
        }
        let data = std::fs::read(path)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
        self.set_avatar(data)
    }

    /// Removes the user's avatar (published like [`Client::set_nick`]).
    pub fn clear_avatar(&self) -> Result<()> {
        self.verify()?;
        self.shared.store().wish_profile(
            self.shared.account.id,
            &self.shared.account.jid,
            &crate::store::ProfileWish::Avatar(None),
            None,
        )?;
        self.wishes_changed();
        Ok(())
    }

    /// What `jid` (a bare JID; our own account's too) publishes of itself, as last heard.
    pub fn profile(&self, jid: &str) -> Result<Option<crate::store::Profile>> {
        Ok(self.shared.store().profile(self.shared.account.id, jid)?)
    }

    /// Every profile known to this account.
    pub fn profiles(&self) -> Result<Vec<crate::store::Profile>> {
        Ok(self.shared.store().profiles(self.shared.account.id)?)
    }

    /// An avatar's image type and bytes, by the SHA-1 a [`crate::store::Profile`] names.
    pub fn avatar(&self, sha1: &str) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self.shared.store().avatar(sha1)?)
    }

    /// Whether the user's own profile changes are all told to the server.
    pub fn profile_told(&self) -> Result<bool> {
        Ok(self
            .shared
            .store()
            .profile_wishes(self.shared.account.id)?
            .is_empty())
    }

    fn wishes_changed(&self) {
        self.shared.wishes_changed.store(true, Ordering::SeqCst);
        self.shared.outbox.notify_one();
    }

    /// How many times the connection loop woke up since [`Client::open`] (timers, reads, the
    /// app's calls): what an idle session costs the battery.
    pub fn wakeups(&self) -> u64 {
        self.shared.wakeups.load(Ordering::Relaxed)
    }

    /// Of [`Client::wakeups`], those for a timer of the client's own (a keepalive probe, an ack
    /// request, the outbox poll), rather than for the server or the app: what wakes an idle
    /// phone on its own.
    pub fn timer_wakeups(&self) -> u64 {
        self.shared.timer_wakeups.load(Ordering::Relaxed)
    }

    /// Sends the file at `path` to `to`: it is copied into the blob store (hashed, fsync'd) and
    /// the message committed with it before this returns, so nothing depends on the original
    /// any more. The upload (XEP-0363) is a durable job that survives a kill or a lost network;
    /// the message goes once the file is uploaded, with its URL and hash. Returns the id.
    pub fn send_file(&self, to: &str, path: &Path) -> Result<String> {
        self.verify()?;
        let to = bare(to)?;
        let name = path
            .file_name()
            .map(|n| crate::store::blobs::safe_name(&n.to_string_lossy()))
            .ok_or_else(|| Error::Usage(format!("{} is not a file", path.display())))?;
        if !path.is_file() {
            return Err(Error::Usage(format!("{} is not a file", path.display())));
        }
        let blobs = self.shared.store().blobs().clone();
        let stored = blobs
            .put_file(path)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
        let file = crate::store::NewFile {
            media_type: media_type(&name).to_owned(),
            name,
            size: stored.size,
            sha256: stored.sha256,
        };
        let change = self
            .shared
            .store()
            .enqueue_file(self.shared.account.id, &to, &file)?;
        self.shared.emit_changes(std::slice::from_ref(&change));
        self.shared.outbox.notify_one();
        Ok(change.id)
    }

    /// Exit [`Client::run`] once online and nothing is queued, sent, hibernated or retrying.
    pub fn set_exit_when_idle(&self, yes: bool) {
        self.shared.exit_when_idle.store(yes, Ordering::SeqCst);
        self.shared.outbox.notify_one();
    }

    /// The network changed (or the user pressed "retry now"): reconnect without waiting, and
    /// check a live link at once with a short timeout ([`ClientConfig::quick_probe`]), so one the
    /// change killed is found in seconds.
    pub fn network_changed(&self) {
        self.shared.probe_now.store(true, Ordering::SeqCst);
        self.shared.outbox.notify_one();
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
        self.shared.probe_now.store(true, Ordering::SeqCst);
        self.shared.inactive.store(false, Ordering::SeqCst);
        self.shared.outbox.notify_one();
        self.shared.wake.notify_one();
    }

    /// Corrects our message `id` to `peer` (XEP-0308): a new outgoing row, delivered like any
    /// message and sent after the one it corrects. Returns its id. The message shows the new text
    /// at once; [`Client::edits`] keeps every version.
    pub fn correct(&self, peer: &str, id: &str, body: &str) -> Result<String> {
        self.reference(peer, id, Reference::Correct(body.to_owned()))
    }

    /// Takes back our message `id` to `peer` (XEP-0424). Returns the retraction's id.
    pub fn retract(&self, peer: &str, id: &str) -> Result<String> {
        self.reference(peer, id, Reference::Retract)
    }

    /// Sets our reactions to message `id` of the conversation with `peer` (XEP-0444): the whole
    /// set (empty takes ours away). Returns the reaction's id.
    pub fn react(&self, peer: &str, id: &str, emoji: &[String]) -> Result<String> {
        self.reference(peer, id, Reference::React(emoji.to_vec()))
    }

    /// Answers message `id` of the conversation with `peer` with `body` (XEP-0461, with a quote
    /// for clients without it). Returns the reply's id.
    pub fn reply(&self, peer: &str, id: &str, body: &str) -> Result<String> {
        self.reference(peer, id, Reference::Reply(body.to_owned()))
    }

    fn reference(&self, peer: &str, id: &str, what: Reference) -> Result<String> {
        self.verify()?;
        let peer = bare(peer)?;
        let change =
            self.shared
                .store()
                .enqueue_reference(self.shared.account.id, &peer, id, &what)?;
        self.shared.emit_changes(std::slice::from_ref(&change));
        self.shared.outbox.notify_one();
        Ok(change.id)
    }

    /// Every version of message `id`'s text in the conversation with `peer`, oldest first.
    pub fn edits(&self, peer: &str, id: &str) -> Result<Vec<crate::store::Edit>> {
        let peer = bare(peer)?;
        Ok(self
            .shared
            .store()
            .edits(self.shared.account.id, &peer, id)?)
    }

    /// The user's chat state in the conversation with `peer` (XEP-0085): report every keystroke
    /// as `composing`, and `active`/`inactive`/`gone` as the conversation gains or loses focus.
    /// Nothing is stored; the core sends only changes, only to contacts that understand them, at
    /// most one a second, and turns `composing` into `paused` by itself. Returns `false` when
    /// offline (it is dropped, never sent later).
    pub fn set_chat_state(&self, peer: &str, state: crate::chat_state::ChatState) -> Result<bool> {
        let peer: tokio_xmpp::jid::BareJid = bare(peer)?
            .parse()
            .map_err(|e| Error::Usage(format!("bad JID {peer:?}: {e}")))?;
        if !self.is_online() {
            return Ok(false);
        }
        self.shared
            .chat_states
            .lock()
            .map_err(|_| Error::Internal("chat-state lock poisoned".into()))?
            .push((peer, state, std::time::Instant::now()));
        self.shared.outbox.notify_one();
        Ok(true)
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

    /// Invites `to` to `room` (XEP-0249 direct invitation): committed as a message to `to`
    /// first, delivered with the same guarantees as any message; `reason` is its text.
    pub fn invite(&self, room: &str, to: &str, reason: Option<&str>) -> Result<String> {
        self.verify()?;
        let room = bare(room)?;
        let to = bare(to)?;
        if !room.contains('@') {
            return Err(Error::Usage(format!("{room} is not a room's address")));
        }
        let jid: tokio_xmpp::jid::Jid = to.parse().expect("a bare JID");
        if self
            .shared
            .store()
            .is_blocked(self.shared.account.id, &jid)?
        {
            return Err(Error::Usage(format!(
                "{to} is blocked: unblock them to write to them"
            )));
        }
        let change =
            self.shared
                .store()
                .enqueue_invite(self.shared.account.id, &to, &room, reason)?;
        self.shared.emit_changes(std::slice::from_ref(&change));
        self.shared.outbox.notify_one();
        Ok(change.id)
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
        // The bookmark (XEP-0402) is published, so the user's other devices join too.
        self.wishes_changed();
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
        self.wishes_changed();
        Ok(())
    }

    /// Who is in `room` (XEP-0045 occupants, as the room last said), by nick.
    pub fn occupants(&self, room: &str) -> Result<Vec<crate::store::Occupant>> {
        let room = bare(room)?;
        Ok(self
            .shared
            .store()
            .occupants(self.shared.account.id, &room)?)
    }

    /// The rooms this account is in (or wants to be in).
    pub fn rooms(&self) -> Result<Vec<crate::store::Room>> {
        Ok(self.shared.store().rooms(self.shared.account.id)?)
    }

    /// The contact list.
    pub fn contacts(&self) -> Result<Vec<crate::store::Contact>> {
        Ok(self.shared.store().contacts(self.shared.account.id)?)
    }

    /// What the contact `jid`'s online clients support, as their verified capabilities
    /// (XEP-0115) say: the union over its resources, or `None` when none announced verified
    /// capabilities (unknown, which is not "nothing").
    pub fn peer_features(&self, jid: &str) -> Result<Option<Vec<String>>> {
        let jid = bare(jid)?;
        Ok(self
            .shared
            .store()
            .peer_features(self.shared.account.id, &jid)?
            .map(|f| f.into_iter().collect()))
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

    /// Tells the session to look at the outbox now (the [`crate::Inbox`]'s one poller saw the
    /// file change).
    pub(crate) fn poke_outbox(&self) {
        // Another process may have changed a wish the server keeps (`tether block`, `tether
        // profile set`): the session looks at those too (idempotent when nothing changed).
        self.shared.wishes_changed.store(true, Ordering::SeqCst);
        self.shared.outbox.notify_one();
    }

    /// Takes back a [`Client::shutdown`] before a new [`Client::run`] (an account enabled again).
    pub(crate) fn clear_shutdown(&self) {
        self.shared.shutdown.send_replace(false);
    }
}

/// The MIME type for a file name's extension (what the receiver's preview goes by).
fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "m4a" => "audio/mp4",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// A blocklist entry as the server will name it: a JID in its normal form (bare, full, or a
/// domain).
fn block_entry(jid: &str) -> Result<String> {
    let j: tokio_xmpp::jid::Jid = jid
        .trim()
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID {jid:?}: {e}")))?;
    Ok(j.to_string())
}

fn bare(jid: &str) -> Result<String> {
    let j: tokio_xmpp::jid::BareJid = jid
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID {jid:?}: {e}")))?;
    Ok(j.to_string())
}
