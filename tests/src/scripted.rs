//! A scripted XMPP server, in process, for faults that a real server will not produce on demand:
//! acks with a chosen `h`, `<failed/>` with or without `h`, `<resumed/>` for another stream, a
//! connection closed after the Nth stanza, a stall, a flood of `<r/>`, raw garbage, a stream error
//! in the middle of a burst.
//!
//! It requires STARTTLS with a certificate for `localhost` from its own test CA
//! ([`ScriptedServer::ca_file`]), authenticates with SCRAM-SHA-256 (the `sasl` crate's server
//! side; no -PLUS, so the client sends the `y` flag), binds, and offers XEP-0198 with
//! resumption. Everything is built from tokio-xmpp's responder stream and xmpp-parsers types;
//! only the deliberately broken bytes are written raw (inside TLS).
//!
//! What the client sent is recorded ([`ScriptedServer::messages`]) so tests can check that
//! nothing was lost and count duplicates by id.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sasl::common::scram::Sha256;
use sasl::common::{ChannelBinding, Identity};
use sasl::secret::Pbkdf2Sha256;
use sasl::server::mechanisms::Scram;
use sasl::server::{Mechanism, Provider, ProviderError, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_xmpp::parsers::bind::{BindQuery, BindResponse};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{FullJid, Jid};
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::roster::Roster;
use tokio_xmpp::parsers::sasl as nonza;
use tokio_xmpp::parsers::sm;
use tokio_xmpp::parsers::stanza_error::{
    DefinedCondition as StanzaCondition, ErrorType, StanzaError,
};
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::parsers::stream_error::{DefinedCondition, ReceivedStreamError, StreamError};
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    accept_stream, ReadError, StreamHeader, Timeouts, XmlStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;

/// The only account: `alice@localhost` with this password.
pub const PASSWORD: &str = "alice-secret";

/// How far beyond the real count [`AckPolicy::TooHigh`] puts `h`: more than any client in these
/// tests has sent, however far its writes run ahead of the server's reads.
pub const TOO_HIGH: u32 = 100_000;

/// What `<a/>` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckPolicy {
    /// The number of stanzas really handled.
    #[default]
    Honest,
    /// More than the client sent (`handled-count-too-high`).
    TooHigh,
    /// Honest until the client sent `n` stanzas, then a lower value than before.
    BackwardsAfter(u32),
    /// Never answers `<r/>` (an ack that is delayed forever).
    Never,
}

/// How `<resume/>` is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResumePolicy {
    /// `<resumed/>` with the real `h` when the stream is known, else `<failed/>` with
    /// `item-not-found`.
    #[default]
    Honest,
    /// `<failed/>` with the real `h` (as Prosody does when the session expired).
    FailedWithH,
    /// `<failed/>` without `h`.
    FailedWithoutH,
    /// `<resumed/>` naming a stream the client never had.
    OtherStreamId,
}

/// One connection's behaviour. Counts are of stanzas received on that connection.
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    /// What acks say.
    pub ack: AckPolicy,
    /// How resumption is answered.
    pub resume: ResumePolicy,
    /// Close the TCP connection once this many stanzas arrived.
    pub close_after: Option<usize>,
    /// Stop reading and writing (socket left open) once this many stanzas arrived.
    pub stall_after: Option<usize>,
    /// Send a stream error (`internal-server-error`) once this many stanzas arrived.
    pub stream_error_after: Option<usize>,
    /// Write these bytes, raw, once this many stanzas arrived.
    pub raw_after: Option<(usize, Vec<u8>)>,
    /// Send this many `<r/>` right after the session is up.
    pub flood_r: usize,
    /// Once this many stanzas arrived (`.0`), send a chat message whose body has `.1` bytes.
    pub oversized_after: Option<(usize, usize)>,
    /// Once this many stanzas arrived (`.0`), send these messages (XML, `jabber:client`).
    pub inject_after: Option<(usize, Vec<String>)>,
}

/// A chat message the client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Which connection (0-based).
    pub connection: usize,
    /// The stanza id.
    pub id: Option<String>,
    /// The body.
    pub body: Option<String>,
}

#[derive(Default)]
struct State {
    connections: usize,
    messages: Vec<Received>,
    /// Stream id -> stanzas handled on it (inbound h).
    streams: HashMap<String, u32>,
    /// `<a/>` values a client sent us.
    client_acks: Vec<u32>,
    /// Stream errors and other notable things the client sent.
    notes: Vec<String>,
    /// The SASL mechanism of every `<auth/>` a client sent.
    sasl_attempts: Vec<String>,
    /// How many stanzas the stream had sent when `inject_after` injected its burst.
    sent_before_injection: Option<u32>,
}

