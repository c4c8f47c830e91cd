//! A raw XMPP client for tests: a second user, or a hostile one.
//!
//! [`RawClient`] is tokio-xmpp's high-level [`Client`] (STARTTLS, SCRAM, resource binding and
//! stream management all done by tokio-xmpp) behind a blocking API, on its own thread with its
//! own single-threaded Tokio runtime (like the [`Proxy`](crate::Proxy)). Tests use it to inject
//! stanzas the CLI under test would never send itself (forged carbons, forged archive results,
//! subscription requests) and to look at what the server sends a plain client (MUC reflections,
//! archive results, carbons).
//!
//! Stanzas are built with xmpp-parsers types (or, for hostile payloads, parsed from a literal
//! with [`parse`]); never by concatenating strings.
//!
//! # Trusting the test CA (test-only)
//!
//! tokio-xmpp's STARTTLS trusts the roots of rustls-native-certs, which reads the
//! `SSL_CERT_FILE` environment variable. The first connection of a test process points
//! `SSL_CERT_FILE` at a process-wide PEM bundle (in the temporary directory, removed at exit),
//! and every connection adds its server's test CA to that bundle before connecting: tests of
//! one process run in parallel against different servers, each with its own CA, and one
//! environment variable has to serve them all. This only affects the test process (and only
//! what relies on the platform's roots in it); [`Node`](crate::tether::Node) removes the
//! variable from the environment of the `tether` processes it starts, so the client under test
//! never sees it.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc as tokio_mpsc;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::minidom::Element;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

/// How long [`RawClient::connect`] waits for the session to be online.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`RawClient::send`] waits for a stanza to be written.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Namespaces the scenarios look for (xmpp-parsers has them too, under other names).
pub mod ns {
    /// XEP-0280 Message Carbons.
    pub const CARBONS: &str = "urn:xmpp:carbons:2";
    /// XEP-0297 Stanza Forwarding.
    pub const FORWARD: &str = "urn:xmpp:forward:0";
    /// XEP-0313 Message Archive Management.
    pub const MAM: &str = "urn:xmpp:mam:2";
    /// XEP-0359 Unique and Stable Stanza IDs.
    pub const SID: &str = "urn:xmpp:sid:0";
    /// XEP-0045 MUC (join).
    pub const MUC: &str = "http://jabber.org/protocol/muc";
    /// XEP-0045 MUC user.
    pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
    /// XEP-0045 MUC owner.
    pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
    /// XEP-0030 Service Discovery (info).
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    /// XEP-0184 Message Delivery Receipts.
    pub const RECEIPTS: &str = "urn:xmpp:receipts";
    /// XEP-0333 Chat Markers.
    pub const MARKERS: &str = "urn:xmpp:chat-markers:0";
    /// RFC 6121 roster.
    pub const ROSTER: &str = "jabber:iq:roster";
    /// The client namespace of stanzas.
    pub const CLIENT: &str = "jabber:client";
}

enum Command {
    Send(Box<Stanza>, mpsc::Sender<io::Result<()>>),
    Close(mpsc::Sender<()>),
}

/// A logged-in XMPP session of tokio-xmpp's high-level client, driven from synchronous tests.
///
/// Received stanzas are queued; [`recv_until`](Self::recv_until) takes the first one matching
/// a predicate and leaves the others queued. Dropping the client closes the stream cleanly.
pub struct RawClient {
    jid: FullJid,
    commands: tokio_mpsc::UnboundedSender<Command>,
    incoming: mpsc::Receiver<Element>,
    pending: VecDeque<Element>,
    sessions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient").field("jid", &self.jid).finish()
    }
}

impl RawClient {
    /// Logs in as `jid` (bare, or full to ask for a resource) at `addr` over STARTTLS, trusting
    /// `ca` (see the module docs), then sends initial presence (so messages to the bare JID reach
    /// it and the server's offline store is flushed to it).
    ///
    /// # Panics
    ///
    /// If the session is not online within 30 s (wrong password, unreachable server, untrusted
    /// certificate: tokio-xmpp retries those silently, so they all show as this timeout).
    pub fn connect(addr: SocketAddr, jid: &str, password: &str, ca: &Path) -> RawClient {
        match Self::try_connect(addr, jid, password, ca, true) {
            Ok(client) => client,
            Err(e) => panic!("raw client {jid} could not connect to {addr}: {e}"),
        }
    }

