//! A throwaway Prosody server for end-to-end tests.
//!
//! [`Prosody::start`] creates a temporary directory holding everything the
//! server needs (config, a test CA, a `localhost` certificate, data, logs) and
//! runs `prosody` as a child process listening for c2s (STARTTLS, encryption
//! required) on a free port of 127.0.0.1. Nothing else listens: no s2s, no
//! HTTP, no direct TLS, and s2s is disabled altogether so that the server never
//! connects out.
//!
//! Layout of [`Prosody::dir`]:
//!
//! | file | what |
//! | --- | --- |
//! | `ca.pem` | the test CA certificate ([`Prosody::ca_file`]); trust it to connect |
//! | `localhost.crt`, `localhost.key` | the server certificate (SAN `localhost` and `127.0.0.1`) and its key |
//! | `prosody.cfg.lua` | the generated config |
//! | `prosody.log` | Prosody's log ([`Prosody::log_tail`]) |
//! | `prosody.stdout`, `prosody.stderr` | the process's output, appended to across restarts |
//! | `data/` | accounts, rosters, archives... (survives [`Prosody::restart`]) |

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::process;

/// The XMPP domain served by the test server (its only `VirtualHost`), which
/// is also the DNS name in its certificate.
pub const DOMAIN: &str = "localhost";

/// The MUC service's domain when [`ProsodyOptions::muc`] is set; rooms are `ROOM@conference.localhost`.
pub const MUC_DOMAIN: &str = "conference.localhost";

/// How long [`Prosody::start`] (and [`Prosody::restart`]) waits for the server
/// to listen before giving up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a stop waits after `SIGTERM` before resorting to `SIGKILL`.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How many times a first start picks a new port when the one it picked was
/// taken in the meantime by another process.
const PORT_ATTEMPTS: usize = 3;

/// Options for [`Prosody::start`].
#[derive(Debug, Clone)]
pub struct ProsodyOptions {
    /// Enable `mod_mam` (XEP-0313 message archive), archiving every user's chats by default
    /// (`default_archive_policy = true`), and `mod_muc_mam` on the MUC component when
    /// [`muc`](Self::muc) is set too. Default: `false`.
    pub mam: bool,
    /// Add the MUC component [`MUC_DOMAIN`] (`Component "conference.localhost" "muc"`), where any
    /// local user may create rooms (`restrict_room_creation = false`). Prosody's other defaults
    /// stay: a room created by a join carrying `<x xmlns='http://jabber.org/protocol/muc'/>` is
    /// locked (others get `item-not-found`) until its owner submits a configuration (an instant
    /// room: an empty `submit` form); set `muc_room_locking = false` in
    /// [`extra_config`](Self::extra_config) to skip that. Default: `false`.
    pub muc: bool,
    /// `smacks_hibernation_time`: how long, in seconds, a stream-management
    /// session survives a lost connection and can still be resumed.
    /// Default: 60.
    pub hibernation_secs: u64,
    /// Lua appended verbatim to the global section of the config (before the
    /// `VirtualHost`), e.g. `"c2s_timeout = 30\n"`. Default: empty.
    pub extra_config: String,
    /// Offer STARTTLS (load `mod_tls` and require encryption). `false` makes a plaintext-only
    /// server, to test that clients refuse it unless told otherwise. Default: `true`.
    pub starttls: bool,
    /// Log at `debug` level (every stanza and parser error), as `TETHER_PROSODY_DEBUG` does for
    /// all servers; for tests that look for a debug-only line. Default: `false`.
    pub debug_log: bool,
    /// Offer XEP-0363 file upload: Prosody's own `mod_http_file_share` on the component
    /// `upload.localhost`, served over HTTPS (the test certificate) on 127.0.0.1. Default: none.
    pub upload: Option<UploadOptions>,
    /// Push notifications (XEP-0357): Prosody's `mod_cloud_notify`, and the component port
    /// where a test app server ([`crate::push_server::AppServer`]) serves [`PUSH_DOMAIN`].
    /// Default: none.
    pub push: Option<PushOptions>,
    /// The fast reconnect: SASL2 (XEP-0388) with Bind2, inline SM and FAST tokens, from
    /// Debian's `prosody-modules` (`mod_sasl2`, `mod_sasl2_bind2`, `mod_sasl2_sm`,
    /// `mod_sasl2_fast`). Default: `false` (SASL1 only, as Prosody ships).
    pub sasl2: bool,
    /// A Direct TLS c2s port (XEP-0368) besides the STARTTLS one (pick one with [`free_port`]).
    /// Default: none.
    pub direct_tls_port: Option<u16>,
    /// In-band registration (XEP-0077: `mod_register`, `allow_registration = true`) with
    /// invitations (XEP-0401: `mod_invites`, `mod_invites_register`; create them with
    /// [`Prosody::create_invite`]) and a password policy (`mod_password_policy`, from
    /// prosody-modules). Default: none (registration closed, as Prosody ships).
    pub registration: Option<RegistrationOptions>,
    /// Leave `mod_bookmarks` out ([`ProsodyOptions::legacy_bookmarks_only`]). Default: `false`.
    pub legacy_bookmarks_only: bool,
}

