//! Connect (Direct TLS per XEP-0368 when the account or the domain's `_xmpps-client` SRV records
//! say so, else STARTTLS; our own rustls config: system roots or a given CA file, always
//! validated), then log in: SASL2 with Bind2, inline resumption and FAST when the server offers
//! it (every decision in [`crate::auth`]), else RFC 6120 SASL with SCRAM and the stream restart.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::parsers::{ns, sasl2, sm, starttls, stream_features::StreamFeatures};
use tokio_xmpp::xmlstream::{
    initiate_stream, FallibleStreamElement, ReadError, RecvFeaturesError, StreamHeader, Timeouts,
    XmlStream, XmppStreamElement,
};
use xso::FromXml;

use crate::auth::{AuthError, FastToken, Inline, Sasl1, Sasl2, Sasl2Answer, Sasl2Request, Step};
use crate::error::{Error, Result};
use crate::store::Account;

/// Any byte stream we can speak XMPP over (TCP or TLS over TCP).
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// The buffered transport under the XML stream.
pub type Io = BufStream<Box<dyn IoStream>>;

/// What the client reads from the server: every XMPP stream element, and the SASL2 answers
/// and stream features tokio-xmpp's own element type does not cover (SASL2 sends features on
/// the same stream after `<success/>`, with no restart).
#[allow(clippy::large_enum_variant)]
#[derive(FromXml, Debug)]
#[xml()]
pub enum Wire {
    /// `<challenge/>` (SASL2).
    #[xml(transparent)]
    Challenge(sasl2::Challenge),
    /// `<success/>` (SASL2).
    #[xml(transparent)]
    Success(sasl2::Success),
    /// `<failure/>` (SASL2).
    #[xml(transparent)]
    Failure(sasl2::Failure),
    /// `<continue/>` (SASL2).
    #[xml(transparent)]
    Continue(sasl2::Continue),
    /// `<stream:features/>` after a SASL2 success.
    #[xml(transparent)]
    Features(StreamFeatures),
    /// Everything else: stanzas (parsed or not) and nonzas.
    #[xml(transparent)]
    Xmpp(FallibleStreamElement),
}

/// The XML stream the client reads [`Wire`] elements from.
pub type WireStream = XmlStream<Io, Wire>;

/// How the connection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS from the first byte (XEP-0368).
    DirectTls,
    /// STARTTLS.
    StartTls,
    /// No TLS (loopback tests only).
    Plain,
}

/// What a login brings beyond the password: the state a fast reconnect needs.
#[derive(Clone, Debug, Default)]
pub struct LoginPlan {
    /// This installation's SASL2 client id.
    pub client_id: uuid::Uuid,
    /// The FAST token, if any (its replay count already committed).
    pub token: Option<FastToken>,
    /// The stream to resume inline.
    pub resume: Option<sm::Resume>,
    /// Whether SASL2 may be used (off after a SASL2 failure on this server: the next attempt
    /// falls back to SASL1).
    pub sasl2: bool,
    /// The server's SASL2 offer from the last login: the `<authenticate/>` is then written in
    /// the same flight as the stream header, without waiting for the features (one round trip
    /// less). A changed offer is taken from the features as usual.
    pub offer: Option<sasl2::Authentication>,
}

/// What a SASL2 login settled.
#[derive(Clone, Debug)]
pub struct Sasl2Done {
    /// The server's SASL2 offer on this connection (remembered for the next login).
    pub offer: sasl2::Authentication,
    /// Whether the `<authenticate/>` went out with the stream header.
    pub pipelined: bool,
    /// Resumed, bound, or neither (see [`Inline`]).
    pub inline: Inline,
    /// A token to keep.
    pub token: Option<FastToken>,
    /// Whether the token was used.
    pub used_fast: bool,
}

/// An authenticated XML stream, and the features offered after authentication.
pub struct LoggedIn {
    /// The stream, ready for resume or bind (or already resumed or bound inline).
    pub stream: WireStream,
    /// What the server offers (bind, SM, ...). After SASL2 the features come later on the
    /// stream; these are the ones offered inline.
    pub features: StreamFeatures,
    /// Bytes read since the last complete element; the session resets it after each one.
    pub budget: ReadBudget,
    /// How the connection was made.
    pub transport: Transport,
    /// Set when SASL2 was used.
    pub sasl2: Option<Sasl2Done>,
}

