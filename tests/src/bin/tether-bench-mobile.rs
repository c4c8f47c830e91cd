//! The mobile benchmarks of issue 15, against one local Prosody started for the run, through the
//! harness's latency proxy (each chunk held for half the RTT in each direction; the kernel here
//! has no `netem`, and the TCP handshake with the proxy is not delayed). Prints Markdown tables.
//!
//! ```sh
//! tether-bench-mobile [--rtt-ms 100] [--rounds 5] [--idle-secs 600] [--wake-messages 100]
//! ```
//!
//! - **Reconnect**: `tether run --stdin` online through the proxy; the proxy drops the link;
//!   once the client is offline, a message is committed and `network-changed` given; timed from
//!   then to `online` (resumed) and to the message's `message:acked`, in round trips.
//! - **Wake**: the app (`tether run`) is SIGKILLed, leaving its stream hibernated; bob sends N
//!   messages; `tether wake` is timed from its process start to its exit (the summary printed).
//! - **Idle wake-ups**: two accounts idle side by side, one `run --profile desktop`, one
//!   `run --profile mobile`; each reports its connection loop's wake-ups (`{"cmd":"stats"}`) at
//!   the start and the end of the idle window, and the OS counts its voluntary context switches.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::proxy::Proxy;
use tether_e2e::tether::{Node, Running};

const WAIT: Duration = Duration::from_secs(300);
const PASSWORD: &str = "bench-password";

