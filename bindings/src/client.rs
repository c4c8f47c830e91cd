//! [`TetherClient`]: the core's `Client` behind the FFI, with the runtime and the listener thread
//! a foreign app needs. Every call is a thin delegation; no delivery rule lives here.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tether_core::store::{MessageFilter, NewAccount};
use tether_core::{Client, ClientConfig, Inbox};
use tokio::sync::{broadcast, mpsc};

use crate::types::*;

/// The name of the one thread that calls [`EventListener::on_event`].
pub const LISTENER_THREAD: &str = "tether-listener";

/// How long `suspend()` waits for `<inactive/>` to be flushed before it returns anyway.
const SUSPEND_WAIT: Duration = Duration::from_secs(2);

/// How long `close()` waits for the stream to close before dropping it (the SM state is on disk
/// either way, so the next `open` resumes).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Items queued for the listener thread. Bounded: when the listener is slow, the core's event
/// channel (of `event_buffer` events) absorbs the difference and reports what it dropped.
const LISTENER_QUEUE: usize = 256;

/// Receives the client's events. Implemented by the app (Swift, Kotlin, Python).
///
/// Called on one dedicated thread named `tether-listener`, one event at a time, in order. Hop to
/// the UI thread yourself (`DispatchQueue.main`, `Dispatchers.Main`). The listener may call any
/// method of the client, including `close()`. A listener that blocks only delays its own events;
/// past `event_buffer` of them the oldest are dropped and it gets `EventsMissed`.
#[uniffi::export(foreign)]
pub trait EventListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: TetherEvent);
}

/// Adds an account to the store at `db_path` (created if needed; a store holds any number of
/// accounts, each JID once). Does not connect.
#[uniffi::export]
pub fn add_account(db_path: String, settings: AccountSettings) -> Result<AccountInfo, TetherError> {
    let account = Client::add_account(&db_path, &settings.into())?;
    Ok((&account).into())
}

impl From<AccountSettings> for NewAccount {
    fn from(settings: AccountSettings) -> NewAccount {
        NewAccount {
            jid: settings.jid,
            password: settings.password,
            server: settings.server,
            ca_file: settings.ca_file,
            insecure_plaintext: settings.insecure_plaintext_for_tests,
            direct_tls: settings.direct_tls,
        }
    }
}

/// Creates the account on its server (in-band registration, XEP-0077; with an invitation link
/// `xmpp:example.org?register;preauth=...`, XEP-0401) and adds it to the store at `db_path`, as
/// [`add_account`] does; the JID's user part is the name asked for. Blocks until the server
/// answered. A refusal is `Usage` and says what to change (a taken name, a password the server's
/// policy refuses, sign-up closed or by invitation only, an invitation expired, used, or for
/// another server); nothing is stored then.
#[uniffi::export]
pub fn register_account(
    db_path: String,
    settings: AccountSettings,
    invite: Option<String>,
) -> Result<AccountInfo, TetherError> {
    let inbox = Inbox::open(&db_path, ClientConfig::default())?;
    let client =
        call_runtime()?.block_on(inbox.register_account(&settings.into(), invite.as_deref()))?;
    Ok(client.account().into())
}

/// Every account of the store at `db_path`, in the order they were added.
#[uniffi::export]
pub fn accounts(db_path: String) -> Result<Vec<AccountEntry>, TetherError> {
    Ok(Inbox::open(&db_path, ClientConfig::default())?
        .accounts()?
        .into_iter()
        .map(|a| AccountEntry {
            jid: a.jid,
            enabled: a.enabled,
        })
        .collect())
}

/// Enables or disables account `jid` of the store at `db_path` (a disabled account keeps its
/// history and queue). It only records the choice: the app opens and `connect()`s a client for
/// each enabled account, and `close()`s the client of one it disables.
#[uniffi::export]
pub fn set_account_enabled(db_path: String, jid: String, enabled: bool) -> Result<(), TetherError> {
    Ok(Inbox::open(&db_path, ClientConfig::default())?.set_enabled(&jid, enabled)?)
}

/// Removes account `jid` and everything it holds from the store at `db_path` (its history,
/// queue and the files no other account has). Close its client first: while a client drives
/// its stream this is refused with `Usage`.
#[uniffi::export]
pub fn remove_account(db_path: String, jid: String) -> Result<(), TetherError> {
    let inbox = Inbox::open(&db_path, ClientConfig::default())?;
    Ok(call_runtime()?.block_on(inbox.remove_account(&jid))?)
}