/// What the server presents before any script runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The names the server certificate (signed by the test CA) is for. Default: `localhost` and
    /// `127.0.0.1`.
    pub cert_names: Vec<String>,
    /// The SASL mechanisms offered after STARTTLS. Only `SCRAM-SHA-256` can succeed; a client
    /// choosing anything else is disconnected. Default: `SCRAM-SHA-256`.
    pub mechanisms: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            cert_names: vec!["localhost".into(), "127.0.0.1".into()],
            mechanisms: vec!["SCRAM-SHA-256".into()],
        }
    }
}

/// The running server. Stops when dropped.
pub struct ScriptedServer {
    addr: SocketAddr,
    certs: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

impl ScriptedServer {
    /// Starts a server on a free loopback port. Connection `i` follows `script[i]`, the last
    /// entry repeating (an empty script is all honest).
    pub fn start(script: Vec<Behavior>) -> ScriptedServer {
        ScriptedServer::start_with(script, ServerOptions::default())
    }

    /// Like [`Self::start`], with a certificate or SASL offer of `opts`.
    pub fn start_with(script: Vec<Behavior>, opts: ServerOptions) -> ScriptedServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let certs = tempfile::tempdir().expect("tempdir");
        let names: Vec<&str> = opts.cert_names.iter().map(String::as_str).collect();
        crate::prosody::write_certificates_for(certs.path(), &names).expect("test certificates");
        let mechanisms = Arc::new(opts.mechanisms);
        let tls = tls_acceptor(certs.path());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let n = {
                    let mut s = st.lock().unwrap();
                    s.connections += 1;
                    s.connections - 1
                };
                let behavior = script.get(n).or(script.last()).cloned().unwrap_or_default();
                let st = st.clone();
                let tls = tls.clone();
                let mechanisms = mechanisms.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(tcp, tls, &mechanisms, n, behavior, st.clone()).await {
                        st.lock()
                            .unwrap()
                            .notes
                            .push(format!("connection {n}: {e}"));
                    }
                });
            }
        });
        ScriptedServer {
            addr,
            certs,
            state,
            _runtime: runtime,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test CA that signed the server's `localhost` certificate (for `--ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    /// A Tether client (CLI, database in `dir`) for the only account, trusting this server's CA.
    pub fn alice(&self, dir: &std::path::Path) -> crate::tether::Node {
        crate::tether::Node::new(dir, "alice", PASSWORD, self.addr(), &self.ca_file())
    }

    /// The mechanism of every SASL `<auth/>` received so far.
    pub fn sasl_attempts(&self) -> Vec<String> {
        self.state.lock().unwrap().sasl_attempts.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Every chat message received so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Received messages per body: how many copies of each.
    pub fn copies(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.messages() {
            *m.entry(r.body.unwrap_or_default()).or_default() += 1;
        }
        m
    }

    /// What else happened (stream errors from the client, connection ends), for diagnostics.
    pub fn notes(&self) -> Vec<String> {
        self.state.lock().unwrap().notes.clone()
    }

    /// How many stanzas the connection had sent on its SM stream (what the client's `h` counts)
    /// when `inject_after` sent its burst; `None` before.
    pub fn sent_before_injection(&self) -> Option<u32> {
        self.state.lock().unwrap().sent_before_injection
    }

    /// The `h` values of every `<a/>` a client sent.
    pub fn client_acks(&self) -> Vec<u32> {
        self.state.lock().unwrap().client_acks.clone()
    }
}

type Io = BufStream<tokio_rustls::server::TlsStream<TcpStream>>;

fn tls_acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("localhost.crt"))
            .expect("read certificate")
            .collect::<Result<_, _>>()
            .expect("parse certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("localhost.key")).expect("read key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn timeouts() -> Timeouts {
    Timeouts {
        read_timeout: Duration::from_secs(3600),
        response_timeout: Duration::from_secs(3600),
    }
}

fn header() -> StreamHeader<'static> {
    StreamHeader {
        from: Some(std::borrow::Cow::Borrowed("localhost")),
        to: None,
        id: Some(std::borrow::Cow::Owned(uuid_like())),
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "scripted-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The server's password store: alice only.
struct Accounts;

impl Provider<Pbkdf2Sha256> for Accounts {
    fn provide(&self, identity: &Identity) -> Result<Pbkdf2Sha256, ProviderError> {
        match identity {
            Identity::Username(u) if u == "alice" => {
                Pbkdf2Sha256::derive(PASSWORD, b"tether-scripted-salt", 4096)
                    .map_err(ProviderError::DeriveError)
            }
            _ => Err(ProviderError::AuthenticationFailed),
        }
    }
}

sasl::impl_validator_using_provider!(Accounts, Pbkdf2Sha256);

async fn next<T>(stream: &mut XmlStream<T, XmppStreamElement>) -> io::Result<XmppStreamElement>
where
    T: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(el)) => return Ok(el),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::ParseError(e))) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            }
            Some(Err(e)) => return Err(io::Error::other(e.to_string())),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// STARTTLS, then SCRAM-SHA-256; returns the authenticated stream after the reset.