/// How a login attempt ended, when it did not fail outright.
pub enum Attempt {
    /// Logged in.
    In(Box<LoggedIn>),
    /// The server refused the FAST token: forget it and log in with the password.
    FastRejected(String),
    /// SASL2 went wrong in a way a SASL1 login may not (a malformed or out-of-order answer):
    /// the next attempt uses SASL1.
    Sasl2Broken(Error),
}

/// Counts the bytes read from the server since the reader last completed an element, so that a
/// server cannot make us buffer an endless stanza. Shared by the socket wrapper and the session.
#[derive(Clone, Debug, Default)]
pub struct ReadBudget(Arc<AtomicUsize>);

impl ReadBudget {
    /// A complete element arrived: start counting again.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The socket, failing a read once more than `cap` bytes arrived without [`ReadBudget::reset`].
/// It counts what crosses the socket (TLS records included); the slack is one read buffer.
struct Capped<S> {
    inner: S,
    used: ReadBudget,
    cap: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        let used = self.used.0.fetch_add(n, Ordering::Relaxed) + n;
        if used > self.cap {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the server sent more than {} KiB without completing a stanza (size limit)",
                    self.cap / 1024
                ),
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TLS stream, with bytes to write right after the first flush of what is above it (the
/// stream header): a pipelined `<authenticate/>`, serialized by minidom.
struct Preface {
    inner: Box<dyn IoStream>,
    tail: Vec<u8>,
}

impl AsyncRead for Preface {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Preface {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.tail.is_empty() {
            let this = &mut *self;
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.tail))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            this.tail.drain(..n);
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Builds the TLS client config: the CA file's certificates if given, else the system's roots.
pub fn tls_config(ca_file: Option<&str>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::Usage(format!("cannot read CA file {path}: {e}")))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| Error::Usage(format!("bad certificate in {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Usage(format!("unusable CA certificate in {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::Usage(format!("no certificate in CA file {path}")));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A bad system certificate only removes itself from the set.
                if let Err(e) = roots.add(cert) {
                    tracing::debug!("skipping a system certificate: {e}");
                }
            }
            if roots.is_empty() {
                return Err(Error::Tls(
                    "no system CA certificates found (install ca-certificates or pass --ca-file)"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn dns_config(account: &Account, domain: &str) -> Result<DnsConfig> {
    match &account.server {
        None => Ok(DnsConfig::srv_default_client(domain)),
        Some(server) => {
            if server.parse::<std::net::SocketAddr>().is_ok() {
                return Ok(DnsConfig::addr(server));
            }
            let (host, port) = server
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| Error::Usage(format!("server {server:?} is not HOST:PORT")))?;
            Ok(DnsConfig::no_srv(host, port))
        }
    }
}

/// The domain's `_xmpps-client._tcp` SRV targets (XEP-0368), by priority; empty when it has
/// none (or the lookup fails: STARTTLS is then tried as before).
async fn xmpps_targets(domain: &str) -> Vec<(String, u16)> {
    use hickory_resolver::proto::rr::RData;
    if domain.parse::<std::net::IpAddr>().is_ok() || domain == "localhost" {
        return Vec::new();
    }
    let resolver = match hickory_resolver::TokioResolver::builder_tokio().map(|b| b.build()) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!("no resolver for the Direct TLS lookup: {e}");
            return Vec::new();
        }
        Err(e) => {
            tracing::debug!("no resolver for the Direct TLS lookup: {e}");
            return Vec::new();
        }
    };
    let name = format!("_xmpps-client._tcp.{domain}.");
    let Ok(lookup) = resolver.srv_lookup(name).await else {
        return Vec::new();
    };
    let mut targets: Vec<(u16, u16, String, u16)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.priority, srv.weight, srv.target.to_ascii(), srv.port)),
            _ => None,
        })
        // "." means the service is decidedly not available (RFC 2782).
        .filter(|(_, _, target, _)| target != ".")
        .collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    targets.into_iter().map(|(_, _, t, p)| (t, p)).collect()
}

fn header(domain: &str, from: Option<&str>) -> StreamHeader<'static> {
    StreamHeader {
        to: Some(std::borrow::Cow::Owned(domain.to_owned())),
        // The bare JID in `from` lets the server offer FAST before authentication.
        from: from.map(|f| std::borrow::Cow::Owned(f.to_owned())),
        id: None,
    }
}

