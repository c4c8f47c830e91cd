//! A test push app server (XEP-0357's "App Server"): an XMPP component (XEP-0114) on the test
//! Prosody that records every notification the server publishes to it and answers each with a
//! result, as a real app server does before it wakes the phone.
//!
//! It is slixmpp's `ComponentXMPP` (`tests/push/app_server.py`), a third-party implementation,
//! run with the python of `TETHER_SLIXMPP_PYTHON` (`scripts/test.sh` makes the virtualenv; the
//! benchmark's is used when the variable is unset). tokio-xmpp's own component needs its
//! feature `component`, which switches xmpp-parsers' stanza namespace for every crate in the
//! build, the client under test included, and its stream header wants a `version` Prosody's
//! component port does not send.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One notification the server published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Who published it (the user's server).
    pub from: String,
    /// The node (the device).
    pub node: String,
    /// The `secret` publish option, if any.
    pub secret: Option<String>,
    /// The summary form's fields (`message-count`, `last-message-sender`, ...).
    pub fields: Vec<(String, String)>,
}

/// A running app server. Dropping it stops it.
pub struct AppServer {
    seen: Arc<Mutex<Vec<Publish>>>,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// The python that has slixmpp.
pub(crate) fn python() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TETHER_SLIXMPP_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let venv = home.join(".cache/tether/bench-venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    Err(io::Error::other(
        "no python with slixmpp: set TETHER_SLIXMPP_PYTHON (scripts/test.sh does)",
    ))
}

impl AppServer {
    /// Connects as the component `jid` with `secret` to the component port at `addr`, and
    /// serves until dropped.
    pub fn start(addr: SocketAddr, jid: &str, secret: &str) -> io::Result<AppServer> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("push/app_server.py");
        let mut child = crate::process::spawn_tied_to_process({
            let mut c = Command::new(python()?);
            c.arg(script)
                .arg(addr.ip().to_string())
                .arg(addr.port().to_string())
                .arg(jid)
                .arg(secret)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            c
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let seen2 = seen.clone();
        thread::Builder::new()
            .name("push-app-server".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    let v: Value = match serde_json::from_str(&line) {
                        Ok(v) => v,
                        Err(e) => panic!("push-app-server printed {line:?}: {e}"),
                    };
                    if v["ready"] == true {
                        let _ = ready_tx.send(());
                        continue;
                    }
                    let text = |k: &str| v[k].as_str().map(str::to_owned);
                    let fields = v["fields"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    seen2.lock().unwrap().push(Publish {
                        from: text("from").unwrap_or_default(),
                        node: text("node").unwrap_or_default(),
                        secret: text("secret"),
                        fields,
                    });
                }
            })?;
        let mut server = AppServer { seen, child, stdin };
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => Ok(server),
            Err(_) => {
                let _ = crate::process::kill(&mut server.child);
                Err(io::Error::other(
                    "the app server did not connect in 30 s (see its stderr above)",
                ))
            }
        }
    }

    /// Every notification so far.
    pub fn publishes(&self) -> Vec<Publish> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` notifications came (at most `timeout`); returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Publish> {
        let start = Instant::now();
        loop {
            let seen = self.publishes();
            if seen.len() >= n || start.elapsed() > timeout {
                return seen;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        // Closing stdin ends it; kill what lingers.
        self.stdin.take();
        if crate::process::terminate(&mut self.child, Duration::from_secs(3)).is_err() {
            let _ = crate::process::kill(&mut self.child);
        }
    }
}
