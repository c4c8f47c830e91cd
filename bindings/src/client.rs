//! [`TetherClient`]: the core's `Client` behind the FFI, with the runtime and the listener thread
//! a foreign app needs. Every call is a thin delegation; no delivery rule lives here.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tether_core::store::{MessageFilter, NewAccount};
use tether_core::Client;
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
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: TetherEvent);
}

enum Item {
    Event(TetherEvent),
}

/// Creates the database at `db_path` (if needed) with its one account. Does not connect.
#[uniffi::export]
pub fn add_account(db_path: String, settings: AccountSettings) -> Result<AccountInfo, TetherError> {
    let account = Client::add_account(
        &db_path,
        &NewAccount {
            jid: settings.jid,
            password: settings.password,
            server: settings.server,
            ca_file: settings.ca_file,
            insecure_plaintext: settings.insecure_plaintext_for_tests,
        },
    )?;
    Ok((&account).into())
}

/// One account's client: open it at launch, set a listener, `connect()`, and call the lifecycle
/// methods as the OS moves the app between foreground and background.
#[derive(uniffi::Object)]
pub struct TetherClient {
    client: Client,
    runtime: tokio::runtime::Runtime,
    /// Taken (dropped) by `close()`, which lets the listener thread end.
    items: Mutex<Option<mpsc::Sender<Item>>>,
    listener: Arc<Mutex<Option<Arc<dyn EventListener>>>>,
    run: Mutex<Option<tokio::task::JoinHandle<()>>>,
    forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
    listener_thread: Mutex<Option<JoinHandle<()>>>,
    closed: std::sync::atomic::AtomicBool,
}

#[uniffi::export]
impl TetherClient {
    /// Opens the database at `db_path` (created by [`add_account`]). Checks its schema and
    /// integrity; a foreign, newer or damaged file is refused with `Database` and left as is.
    /// Messages that were in flight when the last process died are settled here (kept for
    /// resumption, or `Failed` for the user to decide).
    #[uniffi::constructor]
    pub fn open(db_path: String, options: ClientOptions) -> Result<Arc<TetherClient>, TetherError> {
        let client = Client::open(&db_path, (&options).into())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tether-core")
            .enable_all()
            .build()
            .map_err(|e| TetherError::Usage {
                reason: format!("cannot start the runtime: {e}"),
            })?;
        let (items, mut rx) = mpsc::channel::<Item>(LISTENER_QUEUE);
        let listener: Arc<Mutex<Option<Arc<dyn EventListener>>>> = Arc::new(Mutex::new(None));

        // Core events -> bounded queue. A lagging listener makes the core's channel drop the
        // oldest events; the listener is told how many.
        let mut events = client.subscribe();
        let tx = items.clone();
        let forwarder = runtime.spawn(async move {
            loop {
                let item = match events.recv().await {
                    Ok(e) => TetherEvent::from(e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        TetherEvent::EventsMissed { count: n }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Item::Event(item)).await.is_err() {
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
                while let Some(Item::Event(event)) = rx.blocking_recv() {
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
            items: Mutex::new(Some(items)),
            listener,
            run: Mutex::new(None),
            forwarder: Mutex::new(Some(forwarder)),
            listener_thread: Mutex::new(Some(listener_thread)),
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

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
        let items = self.sender("connect")?;
        *run = Some(self.runtime.spawn(async move {
            let error = client.run().await.err().map(TetherError::from);
            // If the listener thread is gone, so is the app's interest in this.
            let _ = items
                .send(Item::Event(TetherEvent::Stopped { error }))
                .await;
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
    /// backoff delay. The stream is resumed when the server still holds it.
    pub fn network_changed(&self) {
        self.client.network_changed();
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
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.runtime.block_on(async {
            if let Some(mut handle) = run {
                if tokio::time::timeout(CLOSE_WAIT, &mut handle).await.is_err() {
                    tracing::warn!("the connection did not stop in time; dropped");
                    handle.abort();
                }
            } else if let Some(items) = &items {
                // Never connected: still say that it stopped.
                let _ = items
                    .send(Item::Event(TetherEvent::Stopped { error: None }))
                    .await;
            }
        });
        if let Some(f) = self
            .forwarder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            f.abort();
        }
        // With every sender gone, the listener thread delivers what is queued and ends.
        drop(items);
        let thread = self
            .listener_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            if std::thread::current().id() != t.thread().id() {
                let _ = t.join();
            }
        }
    }
}

impl TetherClient {
    fn sender(&self, what: &str) -> Result<mpsc::Sender<Item>, TetherError> {
        self.items
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