    /// Like [`connect`](Self::connect) without initial presence when `presence` is false (the
    /// session then gets only stanzas addressed to its full JID), returning the error.
    pub fn try_connect(
        addr: SocketAddr,
        jid: &str,
        password: &str,
        ca: &Path,
        presence: bool,
    ) -> io::Result<RawClient> {
        trust_ca(ca)?;
        let jid = Jid::from_str(jid).map_err(io::Error::other)?;
        let password = password.to_owned();
        let (commands, command_rx) = tokio_mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::channel();
        let (online_tx, online_rx) = mpsc::channel();
        let sessions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = {
            let sessions = sessions.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            thread::Builder::new()
                .name(format!("tether-e2e-raw-{jid}"))
                .spawn(move || {
                    runtime.block_on(run(
                        addr,
                        jid,
                        password,
                        presence,
                        command_rx,
                        incoming_tx,
                        online_tx,
                        sessions,
                    ));
                })?
        };
        let jid = match online_rx.recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(5)) {
            Ok(Ok(jid)) => jid,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the raw client's thread did not report",
                ))
            }
        };
        Ok(RawClient {
            jid,
            commands,
            incoming,
            pending: VecDeque::new(),
            sessions,
            thread: Some(thread),
        })
    }

    /// The bound full JID.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// The account's bare JID.
    pub fn bare(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// How many sessions tokio-xmpp has opened so far (1 unless it reconnected by itself).
    pub fn sessions(&self) -> usize {
        self.sessions.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sends a typed stanza (message, presence or iq); returns once it is written. A stanza
    /// without an id gets a random one.
    pub fn send(&self, stanza: impl Into<Stanza>) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::Send(Box::new(stanza.into()), tx))
            .map_err(|_| io::Error::other("the raw client's thread is gone"))?;
        match rx.recv_timeout(SEND_TIMEOUT) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(io::Error::other("the raw client's thread is gone"))
            }
        }
    }

    /// Sends an element that must be a valid `<message/>`, `<presence/>` or `<iq/>` in
    /// `jabber:client` (the typed conversion rejects anything else, e.g. an iq without id).
    pub fn send_element(&self, element: Element) -> io::Result<()> {
        let stanza = Stanza::try_from(element)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
        self.send(stanza)
    }

    /// Waits up to `timeout` for a received stanza matching `pred`, and removes it from the
    /// queue; the stanzas it skips stay queued for later calls.
    pub fn recv_until(
        &mut self,
        pred: impl Fn(&Element) -> bool,
        timeout: Duration,
    ) -> Option<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pending.extend(self.incoming.try_iter());
            if let Some(i) = self.pending.iter().position(&pred) {
                return self.pending.remove(i);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self
                .incoming
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(el) => self.pending.push_back(el),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return self
                        .pending
                        .iter()
                        .position(&pred)
                        .and_then(|i| self.pending.remove(i))
                }
            }
        }
    }

    /// Every stanza received and not yet taken, in order (removing them from the queue).
    pub fn drain(&mut self) -> Vec<Element> {
        self.pending.extend(self.incoming.try_iter());
        self.pending.drain(..).collect()
    }

    /// Collects the chat messages whose body starts with `prefix` until `n` distinct bodies
    /// arrived (panicking after `limit`), then listens `quiet` longer for extra copies. Returns
    /// each body with the id of every copy: this client never de-duplicates, so it is the honest
    /// receiver for an exactly-once claim.
    pub fn collect_bodies(
        &mut self,
        prefix: &str,
        n: usize,
        quiet: Duration,
        limit: Duration,
    ) -> HashMap<String, Vec<Option<String>>> {
        let mut seen: HashMap<String, Vec<Option<String>>> = HashMap::new();
        let matches = |el: &Element| {
            el.name() == "message" && body(el).is_some_and(|b| b.starts_with(prefix))
        };
        let deadline = Instant::now() + limit;
        let mut quiet_phase = false;
        loop {
            let wait = if seen.len() >= n {
                quiet_phase = true;
                quiet
            } else {
                deadline
                    .checked_duration_since(Instant::now())
                    .unwrap_or_else(|| {
                        panic!(
                            "{} got only {} of {n} distinct {prefix:?} messages",
                            self.jid,
                            seen.len()
                        )
                    })
            };
            match self.recv_until(matches, wait) {
                Some(el) => seen
                    .entry(body(&el).unwrap_or_default())
                    .or_default()
                    .push(el.attr("id").map(str::to_owned)),
                None if quiet_phase => return seen,
                None => {}
            }
        }
    }

    /// Sends an iq (it must have an id) and waits up to `timeout` for the `result` or `error`
    /// with the same id.
    pub fn iq(&mut self, iq: Iq, timeout: Duration) -> Option<Element> {
        let id = iq.id().to_owned();
        assert!(!id.is_empty(), "RawClient::iq needs an iq with an id");
        self.send(iq).ok()?;
        self.recv_until(
            |el| {
                el.name() == "iq"
                    && el.attr("id") == Some(id.as_str())
                    && matches!(el.attr("type"), Some("result" | "error"))
            },
            timeout,
        )
    }

    /// Sends a `type="chat"` message with `body` to `to` (with a fresh id); returns the id.
    pub fn send_chat(&self, to: &str, body: &str) -> io::Result<String> {
        let id = next_id("chat");
        let mut message = Message::new(Some(Jid::from_str(to).map_err(io::Error::other)?));
        message.type_ = MessageType::Chat;
        message.id = Some(tokio_xmpp::parsers::message::Id(id.clone()));
        message.bodies.insert(
            tokio_xmpp::parsers::message::Lang::default(),
            body.to_owned(),
        );
        self.send(message)?;
        Ok(id)
    }

    /// Sends a presence.
    pub fn send_presence(&self, presence: Presence) -> io::Result<()> {
        self.send(presence)
    }

    /// Closes the stream cleanly (as dropping does) and waits for the thread.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (tx, rx) = mpsc::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
            // Otherwise leave it: its runtime ends with the process; never block a test on it.
        }
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    addr: SocketAddr,
    jid: Jid,
    password: String,
    presence: bool,
    mut commands: tokio_mpsc::UnboundedReceiver<Command>,
    incoming: mpsc::Sender<Element>,
    online: mpsc::Sender<io::Result<FullJid>>,
    sessions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut client = Client::new_starttls(
        jid,
        password,
        DnsConfig::addr(&addr.to_string()),
        Timeouts::default(),
    );
    // Wait for the first session.
    let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match client.next().await {
                Some(Event::Online { bound_jid, .. }) => return Ok(bound_jid),
                Some(Event::Disconnected(e)) => return Err(io::Error::other(e.to_string())),
                Some(Event::Stanza(stanza)) => {
                    let _ = incoming.send(Element::from(stanza));
                }
                None => return Err(io::Error::other("the client stream ended")),
            }
        }
    })
    .await;
    let bound = match first {
        Ok(Ok(jid)) => jid,
        Ok(Err(e)) => {
            let _ = online.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = online.send(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not online within {CONNECT_TIMEOUT:?} (wrong password or untrusted certificate?)"),
            )));
            return;
        }
    };
    sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let Ok(full) = bound.clone().try_into_full() else {
        let _ = online.send(Err(io::Error::other(format!("bound a bare JID {bound}"))));
        return;
    };
    if presence {
        if let Err(e) = client.send_stanza(Presence::available().into()).await {
            let _ = online.send(Err(e));
            return;
        }
    }
    let _ = online.send(Ok(full));

    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(stanza, reply)) => {
                    let result = client.send_stanza(*stanza).await.map(|_token| ());
                    let _ = reply.send(result);
                }
                Some(Command::Close(done)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), client.send_end()).await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), client.send_end()).await;
                    return;
                }
            },
            event = client.next() => match event {
                Some(Event::Stanza(stanza)) => {
                    let _ = incoming.send(Element::from(stanza));
                }
                Some(Event::Online { .. }) => {
                    sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if presence {
                        let _ = client.send_stanza(Presence::available().into()).await;
                    }
                }
                Some(Event::Disconnected(_)) => {}
                None => return,
            },
        }
    }
}