/// Account creation on the test server ([`ProsodyOptions::registration`]).
#[derive(Clone, Debug)]
pub struct RegistrationOptions {
    /// `registration_invite_only`: only with an invitation's token.
    pub invite_only: bool,
    /// `password_policy.length`: the shortest password the server takes.
    pub min_password: usize,
}

/// The app server's JID on the test server ([`ProsodyOptions::push`]).
pub const PUSH_DOMAIN: &str = "push.localhost";

/// Push for a test ([`ProsodyOptions::push`]).
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// The XEP-0114 component port (pick one with [`free_port`]).
    pub component_port: u16,
    /// The component's shared secret.
    pub component_secret: String,
}

/// Prosody's upload service for a test ([`ProsodyOptions::upload`]).
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// `http_file_share_size_limit`, in bytes.
    pub size_limit: u64,
    /// The HTTPS port Prosody listens on (pick one with [`free_port`]).
    pub https_port: u16,
    /// The port the slot URLs name (`https://localhost:PORT/...`): `https_port`, or a fault
    /// proxy's in front of it.
    pub external_port: u16,
}

impl ProsodyOptions {
    /// Without `mod_bookmarks`: XEP-0402 and XEP-0048 are not kept in step, and the server
    /// does not announce `urn:xmpp:bookmarks:1#compat` (as a server with PEP but no bookmark
    /// conversion).
    pub fn legacy_bookmarks_only(mut self) -> Self {
        self.legacy_bookmarks_only = true;
        self
    }
}

impl Default for ProsodyOptions {
    fn default() -> Self {
        Self {
            mam: false,
            muc: false,
            hibernation_secs: 60,
            extra_config: String::new(),
            starttls: true,
            debug_log: false,
            upload: None,
            push: None,
            sasl2: false,
            direct_tls_port: None,
            registration: None,
            legacy_bookmarks_only: false,
        }
    }
}

/// The temporary directory, deleted on drop unless `TETHER_KEEP_TEST_DIRS`
/// was set.
#[derive(Debug)]
enum TestDir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl TestDir {
    fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tether-prosody-")
            .tempdir()
            .map_err(|e| context(e, "creating the Prosody test directory"))?;
        if std::env::var_os("TETHER_KEEP_TEST_DIRS").is_some() {
            let path = dir.keep();
            eprintln!(
                "tether-e2e: keeping Prosody test directory {}",
                path.display()
            );
            Ok(Self::Kept(path))
        } else {
            Ok(Self::Temp(dir))
        }
    }

    fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }
}

/// A Prosody server running as a child process, for one test.
///
/// Dropping it stops the server (`SIGTERM`, then `SIGKILL` if it lingers) and
/// deletes its directory. The child is also tied to the test process with
/// `PR_SET_PDEATHSIG`, so it cannot outlive a test process that aborts or is
/// killed.
#[derive(Debug)]
pub struct Prosody {
    dir: TestDir,
    port: u16,
    opts: ProsodyOptions,
    child: Option<Child>,
}

