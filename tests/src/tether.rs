//! Driving the `tether` CLI as a separate process, the way users and scripts do: one database per
//! client, events read as JSON lines from stdout, SIGKILL for crashes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `tether` binary: `$TETHER_BIN`, else `tether` next to the test executable's `deps/` folder
/// (cargo's target dir). `.ci/run` builds it before the tests.
pub fn tether_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TETHER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .expect("deps dir")
        .parent()
        .expect("target dir");
    let bin = dir.join("tether");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p tether-core --bin tether) or set TETHER_BIN",
        bin.display()
    );
    bin
}

/// One Tether client: an account in a store (its own, or one shared with other accounts).
#[derive(Clone, Debug)]
pub struct Node {
    /// The database file.
    pub db: PathBuf,
    /// The account's bare JID.
    pub jid: String,
    /// Whether every command names the account (`--account JID`): the store holds several.
    pub select: bool,
    /// A command every `tether` invocation runs under (e.g. `nsenter` into a mount namespace of
    /// its own); empty for none.
    pub wrapper: Vec<String>,
}

/// The result of a finished CLI command.
#[derive(Debug)]
pub struct Output {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Node {
    /// Creates `dir/NAME.db` with account `user@localhost` connecting to `server` and trusting `ca`.
    pub fn new(dir: &Path, user: &str, password: &str, server: SocketAddr, ca: &Path) -> Node {
        let ca = ca.to_str().expect("utf-8 path");
        Node::with_args(dir, user, password, server, &["--ca-file", ca])
    }

    /// Like [`Node::new`] with other `account add` arguments (e.g. `--insecure-plaintext`).
    pub fn with_args(
        dir: &Path,
        user: &str,
        password: &str,
        server: SocketAddr,
        extra: &[&str],
    ) -> Node {
        Node::with_wrapper(dir, user, password, server, extra, Vec::new())
    }

    /// Like [`Node::with_args`], every command run under `wrapper` (see [`Node::wrapper`]).
    pub fn with_wrapper(
        dir: &Path,
        user: &str,
        password: &str,
        server: SocketAddr,
        extra: &[&str],
        wrapper: Vec<String>,
    ) -> Node {
        let node = Node {
            db: dir.join(format!("{user}.db")),
            jid: format!("{user}@localhost"),
            select: false,
            wrapper,
        };
        node.add(password, server, extra);
        node
    }

    /// Adds account `user@localhost` to this node's store (which then holds several accounts),
    /// connecting to `server` with `extra` arguments; returns the new account's node (and this
    /// one now names its account in every command too).
    pub fn add_account(
        &mut self,
        user: &str,
        password: &str,
        server: SocketAddr,
        extra: &[&str],
    ) -> Node {
        self.select = true;
        let node = Node {
            db: self.db.clone(),
            jid: format!("{user}@localhost"),
            select: true,
            wrapper: self.wrapper.clone(),
        };
        node.add(password, server, extra);
        node
    }

    fn add(&self, password: &str, server: SocketAddr, extra: &[&str]) {
        let node = self;
        let server = server.to_string();
        let mut args = vec![
            "account",
            "add",
            "--jid",
            &node.jid,
            "--password-env",
            "TETHER_TEST_PASSWORD",
            "--server",
            &server,
        ];
        args.extend_from_slice(extra);
        let mut c = node.store_cmd();
        c.args(&args).env("TETHER_TEST_PASSWORD", password);
        let out = Node::output(c);
        assert_eq!(out.code, Some(0), "account add failed: {}", out.stderr);
    }