/// Parses a literal XML stanza (for hostile payloads that typed builders would not express).
/// The root must declare its namespace (`xmlns='jabber:client'`).
///
/// # Panics
///
/// If `xml` is not well-formed.
pub fn parse(xml: &str) -> Element {
    Element::from_str(xml).unwrap_or_else(|e| panic!("test XML does not parse: {e}: {xml}"))
}

/// Which carbons wrapper [`forged_carbon`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarbonKind {
    /// `<sent/>`: "another device of yours sent this".
    Sent,
    /// `<received/>`: "another device of yours received this".
    Received,
}

/// A chat message from `from` to `to` with `body` and `id`, as a typed [`Message`].
pub fn chat_message(from: Option<&str>, to: &str, id: &str, body: &str) -> Message {
    let mut message = Message::new(Some(jid(to)));
    message.from = from.map(jid);
    message.type_ = MessageType::Chat;
    message.id = Some(tokio_xmpp::parsers::message::Id(id.to_owned()));
    message.bodies.insert(
        tokio_xmpp::parsers::message::Lang::default(),
        body.to_owned(),
    );
    message
}

/// A message to `to` whose payload is a carbons wrapper (`kind`) forwarding `inner`: what the
/// server sends for real only from the account's own bare JID, so anyone else sending it is
/// forging the account's traffic.
pub fn forged_carbon(to: &str, kind: CarbonKind, inner: Message) -> Message {
    use tokio_xmpp::parsers::{carbons, forwarding::Forwarded};
    let forwarded = Forwarded {
        delay: None,
        message: inner,
    };
    let mut outer = Message::new(Some(jid(to)));
    outer.type_ = MessageType::Chat;
    outer.id = Some(tokio_xmpp::parsers::message::Id(next_id("forged-carbon")));
    match kind {
        CarbonKind::Sent => outer.with_payload(carbons::Sent { forwarded }),
        CarbonKind::Received => outer.with_payload(carbons::Received { forwarded }),
    }
}