fn io_err(e: std::io::Error) -> Error {
    // rustls reports certificate problems as io errors wrapping a rustls::Error.
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return Error::Tls(tls.to_string()).caused_by(e);
    }
    Error::Network(e.to_string()).caused_by(e)
}

fn features_err(e: RecvFeaturesError) -> Error {
    match e {
        RecvFeaturesError::Io(e) => io_err(e),
        RecvFeaturesError::StreamError(e) => Error::Protocol(format!("stream error: {e}")),
    }
}

fn auth_err(e: AuthError) -> Error {
    match e {
        AuthError::Rejected(_) | AuthError::NoScram(_) | AuthError::Continue(_) => {
            Error::Auth(e.to_string())
        }
        // A server that cannot prove it knows our secret is not to be talked to again.
        AuthError::ServerProof(_) => Error::Auth(e.to_string()),
        AuthError::FastRejected(_) | AuthError::Malformed(_) | AuthError::OutOfOrder(_) => {
            Error::Protocol(e.to_string())
        }
    }
}

/// The next element during login, skipping soft timeouts.
async fn next(stream: &mut WireStream, during: &str) -> Result<Wire> {
    loop {
        match stream.next().await {
            Some(Ok(el)) => return Ok(el),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::ParseError(e))) => {
                return Err(Error::Protocol(format!(
                    "malformed answer from the server during {during}: {e}"
                )))
            }
            Some(Err(e)) => return Err(Error::Network(format!("{during}: {e}"))),
            None => return Err(Error::Network(format!("connection closed during {during}"))),
        }
    }
}

/// TLS over `tcp`, with ALPN `xmpp-client` for Direct TLS; returns the stream and the TLS 1.3
/// exporter for channel binding.
async fn tls_handshake<S: IoStream + 'static>(
    config: &Arc<ClientConfig>,
    domain: &str,
    tcp: S,
    direct: bool,
) -> Result<(Box<dyn IoStream>, Option<Vec<u8>>)> {
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|e| Error::Usage(format!("bad domain {domain}: {e}")))?;
    let config = if direct {
        let mut c = (**config).clone();
        c.alpn_protocols = vec![b"xmpp-client".to_vec()];
        Arc::new(c)
    } else {
        config.clone()
    };
    let tls_stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| match io_err(e) {
            Error::Caused { error, source } if matches!(*error, Error::Network(_)) => {
                Error::Network(format!("TLS handshake: {source}")).caused_by(source)
            }
            other => other,
        })?;
    // No cap on rustls's outgoing buffer: every write is then taken whole and sealed into
    // records at once, never half taken by a stalled socket (which narrows a Prosody 13.0.1
    // resumption bug; see ARCHITECTURE.md). What it can hold is bounded by SM flow control.
    let mut tls_stream = tls_stream;
    tls_stream.get_mut().1.set_buffer_limit(None);
    let (_, conn) = tls_stream.get_ref();
    let exporter = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => conn
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok(),
        _ => None,
    };
    Ok((Box::new(tls_stream), exporter))
}

/// STARTTLS on a plain stream whose `features` were just read, then the TLS handshake: the
/// TLS stream and its channel-binding exporter. A server that does not offer STARTTLS is
/// refused ([`Error::Tls`]): nothing goes unencrypted.
async fn starttls_upgrade(
    mut stream: WireStream,
    features: &StreamFeatures,
    config: &Arc<ClientConfig>,
    domain: &str,
) -> Result<(Box<dyn IoStream>, Option<Vec<u8>>)> {
    if !features.can_starttls() {
        return Err(Error::Tls(
            "the server does not offer STARTTLS; refusing to continue without encryption".into(),
        ));
    }
    stream
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await
        .map_err(io_err)?;
    match next(&mut stream, "STARTTLS").await? {
        Wire::Xmpp(FallibleStreamElement::Ok(XmppStreamElement::Starttls(
            starttls::Nonza::Proceed(_),
        ))) => {}
        other => {
            return Err(Error::Tls(format!(
                "the server refused STARTTLS: {other:?}"
            )))
        }
    }
    let tcp = stream.into_inner().into_inner();
    tls_handshake(config, domain, tcp, false).await
}

