//! Connect, STARTTLS (our own rustls config: system roots or a given CA file, always validated),
//! SASL SCRAM through tokio-xmpp's `client_login`, and the post-auth stream restart.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::{SinkExt, StreamExt};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::parsers::{ns, starttls, stream_features::StreamFeatures};
use tokio_xmpp::xmlstream::{
    initiate_stream, ReadError, RecvFeaturesError, StreamHeader, Timeouts, XmppStream,
    XmppStreamElement,
};

use crate::error::{Error, Result};
use crate::store::Account;

/// Any byte stream we can speak XMPP over (TCP or TLS over TCP).
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// The buffered transport under the XML stream.
pub type Io = BufStream<Box<dyn IoStream>>;

/// An authenticated XML stream, and the features offered after authentication.
pub struct LoggedIn {
    /// The stream, ready for resume or bind.
    pub stream: XmppStream<Io>,
    /// What the server offers (bind, SM, ...).
    pub features: StreamFeatures,
    /// Bytes read since the last complete element; the session resets it after each one.
    pub budget: ReadBudget,
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

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(std::borrow::Cow::Borrowed(domain)),
        from: None,
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

/// Connects to the account's server and authenticates. Network problems are [`Error::Network`]
/// (retryable); wrong credentials [`Error::Auth`] and certificate problems [`Error::Tls`] (final).
pub async fn login(
    account: &Account,
    password: &str,
    tls: Option<&Arc<ClientConfig>>,
    timeouts: Timeouts,
    max_stanza_bytes: usize,
) -> Result<LoggedIn> {
    let jid: tokio_xmpp::jid::BareJid = account
        .jid
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID {:?}: {e}", account.jid)))?;
    let username = jid
        .node()
        .ok_or_else(|| Error::Usage(format!("JID {jid} has no user part")))?
        .to_string();
    let domain = jid.domain().to_string();

    let tcp = dns_config(account, &domain)?
        .resolve()
        .await
        .map_err(|e| Error::Network(format!("cannot connect: {e}")).caused_by(e))?;
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
    }
    let budget = ReadBudget::default();
    let tcp = Capped {
        inner: tcp,
        used: budget.clone(),
        cap: max_stanza_bytes,
    };
    let io: Io = BufStream::new(Box::new(tcp));
    let (features, mut stream) = initiate_stream(io, ns::JABBER_CLIENT, header(&domain), timeouts)
        .await
        .map_err(io_err)?
        .recv_features::<tokio_xmpp::xmlstream::FallibleStreamElement>()
        .await
        .map_err(features_err)?;

    let (features, stream, channel_binding) = match tls {
        None => (features, stream, ChannelBinding::None),
        Some(config) => {
            if !features.can_starttls() {
                return Err(Error::Tls(
                    "the server does not offer STARTTLS; refusing to continue without encryption"
                        .into(),
                ));
            }
            stream
                .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                    starttls::Request,
                )))
                .await
                .map_err(io_err)?;
            loop {
                match stream.next().await {
                    Some(Ok(el)) => match el.into_read_error() {
                        Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_))) => break,
                        Ok(other) => {
                            return Err(Error::Tls(format!(
                                "the server refused STARTTLS: {other:?}"
                            )))
                        }
                        Err(e) => return Err(Error::Protocol(e.to_string())),
                    },
                    Some(Err(ReadError::SoftTimeout)) => continue,
                    Some(Err(e)) => return Err(Error::Network(e.to_string())),
                    None => return Err(Error::Network("connection closed during STARTTLS".into())),
                }
            }
            let tcp = stream.into_inner().into_inner();
            let name = ServerName::try_from(domain.clone())
                .map_err(|e| Error::Usage(format!("bad domain {domain}: {e}")))?;
            let tls_stream = tokio_rustls::TlsConnector::from(config.clone())
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
            let cb = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => conn
                    .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                    .map(ChannelBinding::TlsExporter)
                    .unwrap_or(ChannelBinding::Unsupported),
                _ => ChannelBinding::Unsupported,
            };
            let io: Io = BufStream::new(Box::new(tls_stream));
            let (features, stream) =
                initiate_stream(io, ns::JABBER_CLIENT, header(&domain), timeouts)
                    .await
                    .map_err(io_err)?
                    .recv_features()
                    .await
                    .map_err(features_err)?;
            (features, stream, cb)
        }
    };

    // SCRAM only: the password itself never crosses the wire, with or without TLS.
    let scram: BTreeSet<String> = features
        .sasl_mechanisms
        .iter()
        .filter(|m| m.starts_with("SCRAM-SHA-"))
        .cloned()
        .collect();
    if scram.is_empty() {
        return Err(Error::Auth(format!(
            "the server offers no SCRAM mechanism (offered: {:?}); Tether never sends a password in plain",
            features.sasl_mechanisms
        )));
    }
    // Bind to the TLS channel when the server offers -PLUS; otherwise say we could have ('y').
    let offers_plus = scram.iter().any(|m| m.ends_with("-PLUS"));
    let channel_binding = match channel_binding {
        cb @ ChannelBinding::TlsExporter(_) if offers_plus => cb,
        ChannelBinding::None => ChannelBinding::None,
        _ => ChannelBinding::Unsupported,
    };
    let creds = Credentials::default()
        .with_username(username)
        .with_password(password.to_owned())
        .with_channel_binding(channel_binding);
    let stream = tokio_xmpp::client_login(stream, scram, creds)
        .await
        .map_err(|e| match e {
            tokio_xmpp::Error::Auth(tokio_xmpp::error::AuthError::Fail(cond)) => {
                Error::Auth(format!("the server said {cond:?} (wrong JID or password?)"))
            }
            tokio_xmpp::Error::Auth(other) => Error::Auth(other.to_string()),
            tokio_xmpp::Error::Io(e) => io_err(e),
            other => Error::Network(other.to_string()).caused_by(other),
        })?;
    let (features, stream) = stream
        .send_header(header(&domain))
        .await
        .map_err(io_err)?
        .recv_features()
        .await
        .map_err(features_err)?;
    Ok(LoggedIn {
        stream,
        features,
        budget,
    })
}