fn main() {
    let mut rtt_ms = 100u64;
    let mut rounds = 5usize;
    let mut idle_secs = 600u64;
    let mut wake_messages = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--rtt-ms" => rtt_ms = num() as u64,
            "--rounds" => rounds = num(),
            "--idle-secs" => idle_secs = num() as u64,
            "--wake-messages" => wake_messages = num(),
            other => panic!("unknown argument {other}"),
        }
    }
    let server = Prosody::start(ProsodyOptions {
        hibernation_secs: 3600,
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    for user in ["alice", "bob", "carol", "dave"] {
        server.register(user, PASSWORD).expect("register");
    }
    let work = tempfile::tempdir().expect("temp dir");
    let rtt = Duration::from_millis(rtt_ms);
    let proxy = Proxy::start(server.addr());
    proxy.set_latency(rtt / 2);
    let alice = Node::new(
        work.path(),
        "alice",
        PASSWORD,
        proxy.addr(),
        &server.ca_file(),
    );
    let bob = Node::new(
        work.path(),
        "bob",
        PASSWORD,
        server.addr(),
        &server.ca_file(),
    );
    reconnect(&alice, &proxy, rtt, rounds);
    println!();
    wake(&alice, &bob, rtt, rounds, wake_messages);
    println!();
    idle(&server, work.path(), idle_secs);
}

fn spawn(node: &Node, args: &[&str]) -> Running {
    let mut cmd = node.cmd();
    cmd.arg("run").args(args);
    Running::spawn(cmd)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn in_rtt(d: Duration, rtt: Duration) -> f64 {
    d.as_secs_f64() / rtt.as_secs_f64()
}

fn reconnect(alice: &Node, proxy: &Proxy, rtt: Duration, rounds: usize) {
    // A long backoff: only `network-changed` brings the client back.
    let mut run = spawn(
        alice,
        &[
            "--stdin",
            "--reconnect-min-ms",
            "600000",
            "--reconnect-max-ms",
            "600000",
        ],
    );
    assert!(run.wait_online(WAIT), "{}", run.diagnostics());
    let (mut resumed, mut flushed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let from = run.len();
        proxy.drop_all();
        run.wait_after(from, WAIT, |e| {
            e["event"] == "connection" && e["state"] == "offline"
        })
        .unwrap_or_else(|| panic!("never offline: {}", run.diagnostics()));
        let body = format!("after the change {round}");
        run.write_line(&serde_json::json!({"to": "bob@localhost", "body": body}).to_string());
        let (_, queued) = run
            .wait_after(from, WAIT, |e| {
                e["event"] == "message:sent" && e["state"] == "queued"
            })
            .unwrap_or_else(|| panic!("not committed: {}", run.diagnostics()));
        let id = queued["id"].as_str().expect("an id").to_owned();
        let from = run.len();
        run.write_line(r#"{"cmd":"network-changed"}"#);
        let t0 = Instant::now();
        let (i, _) = run
            .wait_after(from, WAIT, |e| {
                e["event"] == "connection" && e["state"] == "online"
            })
            .unwrap_or_else(|| panic!("not online: {}", run.diagnostics()));
        let (j, _) = run
            .wait_after(from, WAIT, |e| {
                e["event"] == "message:acked" && e["id"] == id
            })
            .unwrap_or_else(|| panic!("not acked: {}", run.diagnostics()));
        assert!(
            run.events_since(i)[0]["resumed"] == true,
            "round {round}: not resumed: {}",
            run.diagnostics()
        );
        resumed.push(run.arrival(i) - t0);
        flushed.push(run.arrival(j) - t0);
    }
    run.terminate(WAIT);
    let (r, f) = (median(resumed.clone()), median(flushed.clone()));
    println!(
        "### Reconnect after `network_changed()`, through the proxy at {} ms RTT (median of {rounds})\n",
        rtt.as_millis()
    );
    println!("| path | to resumed | in RTT | to the outbox flushed (acked) | in RTT |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| today: TCP, STARTTLS, SCRAM (SASL1), resume | {} ms | {:.1} | {} ms | {:.1} |",
        r.as_millis(),
        in_rtt(r, rtt),
        f.as_millis(),
        in_rtt(f, rtt)
    );
    println!(
        "\nRounds (resumed / acked, ms): {:?} / {:?}",
        resumed.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        flushed.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
}

fn wake(alice: &Node, bob: &Node, rtt: Duration, rounds: usize, n: usize) {
    // The app: online once (a resumable stream), then killed.
    let mut app = spawn(alice, &[]);
    assert!(app.wait_online(WAIT), "{}", app.diagnostics());
    app.kill9();
    let mut times = Vec::new();
    for round in 0..rounds {
        let bodies: Vec<String> = (0..n).map(|i| format!("wake {round} {i}")).collect();
        bob.send_bodies("alice@localhost", &bodies);
        let mut send = spawn(bob, &["--until-idle"]);
        send.finish(WAIT, "bob's messages");
        let t0 = Instant::now();
        let out = alice.exec(&["wake", "--deadline-secs", "25"]);
        let took = t0.elapsed();
        assert_eq!(out.code, Some(0), "wake: {}", out.stderr);
        let summary: Value =
            serde_json::from_str(out.stdout.lines().last().expect("a summary")).expect("json");
        assert_eq!(summary["outcome"], "done", "{summary}");
        assert_eq!(summary["new_messages"], n, "{summary}");
        times.push(took);
    }
    let m = median(times.clone());
    println!(
        "### `tether wake` with {n} messages waiting, through the proxy at {} ms RTT (median of {rounds})\n",
        rtt.as_millis()
    );
    println!("| from process start to summary | in RTT |");
    println!("|---:|---:|");
    println!("| {} ms | {:.1} |", m.as_millis(), in_rtt(m, rtt));
    println!(
        "\nRounds (ms): {:?}",
        times.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
}

/// The process's voluntary context switches (each a wake-up from sleep), all threads.
fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    for task in tasks.flatten() {
        if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                    total += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    total
}

fn stats(run: &mut Running) -> (u64, u64) {
    let from = run.len();
    run.write_line(r#"{"cmd":"stats"}"#);
    let (_, e) = run
        .wait_after(from, WAIT, |e| e["event"] == "run:stats")
        .unwrap_or_else(|| panic!("no stats: {}", run.diagnostics()));
    (
        e["wakeups"].as_u64().expect("a count"),
        e["timer_wakeups"].as_u64().expect("a count"),
    )
}

fn idle(server: &Prosody, dir: &Path, secs: u64) {
    let desktop = Node::new(dir, "carol", PASSWORD, server.addr(), &server.ca_file());
    let mobile = Node::new(dir, "dave", PASSWORD, server.addr(), &server.ca_file());
    let mut runs: Vec<(&str, Running)> = vec![
        (
            "desktop",
            spawn(&desktop, &["--stdin", "--profile", "desktop"]),
        ),
        (
            "mobile",
            spawn(&mobile, &["--stdin", "--profile", "mobile"]),
        ),
    ];
    for (_, r) in &runs {
        assert!(r.wait_online(WAIT), "{}", r.diagnostics());
    }
    // Let the new sessions' first exchanges (roster, carbons, acks) finish.
    std::thread::sleep(Duration::from_secs(3));
    let start: Vec<((u64, u64), u64)> = runs
        .iter_mut()
        .map(|(_, r)| (stats(r), context_switches(r.pid())))
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    let end: Vec<((u64, u64), u64)> = runs
        .iter_mut()
        .map(|(_, r)| (stats(r), context_switches(r.pid())))
        .collect();
    let per_hour = |n: u64| n as f64 * 3600.0 / secs as f64;
    println!("### Idle wake-ups over {secs} s, per hour (both side by side, same server)\n");
    println!(
        "| profile | timer wake-ups (probes, polls) | per hour | all loop wake-ups | per hour | process context switches | per hour |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in runs.iter().enumerate() {
        let timers = end[i].0 .1 - start[i].0 .1;
        let loops = end[i].0 .0 - start[i].0 .0;
        let switches = end[i].1 - start[i].1;
        println!(
            "| {name} | {timers} | {:.0} | {loops} | {:.0} | {switches} | {:.0} |",
            per_hour(timers),
            per_hour(loops),
            per_hour(switches)
        );
    }
    for (_, r) in runs.iter_mut() {
        r.terminate(WAIT);
    }
}
