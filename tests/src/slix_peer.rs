//! A third-party peer: slixmpp (`tests/peer/slix_peer.py`) as a second user, with its own
//! service discovery, entity capabilities (which verify every hash they are given) and chat
//! states. Tether's answers are checked by somebody else's code, not by its own.
//!
//! It runs with the python of `TETHER_SLIXMPP_PYTHON`, like the push app server
//! ([`crate::push_server`]).

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running slixmpp client. Dropping it disconnects it.
pub struct SlixPeer {
    lines: Arc<Mutex<Vec<Value>>>,
    child: Child,
    stdin: Option<ChildStdin>,
    /// The full JID it bound.
    pub jid: String,
}

impl SlixPeer {
    /// Logs in as `jid` with `password` at `addr`, trusting `ca` (STARTTLS, SCRAM), and waits
    /// for its session to start.
    pub fn start(addr: SocketAddr, jid: &str, password: &str, ca: &Path) -> io::Result<SlixPeer> {
        Self::start_with(addr, jid, password, ca, &[])
    }

    /// [`SlixPeer::start`] with more slixmpp plugins (`xep_0045` for rooms, `xep_0249` for
    /// direct invitations): a peer only has what its test needs, so that its capabilities stay
    /// what the discovery tests expect.
    pub fn start_with(
        addr: SocketAddr,
        jid: &str,
        password: &str,
        ca: &Path,
        plugins: &[&str],
    ) -> io::Result<SlixPeer> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peer/slix_peer.py");
        let mut child = crate::process::spawn_tied_to_process({
            let mut c = Command::new(crate::push_server::python()?);
            c.arg(script)
                .arg(addr.ip().to_string())
                .arg(addr.port().to_string())
                .arg(jid)
                .arg(password)
                .arg(ca)
                .arg(plugins.join(","))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            c
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        thread::Builder::new()
            .name("slix-peer".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => l.lock().unwrap().push(v),
                        Err(e) => panic!("slix-peer printed {line:?}: {e}"),
                    }
                }
            })?;
        let mut peer = SlixPeer {
            lines,
            child,
            stdin,
            jid: String::new(),
        };
        match peer.wait_line(Duration::from_secs(30), |v| v["ready"] == true) {
            Some(ready) => {
                peer.jid = ready["jid"].as_str().unwrap_or_default().to_owned();
                Ok(peer)
            }
            None => {
                let _ = crate::process::kill(&mut peer.child);
                Err(io::Error::other(
                    "the slixmpp peer did not log in within 30 s (see its stderr above)",
                ))
            }
        }
    }

    /// Everything it printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The events it heard so far (`presence`, `chat_state`, `message`).
    pub fn events(&self, name: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["event"] == name)
            .collect()
    }

    /// Waits (at most `timeout`) for a line `pred` accepts.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let start = Instant::now();
        loop {
            if let Some(v) = self.lines().into_iter().find(|v| pred(v)) {
                return Some(v);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one command and returns its reply (panics without one in 30 s).
    pub fn command(&mut self, cmd: Value) -> Value {
        let name = cmd["cmd"].as_str().unwrap_or_default().to_owned();
        let before = self.lines().len();
        let stdin = self.stdin.as_mut().expect("running");
        writeln!(stdin, "{cmd}").expect("the peer reads commands");
        stdin.flush().expect("the peer reads commands");
        let start = Instant::now();
        loop {
            let lines = self.lines();
            if let Some(v) = lines[before..].iter().find(|v| v["reply"] == name.as_str()) {
                return v.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the slixmpp peer did not answer {cmd}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks `jid` for its presence (slixmpp approves the request back by itself).
    pub fn subscribe(&mut self, jid: &str) {
        self.command(json!({"cmd": "subscribe", "jid": jid}));
    }

    /// Queries `jid` itself for disco#info (on `node`), bypassing slixmpp's cache.
    pub fn disco_info(&mut self, jid: &str, node: Option<&str>) -> Value {
        self.command(json!({"cmd": "disco_info", "jid": jid, "node": node}))
    }

    /// The features slixmpp verified for `jid`'s capabilities hash, once it has (at most
    /// `timeout`): `None` when it never did.
    pub fn verified_caps(&mut self, jid: &str, timeout: Duration) -> Option<Vec<String>> {
        let start = Instant::now();
        loop {
            let r = self.command(json!({"cmd": "caps", "jid": jid}));
            if let Some(f) = r["features"].as_array() {
                return Some(
                    f.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                );
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `n` disco#info queries to `jid` at once and waits `timeout_secs` for their
    /// answers: (answered, unanswered, errors).
    pub fn disco_flood(&mut self, jid: &str, n: usize, timeout_secs: u64) -> (u64, u64, u64) {
        let r = self
            .command(json!({"cmd": "disco_flood", "jid": jid, "n": n, "timeout": timeout_secs}));
        let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("disco_flood: {r}"));
        (n("answered"), n("unanswered"), n("error"))
    }

    /// Joins `room` as `nick` (XEP-0045), waiting for the room to let us in; panics if it does
    /// not.
    pub fn join(&mut self, room: &str, nick: &str) {
        let r = self.command(json!({"cmd": "join", "room": room, "nick": nick}));
        assert!(r["error"].is_null(), "join: {r}");
    }

    /// Sends `to` a direct invitation (XEP-0249) to `room`.
    pub fn invite(&mut self, to: &str, room: &str, reason: &str) {
        let r = self.command(json!({"cmd": "invite", "to": to, "room": room, "reason": reason}));
        assert!(r["error"].is_null(), "invite: {r}");
    }

    /// Leaves `room`.
    pub fn leave(&mut self, room: &str, nick: &str) {
        self.command(json!({"cmd": "leave", "room": room, "nick": nick}));
    }

    /// Sends a chat message.
    pub fn send(&mut self, to: &str, body: &str) {
        self.command(json!({"cmd": "send", "to": to, "body": body}));
    }

    /// Blocks (`true`) or unblocks `jids` on this peer's account (XEP-0191); panics if the
    /// server refuses.
    pub fn set_blocked(&mut self, block: bool, jids: &[&str]) {
        let cmd = if block { "block" } else { "unblock" };
        let r = self.command(json!({"cmd": cmd, "jids": jids}));
        assert!(r["error"].is_null(), "{cmd}: {r}");
    }

    /// The account's blocklist as the server has it, sorted.
    pub fn blocklist(&mut self) -> Vec<String> {
        let r = self.command(json!({"cmd": "blocklist"}));
        r["jids"]
            .as_array()
            .unwrap_or_else(|| panic!("blocklist: {r}"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// Sends a blocklist push naming `jids` to `to` (someone else's client, as only their own
    /// server may): the condition of its answer, or `result`.
    pub fn forge_block_push(&mut self, to: &str, jids: &[&str]) -> String {
        let r = self.command(json!({"cmd": "forge_block_push", "to": to, "jids": jids}));
        r["answer"]
            .as_str()
            .unwrap_or_else(|| panic!("forge_block_push: {r}"))
            .to_owned()
    }
}

impl Drop for SlixPeer {
    fn drop(&mut self) {
        self.stdin.take();
        if crate::process::terminate(&mut self.child, Duration::from_secs(3)).is_err() {
            let _ = crate::process::kill(&mut self.child);
        }
    }
}