impl Prosody {
    /// Creates the test directory, certificates and config, starts Prosody
    /// and waits (at most 20 s) until it listens on its c2s port.
    ///
    /// The error of a failed start includes the tail of Prosody's log and
    /// stderr.
    pub fn start(opts: ProsodyOptions) -> io::Result<Prosody> {
        let dir = TestDir::new()?;
        write_certificates(dir.path())?;
        let data = dir.path().join("data");
        fs::create_dir(&data).map_err(|e| context(e, format!("creating {}", data.display())))?;

        let mut prosody = Prosody {
            dir,
            port: 0,
            opts,
            child: None,
        };
        let mut attempt = 1;
        loop {
            prosody.port = free_port()?;
            prosody.write_config()?;
            match prosody.spawn_and_wait() {
                Ok(()) => return Ok(prosody),
                Err(StartError::PortInUse(_)) if attempt < PORT_ATTEMPTS => attempt += 1,
                Err(StartError::PortInUse(e) | StartError::Other(e)) => return Err(e),
            }
        }
    }

    /// Registers (or re-registers, changing the password of) the account
    /// `user@localhost`, with `prosodyctl register`.
    ///
    /// This writes straight to the server's data directory, so it works
    /// whether or not the server is running, and a running server sees the
    /// account at once.
    pub fn register(&self, user: &str, password: &str) -> io::Result<()> {
        let output = Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, DOMAIN, password])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| context(e, "running prosodyctl (is Prosody installed?)"))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "prosodyctl register {user} {DOMAIN} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            )));
        }
        Ok(())
    }

    /// Runs Lua in the running server through its admin shell (`prosodyctl shell '> ...'`;
    /// the server has `mod_admin_shell` when [`ProsodyOptions::muc`] is on) and returns what it
    /// printed: for faults no client can cause, such as a room dropping an occupant silently.
    pub fn shell_lua(&self, lua: &str) -> io::Result<String> {
        let output = Command::new("timeout")
            .arg("20")
            .arg("prosodyctl")
            .arg("--config")
            .arg(self.config_path())
            .arg("shell")
            .arg(format!("> {lua}"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| context(e, "running prosodyctl shell"))?;
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() || !out.contains("Result:") {
            return Err(io::Error::other(format!(
                "prosodyctl shell failed ({}):\n{out}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
            )));
        }
        Ok(out)
    }

    /// Makes `room` forget its occupant `nick` without a word to anyone (what a room does when
    /// it lost a member's server, or restarted): the member's client is not told.
    pub fn drop_occupant_silently(&self, room: &str, nick: &str) -> io::Result<()> {
        let domain = room.split('@').nth(1).unwrap_or_default();
        let out = self.shell_lua(&format!(
            "local room = prosody.hosts[{domain}].modules.muc.get_room_from_jid({room}); \
             local o = room and room:get_occupant_by_nick({occupant}); \
             if not o then return 'no such occupant' end; \
             o.role = nil; room:save_occupant(o); \
             return room:get_occupant_by_nick({occupant}) == nil and 'dropped' or 'still there'",
            domain = lua_string(domain),
            room = lua_string(room),
            occupant = lua_string(&format!("{room}/{nick}")),
        ))?;
        if out.contains("dropped") {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "could not drop {nick} from {room}: {out}"
            )))
        }
    }

    /// An invitation to create an account ([`ProsodyOptions::registration`]), valid for
    /// `ttl_secs`: its `xmpp:` link.
    pub fn create_invite(&self, ttl_secs: u64) -> io::Result<String> {
        let out = self.shell_lua(&format!(
            "local i = prosody.hosts[{domain}].modules.invites.create_account(nil, nil, {ttl_secs}); \
             return i and i.uri or 'no invite'",
            domain = lua_string(DOMAIN),
        ))?;
        out.split_whitespace()
            .find(|w| w.starts_with("xmpp:"))
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("no invitation link in: {out}")))
    }

    /// The bare JID `user@localhost`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// The XMPP domain served, [`DOMAIN`].
    pub fn domain(&self) -> &'static str {
        DOMAIN
    }

    /// The c2s port on 127.0.0.1. It stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The c2s address, `127.0.0.1:`[`port`](Self::port).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The PEM file of the test CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// The server's temporary directory (see the module docs for its layout).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated Prosody config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("prosody.cfg.lua")
    }

    /// Prosody's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("prosody.log")
    }

    /// Waits (up to `timeout`) until Prosody has saved the stream-management counter of an
    /// expired session of `user` (mod_smacks keeps it, in its `smacks_h` store, to answer a late
    /// `<resume/>` with `<failed h/>`), then deletes it: the late `<resume/>` is then answered
    /// `<failed/>` without h, as for a session Prosody destroyed (its 13.0.1 resumption bug) or
    /// lost. Returns whether a counter was found and deleted.
    pub fn forget_expired_session(&self, user: &str, timeout: Duration) -> bool {
        let file = self
            .dir()
            .join("data")
            .join("localhost")
            .join("smacks_h")
            .join(format!("{user}.dat"));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if file.exists() {
                return fs::remove_file(&file).is_ok();
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// How long the log is now: mark it before a step, then ask
    /// [`Self::resumption_bug_since`] about what the step logged.
    pub fn log_mark(&self) -> u64 {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    /// Whether Prosody 13.0.1's resumption bug (ARCHITECTURE.md, "Server and library bugs met")
    /// struck a resumption made since `mark`: a `mod_smacks resuming existing session` line, then
    /// `Received invalid XML` (the resumed connection's bytes fed to the dead link's parser, which
    /// chokes on them) or `XML stanza is too big` (the silent form: the stuck half stanza swallows
    /// what follows, the server answers nothing, the client resumes again on the same stuck
    /// parser, until the stanza size limit ends the session). Lines before the mark, or before
    /// any resumption, do not count.
    pub fn resumption_bug_since(&self, mark: u64) -> bool {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let since = String::from_utf8_lossy(log.get(mark as usize..).unwrap_or_default());
        let mut resuming = false;
        for line in since.lines() {
            if line.contains("mod_smacks resuming existing session") {
                resuming = true;
            } else if resuming
                && (line.contains("Received invalid XML") || line.contains("XML stanza is too big"))
            {
                return true;
            }
        }
        false
    }

    /// The last `n` lines of Prosody's log (empty if there is no log yet).
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.log_path(), n)
    }

    /// The options this server was started with.
    pub fn options(&self) -> &ProsodyOptions {
        &self.opts
    }

    /// The pid of the running server, if any.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// Whether the server process is running (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server gracefully: `SIGTERM`, then up to 10 s for it to
    /// exit, then `SIGKILL`. Prosody closes every session on the way out
    /// (stream-management sessions can no longer be resumed, but a resume
    /// attempt gets `<failed h='…'/>`). Does nothing if it is not running.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, STOP_GRACE)
                .map_err(|e| context(e, "stopping Prosody"))?;
        }
        Ok(())
    }

    /// Kills the server with `SIGKILL`: the connections are reset without any
    /// closing stream, as in a crash. Does nothing if it is not running.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            process::kill(&mut child).map_err(|e| context(e, "killing Prosody"))?;
        }
        Ok(())
    }

    /// Starts a stopped or killed server again, on the same port with the
    /// same data, and waits until it listens. Does nothing if it is running.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.child = None;
        self.spawn_and_wait().map_err(StartError::into_inner)
    }

    /// Restarts the server for real: [`stop`](Self::stop), then
    /// [`start_again`](Self::start_again) on the same port with the same data.
    /// Accounts, rosters and archives survive; sessions (including
    /// stream-management sessions) do not.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Writes the config for the current port and options.
    fn write_config(&self) -> io::Result<()> {
        let path = self.config_path();
        let config = render_config(self.dir(), self.port, &self.opts);
        fs::write(&path, config).map_err(|e| context(e, format!("writing {}", path.display())))
    }

    /// Spawns Prosody and waits until it listens on `self.port`.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log_path = self.log_path();
        // Only the part of the log written by this start counts.
        let log_offset = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let stdout = open_append(&self.dir().join("prosody.stdout"))?;
        let stderr = open_append(&self.dir().join("prosody.stderr"))?;

        let mut cmd = Command::new("prosody");
        cmd.arg("-F")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = process::spawn_tied_to_process(cmd)
            .map_err(|e| context(e, "spawning prosody (is Prosody installed?)"))?;
        self.child = Some(child);

        match self.wait_listening(log_offset) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Never leave a half-started server behind.
                if let Some(mut child) = self.child.take() {
                    let _ = process::kill(&mut child);
                }
                Err(e)
            }
        }
    }

    /// Waits until this start's log says the c2s port is open (so it is this
    /// server listening there, not some other process) and the server offers
    /// STARTTLS for `localhost` on it.
    ///
    /// The port alone is not enough: Prosody may open it before the
    /// `VirtualHost` and its certificate are loaded, and a client that
    /// connects then gets `host-unknown` or no STARTTLS.
    fn wait_listening(&mut self, log_offset: u64) -> Result<(), StartError> {
        let started = Instant::now();
        let activated = format!("on [127.0.0.1]:{}", self.port);
        loop {
            let log = read_from(&self.log_path(), log_offset);
            if log.contains("Failed to open server port") {
                return Err(StartError::PortInUse(self.start_failure(&format!(
                    "Prosody could not listen on port {}",
                    self.port
                ))));
            }
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| io::Error::other("Prosody is not running"))?;
            if let Some(status) = child.try_wait()? {
                return Err(StartError::Other(self.start_failure(&format!(
                    "Prosody exited during startup ({status})"
                ))));
            }
            if log
                .lines()
                .any(|l| l.contains("Activated service 'c2s'") && l.contains(&activated))
                && offers_features(self.addr(), self.opts.starttls)
            {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(StartError::Other(self.start_failure(&format!(
                    "Prosody did not listen on port {} within {:?}",
                    self.port, STARTUP_TIMEOUT
                ))));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error describing a failed start, with the tails of the log and of
    /// the process's stderr.
    fn start_failure(&self, what: &str) -> io::Error {
        let stderr = tail_lines(&self.dir().join("prosody.stderr"), 20);
        let stdout = tail_lines(&self.dir().join("prosody.stdout"), 20);
        io::Error::other(format!(
            "{what} (dir {})\n--- prosody.log (tail) ---\n{}\n--- stdout (tail) ---\n{stdout}\n--- stderr (tail) ---\n{stderr}",
            self.dir().display(),
            self.log_tail(40),
        ))
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = process::terminate(&mut child, STOP_GRACE) {
                eprintln!("tether-e2e: stopping Prosody: {e}");
            }
        }
    }
}