async fn authenticate(
    tcp: TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    mechanisms: &[String],
    st: &Arc<Mutex<State>>,
) -> io::Result<XmlStream<Io, XmppStreamElement>> {
    let ns = tokio_xmpp::parsers::ns::JABBER_CLIENT;
    let accepted = accept_stream(BufStream::new(tcp), ns, timeouts()).await?;
    let features = StreamFeatures {
        starttls: Some(starttls::StartTls { required: true }),
        ..StreamFeatures::default()
    };
    let mut plain = accepted
        .send_header(header())
        .await?
        .send_features::<XmppStreamElement>(&features)
        .await?;
    match next(&mut plain).await? {
        XmppStreamElement::Starttls(starttls::Nonza::Request(_)) => {}
        other => {
            return Err(io::Error::other(format!(
                "expected <starttls/>, got {other:?}"
            )))
        }
    }
    plain
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Proceed(
            starttls::Proceed,
        )))
        .await?;
    let tcp = plain.into_inner().into_inner();
    let tls = tls.accept(tcp).await?;
    let accepted = accept_stream(BufStream::new(tls), ns, timeouts()).await?;
    let mut features = StreamFeatures::default();
    for m in mechanisms {
        features.sasl_mechanisms.insert(m.clone());
    }
    let mut stream = accepted
        .send_header(header())
        .await?
        .send_features::<XmppStreamElement>(&features)
        .await?;
    let mut mech = Scram::<Sha256, _>::new(Accounts, ChannelBinding::None);
    let mut first = true;
    loop {
        let data = match next(&mut stream).await? {
            XmppStreamElement::Sasl(nonza::Nonza::Auth(a)) if first => {
                st.lock()
                    .unwrap()
                    .sasl_attempts
                    .push(format!("{:?}", a.mechanism));
                if !matches!(a.mechanism, nonza::Mechanism::ScramSha256) {
                    return Err(io::Error::other(format!(
                        "the client chose {:?}",
                        a.mechanism
                    )));
                }
                a.data
            }
            XmppStreamElement::Sasl(nonza::Nonza::Response(r)) if !first => r.data,
            other => {
                return Err(io::Error::other(format!(
                    "unexpected during SASL: {other:?}"
                )))
            }
        };
        first = false;
        match mech.respond(&data) {
            Ok(Response::Proceed(data)) => {
                let challenge = nonza::Nonza::Challenge(nonza::Challenge { data });
                stream.send(&XmppStreamElement::Sasl(challenge)).await?;
            }
            Ok(Response::Success(_, data)) => {
                let success =
                    XmppStreamElement::Sasl(nonza::Nonza::Success(nonza::Success { data }));
                let accepted = stream.accept_reset(&success).await?;
                let features = StreamFeatures {
                    bind: Some(tokio_xmpp::parsers::bind::BindFeature { required: true }),
                    stream_management: Some(sm::StreamManagement { optional: false }),
                    ..StreamFeatures::default()
                };
                return accepted
                    .send_header(header())
                    .await?
                    .send_features::<XmppStreamElement>(&features)
                    .await;
            }
            Err(e) => {
                let failure = nonza::Nonza::Failure(nonza::Failure {
                    defined_condition: nonza::DefinedCondition::NotAuthorized,
                    texts: Default::default(),
                });
                stream.send(&XmppStreamElement::Sasl(failure)).await?;
                return Err(io::Error::other(format!("SASL failed: {e:?}")));
            }
        }
    }
}

