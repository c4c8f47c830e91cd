//! TLS and credentials: a certificate for another host is refused before any credential is sent;
//! a server that offers only PLAIN gets no password; SCRAM is chosen when offered beside PLAIN;
//! the password appears in no log line and no event, even at trace level; the database and its
//! WAL files are owner-only. (An unknown CA and a server without STARTTLS: `delivery.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::scripted::{ScriptedServer, ServerOptions};
use tether_e2e::tether::{Node, Running};

const BOB: &str = "bob@localhost";
const LONG: Duration = Duration::from_secs(120);

fn scripted(opts: ServerOptions) -> (ScriptedServer, Node, tempfile::TempDir) {
    let server = ScriptedServer::start_with(Vec::new(), opts);
    let dir = tempfile::tempdir().unwrap();
    let alice = server.alice(dir.path());
    (server, alice, dir)
}

/// Runs until the client exits by itself; returns its exit code.
fn exits(run: &mut Running) -> Option<i32> {
    run.wait_exit(Duration::from_secs(30))
        .expect("the client must give up by itself")
        .code()
}

#[test]
fn a_certificate_for_another_host_is_refused_before_any_credential() {
    let (server, alice, _dir) = scripted(ServerOptions {
        cert_names: vec!["example.org".into()],
        ..ServerOptions::default()
    });
    alice.send_many(BOB, 1, "never sent");
    let mut run = alice.spawn_run(&[]);
    assert_eq!(exits(&mut run), Some(6), "{}", run.diagnostics());
    let stderr = run.stderr();
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(
        stderr.contains("example.org") || stderr.contains("NotValidForName"),
        "the reason should name the mismatch: {stderr}"
    );
    assert!(server.sasl_attempts().is_empty(), "credentials were sent");
    assert_eq!(
        server.connections(),
        1,
        "a TLS failure is final, not retried"
    );
    assert_eq!(alice.count_out("queued"), 1, "the message waits");
}

#[test]
fn a_server_offering_only_plain_gets_no_password() {
    let (server, alice, _dir) = scripted(ServerOptions {
        mechanisms: vec!["PLAIN".into()],
        ..ServerOptions::default()
    });
    let mut run = alice.spawn_run(&[]);
    assert_eq!(exits(&mut run), Some(3), "{}", run.diagnostics());
    assert!(run.stderr().contains("no SCRAM"), "{}", run.stderr());
    assert!(
        server.sasl_attempts().is_empty(),
        "{:?}",
        server.sasl_attempts()
    );
    assert_eq!(server.connections(), 1);
}

#[test]
fn scram_is_chosen_when_plain_is_offered_too() {
    let (server, alice, _dir) = scripted(ServerOptions {
        mechanisms: vec!["PLAIN".into(), "SCRAM-SHA-256".into()],
        ..ServerOptions::default()
    });
    alice.send_many(BOB, 2, "scram");
    let mut run = alice.spawn_run(&["--until-idle"]);
    assert_eq!(exits(&mut run), Some(0), "{}", run.diagnostics());
    assert_eq!(server.sasl_attempts(), vec!["ScramSha256".to_owned()]);
    assert_eq!(alice.count_out("acked"), 2);
}

/// Every way the password could leak into text: as is, and base64 in SASL PLAIN's form or alone.
fn leaks(text: &str, password: &str, user: &str) -> Vec<String> {
    let plain = format!("\0{user}\0{password}");
    let needles = [
        password.to_owned(),
        base64(password.as_bytes()),
        base64(plain.as_bytes()),
    ];
    needles
        .into_iter()
        .filter(|n| text.contains(n.as_str()))
        .collect()
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn the_password_is_in_no_log_line_and_no_event_even_at_trace_level() {
    const SECRET: &str = "Tether-pw-4711-do-not-log";
    let prosody = Prosody::start(ProsodyOptions {
        debug_log: true,
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    prosody.register("alice", SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::new(
        dir.path(),
        "alice",
        SECRET,
        prosody.addr(),
        &prosody.ca_file(),
    );
    alice.send_many(BOB, 1, "logged run");
    let mut run = alice.spawn_run(&["--until-idle", "--log", "trace"]);
    assert_eq!(exits(&mut run), Some(0), "{}", run.diagnostics());
    let stderr = run.stderr();
    assert!(
        stderr.lines().count() > 50,
        "trace logging did not happen: {stderr}"
    );
    // Prosody offers SCRAM-SHA-1-PLUS over TLS 1.3: the client binds to the channel
    // (tls-exporter).
    let log = std::fs::read_to_string(prosody.log_path()).unwrap_or_default();
    assert!(
        log.contains("mechanism='SCRAM-SHA-1-PLUS'"),
        "no channel binding: {}",
        prosody.log_tail(40)
    );
    let events: String = run.events().iter().map(|e| e.to_string()).collect();
    assert_eq!(leaks(&stderr, SECRET, "alice"), Vec::<String>::new());
    assert_eq!(leaks(&events, SECRET, "alice"), Vec::<String>::new());
    // What the CLI prints about the account.
    for args in [&["account", "show"][..], &["sm"][..]] {
        let out = alice.exec(args);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            leaks(&text, SECRET, "alice"),
            Vec::<String>::new(),
            "{args:?}"
        );
    }
    // A wrong password is reported without echoing it.
    let dir2 = tempfile::tempdir().unwrap();
    let wrong = "Wrong-pw-0815-do-not-log";
    let mallory = Node::new(
        dir2.path(),
        "alice",
        wrong,
        prosody.addr(),
        &prosody.ca_file(),
    );
    let mut run = mallory.spawn_run(&["--log", "trace"]);
    assert_eq!(exits(&mut run), Some(3), "{}", run.diagnostics());
    let text = format!(
        "{}{}",
        run.stderr(),
        run.events()
            .iter()
            .map(|e| e.to_string())
            .collect::<String>()
    );
    assert_eq!(leaks(&text, wrong, "alice"), Vec::<String>::new());
}

#[test]
fn the_database_and_its_wal_files_are_owner_only() {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("start prosody");
    prosody.register("alice", "alice-secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::new(
        dir.path(),
        "alice",
        "alice-secret",
        prosody.addr(),
        &prosody.ca_file(),
    );
    let run = alice.spawn_run(&[]);
    assert!(run.wait_online(LONG), "{}", run.diagnostics());
    let mut checked = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", alice.db.display());
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{path} is mode {mode:o}");
        checked.push(format!("{suffix}:{:o}", mode & 0o777));
    }
    eprintln!("modes: {checked:?}");
}
