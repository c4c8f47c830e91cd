//! A throwaway ejabberd (24.12, Debian bookworm-backports) for the end-to-end tests: the second
//! server. Like [`crate::prosody::Prosody`]: its own directory (config, spool, logs, test
//! certificates), a free port on 127.0.0.1, STARTTLS required with the test CA, stream management
//! with resumption, carbons, MAM, MUC, CSI and offline storage. Accounts are registered with
//! `ejabberdctl register` over Erlang distribution (each instance is its own node).
//!
//! ejabberdctl runs the server as the `ejabberd` user when started by root, so the directory is
//! made readable for it and the spool and logs owned by it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the server may take to start or stop.
const STARTUP: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Clone, Debug)]
pub struct EjabberdOptions {
    /// `mod_stream_mgmt` `resume_timeout`, in seconds. Default 60.
    pub resume_timeout_secs: u64,
    /// Require STARTTLS. `false` makes a plaintext-only listener (no STARTTLS offered), for the
    /// insecure loopback option. Default `true`.
    pub starttls: bool,
}

impl Default for EjabberdOptions {
    fn default() -> Self {
        EjabberdOptions {
            resume_timeout_secs: 60,
            starttls: true,
        }
    }
}

/// A running ejabberd. Killed (with its Erlang VM) when dropped.
pub struct Ejabberd {
    dir: tempfile::TempDir,
    port: u16,
    node: String,
    child: Option<Child>,
}

impl Ejabberd {
    /// Writes the config and certificates, starts the server and waits until it has started.
    pub fn start(opts: EjabberdOptions) -> io::Result<Ejabberd> {
        let dir = tempfile::Builder::new()
            .prefix("tether-ejabberd-")
            .tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        crate::prosody::write_certificates(dir.path())?;
        let pem = format!(
            "{}{}",
            fs::read_to_string(dir.path().join("localhost.crt"))?,
            fs::read_to_string(dir.path().join("localhost.key"))?
        );
        fs::write(dir.path().join("server.pem"), pem)?;
        let port = crate::prosody::free_port()?;
        fs::write(
            dir.path().join("ejabberd.yml"),
            config(dir.path(), port, &opts),
        )?;
        fs::write(dir.path().join("ejabberdctl.cfg"), "")?;
        for sub in ["spool", "logs"] {
            fs::create_dir_all(dir.path().join(sub))?;
        }
        // The server runs as `ejabberd` when we are root.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["-R", "ejabberd:ejabberd"])
                .arg(dir.path())
                .status()?;
            if !status.success() {
                return Err(io::Error::other("chown to the ejabberd user failed"));
            }
        }
        let mut server = Ejabberd {
            node: format!("tether{port}@localhost"),
            dir,
            port,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn ctl(&self) -> Command {
        let mut c = Command::new("ejabberdctl");
        let d = self.dir.path();
        let arg = |name: &str| -> OsString { d.join(name).into_os_string() };
        c.arg("--ctl-config")
            .arg(arg("ejabberdctl.cfg"))
            .arg("--config")
            .arg(arg("ejabberd.yml"))
            .arg("--spool")
            .arg(arg("spool"))
            .arg("--logs")
            .arg(arg("logs"))
            .arg("--node")
            .arg(&self.node);
        c
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("foreground.log"))?;
        let mut cmd = self.ctl();
        cmd.arg("foreground")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        self.child = Some(crate::process::spawn_tied_to_process(cmd)?);
        let mut wait = self.ctl();
        wait.arg("started");
        let ok = run_with_timeout(wait, STARTUP)?;
        if !ok || !self.listening() {
            return Err(io::Error::other(format!(
                "ejabberd did not start; its log:\n{}",
                self.log_tail(40)
            )));
        }
        Ok(())
    }

    fn listening(&self) -> bool {
        std::net::TcpStream::connect(self.addr()).is_ok()
    }

    /// Registers `user@localhost`.
    pub fn register(&self, user: &str, password: &str) -> io::Result<()> {
        let out = self
            .ctl()
            .args(["register", user, "localhost", password])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ejabberdctl register {user}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The client port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The test CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The last `n` lines of ejabberd's own log.
    pub fn log_tail(&self, n: usize) -> String {
        let mut text = String::new();
        for name in ["logs/ejabberd.log", "foreground.log"] {
            if let Ok(t) = fs::read_to_string(self.dir.path().join(name)) {
                let lines: Vec<&str> = t.lines().collect();
                text.push_str(&lines[lines.len().saturating_sub(n)..].join("\n"));
                text.push('\n');
            }
        }
        text
    }

    /// Stops the server (`ejabberdctl stop`: sessions are closed) and starts it again on the same
    /// port with the same data. Sessions, stream-management ones included, do not survive.
    pub fn restart(&mut self) -> io::Result<()> {
        let mut stop = self.ctl();
        stop.arg("stop");
        run_with_timeout(stop, STARTUP)?;
        let mut stopped = self.ctl();
        stopped.arg("stopped");
        run_with_timeout(stopped, STARTUP)?;
        if let Some(mut child) = self.child.take() {
            crate::process::wait_timeout(&mut child, STARTUP)?;
            kill_group(&child);
        }
        self.spawn()
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

/// SIGKILL to the whole process group (ejabberdctl, su, the Erlang VM).
fn kill_group(child: &Child) {
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
}

fn run_with_timeout(mut cmd: Command, timeout: Duration) -> io::Result<bool> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    if crate::process::wait_timeout(&mut child, timeout)? {
        Ok(child.wait()?.success())
    } else {
        let _ = child.kill();
        let _ = child.wait();
        Ok(false)
    }
}

fn config(dir: &Path, port: u16, opts: &EjabberdOptions) -> String {
    let d = dir.display();
    format!(
        r#"hosts:
  - localhost
loglevel: info
certfiles:
  - {d}/server.pem
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: {tls}
    starttls_required: {tls}
    max_stanza_size: 262144
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
auth_method: internal
auth_password_format: scram
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_stream_mgmt:
    resume_timeout: {resume}
  mod_mam:
    default: always
  mod_muc:
    access_create: all
  mod_offline: {{}}
  mod_client_state: {{}}
  mod_ping: {{}}
  mod_privacy: {{}}
  mod_blocking: {{}}
  # Private storage (XEP-0049), kept in step with XEP-0402 bookmarks, as ejabberd ships.
  mod_private: {{}}
  mod_pubsub:
    plugins: [flat, pep]
"#,
        resume = opts.resume_timeout_secs,
        tls = opts.starttls
    )
}
