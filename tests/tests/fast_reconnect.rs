//! The fast reconnect against real servers (issue 15, part 4): through Direct TLS (XEP-0368) to
//! a Prosody 13.0.1 with Debian's prosody-modules (`mod_sasl2`, `_bind2`, `_sm`, `_fast`), a
//! first login binds with SASL2 and Bind2 and is given a FAST token; after the link is cut, the
//! next login proves the token and resumes the stream inside the SASL2 exchange; what crossed
//! the cut in both directions arrives once. Against servers without them (the plain test
//! Prosody, and ejabberd 24.12), the same client falls back to STARTTLS and SASL1 and still
//! resumes. What each login did is read from the client's own log line (`logged in`), and the
//! server's database is checked for the token it issued.

use std::time::Duration;

use tether_e2e::ejabberd::{Ejabberd, EjabberdOptions};
use tether_e2e::pair::Pair;
use tether_e2e::prosody::{free_port, Prosody, ProsodyOptions};
use tether_e2e::proxy::Proxy;
use tether_e2e::tether::{Node, Running};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
/// Time limits only bound a broken run; nothing here is timed.
const LONG: Duration = Duration::from_secs(120);

/// The `logged in` lines of a run's log, in order.
fn logins(run: &Running) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.contains("logged in"))
        .map(str::to_owned)
        .collect()
}

fn wait_logins(run: &Running, n: usize) -> Vec<String> {
    let start = std::time::Instant::now();
    while logins(run).len() < n && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(50));
    }
    logins(run)
}

/// Bob ends with exactly `n` distinct messages from alice, one row each.
fn bob_has_exactly(bob: &Node, n: usize) {
    assert_eq!(bob.wait_received(ALICE, n, LONG), (n, n));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(bob.received_from(ALICE), (n, n));
}

/// Alice online, the link cut once while each side writes, alice back (resumed), everything
/// once on each side. Returns alice's run (still running).
fn cut_once_and_resume(alice: &Node, bob: &Node, proxy: &Proxy, bob_run: &Running) -> Running {
    let run = alice
        .spawn_run(&["--log", "tether_core=info"])
        .online(LONG, "alice");
    let _ = bob_run;
    alice.send_many(BOB, 3, "before");
    bob_has_exactly(bob, 3);
    // The link dies silently; each side writes meanwhile.
    proxy.set_blackhole(true);
    proxy.blackhole_current();
    alice.send_many(BOB, 2, "during");
    bob.send_many(ALICE, 2, "to-alice");
    std::thread::sleep(Duration::from_millis(300));
    proxy.set_blackhole(false);
    proxy.drop_all();
    assert!(
        run.wait_for(LONG, |evs| evs
            .iter()
            .filter(|e| e["event"] == "connection" && e["state"] == "online")
            .count()
            >= 2),
        "alice came back: {}",
        run.diagnostics()
    );
    assert!(run.saw_online(true), "resumed: {}", run.diagnostics());
    bob_has_exactly(bob, 5);
    assert_eq!(alice.wait_received(BOB, 2, LONG), (2, 2));
    run
}