/// One connection, after authentication: bind, SM and the faults of `b`.
async fn serve(
    tcp: TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    mechanisms: &[String],
    n: usize,
    b: Behavior,
    st: Arc<Mutex<State>>,
) -> io::Result<()> {
    let mut stream = authenticate(tcp, tls, mechanisms, &st).await?;
    let mut stanzas = 0usize;
    let mut sm_id: Option<String> = None;
    let mut h_in: u32 = 0;
    // Stanzas this connection sent since the stream was enabled (the client's h should count).
    let mut h_out: u32 = 0;
    let mut max_ack_sent: u32 = 0;
    loop {
        let el = match next(&mut stream).await {
            Ok(el) => el,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match el {
            XmppStreamElement::Stanza(stanza) => {
                stanzas += 1;
                if let Some(id) = &sm_id {
                    h_in = h_in.wrapping_add(1);
                    st.lock().unwrap().streams.insert(id.clone(), h_in);
                }
                match stanza {
                    Stanza::Message(m) => record(&st, n, &m),
                    Stanza::Iq(iq) => {
                        if let Some(reply) = answer(iq) {
                            stream
                                .send(&XmppStreamElement::Stanza(Stanza::Iq(reply)))
                                .await?;
                            h_out = h_out.wrapping_add(1);
                        }
                    }
                    Stanza::Presence(_) => {}
                }
                if b.close_after == Some(stanzas) {
                    return Ok(());
                }
                if b.stall_after == Some(stanzas) {
                    std::future::pending::<()>().await;
                }
                if b.stream_error_after == Some(stanzas) {
                    let e =
                        StreamError::new(DefinedCondition::InternalServerError, "en", "scripted");
                    stream
                        .send(&XmppStreamElement::StreamError(ReceivedStreamError(e)))
                        .await?;
                    // Like a real server: close the stream, then read until the client closes
                    // its side (a reset right away could beat the error to the client).
                    SinkExt::<&XmppStreamElement>::close(&mut stream).await?;
                    let drain = async { while next(&mut stream).await.is_ok() {} };
                    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                    return Ok(());
                }
                if let Some((after, size)) = b.oversized_after {
                    if after == stanzas {
                        let mut m = Message::new(Some(Jid::new("alice@localhost").expect("JID")));
                        m.from = Some(Jid::new("bob@localhost/big").expect("JID"));
                        m.type_ = tokio_xmpp::parsers::message::MessageType::Chat;
                        m.bodies.insert(Default::default(), "b".repeat(size));
                        stream
                            .send(&XmppStreamElement::Stanza(Stanza::Message(m)))
                            .await?;
                        h_out = h_out.wrapping_add(1);
                    }
                }
                if let Some((after, xml)) = &b.inject_after {
                    if *after == stanzas {
                        st.lock().unwrap().sent_before_injection = Some(h_out);
                        // One burst: fed together, flushed once.
                        for x in xml {
                            let el: tokio_xmpp::parsers::minidom::Element =
                                x.parse().expect("injected XML parses");
                            let m = Message::try_from(el).expect("an injected message");
                            stream
                                .feed(&XmppStreamElement::Stanza(Stanza::Message(m)))
                                .await?;
                            h_out = h_out.wrapping_add(1);
                        }
                        SinkExt::<&XmppStreamElement>::flush(&mut stream).await?;
                    }
                }
                if let Some((after, bytes)) = &b.raw_after {
                    if *after == stanzas {
                        // Past the XML writer, inside TLS; then only drain until the client
                        // gives up on the stream.
                        SinkExt::<&XmppStreamElement>::flush(&mut stream).await?;
                        let mut io = stream.into_inner();
                        io.write_all(bytes).await?;
                        io.flush().await?;
                        let mut sink = [0u8; 4096];
                        while io.read(&mut sink).await? > 0 {}
                        return Ok(());
                    }
                }
            }
            XmppStreamElement::SM(sm::Nonza::Enable(_)) => {
                let id = uuid_like();
                st.lock().unwrap().streams.insert(id.clone(), 0);
                sm_id = Some(id.clone());
                h_in = 0;
                h_out = 0;
                let enabled = sm::Enabled {
                    id: Some(sm::StreamId(id)),
                    location: None,
                    max: None,
                    resume: true,
                };
                stream
                    .send(&XmppStreamElement::SM(sm::Nonza::Enabled(enabled)))
                    .await?;
                for _ in 0..b.flood_r {
                    stream
                        .send(&XmppStreamElement::SM(sm::Nonza::Req(sm::R)))
                        .await?;
                }
            }
            XmppStreamElement::SM(sm::Nonza::Resume(r)) => {
                let known = st.lock().unwrap().streams.get(&r.previd.0).copied();
                let failed = |h: Option<u32>| {
                    XmppStreamElement::SM(sm::Nonza::Failed(sm::Failed {
                        h,
                        error: Some(
                            tokio_xmpp::parsers::stanza_error::DefinedCondition::ItemNotFound,
                        ),
                    }))
                };
                let reply = match (b.resume, known) {
                    (ResumePolicy::Honest, Some(h)) => {
                        sm_id = Some(r.previd.0.clone());
                        h_in = h;
                        XmppStreamElement::SM(sm::Nonza::Resumed(sm::Resumed {
                            h,
                            previd: r.previd,
                        }))
                    }
                    (ResumePolicy::Honest, None) => failed(None),
                    (ResumePolicy::FailedWithH, h) => failed(Some(h.unwrap_or(0))),
                    (ResumePolicy::FailedWithoutH, _) => failed(None),
                    (ResumePolicy::OtherStreamId, h) => {
                        XmppStreamElement::SM(sm::Nonza::Resumed(sm::Resumed {
                            h: h.unwrap_or(0),
                            previd: sm::StreamId("not-your-stream".into()),
                        }))
                    }
                };
                stream.send(&reply).await?;
            }
            XmppStreamElement::SM(sm::Nonza::Req(_)) => {
                let h = match b.ack {
                    AckPolicy::Honest => Some(h_in),
                    AckPolicy::TooHigh => Some(h_in.wrapping_add(TOO_HIGH)),
                    AckPolicy::BackwardsAfter(k) if h_in >= k && max_ack_sent > 0 => {
                        Some(max_ack_sent - 1)
                    }
                    AckPolicy::BackwardsAfter(_) => Some(h_in),
                    AckPolicy::Never => None,
                };
                if let Some(h) = h {
                    max_ack_sent = max_ack_sent.max(h);
                    stream
                        .send(&XmppStreamElement::SM(sm::Nonza::Ack(sm::A { h })))
                        .await?;
                }
            }
            XmppStreamElement::SM(sm::Nonza::Ack(a)) => st.lock().unwrap().client_acks.push(a.h),
            XmppStreamElement::StreamError(e) => {
                st.lock().unwrap().notes.push(format!(
                    "connection {n}: client stream error {:?}",
                    e.0.condition
                ));
                return Ok(());
            }
            other => st
                .lock()
                .unwrap()
                .notes
                .push(format!("connection {n}: unexpected {other:?}")),
        }
    }
}

fn record(st: &Arc<Mutex<State>>, n: usize, m: &Message) {
    let body = m.bodies.values().next().cloned();
    if body.is_none() {
        return; // receipts, markers, chat states
    }
    st.lock().unwrap().messages.push(Received {
        connection: n,
        id: m.id.as_ref().map(|i| i.0.clone()),
        body,
    });
}

/// Bind gets a JID, the roster an empty list, carbons a result; anything else
/// `service-unavailable`.
fn answer(iq: Iq) -> Option<Iq> {
    let (id, payload, is_get) = match iq {
        Iq::Get { id, payload, .. } => (id, payload, true),
        Iq::Set { id, payload, .. } => (id, payload, false),
        _ => return None,
    };
    if let Ok(bind) = BindQuery::try_from(payload.clone()) {
        let resource = bind.resource.unwrap_or_else(|| "scripted".into());
        let jid = FullJid::new(&format!("alice@localhost/{resource}")).ok()?;
        return Some(Iq::from_result(id, Some(BindResponse { jid })));
    }
    if is_get && Roster::try_from(payload.clone()).is_ok() {
        return Some(Iq::from_result(
            id,
            Some(Roster {
                ver: None,
                items: vec![],
            }),
        ));
    }
    if payload.is("enable", tokio_xmpp::parsers::ns::CARBONS) {
        return Some(Iq::empty_result(Jid::new("alice@localhost").ok()?, id));
    }
    let error = StanzaError::new(
        ErrorType::Cancel,
        StanzaCondition::ServiceUnavailable,
        "en",
        "scripted server",
    );
    Some(Iq::from_error(id, error))
}
