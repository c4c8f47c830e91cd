//! Push wake-ups against a real Prosody (issue 15, parts 1 and 2): `mod_cloud_notify` publishes
//! to a test app server (an XEP-0114 component) while the app is dead; a wake process
//! (`tether wake`) resumes the stream the app left, stores and acks what the server held, and
//! suspends keeping the stream; the app started afterwards shows each message once. The same
//! with the wake SIGKILLed right after its commit (Monal#295's shape), and a wake that leaves the
//! stream to an app that drives it.

use std::time::Duration;

use serde_json::Value;
use tether_e2e::pair::Pair;
use tether_e2e::prosody::{free_port, Prosody, ProsodyOptions, PushOptions, PUSH_DOMAIN};
use tether_e2e::push_server::AppServer;
use tether_e2e::tether::{Node, Running};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const SECRET: &str = "app-server-secret";
/// Time limits only bound a broken run; nothing here is timed.
const LONG: Duration = Duration::from_secs(120);

struct World {
    w: Pair<Prosody>,
    app: AppServer,
}

fn world() -> World {
    let component_port = free_port().expect("a free port");
    let prosody = Prosody::start(ProsodyOptions {
        push: Some(PushOptions {
            component_port,
            component_secret: "component-secret".into(),
        }),
        // The app's stream must outlive the test's pauses (push extends it to 72 h anyway).
        hibernation_secs: 300,
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    let app = AppServer::start(
        ([127, 0, 0, 1], component_port).into(),
        PUSH_DOMAIN,
        "component-secret",
    )
    .expect("the app server connects");
    World {
        w: Pair::new(prosody),
        app,
    }
}

fn ok(node: &Node, args: &[&str]) -> String {
    let out = node.exec(args);
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

/// Alice's app: enables push, comes online (push confirmed), and is SIGKILLed, leaving its
/// stream hibernated on the server.
fn app_enables_push_and_is_killed(w: &Pair<Prosody>) {
    let mut c = w.alice.cmd();
    c.args([
        "push",
        "enable",
        "--service",
        PUSH_DOMAIN,
        "--node",
        "device-1",
        "--secret-env",
        "PUSH_SECRET",
    ])
    .env("PUSH_SECRET", SECRET);
    let out = c.output().expect("spawn tether");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut app = w.alice.spawn_run(&[]).online(LONG, "alice's app");
    assert!(
        app.wait_for(LONG, |evs| evs
            .iter()
            .any(|e| e["event"] == "push" && e["state"] == "enabled")),
        "push enabled: {}",
        app.diagnostics()
    );
    app.kill9();
    let settings = ok(&w.alice, &["push", "show"]);
    assert!(settings.contains("\"state\":\"enabled\""), "{settings}");
    assert!(!settings.contains(SECRET), "the secret is not printed");
}

/// Bob writes `body` to alice and waits until the server has it.
fn bob_writes(w: &Pair<Prosody>, body: &str) -> String {
    let id = ok(&w.bob, &["send", "--to", ALICE, "--body", body]);
    let mut run = w.bob.spawn_run(&["--until-idle"]);
    run.finish(LONG, "bob's send");
    id
}

/// The summary line of a `tether wake`.
fn summary(stdout: &str) -> Value {
    let last = stdout.lines().last().expect("a summary");
    let v: Value = serde_json::from_str(last).expect("json");
    assert_eq!(v["event"], "wake", "{stdout}");
    v
}

fn alice_has_once(w: &Pair<Prosody>, body: &str) {
    let rows = w.alice.messages(&["--direction", "in", "--peer", BOB]);
    let n = rows.iter().filter(|r| r["body"] == body).count();
    assert_eq!(n, 1, "exactly once: {rows:#?}");
}

#[test]
fn a_push_wakes_a_process_that_stores_and_acks_and_the_app_shows_it_once() {
    let World { w, app } = world();
    app_enables_push_and_is_killed(&w);
    bob_writes(&w, "are you there?");
    // The server published a notification for alice's device, with the app server's secret.
    let pushes = app.wait_for(1, LONG);
    assert!(!pushes.is_empty(), "no push reached the app server");
    let p = &pushes[0];
    assert_eq!(p.node, "device-1");
    assert_eq!(p.secret.as_deref(), Some(SECRET));
    assert!(
        p.from.starts_with("localhost"),
        "from the user's server: {p:?}"
    );
    assert!(
        p.fields.iter().any(|(k, _)| k == "message-count"),
        "a summary form: {p:?}"
    );
    // The wake: resumes the hibernated stream, stores and acks the message, suspends.
    let out = w.alice.exec(&["wake", "--deadline-secs", "25", "--bodies"]);
    assert_eq!(out.code, Some(0), "wake: {}", out.stderr);
    let s = summary(&out.stdout);
    assert_eq!(s["outcome"], "done", "{s}");
    assert_eq!(s["new_messages"], 1, "{s}");
    assert_eq!(s["conversations"][0]["peer"], BOB);
    assert_eq!(s["conversations"][0]["senders"][0], BOB);
    assert_eq!(s["conversations"][0]["bodies"][0], "are you there?");
    assert!(s["elapsed_ms"].as_u64().unwrap() < 25_000);
    assert!(
        out.stdout.contains("\"resumed\":true"),
        "the wake resumed the app's stream: {}",
        out.stdout
    );
    alice_has_once(&w, "are you there?");
    // The app starts again: it resumes the stream the wake kept, and shows the message once.
    let mut app_run = w.alice.spawn_run(&[]).online(LONG, "alice's app again");
    assert!(
        app_run.saw_online(true),
        "resumed: {}",
        app_run.diagnostics()
    );
    bob_writes(&w, "good morning");
    w.alice.wait_received(BOB, 2, LONG);
    app_run.stop(LONG, "alice's app");
    alice_has_once(&w, "are you there?");
    alice_has_once(&w, "good morning");
}

/// Monal#295's shape: the wake process dies right after it committed the message, before it
/// acked anything. The server still holds it and sends it again to the app, which already has
/// it: shown once, never lost.
#[test]
fn a_wake_killed_right_after_its_commit_loses_nothing_and_shows_nothing_twice() {
    let World { w, app } = world();
    app_enables_push_and_is_killed(&w);
    bob_writes(&w, "one and only");
    assert!(!app.wait_for(1, LONG).is_empty(), "pushed");
    let mut cmd = w.alice.cmd();
    cmd.args(["wake", "--deadline-secs", "25"]);
    let mut wake = Running::spawn(cmd);
    assert!(
        wake.wait_count("message:received", 1, LONG),
        "the wake stored it: {}",
        wake.diagnostics()
    );
    // `message:received` is announced after the commit: kill now.
    wake.kill9();
    alice_has_once(&w, "one and only");
    let mut app_run = w.alice.spawn_run(&["--until-idle"]);
    app_run.finish(LONG, "alice's app");
    alice_has_once(&w, "one and only");
    assert_eq!(
        app_run.count("message:received"),
        0,
        "the app announced nothing new: {}",
        app_run.diagnostics()
    );
}

/// While the app drives the stream, a wake leaves it alone at once (two processes never drive
/// one stream); once the app is gone, the next wake works.
#[test]
fn a_wake_leaves_the_stream_to_an_app_that_drives_it() {
    let World { w, app: _app } = world();
    let mut app_run = w.alice.spawn_run(&[]).online(LONG, "alice's app");
    let out = w.alice.exec(&["wake", "--deadline-secs", "25"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s = summary(&out.stdout);
    assert_eq!(s["outcome"], "yielded", "{s}");
    assert!(s["elapsed_ms"].as_u64().unwrap() < 5_000, "at once: {s}");
    // A second `run` waits for the first instead of driving the same stream.
    let mut second = w.alice.spawn_run(&[]);
    assert!(
        second.wait_for(LONG, |evs| evs.iter().any(|e| e["event"] == "connection"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("another process")))),
        "the second waits: {}",
        second.diagnostics()
    );
    assert!(!second.saw_online(false) && !second.saw_online(true));
    app_run.stop(LONG, "alice's app");
    // The first is gone: the second takes over.
    assert!(second.wait_online(LONG), "{}", second.diagnostics());
    second.stop(LONG, "the second");
    let out = w.alice.exec(&["wake", "--deadline-secs", "25"]);
    assert_eq!(summary(&out.stdout)["outcome"], "done", "{}", out.stdout);
}
