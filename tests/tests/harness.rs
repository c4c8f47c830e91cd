//! Self-tests of the end-to-end harness: the Prosody fixture (start, TLS
//! chain, accounts, restart, kill) and every control of the fault-injecting
//! proxy (against a plain echo server).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tether_e2e::{Prosody, ProsodyOptions, Proxy, DOMAIN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream as AsyncTcpStream;
use tokio_rustls::rustls::{self, pki_types};

const STREAM_HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Prosody
// ---------------------------------------------------------------------------

fn start_prosody(opts: ProsodyOptions) -> Prosody {
    let started = Instant::now();
    let prosody = Prosody::start(opts).expect("Prosody should start");
    eprintln!(
        "Prosody started on port {} in {:?} ({})",
        prosody.port(),
        started.elapsed(),
        prosody.dir().display()
    );
    prosody
}

/// Sends a stream header and returns what the server answers, read until
/// the end of the stream features.
fn plain_stream_features(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(STREAM_HEADER.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("</stream:features>") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading the stream features: {e}; got so far: {}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn prosody_answers_a_stream_header_directly_and_through_the_proxy() {
    let prosody = start_prosody(ProsodyOptions::default());
    assert!(prosody.ca_file().is_file());
    assert!(prosody.dir().join("localhost.crt").is_file());
    assert!(prosody.dir().join("localhost.key").is_file());
    assert_eq!(prosody.addr().port(), prosody.port());
    assert!(prosody.addr().ip().is_loopback());

    let direct = plain_stream_features(prosody.addr());
    assert!(direct.contains("starttls"), "direct reply: {direct}");
    assert!(
        direct.contains("<required"),
        "encryption should be required: {direct}"
    );

    let proxy = Proxy::start(prosody.addr());
    let proxied = plain_stream_features(proxy.addr());
    assert!(proxied.contains("starttls"), "proxied reply: {proxied}");
    assert!(proxy.bytes_upstream() >= STREAM_HEADER.len() as u64);
    assert!(proxy.bytes_downstream() > 0);
    assert_eq!(proxy.connections_accepted(), 1);

    assert!(prosody.log_tail(50).contains("Activated service 'c2s'"));
}

#[test]
fn prosody_config_has_the_requested_options() {
    let prosody = start_prosody(ProsodyOptions {
        mam: true,
        hibernation_secs: 7,
        extra_config: "c2s_timeout = 123".into(),
        ..ProsodyOptions::default()
    });
    let config = std::fs::read_to_string(prosody.config_path()).unwrap();
    assert!(config.contains("smacks_hibernation_time = 7"), "{config}");
    assert!(config.contains("\"mam\""), "{config}");
    assert!(config.contains("c2s_timeout = 123"), "{config}");
    assert!(config.contains(&format!("c2s_ports = {{ {} }}", prosody.port())));

    let without_mam = start_prosody(ProsodyOptions::default());
    let config = std::fs::read_to_string(without_mam.config_path()).unwrap();
    assert!(!config.contains("\"mam\""), "{config}");
    assert!(config.contains("smacks_hibernation_time = 60"), "{config}");

    // MAM answers only where enabled.
    let rt = runtime();
    for (server, enabled) in [(&prosody, true), (&without_mam, false)] {
        server.register("mia", "pw").unwrap();
        let reply = rt
            .block_on(async {
                let mut xmpp = Xmpp::login(server.addr(), &server.ca_file(), "mia", "pw").await?;
                xmpp.bind().await?;
                xmpp.send("<iq type='get' id='mam1'><query xmlns='urn:xmpp:mam:2'/></iq>")
                    .await?;
                xmpp.read_until("id='mam1'").await?;
                xmpp.read_until("</iq>").await
            })
            .unwrap();
        assert_eq!(reply.contains("urn:xmpp:mam:2"), enabled, "{reply}");
        assert_eq!(reply.contains("service-unavailable"), !enabled, "{reply}");
    }
    for server in [&prosody, &without_mam] {
        let log = server.log_tail(200);
        assert!(!log.contains("\terror\t"), "errors in the log:\n{log}");
    }
}

#[test]
fn registered_user_can_log_in_over_starttls_and_a_wrong_password_cannot() {
    let prosody = start_prosody(ProsodyOptions::default());
    prosody.register("alice", "secret").expect("register");
    assert_eq!(prosody.jid("alice"), "alice@localhost");

    let rt = runtime();
    // The TLS handshake validates the chain against ca.pem for "localhost"
    // with rustls's webpki verifier.
    let ok = rt
        .block_on(login(prosody.addr(), &prosody.ca_file(), "alice", "secret"))
        .expect("login attempt");
    assert!(ok, "alice should authenticate");
    let wrong = rt
        .block_on(login(prosody.addr(), &prosody.ca_file(), "alice", "nope"))
        .expect("login attempt");
    assert!(!wrong, "a wrong password must fail");
    let nobody = rt
        .block_on(login(prosody.addr(), &prosody.ca_file(), "bob", "secret"))
        .expect("login attempt");
    assert!(!nobody, "an unregistered user must fail");

    // Re-registering changes the password.
    prosody.register("alice", "other").expect("re-register");
    let ok = rt
        .block_on(login(prosody.addr(), &prosody.ca_file(), "alice", "other"))
        .expect("login attempt");
    assert!(ok, "the new password should work");
}

#[test]
fn tls_fails_against_a_ca_that_did_not_sign_the_certificate() {
    let prosody = start_prosody(ProsodyOptions::default());
    let other = start_prosody(ProsodyOptions::default());
    prosody.register("alice", "secret").unwrap();
    let err = runtime()
        .block_on(login(prosody.addr(), &other.ca_file(), "alice", "secret"))
        .expect_err("the handshake must fail with another CA");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "unexpected error: {err}"
    );
}

#[test]
fn register_works_while_the_server_is_stopped() {
    let mut prosody = start_prosody(ProsodyOptions::default());
    prosody.stop().unwrap();
    assert!(!prosody.is_running());
    prosody.register("carol", "pw").expect("offline register");
    prosody.start_again().unwrap();
    let ok = runtime()
        .block_on(login(prosody.addr(), &prosody.ca_file(), "carol", "pw"))
        .unwrap();
    assert!(ok);
}

#[test]
fn restart_keeps_the_port_and_the_accounts_and_drops_the_sessions() {
    let mut prosody = start_prosody(ProsodyOptions::default());
    prosody.register("dave", "pw").unwrap();
    let port = prosody.port();
    let pid = prosody.pid().expect("running");

    // A connection open across the restart is closed by it.
    let mut open = TcpStream::connect(prosody.addr()).unwrap();
    open.write_all(STREAM_HEADER.as_bytes()).unwrap();
    open.set_read_timeout(Some(PATIENCE)).unwrap();

    let started = Instant::now();
    prosody.restart().expect("restart");
    eprintln!("restart took {:?}", started.elapsed());
    assert_eq!(prosody.port(), port);
    assert_ne!(prosody.pid().expect("running again"), pid);
    assert!(
        read_to_end_or_reset(&mut open).is_ok(),
        "the old connection should have been closed"
    );

    let ok = runtime()
        .block_on(login(prosody.addr(), &prosody.ca_file(), "dave", "pw"))
        .unwrap();
    assert!(ok, "the account should survive a restart");
}

#[test]
fn kill_then_start_again() {
    let mut prosody = start_prosody(ProsodyOptions::default());
    prosody.register("erin", "pw").unwrap();
    let mut open = TcpStream::connect(prosody.addr()).unwrap();
    open.set_read_timeout(Some(PATIENCE)).unwrap();

    prosody.kill().unwrap();
    assert!(!prosody.is_running());
    assert!(prosody.pid().is_none());
    assert!(read_to_end_or_reset(&mut open).is_ok());
    assert!(
        TcpStream::connect(prosody.addr()).is_err(),
        "nothing listens"
    );

    prosody.start_again().unwrap();
    let ok = runtime()
        .block_on(login(prosody.addr(), &prosody.ca_file(), "erin", "pw"))
        .unwrap();
    assert!(ok);
}

#[test]
fn dropping_prosody_ends_the_process_and_removes_the_directory() {
    let mut prosody = start_prosody(ProsodyOptions::default());
    let pid = prosody.pid().unwrap();
    let dir = prosody.dir().to_path_buf();
    drop(prosody);
    assert!(
        !is_alive(&pid.to_string()),
        "prosody (pid {pid}) survived the drop"
    );
    if std::env::var_os("TETHER_KEEP_TEST_DIRS").is_none() {
        assert!(!dir.exists());
    }
}

/// Even a test process that dies without unwinding (abort, SIGKILL, a
/// runner's timeout) takes its Prosody with it. The test re-runs itself as a
/// child process that starts a server and aborts.
#[test]
fn prosody_dies_with_the_test_process() {
    const CHILD_ENV: &str = "TETHER_E2E_ABORT_CHILD";
    if std::env::var_os(CHILD_ENV).is_some() {
        let mut prosody = Prosody::start(ProsodyOptions::default()).unwrap();
        println!("PID {}", prosody.pid().unwrap());
        println!("DIR {}", prosody.dir().display());
        io::stdout().flush().unwrap();
        std::process::abort();
    }

    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "prosody_dies_with_the_test_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env_remove("TETHER_KEEP_TEST_DIRS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the child should abort");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, value)| value))
            .unwrap_or_else(|| panic!("no {name} in the child's output: {stdout}"))
            .to_owned()
    };
    let pid = field("PID ");
    let dir = field("DIR ");
    // The aborted child could not clean up its directory.
    let _ = std::fs::remove_dir_all(&dir);
    let deadline = Instant::now() + PATIENCE;
    while is_alive(&pid) {
        assert!(
            Instant::now() < deadline,
            "prosody (pid {pid}) outlived its test process"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` exists and is not a zombie (an orphan is reparented
/// to pid 1, which may never reap it in a container).
fn is_alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

/// What Prosody 13 answers to a stream-management resume, by how the old
/// session ended. The client's reconnect logic depends on this.
#[test]
fn smacks_resume_failures_after_restart_and_kill() {
    let mut prosody = start_prosody(ProsodyOptions::default());
    prosody.register("frank", "pw").unwrap();
    let rt = runtime();
    let ca = prosody.ca_file();

    // A graceful restart saves the counter: <failed h='1'> (one stanza, our
    // presence, was handled).
    let previd = rt.block_on(async {
        let mut xmpp = Xmpp::login(prosody.addr(), &ca, "frank", "pw").await?;
        let id = xmpp.bind_and_enable_smacks().await?;
        xmpp.send("<presence/>").await?;
        xmpp.send("<r xmlns='urn:xmpp:sm:3'/>").await?;
        xmpp.read_until("<a ").await?;
        // Keep the connection open across the restart.
        io::Result::Ok((id, xmpp))
    });
    let (previd, _old) = previd.unwrap();
    prosody.restart().unwrap();
    let failed = rt
        .block_on(async {
            let mut xmpp = Xmpp::login(prosody.addr(), &ca, "frank", "pw").await?;
            xmpp.send(&format!(
                "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
            ))
            .await?;
            xmpp.read_until("</failed>").await
        })
        .unwrap();
    eprintln!("resume after restart: {failed}");
    assert!(failed.contains("item-not-found"), "{failed}");
    assert!(failed.contains(" h='1'"), "{failed}");

    // SIGKILL loses everything: <failed> without h.
    let previd = rt
        .block_on(async {
            let mut xmpp = Xmpp::login(prosody.addr(), &ca, "frank", "pw").await?;
            let id = xmpp.bind_and_enable_smacks().await?;
            io::Result::Ok((id, xmpp))
        })
        .unwrap();
    let (previd, _old) = previd;
    prosody.kill().unwrap();
    prosody.start_again().unwrap();
    let failed = rt
        .block_on(async {
            let mut xmpp = Xmpp::login(prosody.addr(), &ca, "frank", "pw").await?;
            xmpp.send(&format!(
                "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
            ))
            .await?;
            xmpp.read_until("</failed>").await
        })
        .unwrap();
    eprintln!("resume after kill: {failed}");
    assert!(failed.contains("item-not-found"), "{failed}");
    assert!(!failed.contains(" h="), "{failed}");
}

/// A session whose connection drops can be resumed within
/// `hibernation_secs`, and gets `<failed h=…>` after it.
#[test]
fn smacks_resume_within_and_after_hibernation() {
    let prosody = start_prosody(ProsodyOptions {
        hibernation_secs: 2,
        ..ProsodyOptions::default()
    });
    prosody.register("grace", "pw").unwrap();
    let proxy = Proxy::start(prosody.addr());
    let ca = prosody.ca_file();
    let rt = runtime();

    let (previd, old) = rt
        .block_on(async {
            let mut xmpp = Xmpp::login(proxy.addr(), &ca, "grace", "pw").await?;
            let id = xmpp.bind_and_enable_smacks().await?;
            io::Result::Ok((id, xmpp))
        })
        .unwrap();
    proxy.drop_all();
    drop(old);
    let resumed = rt
        .block_on(async {
            let mut xmpp = Xmpp::login(proxy.addr(), &ca, "grace", "pw").await?;
            xmpp.send(&format!(
                "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
            ))
            .await?;
            let reply = xmpp.read_until("/>").await?;
            io::Result::Ok((reply, xmpp))
        })
        .unwrap();
    let (reply, xmpp) = resumed;
    assert!(reply.contains("<resumed"), "{reply}");

    // Lose it again and wait past the hibernation time.
    drop(xmpp);
    proxy.drop_all();
    thread::sleep(Duration::from_secs(4));
    let failed = rt
        .block_on(async {
            let mut xmpp = Xmpp::login(proxy.addr(), &ca, "grace", "pw").await?;
            xmpp.send(&format!(
                "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
            ))
            .await?;
            xmpp.read_until("</failed>").await
        })
        .unwrap();
    eprintln!("resume after hibernation timeout: {failed}");
    assert!(failed.contains("item-not-found"), "{failed}");
    assert!(failed.contains(" h='0'"), "{failed}");
}

// ---------------------------------------------------------------------------
// A minimal raw XMPP client (string matching only; enough for the checks
// above).
// ---------------------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Xmpp {
    stream: Box<dyn Io>,
    /// Bytes read but not yet consumed by `read_until`.
    pending: String,
}

impl Xmpp {
    /// Connects, does STARTTLS (trusting only `ca`), and authenticates with
    /// SASL PLAIN. Fails with `PermissionDenied` if authentication fails.
    async fn login(addr: SocketAddr, ca: &Path, user: &str, password: &str) -> io::Result<Xmpp> {
        let tcp = AsyncTcpStream::connect(addr).await?;
        let mut xmpp = Xmpp {
            stream: Box::new(tcp),
            pending: String::new(),
        };
        xmpp.send(STREAM_HEADER).await?;
        xmpp.read_until("</stream:features>").await?;
        xmpp.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        xmpp.read_until("<proceed").await?;
        xmpp.read_until("/>").await?;
        assert!(xmpp.pending.is_empty(), "data after <proceed/>");

        let mut roots = rustls::RootCertStore::empty();
        for cert in <pki_types::CertificateDer as pki_types::pem::PemObject>::pem_file_iter(ca)
            .map_err(io::Error::other)?
        {
            roots
                .add(cert.map_err(io::Error::other)?)
                .map_err(io::Error::other)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = pki_types::ServerName::try_from(DOMAIN).map_err(io::Error::other)?;
        // Take the plain stream out to wrap it (leaving a dummy behind).
        let plain = std::mem::replace(&mut xmpp.stream, Box::new(tokio::io::duplex(1).0));
        xmpp.stream = Box::new(connector.connect(name, plain).await?);

        xmpp.send(STREAM_HEADER).await?;
        let features = xmpp.read_until("</stream:features>").await?;
        assert!(features.contains("PLAIN"), "no PLAIN: {features}");
        let plain = base64(format!("\0{user}\0{password}").as_bytes());
        xmpp.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
        ))
        .await?;
        let reply = xmpp.read_until_any(&["<success", "</failure>"]).await?;
        if !reply.contains("<success") {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, reply));
        }
        xmpp.read_until("/>").await?; // end of <success .../> (or of its content)
        xmpp.pending.clear();
        xmpp.send(STREAM_HEADER).await?;
        xmpp.read_until("</stream:features>").await?;
        Ok(xmpp)
    }

    /// Binds a resource and enables resumable stream management; returns the
    /// resumption id.
    async fn bind_and_enable_smacks(&mut self) -> io::Result<String> {
        self.bind().await?;
        self.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await?;
        let enabled = self.read_until("/>").await?;
        let id = enabled
            .split(" id='")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .ok_or_else(|| io::Error::other(format!("no id in {enabled}")))?;
        Ok(id.to_owned())
    }

    /// Binds the resource `harness`.
    async fn bind(&mut self) -> io::Result<()> {
        self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>harness</resource></bind></iq>",
        )
        .await?;
        self.read_until("</iq>").await?;
        Ok(())
    }

    async fn send(&mut self, data: &str) -> io::Result<()> {
        self.stream.write_all(data.as_bytes()).await?;
        self.stream.flush().await
    }

    /// Reads until `pattern` has arrived; returns everything up to and
    /// including it.
    async fn read_until(&mut self, pattern: &str) -> io::Result<String> {
        self.read_until_any(&[pattern]).await
    }

    async fn read_until_any(&mut self, patterns: &[&str]) -> io::Result<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(end) = patterns
                .iter()
                .filter_map(|p| self.pending.find(p).map(|i| i + p.len()))
                .min()
            {
                let rest = self.pending.split_off(end);
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("waiting for {patterns:?}; got {:?}", self.pending),
                    )
                })??;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF waiting for {patterns:?}; got {:?}", self.pending),
                ));
            }
            self.pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

/// Logs in; `Ok(false)` if the credentials are refused.
async fn login(addr: SocketAddr, ca: &Path, user: &str, password: &str) -> io::Result<bool> {
    match Xmpp::login(addr, ca, user, password).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(false),
        Err(e) => Err(e),
    }
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Proxy, against an echo server
// ---------------------------------------------------------------------------

/// What the echo server saw on one connection, reported when it ends.
#[derive(Debug)]
struct EchoReport {
    received: usize,
}

/// An echo server on its own threads. Each connection reports how many bytes
/// it received when it ends (EOF or error).
struct Echo {
    addr: SocketAddr,
    reports: mpsc::Receiver<EchoReport>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, reports) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut received = 0;
                    let mut buf = [0u8; 8192];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                received += n;
                                if stream.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = tx.send(EchoReport { received });
                });
            }
        });
        Echo { addr, reports }
    }

    /// Waits for the next connection to end.
    fn next_report(&self) -> EchoReport {
        self.reports
            .recv_timeout(PATIENCE)
            .expect("an echo connection should have ended")
    }
}

fn connect(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `data` and reads the same number of bytes back.
fn roundtrip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).unwrap();
    back
}

/// Reads until EOF or a reset (both are how a closed link shows); errors on
/// anything else, including a timeout.
fn read_to_end_or_reset(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    match stream.read_to_end(&mut data) {
        Ok(_) => Ok(data),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(data),
        Err(e) => Err(e),
    }
}

/// Whether nothing arrives within `wait` (and the connection stays open).
fn stays_silent(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    let silent = match stream.read(&mut buf) {
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        Ok(_) => false,
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    silent
}

#[test]
fn proxy_forwards_both_ways_and_counts() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    assert_eq!(proxy.upstream(), echo.addr);
    assert!(proxy.addr().ip().is_loopback());
    let mut client = connect(&proxy);
    // Larger than the proxy's buffer, so it takes several chunks.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(roundtrip(&mut client, &data), data);
    assert_eq!(proxy.bytes_upstream(), 10_000);
    assert_eq!(proxy.bytes_downstream(), 10_000);
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.active_connections(), 1);

    // A client half-close goes through, and the server's close comes back.
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end_or_reset(&mut client).unwrap(), b"");
    assert_eq!(echo.next_report().received, 10_000);
    let deadline = Instant::now() + PATIENCE;
    while proxy.active_connections() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(proxy.active_connections(), 0);
}

#[test]
fn proxy_drop_all_closes_both_sides() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    assert_eq!(roundtrip(&mut a, b"hello"), b"hello");
    assert_eq!(roundtrip(&mut b, b"world"), b"world");
    assert_eq!(proxy.active_connections(), 2);

    proxy.drop_all();
    assert_eq!(proxy.active_connections(), 0);
    // Clients see EOF (or a reset)...
    assert!(read_to_end_or_reset(&mut a).is_ok());
    assert!(read_to_end_or_reset(&mut b).is_ok());
    // ...and so does the server.
    echo.next_report();
    echo.next_report();

    // New connections still work.
    let mut c = connect(&proxy);
    assert_eq!(roundtrip(&mut c, b"again"), b"again");
    assert_eq!(proxy.connections_accepted(), 3);
}

#[test]
fn proxy_refuse_closes_new_connections_only() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut open = connect(&proxy);
    assert_eq!(roundtrip(&mut open, b"before"), b"before");

    proxy.set_refuse(true);
    for _ in 0..3 {
        let mut refused = connect(&proxy);
        // Writing may or may not fail first; reading must end at once.
        let _ = refused.write_all(b"anyone?");
        let started = Instant::now();
        let got = read_to_end_or_reset(&mut refused).expect("closed, not timed out");
        assert!(got.is_empty());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(proxy.connections_accepted(), 4);
    // The open connection is unaffected.
    assert_eq!(roundtrip(&mut open, b"during"), b"during");

    proxy.set_refuse(false);
    let mut again = connect(&proxy);
    assert_eq!(roundtrip(&mut again, b"after"), b"after");
    assert_eq!(proxy.connections_accepted(), 5);
}

#[test]
fn proxy_blackhole_stops_forwarding_but_keeps_sockets_open() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut client = connect(&proxy);
    assert_eq!(roundtrip(&mut client, b"ping"), b"ping");

    proxy.set_blackhole(true);
    client.write_all(b"lost").unwrap();
    assert!(stays_silent(&mut client, Duration::from_millis(500)));
    assert_eq!(proxy.bytes_upstream(), 4, "nothing forwarded meanwhile");
    // A new connection is dead too.
    let mut other = connect(&proxy);
    other.write_all(b"lost too").unwrap();
    assert!(stays_silent(&mut other, Duration::from_millis(300)));
    assert_eq!(proxy.active_connections(), 2, "sockets stay open");

    proxy.set_blackhole(false);
    // The discarded bytes are gone; later ones flow again.
    assert_eq!(roundtrip(&mut client, b"back"), b"back");
    assert_eq!(roundtrip(&mut other, b"back"), b"back");
}

#[test]
fn proxy_blackhole_current_spares_new_connections() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut old = connect(&proxy);
    assert_eq!(roundtrip(&mut old, b"ping"), b"ping");

    proxy.blackhole_current();
    old.write_all(b"lost").unwrap();
    assert!(stays_silent(&mut old, Duration::from_millis(500)));

    let mut new = connect(&proxy);
    assert_eq!(roundtrip(&mut new, b"fine"), b"fine");
    old.write_all(b"still lost").unwrap();
    assert!(stays_silent(&mut old, Duration::from_millis(300)));
}

#[test]
fn proxy_drop_after_upstream_bytes_cuts_exactly_there() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut client = connect(&proxy);
    assert_eq!(roundtrip(&mut client, b"1234"), b"1234");

    proxy.drop_after_upstream_bytes(10);
    assert_eq!(roundtrip(&mut client, b"abcde"), b"abcde");
    // 5 of the 10 are used; the next 20 bytes cross the limit.
    let _ = client.write_all(&[b'x'; 20]);
    let echoed = read_to_end_or_reset(&mut client).expect("closed, not timed out");
    assert!(echoed.len() <= 5, "got back {echoed:?}");
    assert_eq!(
        echo.next_report().received,
        4 + 10,
        "the server gets exactly the allowed bytes"
    );
    assert_eq!(proxy.bytes_upstream(), 14);

    // One-shot: later connections are not cut.
    let mut later = connect(&proxy);
    assert_eq!(roundtrip(&mut later, &[b'y'; 100]), vec![b'y'; 100]);
}

#[test]
fn proxy_drop_after_zero_bytes_cuts_at_the_next_send() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut client = connect(&proxy);
    assert_eq!(roundtrip(&mut client, b"1234"), b"1234");
    proxy.drop_after_upstream_bytes(0);
    assert!(stays_silent(&mut client, Duration::from_millis(200)));
    let _ = client.write_all(b"x");
    assert!(read_to_end_or_reset(&mut client).unwrap().is_empty());
    assert_eq!(echo.next_report().received, 4);
}

#[test]
fn proxy_rate_limit_slows_a_burst() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut client = connect(&proxy);
    assert_eq!(roundtrip(&mut client, b"warm-up"), b"warm-up");

    const RATE: u64 = 32 * 1024;
    const SIZE: usize = 64 * 1024;
    proxy.set_rate_limit(Some(RATE));
    let started = Instant::now();
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&vec![7u8; SIZE]));
    let mut back = vec![0u8; SIZE];
    client.read_exact(&mut back).unwrap();
    let elapsed = started.elapsed();
    sender.join().unwrap().unwrap();
    eprintln!("64 KiB at 32 KiB/s took {elapsed:?}");
    // ~2 s expected; the first slice goes at once.
    assert!(elapsed >= Duration::from_millis(1700), "took {elapsed:?}");
    assert!(back.iter().all(|&b| b == 7));

    // Unlimited again: fast.
    proxy.set_rate_limit(None);
    let started = Instant::now();
    assert_eq!(roundtrip(&mut client, &[1u8; SIZE]), vec![1u8; SIZE]);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn proxy_to_a_dead_upstream_resets_the_client() {
    // A port that nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(dead);
    let mut client = connect(&proxy);
    assert!(read_to_end_or_reset(&mut client).unwrap().is_empty());
    assert_eq!(proxy.connections_accepted(), 1);
    assert!(proxy.wait_accepted(1, Duration::from_millis(10)));
    assert!(!proxy.wait_accepted(2, Duration::from_millis(50)));
}

#[test]
fn dropping_the_proxy_closes_its_connections() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let addr = proxy.addr();
    let mut client = connect(&proxy);
    assert_eq!(roundtrip(&mut client, b"hi"), b"hi");
    drop(proxy);
    assert!(read_to_end_or_reset(&mut client).is_ok());
    echo.next_report();
    if let Ok(mut late) = TcpStream::connect(addr) {
        // Only possible while a child process forked by a parallel test
        // still holds a copy of the listener (until its exec closes it):
        // then nobody serves the connection.
        late.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = late.write_all(b"anyone?");
        assert!(
            read_to_end_or_reset(&mut late).unwrap().is_empty(),
            "a dropped proxy must not forward"
        );
    }
}

// ---------------------------------------------------------------------------
// The raw client (tokio-xmpp), and what Prosody does with MUC, MAM and carbons
// (the facts the client under test depends on).
// ---------------------------------------------------------------------------

mod raw_client {
    use std::str::FromStr;
    use std::time::Duration;

    use tether_e2e::raw::{
        self, chat_message, forged_carbon, forged_mam_result, is_message_with_body, jid, ns,
        CarbonKind, RawClient,
    };
    use tether_e2e::{Prosody, ProsodyOptions, MUC_DOMAIN};
    use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType};
    use tokio_xmpp::parsers::iq::Iq;
    use tokio_xmpp::parsers::jid::BareJid;
    use tokio_xmpp::parsers::mam;
    use tokio_xmpp::parsers::message::{Message, MessageType};
    use tokio_xmpp::parsers::minidom::Element;
    use tokio_xmpp::parsers::muc::Muc;
    use tokio_xmpp::parsers::presence::Presence;
    use tokio_xmpp::parsers::stanza_id::OriginId;

    const WAIT: Duration = Duration::from_secs(10);

    fn server(opts: ProsodyOptions, users: &[&str]) -> Prosody {
        let prosody = Prosody::start(opts).expect("Prosody should start");
        for user in users {
            prosody.register(user, &format!("{user}-pw")).unwrap();
        }
        prosody
    }

    fn login(prosody: &Prosody, jid: &str) -> RawClient {
        let user = jid.split('@').next().unwrap();
        RawClient::connect(
            prosody.addr(),
            jid,
            &format!("{user}-pw"),
            &prosody.ca_file(),
        )
    }

    fn child<'a>(el: &'a Element, name: &str, ns: &str) -> Option<&'a Element> {
        el.get_child(name, ns)
    }

    /// A MAM query (iq set) with `queryid`, to `archive` (None: the account's own).
    fn mam_query(id: &str, queryid: &str, archive: Option<&str>) -> Iq {
        let query = mam::Query {
            queryid: Some(mam::QueryId(queryid.to_owned())),
            node: None,
            form: None,
            set: None,
            flip_page: false,
        };
        let iq = Iq::from_set(id, query);
        match archive {
            Some(to) => iq.with_to(jid(to)),
            None => iq,
        }
    }

    fn no_errors(prosody: &Prosody) {
        let log = prosody.log_tail(300);
        assert!(!log.contains("\terror\t"), "errors in the log:\n{log}");
    }

    #[test]
    fn two_raw_clients_exchange_a_message() {
        let prosody = server(ProsodyOptions::default(), &["alice", "bob"]);
        let alice = login(&prosody, "alice@localhost");
        let mut bob = login(&prosody, "bob@localhost");
        assert_eq!(alice.bare().to_string(), "alice@localhost");
        assert_eq!(bob.bare().to_string(), "bob@localhost");

        let id = alice.send_chat("bob@localhost", "hello bob").unwrap();
        let got = bob
            .recv_until(|el| is_message_with_body(el, "hello bob"), WAIT)
            .expect("bob should get alice's message");
        assert_eq!(got.attr("from"), Some(alice.jid().to_string().as_str()));
        assert_eq!(got.attr("type"), Some("chat"));
        assert_eq!(got.attr("id"), Some(id.as_str()));
        // No archive, no stanza-id.
        assert!(child(&got, "stanza-id", ns::SID).is_none(), "{got:?}");
        // Exactly one copy.
        assert!(bob
            .recv_until(
                |el| is_message_with_body(el, "hello bob"),
                Duration::from_millis(500)
            )
            .is_none());
        assert_eq!((alice.sessions(), bob.sessions()), (1, 1));
        // A literal hostile payload goes through `send_element` as well.
        bob.send_element(raw::parse(
            "<message xmlns='jabber:client' to='alice@localhost' type='chat' id='lit1'>\
             <body>literal</body></message>",
        ))
        .unwrap();
        drop(bob);
        no_errors(&prosody);
    }

    #[test]
    fn mam_archives_chats_by_default_and_stamps_a_stanza_id() {
        let prosody = server(
            ProsodyOptions {
                mam: true,
                ..ProsodyOptions::default()
            },
            &["alice", "bob"],
        );
        let config = std::fs::read_to_string(prosody.config_path()).unwrap();
        assert!(config.contains("default_archive_policy = true"), "{config}");

        // Bob is offline: the message is archived and stored offline.
        let mut alice = login(&prosody, "alice@localhost");
        alice
            .send_chat("bob@localhost", "while you were out")
            .unwrap();
        // Prosody 13 drops offline messages for a session that queried the archive before its
        // initial presence (mod_mam's message/offline/broadcast hook); this one sends presence
        // first, so the offline copy comes.
        let mut bob = login(&prosody, "bob@localhost");
        let offline = bob
            .recv_until(|el| is_message_with_body(el, "while you were out"), WAIT)
            .expect("the offline message");
        let delay = child(&offline, "delay", "urn:xmpp:delay").expect("offline delay");
        assert_eq!(delay.attr("from"), Some("localhost"));
        let sid = child(&offline, "stanza-id", ns::SID).expect("stanza-id on the offline copy");
        assert_eq!(sid.attr("by"), Some("bob@localhost"));
        let offline_archive_id = sid.attr("id").unwrap().to_owned();

        // Live: stanza-id by the receiver's bare JID.
        alice.send_chat("bob@localhost", "live one").unwrap();
        let live = bob
            .recv_until(|el| is_message_with_body(el, "live one"), WAIT)
            .expect("the live message");
        let sid = child(&live, "stanza-id", ns::SID).expect("stanza-id on a live message");
        assert_eq!(sid.attr("by"), Some("bob@localhost"));
        let live_archive_id = sid.attr("id").unwrap().to_owned();

        // Bob's archive holds both, with those ids, as results for his queryid.
        let fin = bob
            .iq(mam_query("mam-q1", "bob-q1", None), WAIT)
            .expect("the archive query's answer");
        assert_eq!(fin.attr("type"), Some("result"), "{fin:?}");
        let fin = child(&fin, "fin", ns::MAM).expect("<fin/>");
        assert_eq!(fin.attr("complete"), Some("true"));
        let results: Vec<Element> = bob
            .drain()
            .into_iter()
            .filter(|el| child(el, "result", ns::MAM).is_some())
            .collect();
        assert_eq!(results.len(), 2, "{results:?}");
        for (result, (body, id)) in results.iter().zip([
            ("while you were out", &offline_archive_id),
            ("live one", &live_archive_id),
        ]) {
            // The result messages come from the account itself: no `from` attribute at all.
            assert_eq!(result.attr("from"), None, "{result:?}");
            let r = child(result, "result", ns::MAM).unwrap();
            assert_eq!(r.attr("queryid"), Some("bob-q1"));
            assert_eq!(r.attr("id"), Some(id.as_str()));
            let inner = child(r, "forwarded", ns::FORWARD)
                .and_then(|f| f.get_child("message", ns::CLIENT))
                .expect("forwarded message");
            assert_eq!(raw::body(inner).as_deref(), Some(body));
            assert!(inner
                .attr("from")
                .is_some_and(|f| f.starts_with("alice@localhost/")));
        }

        // The sender's archive holds her outgoing messages too.
        alice
            .iq(mam_query("mam-q2", "alice-q1", None), WAIT)
            .expect("answer");
        let mine = alice
            .drain()
            .into_iter()
            .filter(|el| child(el, "result", ns::MAM).is_some())
            .count();
        assert_eq!(mine, 2);
        no_errors(&prosody);
    }

    #[test]
    fn muc_component_answers_disco_locks_new_rooms_and_reflects_messages() {
        let prosody = server(
            ProsodyOptions {
                muc: true,
                mam: true,
                ..ProsodyOptions::default()
            },
            &["alice", "bob"],
        );
        let config = std::fs::read_to_string(prosody.config_path()).unwrap();
        assert!(
            config.contains("Component \"conference.localhost\" \"muc\""),
            "{config}"
        );
        assert!(config.contains("\"muc_mam\""), "{config}");
        let mut alice = login(&prosody, "alice@localhost");
        let mut bob = login(&prosody, "bob@localhost");

        let disco = alice
            .iq(
                Iq::from_get(
                    "disco1",
                    tokio_xmpp::parsers::disco::DiscoInfoQuery { node: None },
                )
                .with_to(jid(MUC_DOMAIN)),
                WAIT,
            )
            .expect("disco answer");
        assert_eq!(disco.attr("type"), Some("result"), "{disco:?}");
        let query = child(&disco, "query", ns::DISCO_INFO).unwrap();
        assert!(query
            .children()
            .any(|c| c.name() == "identity" && c.attr("category") == Some("conference")));
        let features: Vec<&str> = query.children().filter_map(|c| c.attr("var")).collect();
        assert!(features.contains(&ns::MUC), "{features:?}");
        assert!(features.contains(&ns::MAM), "room archives: {features:?}");

        let room = format!("room1@{MUC_DOMAIN}");
        let join = |nick: &str| {
            Presence::available()
                .with_to(jid(&format!("{room}/{nick}")))
                .with_payload(Muc::new())
        };
        let self_presence = |el: &Element, nick: &str| {
            el.name() == "presence"
                && el.attr("from") == Some(format!("{room}/{nick}").as_str())
                && el.get_child("x", ns::MUC_USER).is_some_and(|x| {
                    x.children()
                        .any(|c| c.name() == "status" && c.attr("code") == Some("110"))
                })
        };
        alice.send(join("alice")).unwrap();
        let created = alice
            .recv_until(|el| self_presence(el, "alice"), WAIT)
            .expect("alice's self-presence");
        let codes: Vec<&str> = created
            .get_child("x", ns::MUC_USER)
            .unwrap()
            .children()
            .filter_map(|c| c.attr("code"))
            .collect();
        assert!(codes.contains(&"201"), "new room: {codes:?}");

        // A new room is locked until its owner configures it.
        bob.send(join("bob")).unwrap();
        let refused = bob
            .recv_until(
                |el| el.name() == "presence" && el.attr("type") == Some("error"),
                WAIT,
            )
            .expect("bob refused while the room is locked");
        assert!(
            refused.get_child("error", ns::CLIENT).is_some_and(
                |e| e.has_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas")
            ),
            "{refused:?}"
        );
        // Instant room: an empty submitted form.
        let form = DataForm::new(
            DataFormType::Submit,
            "http://jabber.org/protocol/muc#roomconfig",
            vec![],
        );
        let owner = Element::builder("query", ns::MUC_OWNER)
            .append(Element::from(form))
            .build();
        let configured = alice
            .iq(
                Iq::Set {
                    from: None,
                    to: Some(jid(&room)),
                    id: "cfg1".into(),
                    payload: owner,
                },
                WAIT,
            )
            .expect("config answer");
        assert_eq!(configured.attr("type"), Some("result"), "{configured:?}");
        bob.send(join("bob")).unwrap();
        bob.recv_until(|el| self_presence(el, "bob"), WAIT)
            .expect("bob joins the configured room");

        // A groupchat message is reflected to the sender with the same id and origin-id, with a
        // stanza-id by the room, and reaches the other occupant once.
        let mut message = Message::new(Some(BareJid::from_str(&room).unwrap().into()));
        message.type_ = MessageType::Groupchat;
        message.id = Some(tokio_xmpp::parsers::message::Id("gc-1".into()));
        message.bodies.insert(Default::default(), "hi room".into());
        let message = message.with_payload(OriginId {
            id: "origin-gc-1".into(),
        });
        alice.send(message).unwrap();
        for (client, who) in [(&mut alice, "alice (reflection)"), (&mut bob, "bob")] {
            let got = client
                .recv_until(|el| is_message_with_body(el, "hi room"), WAIT)
                .unwrap_or_else(|| panic!("{who} did not get the groupchat message"));
            assert_eq!(
                got.attr("from"),
                Some(format!("{room}/alice").as_str()),
                "{who}"
            );
            assert_eq!(got.attr("type"), Some("groupchat"));
            assert_eq!(got.attr("id"), Some("gc-1"), "{who}: the id is kept");
            assert_eq!(
                child(&got, "origin-id", ns::SID).and_then(|o| o.attr("id")),
                Some("origin-gc-1")
            );
            let sid = child(&got, "stanza-id", ns::SID).expect("room stanza-id");
            assert_eq!(sid.attr("by"), Some(room.as_str()), "{who}");
            assert!(
                client
                    .recv_until(
                        |el| is_message_with_body(el, "hi room"),
                        Duration::from_millis(300)
                    )
                    .is_none(),
                "{who} got it twice"
            );
        }

        // The room's archive answers from the room JID.
        alice
            .iq(mam_query("mam-room", "room-q1", Some(&room)), WAIT)
            .expect("room archive");
        let results: Vec<Element> = alice
            .drain()
            .into_iter()
            .filter(|el| child(el, "result", ns::MAM).is_some())
            .collect();
        assert_eq!(results.len(), 1, "{results:?}");
        assert_eq!(results[0].attr("from"), Some(room.as_str()));

        // A later joiner gets the room's history, delayed, with the same stanza-id.
        let mut carol_server_user = {
            prosody.register("carol", "carol-pw").unwrap();
            login(&prosody, "carol@localhost")
        };
        carol_server_user.send(join("carol")).unwrap();
        let history = carol_server_user
            .recv_until(|el| is_message_with_body(el, "hi room"), WAIT)
            .expect("history on join");
        assert!(
            child(&history, "delay", "urn:xmpp:delay").is_some(),
            "{history:?}"
        );
        assert!(
            child(&history, "stanza-id", ns::SID).is_some(),
            "{history:?}"
        );
        no_errors(&prosody);
    }

    #[test]
    fn carbons_copy_other_devices_and_forged_wrappers_pass_through_untouched() {
        let prosody = server(ProsodyOptions::default(), &["alice", "bob", "carol"]);
        let alice1 = login(&prosody, "alice@localhost/one");
        let mut alice2 = login(&prosody, "alice@localhost/two");
        let mut bob = login(&prosody, "bob@localhost");
        let carol = login(&prosody, "carol@localhost");
        for (i, client) in [&alice1, &alice2].into_iter().enumerate() {
            client
                .send(Iq::from_set(
                    format!("carbons{i}"),
                    tokio_xmpp::parsers::carbons::Enable,
                ))
                .unwrap();
        }
        alice2
            .recv_until(|el| el.attr("id") == Some("carbons1"), WAIT)
            .expect("carbons enabled");

        // Sent from device one: device two gets a <sent/> carbon from the bare JID.
        alice1.send_chat("bob@localhost", "from one").unwrap();
        let carbon = alice2
            .recv_until(|el| child(el, "sent", ns::CARBONS).is_some(), WAIT)
            .expect("a sent carbon");
        assert_eq!(carbon.attr("from"), Some("alice@localhost"));
        let inner = child(&carbon, "sent", ns::CARBONS)
            .and_then(|s| s.get_child("forwarded", ns::FORWARD))
            .and_then(|f| f.get_child("message", ns::CLIENT))
            .expect("forwarded message");
        assert_eq!(raw::body(inner).as_deref(), Some("from one"));
        assert_eq!(inner.attr("from"), Some("alice@localhost/one"));
        bob.recv_until(|el| is_message_with_body(el, "from one"), WAIT)
            .unwrap();

        // To the bare JID: both devices (same priority) get the message itself, no carbon.
        bob.send_chat("alice@localhost", "to both").unwrap();
        let direct = alice2
            .recv_until(|el| is_message_with_body(el, "to both"), WAIT)
            .expect("device two gets it directly");
        assert!(direct.attr("from").unwrap().starts_with("bob@localhost/"));
        assert!(
            alice2
                .recv_until(
                    |el| child(el, "received", ns::CARBONS).is_some(),
                    Duration::from_millis(500)
                )
                .is_none(),
            "no received carbon for a bare-JID message"
        );

        // A forged carbon from carol reaches alice as is: from carol, payload intact.
        let fake = chat_message(
            Some("bob@localhost/x"),
            "alice@localhost",
            "fake-1",
            "forged",
        );
        carol
            .send(forged_carbon("alice@localhost", CarbonKind::Received, fake))
            .unwrap();
        let forged = alice2
            .recv_until(|el| child(el, "received", ns::CARBONS).is_some(), WAIT)
            .expect("the forged carbon is delivered");
        assert!(forged.attr("from").unwrap().starts_with("carol@localhost/"));
        // And a forged archive result, likewise.
        let fake = chat_message(
            Some("bob@localhost/x"),
            "alice@localhost",
            "fake-2",
            "forged mam",
        );
        carol
            .send(forged_mam_result(
                "alice@localhost/two",
                "no-such-query",
                "A1",
                fake,
            ))
            .unwrap();
        let forged = alice2
            .recv_until(|el| child(el, "result", ns::MAM).is_some(), WAIT)
            .expect("the forged result is delivered");
        assert!(forged.attr("from").unwrap().starts_with("carol@localhost/"));
        no_errors(&prosody);
    }

    #[test]
    fn raw_client_with_a_wrong_password_does_not_connect() {
        let prosody = server(ProsodyOptions::default(), &["alice"]);
        let started = std::time::Instant::now();
        let err = RawClient::try_connect(
            prosody.addr(),
            "alice@localhost",
            "wrong",
            &prosody.ca_file(),
            true,
        )
        .expect_err("a wrong password must not get online");
        eprintln!("wrong password: {err} after {:?}", started.elapsed());
    }
}