/// Why a start failed: a port taken by someone else (worth retrying with
/// another port on a first start) or anything else.
enum StartError {
    PortInUse(io::Error),
    Other(io::Error),
}

impl StartError {
    fn into_inner(self) -> io::Error {
        match self {
            Self::PortInUse(e) | Self::Other(e) => e,
        }
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        Self::Other(e)
    }
}

/// Renders the Prosody config (Lua).
fn render_config(dir: &Path, port: u16, opts: &ProsodyOptions) -> String {
    let path = |name: &str| lua_string(&dir.join(name).to_string_lossy());
    let log_level = if opts.debug_log || std::env::var_os("TETHER_PROSODY_DEBUG").is_some() {
        "debug"
    } else {
        "info"
    };
    let mut modules = vec![
        "roster",
        "saslauth",
        "disco",
        "smacks",
        "carbons",
        "ping",
        "offline",
        "csi_simple",
        "blocklist",
        "pep",
        // Private storage (XEP-0049), and XEP-0402 kept in step with XEP-0048 in it (it
        // announces `urn:xmpp:bookmarks:1#compat`), as Prosody ships.
        "private",
        "bookmarks",
        // vcard-temp kept as the client wrote it (XEP-0054), so a vCard photo announced by
        // XEP-0153 is read from the vCard itself (mod_vcard_legacy would also turn it into PEP).
        "vcard",
    ];
    if opts.starttls {
        modules.push("tls");
    }
    if opts.legacy_bookmarks_only {
        modules.retain(|m| *m != "bookmarks");
    }
    if opts.mam {
        modules.push("mam");
    }
    if opts.push.is_some() {
        modules.push("cloud_notify");
    }
    if opts.sasl2 {
        modules.extend(["sasl2", "sasl2_bind2", "sasl2_sm", "sasl2_fast"]);
    }
    if opts.muc || opts.registration.is_some() {
        // For faults only the server can make, and invitations (Prosody::shell_lua).
        modules.push("admin_shell");
    }
    if opts.registration.is_some() {
        modules.extend(["register", "invites", "invites_register", "password_policy"]);
    }
    let modules = modules
        .iter()
        .map(|m| lua_string(m))
        .collect::<Vec<_>>()
        .join(", ");

    let mut cfg = String::new();
    // `writeln!` into a String cannot fail.
    let _ = writeln!(
        cfg,
        r#"-- Generated by tether-e2e for one test run; rewritten on every start.

-- Tests (and CI) run as root; without this Prosody refuses to start and
-- prosodyctl tries to switch to the "prosody" user.
run_as_root = true
daemonize = false
pidfile = {pidfile}
data_path = {data}
certificates = {certs}
log = {{ {log_level} = {log} }}

-- c2s on 127.0.0.1:{port} only (STARTTLS). No other listener.
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ {direct_tls} }}
s2s_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ {https_port} }}
-- No federation: the server must never connect out.
modules_disabled = {{ "s2s", "s2s_auth_certs" }}

authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = {require_tls}
allow_registration = false

modules_enabled = {{ {modules} }}

smacks_hibernation_time = {hibernation}
"#,
        pidfile = path("prosody.pid"),
        data = path("data"),
        certs = lua_string(&dir.to_string_lossy()),
        log = path("prosody.log"),
        hibernation = opts.hibernation_secs,
        require_tls = opts.starttls,
        direct_tls = opts
            .direct_tls_port
            .map(|p| p.to_string())
            .unwrap_or_default(),
        https_port = opts
            .upload
            .as_ref()
            .map(|u| u.https_port.to_string())
            .unwrap_or_default(),
    );
    if let Some(u) = &opts.upload {
        let _ = writeln!(
            cfg,
            r#"-- XEP-0363 over HTTPS with the test certificate; slot URLs name localhost:{ext}.
https_interfaces = {{ "127.0.0.1" }}
https_certificate = {cert}
https_key = {key}
http_external_url = "https://localhost:{ext}/""#,
            ext = u.external_port,
            cert = path("localhost.crt"),
            key = path("localhost.key"),
        );
    }
    if let Some(p) = &opts.push {
        let _ = writeln!(
            cfg,
            r#"-- XEP-0114 for the test push app server, on loopback only.
component_ports = {{ {port} }}
component_interfaces = {{ "127.0.0.1" }}"#,
            port = p.component_port,
        );
    }
    if opts.mam {
        // Prosody 13's default is already "always"; say it, so that a packaged or future default
        // ("roster", or mam_smart_enable) cannot make archives silently empty.
        cfg.push_str("-- Archive every user's chats (not only with roster contacts).\ndefault_archive_policy = true\n");
    }
    if let Some(r) = &opts.registration {
        let _ = writeln!(
            cfg,
            r#"-- Account creation (XEP-0077) and invitations (XEP-0401).
allow_registration = true
registration_invite_only = {invite_only}
password_policy = {{ length = {length} }}"#,
            invite_only = r.invite_only,
            length = r.min_password,
        );
    }
    if !opts.extra_config.is_empty() {
        cfg.push_str("-- extra_config\n");
        cfg.push_str(&opts.extra_config);
        cfg.push('\n');
    }
    let _ = writeln!(
        cfg,
        r#"
VirtualHost "{DOMAIN}"
    ssl = {{
        certificate = {cert};
        key = {key};
    }}"#,
        cert = path("localhost.crt"),
        key = path("localhost.key"),
    );
    if let Some(u) = &opts.upload {
        let _ = writeln!(
            cfg,
            r#"
Component "upload.{DOMAIN}" "http_file_share"
    http_file_share_size_limit = {limit}
    -- Slot URLs name localhost (a name the test machine resolves): serve them for that Host.
    http_host = "{DOMAIN}""#,
            limit = u.size_limit,
        );
    }
    if let Some(p) = &opts.push {
        let _ = writeln!(
            cfg,
            r#"
Component "{PUSH_DOMAIN}"
    component_secret = {secret}"#,
            secret = lua_string(&p.component_secret),
        );
    }
    if opts.muc {
        let _ = writeln!(
            cfg,
            r#"
Component "{MUC_DOMAIN}" "muc"
    restrict_room_creation = false{mam}"#,
            mam = if opts.mam {
                "\n    modules_enabled = { \"muc_mam\" }"
            } else {
                ""
            },
        );
    }
    cfg
}