/// A message to `to` shaped like an archive (XEP-0313) result for `queryid`, forwarding `inner`:
/// only the queried archive may send that, in answer to a query with that id.
pub fn forged_mam_result(to: &str, queryid: &str, archive_id: &str, inner: Message) -> Message {
    use tokio_xmpp::parsers::{forwarding::Forwarded, mam};
    let mut outer = Message::new(Some(jid(to)));
    outer.id = Some(tokio_xmpp::parsers::message::Id(next_id("forged-mam")));
    outer.with_payload(mam::Result_ {
        id: archive_id.to_owned(),
        queryid: Some(mam::QueryId(queryid.to_owned())),
        forwarded: Forwarded {
            delay: None,
            message: inner,
        },
    })
}

/// Parses a JID.
///
/// # Panics
///
/// If `s` is not a valid JID.
pub fn jid(s: &str) -> Jid {
    Jid::from_str(s).unwrap_or_else(|e| panic!("invalid JID {s:?}: {e}"))
}

/// Whether `el` is a `<message/>` whose body is `text`.
pub fn is_message_with_body(el: &Element, text: &str) -> bool {
    el.name() == "message" && body(el).as_deref() == Some(text)
}

/// A fresh id, unique in this process: `PREFIX-N-PID`.
pub fn next_id(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{prefix}-{n}-{}", std::process::id())
}

/// Each of `n` bodies of [`RawClient::collect_bodies`] arrived exactly once.
pub fn assert_once_each(seen: &HashMap<String, Vec<Option<String>>>, n: usize) {
    let dups: Vec<_> = seen.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(dups.is_empty(), "duplicates at the receiver: {dups:?}");
    assert_eq!(seen.len(), n, "distinct messages at the receiver");
}

/// The concatenated body texts of a `<message/>` element's `<body/>` children.
pub fn body(message: &Element) -> Option<String> {
    message.get_child("body", ns::CLIENT).map(|b| b.text())
}

// ---------------------------------------------------------------------------
// The process-wide CA bundle behind SSL_CERT_FILE.
// ---------------------------------------------------------------------------

struct Bundle {
    path: PathBuf,
    pems: Vec<String>,
}

static BUNDLE: Mutex<Option<Bundle>> = Mutex::new(None);
static BUNDLE_PATH: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_bundle() {
    if let Some(path) = BUNDLE_PATH.get() {
        let _ = fs::remove_file(path);
    }
}

/// Adds `ca` to the process-wide bundle that `SSL_CERT_FILE` names (setting the variable the
/// first time). Test-only: see the module docs.
pub fn trust_ca(ca: &Path) -> io::Result<()> {
    let pem = fs::read_to_string(ca)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", ca.display())))?;
    let mut guard = BUNDLE.lock().unwrap_or_else(|e| e.into_inner());
    let bundle = match &mut *guard {
        Some(bundle) => bundle,
        None => {
            let path = std::env::temp_dir()
                .join(format!("tether-e2e-test-cas-{}.pem", std::process::id()));
            let _ = BUNDLE_PATH.set(path.clone());
            // SAFETY: registering a plain function without captures.
            unsafe {
                libc::atexit(remove_bundle);
            }
            // Test-only: makes rustls-native-certs (inside tokio-xmpp) trust the bundle instead
            // of the system roots.
            std::env::set_var("SSL_CERT_FILE", &path);
            guard.insert(Bundle {
                path,
                pems: Vec::new(),
            })
        }
    };
    if bundle.pems.iter().any(|p| p == &pem) {
        return Ok(());
    }
    bundle.pems.push(pem);
    // Write-then-rename: a connection reading the bundle meanwhile sees the old or the new one.
    let tmp = bundle.path.with_extension("pem.tmp");
    fs::write(&tmp, bundle.pems.concat())?;
    fs::rename(&tmp, &bundle.path)
}