    /// The store's accounts (`account list`), their bare JIDs in the order they were added.
    pub fn account_jids(&self) -> Vec<String> {
        let mut c = self.store_cmd();
        c.args(["account", "list"]);
        let out = Node::output(c);
        assert_eq!(out.code, Some(0), "account list: {}", out.stderr);
        out.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json line");
                v["jid"].as_str().expect("a jid").to_owned()
            })
            .collect()
    }

    /// A `tether --db DB` command for the whole store (no `--account`).
    pub fn store_cmd(&self) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(tether_bin());
                c
            }
            None => Command::new(tether_bin()),
        };
        // Test-only trust for the raw client (see `raw`); the client under test must not see it.
        c.env_remove("SSL_CERT_FILE");
        c.arg("--db").arg(&self.db);
        c
    }

    /// A `tether --db DB` command for this node's account (`--account JID` when the store
    /// holds several).
    pub fn cmd(&self) -> Command {
        let mut c = self.store_cmd();
        if self.select {
            c.arg("--account").arg(&self.jid);
        }
        c
    }

    /// Runs a command to completion.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_with_env(args, &[])
    }

    fn exec_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Node::output(c)
    }

    /// Runs `c` to completion.
    pub fn output(mut c: Command) -> Output {
        let out = c.output().expect("spawn tether");
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Commits `n` messages to `to` in one transaction (`send --stdin`); bodies are
    /// `"{prefix} {i}"`. Returns their ids.
    pub fn send_many(&self, to: &str, n: usize, prefix: &str) -> Vec<String> {
        let bodies: Vec<String> = (0..n).map(|i| format!("{prefix} {i}")).collect();
        self.send_bodies(to, &bodies)
    }

    /// Commits one message per body to `to` in one transaction (`send --stdin`). Returns their
    /// ids.
    pub fn send_bodies(&self, to: &str, bodies: &[String]) -> Vec<String> {
        let mut child = self
            .cmd()
            .args(["send", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tether send");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            for body in bodies {
                let line = serde_json::json!({"to": to, "body": body});
                writeln!(stdin, "{line}").expect("write stdin");
            }
        }
        let out = child.wait_with_output().expect("wait send");
        assert!(
            out.status.success(),
            "send failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(ids.len(), bodies.len());
        ids
    }

    /// Outgoing messages the server confirmed: acked, or further along (a receipt may already
    /// have moved them to delivered or displayed).
    pub fn confirmed(&self) -> usize {
        self.count_out_in(&["acked", "delivered", "displayed"])
    }

    /// `messages` with extra filter arguments, parsed.
    pub fn messages(&self, filter: &[&str]) -> Vec<Value> {
        let mut args = vec!["messages"];
        args.extend_from_slice(filter);
        let out = self.exec(&args);
        assert_eq!(out.code, Some(0), "messages failed: {}", out.stderr);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// Runs a command that prints JSON lines (e.g. `contacts`, `room list`, `subscriptions`),
    /// asserting it exits 0, and parses them.
    pub fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let out = self.exec(args);
        assert_eq!(out.code, Some(0), "{args:?} failed: {}", out.stderr);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {e}: {l}")))
            .collect()
    }

    /// The stored message with this id, if any (the first one if, wrongly, there are several).
    pub fn message(&self, id: &str) -> Option<Value> {
        self.messages(&[]).into_iter().find(|m| m["id"] == id)
    }

    /// Polls the store every 200 ms until `pred(self)` holds; false on timeout.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Node) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Count of outgoing messages in `state`.
    pub fn count_out(&self, state: &str) -> usize {
        self.messages(&["--direction", "out", "--state", state])
            .len()
    }

    /// Outgoing messages in any of `states` (one query).
    pub fn count_out_in(&self, states: &[&str]) -> usize {
        self.messages(&["--direction", "out"])
            .iter()
            .filter(|r| r["state"].as_str().is_some_and(|s| states.contains(&s)))
            .count()
    }

    /// Outgoing messages still on their way: queued, sent, hibernated, retrying or checking.
    pub fn pending(&self) -> usize {
        self.count_out_in(&["queued", "sent", "hibernated", "retrying", "checking"])
    }

    /// Incoming messages from `peer`: (total rows, distinct bodies).
    pub fn received_from(&self, peer: &str) -> (usize, usize) {
        let rows = self.messages(&["--direction", "in", "--peer", peer]);
        let distinct: std::collections::BTreeSet<String> = rows
            .iter()
            .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        (rows.len(), distinct.len())
    }

    /// Waits until `received_from(peer).0 >= n` (or the timeout), returning the final counts.
    pub fn wait_received(&self, peer: &str, n: usize, timeout: Duration) -> (usize, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.received_from(peer);
            if counts.0 >= n || Instant::now() > deadline {
                return counts;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The persisted SM state.
    pub fn sm(&self) -> Value {
        let out = self.exec(&["sm"]);
        assert_eq!(out.code, Some(0), "sm failed: {}", out.stderr);
        serde_json::from_str(out.stdout.trim()).expect("sm json")
    }

    /// Starts `tether run ARGS` in the background, collecting its events.
    pub fn spawn_run(&self, args: &[&str]) -> Running {
        let mut cmd = self.cmd();
        cmd.arg("run")
            .args(["--reconnect-min-ms", "100", "--reconnect-max-ms", "1000"])
            .args(args);
        Running::spawn(cmd)
    }
}

/// A running process that prints events as JSON lines: `tether run`, or an FFI test app.
pub struct Running {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    /// When each event was read (same index as `events`; pushed under its lock).
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stderr: Arc<Mutex<String>>,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
    err_reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `cmd` with piped stdio, collecting the JSON lines it prints. A line that is not
    /// JSON fails the test.
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let ev = events.clone();
        let at = arrivals.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let now = Instant::now();
                        let mut events = ev.lock().unwrap();
                        events.push(v);
                        at.lock().unwrap().push(now);
                    }
                    Err(e) => panic!("the process printed a non-JSON line {line:?}: {e}"),
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let se = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = se.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdin = child.stdin.take();
        Running {
            child,
            events,
            arrivals,
            stderr,
            stdin,
            reader: Some(reader),
            err_reader: Some(err_reader),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the event at `index` was read from the process's stdout (for benchmarks).
    pub fn arrival(&self, index: usize) -> Instant {
        self.arrivals.lock().unwrap()[index]
    }

    /// A copy of the events from index `from` on (cheaper than [`events`](Self::events) when
    /// polling a long run).
    pub fn events_since(&self, from: usize) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events
            .get(from..)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// How many events named `name` so far.
    pub fn count(&self, name: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == name)
            .count()
    }

    /// A copy of the events named `name` so far.
    pub fn named(&self, name: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect()
    }

    /// The `error` events of `kind` so far (`security` for a forgery the client refused).
    pub fn errors(&self, kind: &str) -> Vec<Value> {
        self.named("error")
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// How many events so far (an index for [`wait_after`](Self::wait_after)).
    pub fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// Whether no event arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until an event at index `from` or later matches `pred`; returns its index and a
    /// copy, or None on timeout.
    pub fn wait_after(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(usize, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let events = self.events.lock().unwrap();
                if let Some((i, e)) = events.iter().enumerate().skip(from).find(|(_, e)| pred(e)) {
                    return Some((i, e.clone()));
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the first `connection` event with `state: online`.
    pub fn wait_online(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |evs| {
            evs.iter()
                .any(|e| e["event"] == "connection" && e["state"] == "online")
        })
    }

    /// Whether a `connection` event with `state: online, resumed: <resumed>` was seen.
    pub fn saw_online(&self, resumed: bool) -> bool {
        self.events.lock().unwrap().iter().any(|e| {
            e["event"] == "connection" && e["state"] == "online" && e["resumed"] == resumed
        })
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// For failure messages: the last 30 events and the last 30 lines of stderr.
    pub fn diagnostics(&self) -> String {
        let events = self.events.lock().unwrap();
        let from = events.len().saturating_sub(30);
        let mut out = String::from("connection and error events:\n");
        for e in events.iter().filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|n| !n.starts_with("message") && n != "receipt")
        }) {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        out.push_str(&format!(
            "last {} of {} events:\n",
            events.len() - from,
            events.len()
        ));
        for e in &events[from..] {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        let stderr = self.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        out.push_str("stderr (tail):\n");
        out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
        out
    }

    /// Asserts that the client comes online within `timeout`; `who` names it in the failure.
    pub fn online(self, timeout: Duration, who: &str) -> Running {
        assert!(
            self.wait_online(timeout),
            "{who} never came online: {}",
            self.diagnostics()
        );
        self
    }

    /// Waits up to `timeout` for the process to exit by itself and asserts it exited 0.
    pub fn finish(&mut self, timeout: Duration, what: &str) {
        let status = self.wait_exit(timeout);
        self.assert_exit_0(status, what);
    }

    /// Asks the process to stop (SIGTERM) and asserts it stopped cleanly (exit 0).
    pub fn stop(&mut self, timeout: Duration, what: &str) {
        let status = self.terminate(timeout);
        self.assert_exit_0(status, what);
    }

    fn assert_exit_0(&self, status: Option<ExitStatus>, what: &str) {
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{what} did not exit 0 ({status:?}): {}",
            self.diagnostics()
        );
    }

    /// How many distinct messages the server has confirmed so far, by the events (see
    /// [`confirmed_id`]).
    pub fn confirmed(&self) -> usize {
        distinct_confirmed(&self.events.lock().unwrap())
    }

    /// Waits until `n` messages were confirmed by the server (acked, or a receipt overtook the
    /// ack); false on timeout.
    pub fn wait_confirmed(&self, n: usize, timeout: Duration) -> bool {
        // Distinct messages: one that is acked and then delivered must count once.
        self.wait_for(timeout, |evs| distinct_confirmed(evs) >= n)
    }

    /// Waits until `pred(events)` holds; false on timeout. `pred` runs with the events locked:
    /// it must not call methods of this `Running` (use the slice it gets).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.events.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pred(&self.events.lock().unwrap())
    }

    /// Waits until at least `n` events named `name` arrived.
    pub fn wait_count(&self, name: &str, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |evs| {
            evs.iter().filter(|e| e["event"] == name).count() >= n
        })
    }

    /// Writes one line to the process's stdin.
    pub fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write stdin");
    }

    /// Closes stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL: the process dies at whatever instant it is in.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        self.join_reader();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.wait_exit(timeout)
    }

    /// Waits for the process to exit; kills it and returns None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.join_reader();
                return Some(status);
            }
            if Instant::now() > deadline {
                self.kill9();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Once the process is gone: waits until everything it printed is collected, stdout and
    /// stderr (a test that reads stderr right after the exit would otherwise race its reader).
    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            if let Err(e) = r.join() {
                std::panic::resume_unwind(e);
            }
        }
        if let Some(r) = self.err_reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _already_exiting = self.child.kill();
            let _reaped = self.child.wait();
        }
    }
}

/// The id of the message an event shows the server confirmed: `message:acked`, or
/// `message:delivered` / `message:displayed` for one whose receipt beat the server's ack (states
/// only move forward, so it is never `acked` after that; with the archive on this is common).
pub fn confirmed_id(e: &Value) -> Option<&str> {
    matches!(
        e["event"].as_str(),
        Some("message:acked" | "message:delivered" | "message:displayed")
    )
    .then(|| e["id"].as_str())
    .flatten()
}

fn distinct_confirmed(events: &[Value]) -> usize {
    events
        .iter()
        .filter_map(confirmed_id)
        .collect::<std::collections::HashSet<_>>()
        .len()
}
