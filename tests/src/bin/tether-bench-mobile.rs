//! The mobile benchmarks of issue 15, against local Prosodys started for the run (a plain one, and
//! one with prosody-modules' SASL2, Bind2, inline SM, FAST and a Direct TLS port), through the
//! harness's latency proxy (each chunk held for half the RTT in each direction; the kernel here
//! has no `netem`, and the TCP handshake with the proxy is not delayed). Prints Markdown tables.
//!
//! ```sh
//! tether-bench-mobile [--rtt-ms 100] [--rounds 5] [--idle-secs 600] [--wake-messages 100]
//! ```
//!
//! - **Reconnect**: `tether run --stdin` online through the proxy; the proxy drops the link;
//!   once the client is offline, a message is committed and `network-changed` given; timed from
//!   then to `online` (resumed) and to the message's `message:acked`, in round trips: today's
//!   path (STARTTLS, SASL1, `<resume/>`), STARTTLS then SASL2, and the new path (Direct TLS,
//!   SASL2 with the FAST token and the stream resumed inline).
//! - **Wake**: the app (`tether run`) is SIGKILLed, leaving its stream hibernated; bob sends N
//!   messages; `tether wake` is timed from its process start to its exit (the summary printed).
//! - **Five accounts idle** (issue 16): one `run` of a store with five accounts beside one `run`
//!   of a store with one, both the desktop profile: the process's CPU time and voluntary context
//!   switches over the idle window, five against one.
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
    // `--accounts-only`: only the five-accounts idle table.
    let mut accounts_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--rtt-ms" => rtt_ms = num() as u64,
            "--rounds" => rounds = num(),
            "--idle-secs" => idle_secs = num() as u64,
            "--wake-messages" => wake_messages = num(),
            "--accounts-only" => accounts_only = true,
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
    if accounts_only {
        idle_accounts(&server, work.path(), idle_secs);
        return;
    }
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
    // The fast path's server: the same Prosody with prosody-modules' SASL2, Bind2, inline SM and
    // FAST, and a Direct TLS port; erin reaches it through Direct TLS, frank through STARTTLS.
    let direct = tether_e2e::prosody::free_port().expect("a free port");
    let fast_server = Prosody::start(ProsodyOptions {
        hibernation_secs: 3600,
        sasl2: true,
        direct_tls_port: Some(direct),
        ..ProsodyOptions::default()
    })
    .expect("start prosody with prosody-modules");
    for user in ["erin", "frank"] {
        fast_server.register(user, PASSWORD).expect("register");
    }
    let direct_proxy = Proxy::start(([127, 0, 0, 1], direct).into());
    direct_proxy.set_latency(rtt / 2);
    let starttls_proxy = Proxy::start(fast_server.addr());
    starttls_proxy.set_latency(rtt / 2);
    let ca = fast_server.ca_file();
    let ca = ca.to_str().expect("utf-8 path");
    let erin = Node::with_args(
        work.path(),
        "erin",
        PASSWORD,
        direct_proxy.addr(),
        &["--ca-file", ca, "--direct-tls"],
    );
    let frank = Node::new(
        work.path(),
        "frank",
        PASSWORD,
        starttls_proxy.addr(),
        &fast_server.ca_file(),
    );
    let today = reconnect(&alice, &proxy, rounds, "bob@localhost");
    let sasl2 = reconnect(&frank, &starttls_proxy, rounds, "erin@localhost");
    let fast = reconnect(&erin, &direct_proxy, rounds, "frank@localhost");
    println!(
        "### Reconnect after `network_changed()`, through the proxy at {} ms RTT (median of {rounds})\n",
        rtt.as_millis()
    );
    println!("| path | to resumed | in RTT | to the outbox flushed (acked) | in RTT |");
    println!("|---|---:|---:|---:|---:|");
    for (label, (r, f, _, _)) in [
        ("today: TCP, STARTTLS, SCRAM (SASL1), resume", &today),
        ("STARTTLS, then SASL2 (FAST token, resumed inline)", &sasl2),
        ("new: Direct TLS, SASL2 (FAST token, resumed inline)", &fast),
    ] {
        println!(
            "| {label} | {} ms | {:.1} | {} ms | {:.1} |",
            r.as_millis(),
            in_rtt(*r, rtt),
            f.as_millis(),
            in_rtt(*f, rtt)
        );
    }
    println!(
        "\nNew path against today's, same run: {:.2}x the time to resumed, {:.2}x to the outbox flushed.",
        fast.0.as_secs_f64() / today.0.as_secs_f64(),
        fast.1.as_secs_f64() / today.1.as_secs_f64()
    );
    for (label, (_, _, resumed, flushed)) in [
        ("today", &today),
        ("STARTTLS+SASL2", &sasl2),
        ("new", &fast),
    ] {
        println!(
            "\nRounds, {label} (resumed / acked, ms): {:?} / {:?}",
            resumed.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            flushed.iter().map(Duration::as_millis).collect::<Vec<_>>()
        );
    }
    println!();
    wake(&alice, &bob, rtt, rounds, wake_messages);
    println!();
    idle(&server, work.path(), idle_secs);
    println!();
    idle_accounts(&server, work.path(), idle_secs);
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