/// A TLS stream to `account`'s server (Direct TLS when the account says so, else STARTTLS;
/// plain only with `tls` `None`, the loopback tests' insecure mode), opened and not
/// authenticated: what in-band registration ([`crate::connection::register`]) speaks on.
pub(crate) async fn connect_unauthenticated(
    account: &Account,
    tls: Option<&Arc<ClientConfig>>,
    timeouts: Timeouts,
    max_stanza_bytes: usize,
) -> Result<(StreamFeatures, WireStream)> {
    let domain = account
        .jid
        .parse::<tokio_xmpp::jid::BareJid>()
        .map_err(|e| Error::Usage(format!("bad JID {:?}: {e}", account.jid)))?
        .domain()
        .to_string();
    let tcp = dns_config(account, &domain)?
        .resolve()
        .await
        .map_err(|e| Error::Network(format!("cannot connect: {e}")).caused_by(e))?;
    let capped = Capped {
        inner: tcp,
        used: ReadBudget::default(),
        cap: max_stanza_bytes,
    };
    match tls {
        Some(config) if account.direct_tls => {
            let (tls_io, _) = tls_handshake(config, &domain, capped, true).await?;
            open_stream(BufStream::new(tls_io), &domain, None, timeouts).await
        }
        Some(config) => {
            let io: Io = BufStream::new(Box::new(capped));
            let (features, stream) = open_stream(io, &domain, None, timeouts).await?;
            let (tls_io, _) = starttls_upgrade(stream, &features, config, &domain).await?;
            open_stream(BufStream::new(tls_io), &domain, None, timeouts).await
        }
        None => open_stream(BufStream::new(Box::new(capped)), &domain, None, timeouts).await,
    }
}

/// Reads the next element, for the registration's exchange.
pub(crate) async fn next_element(stream: &mut WireStream, during: &str) -> Result<Wire> {
    next(stream, during).await
}

/// Sends our stream header and reads the server's header and features.
async fn open_stream(
    io: Io,
    domain: &str,
    from: Option<&str>,
    timeouts: Timeouts,
) -> Result<(StreamFeatures, WireStream)> {
    initiate_stream(io, ns::JABBER_CLIENT, header(domain, from), timeouts)
        .await
        .map_err(io_err)?
        .recv_features::<Wire>()
        .await
        .map_err(features_err)
}

fn sasl2_request(
    username: &str,
    password: &str,
    plan: &LoginPlan,
    exporter: Option<Vec<u8>>,
) -> Sasl2Request {
    Sasl2Request {
        username: username.to_owned(),
        password: password.to_owned(),
        token: plan.token.clone(),
        exporter,
        client_id: plan.client_id,
        resume: plan.resume.clone(),
    }
}