#[test]
fn direct_tls_and_sasl2_resume_inline_and_the_next_login_uses_the_fast_token() {
    let direct = free_port().expect("a free port");
    let prosody = Prosody::start(ProsodyOptions {
        sasl2: true,
        direct_tls_port: Some(direct),
        ..ProsodyOptions::default()
    })
    .expect("start prosody with prosody-modules");
    for user in ["alice", "bob"] {
        prosody
            .register(user, &format!("{user}-secret"))
            .expect("register");
    }
    let proxy = Proxy::start(([127, 0, 0, 1], direct).into());
    let dir = tempfile::tempdir().unwrap();
    let ca = prosody.ca_file();
    let ca = ca.to_str().unwrap();
    let alice = Node::with_args(
        dir.path(),
        "alice",
        "alice-secret",
        proxy.addr(),
        &["--ca-file", ca, "--direct-tls"],
    );
    let bob = Node::new(
        dir.path(),
        "bob",
        "bob-secret",
        prosody.addr(),
        prosody.ca_file().as_path(),
    );
    let bob_run = bob.spawn_run(&[]).online(LONG, "bob");

    let mut run = cut_once_and_resume(&alice, &bob, &proxy, &bob_run);
    let lines = wait_logins(&run, 2);
    assert!(lines.len() >= 2, "two logins: {lines:?}\n{}", run.stderr());
    // The first: Direct TLS, SASL2 with the password (a token asked for and given).
    assert!(lines[0].contains("DirectTls"), "{}", lines[0]);
    assert!(lines[0].contains("sasl2=true"), "{}", lines[0]);
    assert!(lines[0].contains("fast=false"), "{}", lines[0]);
    // The second: the FAST token, and the stream resumed inline (no <resume/>, no bind).
    let last = lines.last().unwrap();
    assert!(
        last.contains("DirectTls") && last.contains("fast=true"),
        "{last}"
    );
    let stderr = run.stderr();
    let sasl2: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("SASL2 login"))
        .collect();
    assert!(
        sasl2.last().is_some_and(|l| l.contains("Resumed")),
        "resumed inside SASL2: {sasl2:?}"
    );
    // The server keeps the token it issued for this client.
    let tokens = prosody
        .dir()
        .join("data")
        .join("localhost")
        .join("fast_tokens");
    assert!(
        tokens.exists(),
        "Prosody stored a FAST token under {tokens:?}"
    );
    run.stop(LONG, "alice");

    // A token the server refuses: forgotten, the password once, at once, and a new token.
    let db = rusqlite::Connection::open(&alice.db).unwrap();
    db.execute("UPDATE login SET fast_token = 'secret-token:forged'", [])
        .unwrap();
    let mut run = alice
        .spawn_run(&["--log", "tether_core=info"])
        .online(LONG, "alice with a refused token");
    let lines = wait_logins(&run, 1);
    assert!(
        run.stderr().contains("the server refused the FAST token"),
        "{}",
        run.stderr()
    );
    assert!(
        lines[0].contains("sasl2=true") && lines[0].contains("fast=false"),
        "{}",
        lines[0]
    );
    let kept: String = db
        .query_row("SELECT fast_token FROM login", [], |r| r.get(0))
        .unwrap();
    assert!(
        kept.starts_with("secret-token:") && kept != "secret-token:forged",
        "a new token"
    );
    run.stop(LONG, "alice");

    // A refused token and a wrong password: the password once, then stop as for a wrong
    // password (exit 3), never a loop.
    db.execute("UPDATE login SET fast_token = 'secret-token:forged'", [])
        .unwrap();
    db.execute("UPDATE accounts SET password = 'not-the-password'", [])
        .unwrap();
    let mut run = alice.spawn_run(&["--log", "tether_core=info"]);
    let status = run.wait_exit(LONG).expect("it stops");
    assert_eq!(status.code(), Some(3), "{}", run.stderr());
    assert_eq!(
        run.stderr()
            .matches("the server refused the FAST token")
            .count(),
        1,
        "{}",
        run.stderr()
    );
}

#[test]
fn a_server_without_sasl2_gets_starttls_and_sasl1_and_the_stream_still_resumes() {
    let w = Pair::new(Prosody::start(ProsodyOptions::default()).expect("start prosody"));
    let bob_run = w.bob.spawn_run(&[]).online(LONG, "bob");
    let mut run = cut_once_and_resume(&w.alice, &w.bob, &w.proxy, &bob_run);
    let lines = wait_logins(&run, 2);
    for l in &lines {
        assert!(l.contains("StartTls") && l.contains("sasl2=false"), "{l}");
    }
    run.stop(LONG, "alice");
}

/// ejabberd 24.12 offers SASL2 with Bind2 and inline SM itself (not FAST in its default
/// configuration, nor Direct TLS here): a second, independent SASL2 implementation, reached
/// over STARTTLS, and the stream resumed inline there too.
#[test]
fn ejabberd_gets_starttls_then_sasl2_and_the_stream_resumes_inline() {
    let w = Pair::new(Ejabberd::start(EjabberdOptions::default()).expect("start ejabberd"));
    let bob_run = w.bob.spawn_run(&[]).online(LONG, "bob");
    let mut run = cut_once_and_resume(&w.alice, &w.bob, &w.proxy, &bob_run);
    let lines = wait_logins(&run, 2);
    for l in &lines {
        assert!(l.contains("StartTls") && l.contains("sasl2=true"), "{l}");
    }
    let stderr = run.stderr();
    let sasl2: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("SASL2 login"))
        .collect();
    assert!(
        sasl2.last().is_some_and(|l| l.contains("Resumed")),
        "resumed inside SASL2: {sasl2:?}"
    );
    run.stop(LONG, "alice");
}