/// A runtime for one blocking call of the store's functions (they have no client's runtime).
fn call_runtime() -> Result<tokio::runtime::Runtime, TetherError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TetherError::Usage {
            reason: format!("cannot start the runtime: {e}"),
        })
}

/// The unified conversation list of the store at `db_path`: every account's conversations,
/// the newest first (by when their newest message was sent), each with its account.
#[uniffi::export]
pub fn unified_conversations(db_path: String) -> Result<Vec<AccountConversation>, TetherError> {
    Ok(Inbox::open(&db_path, ClientConfig::default())?
        .conversations()?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// One account's client: open it at launch, set a listener, `connect()`, and call the lifecycle
/// methods as the OS moves the app between foreground and background.
#[derive(uniffi::Object)]
pub struct TetherClient {
    client: Client,
    runtime: tokio::runtime::Runtime,
    /// How a finished run reports to the forwarder, which delivers `Stopped` after every event
    /// the run emitted. Taken (dropped) by `close()`, which ends the forwarder and then the
    /// listener thread.
    stops: Mutex<Option<mpsc::UnboundedSender<Option<TetherError>>>>,
    listener: Arc<Mutex<Option<Arc<dyn EventListener>>>>,
    run: Mutex<Option<tokio::task::JoinHandle<()>>>,
    forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
    listener_thread: Mutex<Option<JoinHandle<()>>>,
    closed: std::sync::atomic::AtomicBool,
}

#[uniffi::export]
impl TetherClient {
    /// Opens the database at `db_path` (created by [`add_account`]). A foreign or newer file is
    /// refused here with `Database` and left as is. SQLite's integrity check runs in the
    /// background (about a second on a 1,000,000-message store), so history can be shown at once;
    /// writes and `connect` wait for it, and a damaged file is refused then, also with `Database`.
    /// Messages that were in flight when the last process died are settled here (kept for
    /// resumption, or `Failed` for the user to decide).
    #[uniffi::constructor]
    pub fn open(db_path: String, options: ClientOptions) -> Result<Arc<TetherClient>, TetherError> {
        Self::with_client(Client::open(&db_path, (&options).into())?)
    }

    /// Opens account `jid` of a store that holds several (see [`accounts`]); otherwise as
    /// [`TetherClient::open`]. Open one client per enabled account: each runs its own session.
    #[uniffi::constructor]
    pub fn open_account(
        db_path: String,
        jid: String,
        options: ClientOptions,
    ) -> Result<Arc<TetherClient>, TetherError> {
        Self::with_client(Client::open_account(&db_path, &jid, (&options).into())?)
    }
}

impl TetherClient {
    fn with_client(client: Client) -> Result<Arc<TetherClient>, TetherError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tether-core")
            .enable_all()
            .build()
            .map_err(|e| TetherError::Usage {
                reason: format!("cannot start the runtime: {e}"),
            })?;
        let (items, mut rx) = mpsc::channel::<TetherEvent>(LISTENER_QUEUE);
        let (stops, mut stop_rx) = mpsc::unbounded_channel::<Option<TetherError>>();
        let listener: Arc<Mutex<Option<Arc<dyn EventListener>>>> = Arc::new(Mutex::new(None));

        // Core events -> bounded queue. A lagging listener makes the core's channel drop the
        // oldest events; the listener is told how many. A run's end is delivered after every
        // event it emitted (they are in the channel before its future returns).
        let mut events = client.subscribe();
        let forwarder = runtime.spawn(async move {
            loop {
                let item = tokio::select! {
                    biased;
                    e = events.recv() => match e {
                        Ok(e) => TetherEvent::from(e),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            TetherEvent::EventsMissed { count: n }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    stop = stop_rx.recv() => match stop {
                        Some(error) => {
                            loop {
                                let e = match events.try_recv() {
                                    Ok(e) => TetherEvent::from(e),
                                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                        TetherEvent::EventsMissed { count: n }
                                    }
                                    Err(_) => break,
                                };
                                if items.send(e).await.is_err() {
                                    return;
                                }
                            }
                            TetherEvent::Stopped { error }
                        }
                        None => return,
                    },
                };
                if items.send(item).await.is_err() {
                    return;
                }
            }
        });

        // The one thread that calls the app. It holds no lock and no runtime context while it
        // does, so the listener may call back into the client.
        let l = listener.clone();
        let listener_thread = std::thread::Builder::new()
            .name(LISTENER_THREAD.into())
            .spawn(move || {
                while let Some(event) = rx.blocking_recv() {
                    let current = l.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(listener) = current {
                        listener.on_event(event);
                    }
                }
            })
            .map_err(|e| TetherError::Usage {
                reason: format!("cannot start the listener thread: {e}"),
            })?;

        Ok(Arc::new(TetherClient {
            client,
            runtime,
            stops: Mutex::new(Some(stops)),
            listener,
            run: Mutex::new(None),
            forwarder: Mutex::new(Some(forwarder)),
            listener_thread: Mutex::new(Some(listener_thread)),
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

#[uniffi::export]
impl TetherClient {
    /// The account.
    pub fn account(&self) -> AccountInfo {
        self.client.account().into()
    }

    /// Sets (or replaces) the listener. Events before the first listener are not replayed: read
    /// the store (`conversations`, `page`) for the state, then follow the events.
    pub fn set_listener(&self, listener: Arc<dyn EventListener>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    /// Hands over the password when the app keeps it in the platform keychain (held in memory).
    pub fn set_password(&self, password: String) {
        self.client.set_password(password);
    }

    /// Starts connecting (and reconnecting, with backoff) in the background. Does nothing while
    /// already running. After a final error (`Stopped` with an error), fix the cause and call it
    /// again.
    pub fn connect(&self) -> Result<(), TetherError> {
        self.check_open("connect")?;
        let mut run = self.run.lock().unwrap_or_else(|p| p.into_inner());
        if run.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let client = self.client.clone();
        let stops = self.stopper("connect")?;
        *run = Some(self.runtime.spawn(async move {
            let error = client.run().await.err().map(TetherError::from);
            // If the forwarder is gone, the client was closed and nobody listens any more.
            let _ = stops.send(error);
        }));
        Ok(())
    }

    /// Whether a session is up right now.
    pub fn is_online(&self) -> bool {
        self.client.is_online()
    }

    /// Commits a message (event `message:sent`) and returns its id. Works offline: it is written
    /// to the server as soon as a session allows, and survives the process being killed.
    pub fn send(&self, to: String, body: String) -> Result<String, TetherError> {
        Ok(self.client.send(&to, &body)?)
    }

    /// Commits many messages in one transaction, in order; returns their ids.
    pub fn send_many(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<String>, TetherError> {
        let pairs: Vec<(String, String)> = messages.into_iter().map(|m| (m.to, m.body)).collect();
        Ok(self.client.send_many(&pairs)?)
    }

    /// Corrects our message `id` to `peer` (XEP-0308); returns the correction's id. Delivered like
    /// any message (same states and events), after the message it corrects.
    pub fn correct(&self, peer: String, id: String, body: String) -> Result<String, TetherError> {
        Ok(self.client.correct(&peer, &id, &body)?)
    }

    /// Takes back our message `id` to `peer` (XEP-0424); returns the retraction's id.
    pub fn retract(&self, peer: String, id: String) -> Result<String, TetherError> {
        Ok(self.client.retract(&peer, &id)?)
    }

    /// Sets our whole reaction set to message `id` (XEP-0444; empty takes ours away).
    pub fn react(
        &self,
        peer: String,
        id: String,
        emoji: Vec<String>,
    ) -> Result<String, TetherError> {
        Ok(self.client.react(&peer, &id, &emoji)?)
    }

    /// Answers message `id` of the conversation with `peer` (XEP-0461); returns the reply's id.
    pub fn reply(&self, peer: String, id: String, body: String) -> Result<String, TetherError> {
        Ok(self.client.reply(&peer, &id, &body)?)
    }

    /// Sends the file at `path` to `to` (XEP-0363): copied into the store and committed before
    /// this returns; the upload survives a kill or a lost network, with `Transfer` events; the
    /// message goes once the file is up, and fails like any message if the server refuses it.
    pub fn send_file(&self, to: String, path: String) -> Result<String, TetherError> {
        Ok(self.client.send_file(&to, std::path::Path::new(&path))?)
    }

    /// Every version of message `id`'s text, oldest first.
    pub fn edits(&self, peer: String, id: String) -> Result<Vec<EditVersion>, TetherError> {
        Ok(self
            .client
            .edits(&peer, &id)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The user's chat state with `peer` (XEP-0085): call it on every keystroke with `Composing`;
    /// the core sends only changes, only to contacts that understand them, and pauses by itself.
    /// Returns `false` when offline (dropped, never sent later).
    pub fn set_chat_state(&self, peer: String, state: ChatState) -> Result<bool, TetherError> {
        Ok(self.client.set_chat_state(&peer, state.into())?)
    }

    /// The user confirmed resending these failed messages. They keep their ids, so a receiver
    /// that already has one drops the copy.
    pub fn resend(&self, ids: Vec<String>) -> Result<(), TetherError> {
        Ok(self.client.resend(&ids)?)
    }

    /// The user chose to discard these failed messages.
    pub fn discard(&self, ids: Vec<String>) -> Result<(), TetherError> {
        Ok(self.client.discard(&ids)?)
    }

    /// Every failed message waiting for the user's decision, oldest first.
    pub fn failed_messages(&self) -> Result<Vec<Message>, TetherError> {
        self.messages(None, Some(DeliveryState::Failed))
    }

    /// Messages, optionally only with `peer` and/or in `state`, oldest first.
    pub fn messages(
        &self,
        peer: Option<String>,
        state: Option<DeliveryState>,
    ) -> Result<Vec<Message>, TetherError> {
        let rows = self.client.messages(&MessageFilter {
            peer,
            state: state.map(Into::into),
            direction: None,
        })?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// A page of the conversation with `peer`: up to `limit` messages older than `before_seq`
    /// (`None`: the newest), oldest first.
    pub fn page(
        &self,
        peer: String,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>, TetherError> {
        let rows = self.client.page(&peer, before_seq, limit as usize)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Full-text search over every conversation (or only `peer`'s): the messages whose current
    /// text has every word of `text` (the last as a prefix), newest first, up to `limit` (1 to
    /// 200); `before` is the previous page's last `cursor`. The words are never query syntax; an
    /// empty or oversized query is refused.
    pub fn search(
        &self,
        text: String,
        peer: Option<String>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, TetherError> {
        let hits = self
            .client
            .search(&text, peer.as_deref(), before, limit as usize)?;
        Ok(hits.into_iter().map(Into::into).collect())
    }

    /// The conversation list, newest first.
    pub fn conversations(&self) -> Result<Vec<Conversation>, TetherError> {
        Ok(self
            .client
            .conversations()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Outgoing messages the server has not confirmed yet.
    pub fn pending_count(&self) -> Result<u64, TetherError> {
        Ok(self.client.pending_count()?.max(0) as u64)
    }

    /// The user saw the conversation with `peer` up to `up_to` (default: the newest incoming
    /// message): marks it read and sends a displayed marker. Returns the marked message's id.
    pub fn mark_displayed(
        &self,
        peer: String,
        up_to: Option<String>,
    ) -> Result<Option<String>, TetherError> {
        Ok(self
            .client
            .mark_read(&peer, up_to.as_deref())?
            .map(|(id, _)| id))
    }

    /// Joins `room` as `nick` (kept, and rejoined on every new session).
    pub fn join_room(&self, room: String, nick: String) -> Result<(), TetherError> {
        Ok(self.client.join_room(&room, &nick)?)
    }

    /// Leaves `room`.
    pub fn leave_room(&self, room: String) -> Result<(), TetherError> {
        Ok(self.client.leave_room(&room)?)
    }

    /// The rooms.
    pub fn rooms(&self) -> Result<Vec<Room>, TetherError> {
        Ok(self.client.rooms()?.into_iter().map(Into::into).collect())
    }

    /// Invites `to` to `room` (XEP-0249 direct invitation), committed as a message first and
    /// delivered like one; `reason` is its text. Returns its id.
    pub fn invite(
        &self,
        room: String,
        to: String,
        reason: Option<String>,
    ) -> Result<String, TetherError> {
        Ok(self.client.invite(&room, &to, reason.as_deref())?)
    }

    /// Who is in `room` (XEP-0045), as the room last said; the app hears of changes as
    /// `Presence` events from `room/nick`.
    pub fn occupants(&self, room: String) -> Result<Vec<RoomOccupant>, TetherError> {
        Ok(self
            .client
            .occupants(&room)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The contact list.
    pub fn contacts(&self) -> Result<Vec<Contact>, TetherError> {
        Ok(self
            .client
            .contacts()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Pending incoming subscription requests (bare JIDs).
    pub fn subscription_requests(&self) -> Result<Vec<String>, TetherError> {
        Ok(self.client.subscription_requests()?)
    }

    /// Adds `jid` to the contacts and asks to see its presence.
    pub fn request_subscription(&self, jid: String) -> Result<(), TetherError> {
        Ok(self.client.request_subscription(&jid)?)
    }

    /// Accepts (and asks back) or denies `jid`'s subscription request.
    pub fn answer_subscription_request(
        &self,
        jid: String,
        accept: bool,
    ) -> Result<(), TetherError> {
        Ok(self.client.answer_subscription_request(&jid, accept)?)
    }

    /// The app goes to the background. Tells the server (CSI inactive) and waits, at most two
    /// seconds, until that is flushed; folds the write-ahead log into the database. Every message
    /// state is committed already, so the OS may kill the process any time after this returns.
    /// Returns whether a live session was told (`false` offline: the next session starts
    /// inactive). Call it from a background task, not the main thread.
    pub fn suspend(&self) -> Result<bool, TetherError> {
        self.check_open("suspend")?;
        Ok(self
            .runtime
            .block_on(self.client.suspend_flushed(SUSPEND_WAIT))?)
    }

    /// The app is in the foreground again: CSI active, and reconnect now if offline.
    pub fn resume(&self) {
        self.client.resume();
    }

    /// The network changed (NWPathMonitor, ConnectivityManager): reconnect now, skipping the
    /// backoff delay, and check a live link at once (a few seconds' timeout), so one the change
    /// killed is found now rather than at the next keepalive. The stream is resumed when the
    /// server still holds it.
    pub fn network_changed(&self) {
        self.client.network_changed();
    }

    /// A push arrived (an iOS Notification Service Extension, an Android push receiver), the
    /// app's own process being dead or suspended: within `deadline_ms`, resume the stream (or
    /// start a session), store and ack everything the server holds, send what is queued, and
    /// suspend keeping the stream for the app. Blocks; call it from the extension's or
    /// receiver's background thread, on a client opened for this (not `connect`ed). Returns
    /// what arrived per conversation, with texts only if `include_bodies`. If the app process
    /// drives the stream, returns at once with `Yielded` (the store allows one driver at a time,
    /// across processes). Whatever the outcome, nothing is acked that is not committed, and the
    /// app started afterwards shows each message once.
    pub fn wake(&self, deadline_ms: u64, include_bodies: bool) -> Result<WakeSummary, TetherError> {
        self.check_open("wake")?;
        let summary = self.runtime.block_on(
            self.client
                .wake(Duration::from_millis(deadline_ms), include_bodies),
        )?;
        Ok(summary.into())
    }

    /// Push notifications (XEP-0357) to the app server `service` on the `node` it provisioned
    /// for this device (with its `secret`, if it wants one back). Kept in the store and told to
    /// the server now if online and on every new session; the answer comes as `Push`.
    pub fn enable_push(
        &self,
        service: String,
        node: String,
        secret: Option<String>,
    ) -> Result<(), TetherError> {
        Ok(self
            .client
            .enable_push(&service, &node, secret.as_deref())?)
    }

    /// Stops push notifications (told to the server when online). Idempotent: `false` when push
    /// was not enabled.
    pub fn disable_push(&self) -> Result<bool, TetherError> {
        Ok(self.client.disable_push()?)
    }

    /// Blocks a contact, a full JID or a domain (XEP-0191): nothing it sends is stored or
    /// shown from now on and nothing can be written to it. Kept in the store and told to the
    /// server now if online and on the next session; the answer comes as `Blocking`.
    pub fn block(&self, jid: String) -> Result<(), TetherError> {
        Ok(self.client.block(&jid)?)
    }

    /// Unblocks (told like `block`). `false` when it was not blocked.
    pub fn unblock(&self, jid: String) -> Result<bool, TetherError> {
        Ok(self.client.unblock(&jid)?)
    }

    /// What `jid` (a bare JID; the user's own too) publishes of itself, as last heard; changes
    /// come as `ProfileChanged`.
    pub fn profile(&self, jid: String) -> Result<Option<Profile>, TetherError> {
        Ok(self.client.profile(&jid)?.map(Into::into))
    }

    /// An avatar's image by the SHA-1 a `Profile` or `Contact` names.
    pub fn avatar(&self, sha1: String) -> Result<Option<AvatarImage>, TetherError> {
        Ok(self
            .client
            .avatar(&sha1)?
            .map(|(mime, data)| AvatarImage { mime, data }))
    }

    /// Sets (`None`: removes) the user's nickname (XEP-0172): shown at once, published now if
    /// online and else on the next session, kept until the server confirms it.
    pub fn set_nick(&self, nick: Option<String>) -> Result<(), TetherError> {
        Ok(self.client.set_nick(nick.as_deref())?)
    }

    /// Sets the user's avatar (XEP-0084): a PNG, JPEG, GIF or WebP image of at most 128 KiB
    /// (else a `Usage` error says which). Published like `set_nick`. Returns its SHA-1.
    pub fn set_avatar(&self, image: Vec<u8>) -> Result<String, TetherError> {
        Ok(self.client.set_avatar(image)?)
    }

    /// Whether the user's own profile changes are all confirmed by the server.
    pub fn profile_told(&self) -> Result<bool, TetherError> {
        Ok(self.client.profile_told()?)
    }

    /// Removes the user's avatar (published like `set_nick`).
    pub fn clear_avatar(&self) -> Result<(), TetherError> {
        Ok(self.client.clear_avatar()?)
    }

    /// The blocklist, with the user's wish and what the server said of each entry.
    pub fn blocklist(&self) -> Result<Vec<BlockedEntry>, TetherError> {
        Ok(self
            .client
            .blocklist()?
            .into_iter()
            .map(BlockedEntry::from)
            .collect())
    }

    /// How many times the connection loop woke up since `open` (what an idle session costs).
    pub fn wakeups(&self) -> u64 {
        self.client.wakeups()
    }

    /// Of `wakeups()`, those for the client's own timers (keepalive probes, ack requests): what
    /// wakes an idle phone by itself.
    pub fn timer_wakeups(&self) -> u64 {
        self.client.timer_wakeups()
    }

    /// Stops the client: closes the stream when nothing is in flight, else drops it and keeps the
    /// SM state so the next `open` resumes. Waits up to five seconds. The listener gets
    /// `Stopped` and then no more events. Any later call but queries fails with `Closed`.
    pub fn close(&self) {
        if self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.client.shutdown();
        let run = self.run.lock().unwrap_or_else(|p| p.into_inner()).take();
        let stops = self.stops.lock().unwrap_or_else(|p| p.into_inner()).take();
        let forwarder = self
            .forwarder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let thread = self
            .listener_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // Called from the listener itself: nobody drains the queue while we wait, so do not
        // wait for the forwarder (it may be blocked on a full queue) nor join ourselves.
        let inside = thread
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id());
        self.runtime.block_on(async {
            match run {
                Some(mut handle) if !handle.is_finished() => {
                    // The run reports its own end (through its clone of `stops`).
                    if tokio::time::timeout(CLOSE_WAIT, &mut handle).await.is_err() {
                        tracing::warn!("the connection did not stop in time; dropped");
                        handle.abort();
                        if let Some(stops) = &stops {
                            let _ = stops.send(None);
                        }
                    }
                }
                // Never connected, or already stopped by a final error: say it stopped now.
                _ => {
                    if let Some(stops) = &stops {
                        let _ = stops.send(None);
                    }
                }
            }
            // With the last stop sender gone the forwarder delivers what it has and ends.
            drop(stops);
            // From inside the listener, let it finish on its own as the listener drains.
            if let (Some(mut f), false) = (forwarder, inside) {
                if tokio::time::timeout(CLOSE_WAIT, &mut f).await.is_err() {
                    f.abort();
                }
            }
        });
        // The forwarder held the last sender of the listener queue: the listener thread
        // delivers what is queued and ends.
        if let Some(t) = thread {
            if !inside {
                let _ = t.join();
            }
        }
    }
}

impl TetherClient {
    fn stopper(
        &self,
        what: &str,
    ) -> Result<mpsc::UnboundedSender<Option<TetherError>>, TetherError> {
        self.stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| TetherError::Closed {
                reason: format!("{what}: the client is closed"),
            })
    }

    fn check_open(&self, what: &str) -> Result<(), TetherError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TetherError::Closed {
                reason: format!("{what}: the client is closed"),
            });
        }
        Ok(())
    }
}

impl Drop for TetherClient {
    fn drop(&mut self) {
        self.close();
    }
}