/// Medians of (to resumed, to acked) over `rounds` reconnects, and every round's figures.
fn reconnect(
    alice: &Node,
    proxy: &Proxy,
    rounds: usize,
    to: &str,
) -> (Duration, Duration, Vec<Duration>, Vec<Duration>) {
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
        run.write_line(&serde_json::json!({"to": to, "body": body}).to_string());
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
    (
        median(resumed.clone()),
        median(flushed.clone()),
        resumed,
        flushed,
    )
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

/// The process's CPU time (user + system) in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn idle_accounts(server: &Prosody, dir: &Path, secs: u64) {
    let (addr, ca) = (server.addr(), server.ca_file());
    server.register("solo", PASSWORD).expect("register");
    let solo = Node::new(dir, "solo", PASSWORD, addr, &ca);
    server.register("many0", PASSWORD).expect("register");
    let mut many = Node::new(dir, "many0", PASSWORD, addr, &ca);
    let ca_arg = ca.to_str().expect("utf-8");
    for i in 1..5 {
        let user = format!("many{i}");
        server.register(&user, PASSWORD).expect("register");
        many.add_account(&user, PASSWORD, addr, &["--ca-file", ca_arg]);
    }
    let mut one = spawn(&solo, &[]);
    let mut five = Running::spawn({
        let mut c = many.store_cmd();
        c.arg("run");
        c
    });
    assert!(one.wait_online(WAIT), "{}", one.diagnostics());
    let all_online = |evs: &[Value]| {
        evs.iter()
            .filter(|e| e["event"] == "connection" && e["state"] == "online")
            .filter_map(|e| e["account"].as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 5
    };
    assert!(five.wait_for(WAIT, all_online), "{}", five.diagnostics());
    std::thread::sleep(Duration::from_secs(3));
    let probe = |r: &Running| (cpu_ticks(r.pid()), context_switches(r.pid()));
    let start = [probe(&one), probe(&five)];
    std::thread::sleep(Duration::from_secs(secs));
    let end = [probe(&one), probe(&five)];
    let per_hour = |n: u64| n as f64 * 3600.0 / secs as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    println!("### Five accounts idle against one, {secs} s side by side (desktop profile, same server)\n");
    println!("| store | CPU time | per hour | process context switches | per hour | against one account |");
    println!("|---|---:|---:|---:|---:|---:|");
    let cpu = |i: usize| (end[i].0 - start[i].0) as f64 / hz;
    let sw = |i: usize| end[i].1 - start[i].1;
    for (i, name) in ["one account (baseline)", "five accounts, one `run`"]
        .iter()
        .enumerate()
    {
        println!(
            "| {name} | {:.2} s | {:.1} s | {} | {:.0} | {:.2}x switches, {:.2}x CPU |",
            cpu(i),
            cpu(i) * 3600.0 / secs as f64,
            sw(i),
            per_hour(sw(i)),
            sw(i) as f64 / sw(0).max(1) as f64,
            cpu(i) / cpu(0).max(1.0 / hz),
        );
    }
    one.terminate(WAIT);
    five.terminate(WAIT);
}