/// Quotes `s` as a Lua string literal.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Generates a test CA and a `localhost` server certificate signed by it,
/// and writes `ca.pem`, `localhost.crt` and `localhost.key` into `dir`.
pub(crate) fn write_certificates(dir: &Path) -> io::Result<()> {
    write_certificates_for(dir, &[DOMAIN, "127.0.0.1"])
}

/// Like [`write_certificates`], with a server certificate for `names` (still written to
/// `localhost.crt`): a certificate for another host, signed by the trusted CA.
pub(crate) fn write_certificates_for(dir: &Path, names: &[&str]) -> io::Result<()> {
    let tls_err = |e: rcgen::Error| io::Error::other(format!("generating test certificates: {e}"));

    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // rcgen's default validity ends in 4096, which Erlang's certificate code (ejabberd) rejects.
    ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tether e2e test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err)?;

    let server_key = KeyPair::generate().map_err(tls_err)?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&server_key, &ca).map_err(tls_err)?;

    write_readable(&dir.join("ca.pem"), &ca.pem())?;
    write_readable(&dir.join(format!("{DOMAIN}.crt")), &cert.pem())?;
    write_readable(
        &dir.join(format!("{DOMAIN}.key")),
        &server_key.serialize_pem(),
    )
}

/// Writes a file readable by everyone (a test key is no secret, and Prosody
/// must be able to read it whatever user it runs as).
fn write_readable(path: &Path, contents: &str) -> io::Result<()> {
    fs::write(path, contents).map_err(|e| context(e, format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| context(e, format!("chmod {}", path.display())))
}

/// Whether the server at `addr` answers a stream header for [`DOMAIN`] with
/// stream features (offering STARTTLS if `starttls`): a readiness probe, any
/// failure is a `false`.
fn offers_features(addr: SocketAddr, starttls: bool) -> bool {
    let probe = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        )?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(false);
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if text.contains("</stream:features>") || text.contains("</stream:stream>") {
                return Ok(text.contains("</stream:features>")
                    && (!starttls || text.contains("urn:ietf:params:xml:ns:xmpp-tls")));
            }
        }
    };
    probe().unwrap_or(false)
}

/// Picks a free port on 127.0.0.1 by binding port 0 and releasing it.
/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| context(e, "binding 127.0.0.1:0 to pick a port"))?;
    Ok(listener.local_addr()?.port())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| context(e, format!("opening {}", path.display())))
}

/// The contents of `path` from byte `offset` on (lossy UTF-8; empty if the
/// file cannot be read).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` lines of `path` (empty if the file cannot be read).
fn tail_lines(path: &Path, n: usize) -> String {
    let text = read_from(path, 0);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wraps `e` with a description of what was being done.
fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