/// The TLS stream under the XML stream; with the last login's SASL2 offer, the
/// `<authenticate/>` is prepared now and written right after our stream header.
fn over_tls(
    tls: Box<dyn IoStream>,
    exporter: &Option<Vec<u8>>,
    username: &str,
    password: &str,
    plan: &LoginPlan,
) -> Result<(Io, Option<Sasl2>)> {
    let early = match (&plan.offer, plan.sasl2) {
        (Some(offer), true) => {
            let req = sasl2_request(username, password, plan, exporter.clone());
            match Sasl2::start(offer, req) {
                Ok((sasl, auth)) => {
                    let el: tokio_xmpp::minidom::Element = auth.into();
                    let mut tail = Vec::new();
                    el.write_to(&mut tail).map_err(|e| {
                        Error::Internal(format!("serializing <authenticate/>: {e}"))
                    })?;
                    Some((sasl, tail))
                }
                Err(e) => {
                    tracing::debug!("no pipelined SASL2 on the remembered offer: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    Ok(match early {
        Some((sasl, tail)) => (
            BufStream::new(Box::new(Preface { inner: tls, tail })),
            Some(sasl),
        ),
        None => (BufStream::new(tls), None),
    })
}

/// Connects to the account's server and authenticates. Network problems are [`Error::Network`]
/// (retryable); wrong credentials [`Error::Auth`] and certificate problems [`Error::Tls`] (final).
pub async fn login(
    account: &Account,
    password: &str,
    tls: Option<&Arc<ClientConfig>>,
    timeouts: Timeouts,
    max_stanza_bytes: usize,
    plan: &LoginPlan,
) -> Result<Attempt> {
    let jid: tokio_xmpp::jid::BareJid = account
        .jid
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID {:?}: {e}", account.jid)))?;
    let username = jid
        .node()
        .ok_or_else(|| Error::Usage(format!("JID {jid} has no user part")))?
        .to_string();
    let domain = jid.domain().to_string();
    let bare = jid.to_string();
    let budget = ReadBudget::default();
    let capped = |tcp: tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        Capped {
            inner: tcp,
            used: budget.clone(),
            cap: max_stanza_bytes,
        }
    };

    // Direct TLS: the account's explicit server, or the domain's _xmpps-client records.
    let mut direct = None;
    if let Some(config) = tls {
        if account.direct_tls {
            let tcp = dns_config(account, &domain)?
                .resolve()
                .await
                .map_err(|e| Error::Network(format!("cannot connect: {e}")).caused_by(e))?;
            direct = Some(tls_handshake(config, &domain, capped(tcp), true).await?);
        } else if account.server.is_none() {
            for (host, port) in xmpps_targets(&domain).await {
                match DnsConfig::no_srv(&host, port).resolve().await {
                    Ok(tcp) => match tls_handshake(config, &domain, capped(tcp), true).await {
                        Ok(io) => {
                            direct = Some(io);
                            break;
                        }
                        Err(e @ Error::Tls(_)) => return Err(e),
                        Err(e) => tracing::info!("Direct TLS to {host}:{port}: {e}"),
                    },
                    Err(e) => tracing::info!("Direct TLS to {host}:{port}: {e}"),
                }
            }
        }
    }

    let (transport, features, mut stream, exporter, early) = match (direct, tls) {
        (Some((tls_io, exporter)), _) => {
            let (io, early) = over_tls(tls_io, &exporter, &username, password, plan)?;
            let (features, stream) = open_stream(io, &domain, Some(&bare), timeouts).await?;
            (Transport::DirectTls, features, stream, exporter, early)
        }
        (None, tls) => {
            let tcp = dns_config(account, &domain)?
                .resolve()
                .await
                .map_err(|e| Error::Network(format!("cannot connect: {e}")).caused_by(e))?;
            let io: Io = BufStream::new(Box::new(capped(tcp)));
            let (features, stream) = open_stream(io, &domain, None, timeouts).await?;
            match tls {
                None => (Transport::Plain, features, stream, None, None),
                Some(config) => {
                    let (tls_io, exporter) =
                        starttls_upgrade(stream, &features, config, &domain).await?;
                    let (io, early) = over_tls(tls_io, &exporter, &username, password, plan)?;
                    let (features, stream) =
                        open_stream(io, &domain, Some(&bare), timeouts).await?;
                    (Transport::StartTls, features, stream, exporter, early)
                }
            }
        }
    };

    // SASL2 only over TLS (a server offers no authentication in plain anyway).
    let offer_now = features.sasl2.clone();
    if plan.sasl2 && tls.is_some() && (early.is_some() || offer_now.is_some()) {
        let pipelined = early.is_some();
        let offer = offer_now
            .clone()
            .or_else(|| plan.offer.clone())
            .expect("an offer: checked");
        let mut sasl = match early {
            Some(sasl) => sasl,
            None => {
                let req = sasl2_request(&username, password, plan, exporter);
                let (sasl, authenticate) = Sasl2::start(&offer, req).map_err(auth_err)?;
                stream.send(&authenticate).await.map_err(io_err)?;
                sasl
            }
        };
        // Any failure of a pipelined attempt makes the next attempt negotiate as usual.
        let broken = |e: Error| {
            if pipelined {
                Ok(Attempt::Sasl2Broken(e))
            } else {
                Err(e)
            }
        };
        let outcome = loop {
            let answer = match next(&mut stream, "SASL2").await {
                Ok(a) => a,
                Err(e @ Error::Protocol(_)) => return Ok(Attempt::Sasl2Broken(e)),
                Err(e) => return Err(e),
            };
            let answer = match answer {
                Wire::Challenge(c) => Sasl2Answer::Challenge(c),
                Wire::Success(s) => Sasl2Answer::Success(s),
                Wire::Failure(f) => Sasl2Answer::Failure(f),
                Wire::Continue(c) => Sasl2Answer::Continue(c),
                other => {
                    return Ok(Attempt::Sasl2Broken(Error::Protocol(format!(
                        "unexpected element during SASL2: {other:?}"
                    ))))
                }
            };
            match sasl.handle(answer) {
                Ok(Step::Respond(r)) => stream.send(&r).await.map_err(io_err)?,
                Ok(Step::Done(outcome)) => break outcome,
                Err(AuthError::FastRejected(why)) => return Ok(Attempt::FastRejected(why)),
                Err(e @ (AuthError::Malformed(_) | AuthError::OutOfOrder(_))) => {
                    return Ok(Attempt::Sasl2Broken(auth_err(e)))
                }
                // Refused on a remembered offer (the mechanism may be gone): negotiate anew
                // before calling the password wrong.
                Err(e @ (AuthError::Rejected(_) | AuthError::NoScram(_))) => {
                    return broken(auth_err(e))
                }
                Err(e) => return Err(auth_err(e)),
            }
        };
        tracing::info!(jid = %outcome.jid, fast = outcome.used_fast, inline = ?outcome.inline, "SASL2 login");
        // Without Bind2 the engine binds as after SASL1, on the features the server sends now.
        let features = if outcome.inline == Inline::Nothing {
            match next(&mut stream, "SASL2").await? {
                Wire::Features(f) => f,
                other => {
                    return Ok(Attempt::Sasl2Broken(Error::Protocol(format!(
                        "expected stream features after SASL2, got {other:?}"
                    ))))
                }
            }
        } else {
            inline_features(&offer)
        };
        return Ok(Attempt::In(Box::new(LoggedIn {
            stream,
            features,
            budget,
            transport,
            sasl2: Some(Sasl2Done {
                offer,
                pipelined,
                inline: outcome.inline,
                token: outcome.token,
                used_fast: outcome.used_fast,
            }),
        })));
    }

    // RFC 6120 SASL: SCRAM only, so the password itself never crosses the wire.
    let offered: Vec<String> = features.sasl_mechanisms.iter().cloned().collect();
    let (mut sasl, auth) =
        Sasl1::start(&offered, &username, password, exporter.as_deref()).map_err(auth_err)?;
    stream
        .send(&XmppStreamElement::Sasl(
            tokio_xmpp::parsers::sasl::Nonza::Auth(auth),
        ))
        .await
        .map_err(io_err)?;
    loop {
        match next(&mut stream, "SASL").await? {
            Wire::Xmpp(FallibleStreamElement::Ok(XmppStreamElement::Sasl(nonza))) => {
                match sasl.handle(nonza).map_err(auth_err)? {
                    Some(response) => stream
                        .send(&XmppStreamElement::Sasl(
                            tokio_xmpp::parsers::sasl::Nonza::Response(response),
                        ))
                        .await
                        .map_err(io_err)?,
                    None => break,
                }
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected element during SASL: {other:?}"
                )))
            }
        }
    }
    let (features, stream) = stream
        .initiate_reset()
        .send_header(header(&domain, Some(&bare)))
        .await
        .map_err(io_err)?
        .recv_features()
        .await
        .map_err(features_err)?;
    Ok(Attempt::In(Box::new(LoggedIn {
        stream,
        features,
        budget,
        transport,
        sasl2: None,
    })))
}

/// The features a SASL2 login with Bind2 can count on before the post-login features arrive:
/// SM if offered inline, CSI if Bind2 lists it.
fn inline_features(offer: &sasl2::Authentication) -> StreamFeatures {
    let mut f = StreamFeatures::default();
    let inline = offer.inline.as_ref();
    f.stream_management = inline.and_then(|i| i.sm.clone());
    if inline
        .and_then(|i| i.bind2.as_ref())
        .is_some_and(|b| b.inline_features.iter().any(|v| v == ns::CSI))
    {
        f.others
            .push(tokio_xmpp::minidom::Element::builder("csi", ns::CSI).build());
    }
    f
}
