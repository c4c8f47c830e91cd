//! The fault campaign: two Tether clients (CLI processes, each on its own SQLite store and behind
//! its own fault proxy) exchange messages both ways against a real Prosody (archive on), while a
//! seeded random schedule drops and stalls links, SIGKILLs and restarts either client, and
//! restarts Prosody. At the end the faults stop, the users resend what failed, and the invariants
//! are checked:
//!
//! - every message is in its receiver's store exactly once (after the user's resend where the
//!   sender saw it fail);
//! - a message fails at its sender only if that sender lost a session (a resumption refused, or a
//!   session that could not be resumed at all);
//! - every sender row ends confirmed (acked or further), nothing queued or in flight;
//! - the SM counters agree with the server's: everything each client wrote was acked
//!   (`acked_h` = `outbound_count`), and no `h` either side sent was refused by the other
//!   (Prosody closes a stream whose client acknowledges more or less than it sent).
//!
//! It prints the seed and one summary line. `TETHER_CAMPAIGN_SEED` replays a schedule;
//! `TETHER_CAMPAIGN_STEPS` makes it longer (CI runs the default, a few minutes at most). A
//! failure found here becomes a deterministic test elsewhere.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tether_e2e::prosody::{Prosody, ProsodyOptions};
use tether_e2e::proxy::Proxy;
use tether_e2e::tether::{Node, Running};

const LONG: Duration = Duration::from_secs(180);
const CONFIRMED: [&str; 3] = ["acked", "delivered", "displayed"];

/// splitmix64: small, seedable, good enough for a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Peer {
    name: &'static str,
    node: Node,
    proxy: Proxy,
    run: Option<Running>,
    /// Every process's events, kept when the process is killed.
    past: Vec<Running>,
    kills: usize,
}

impl Peer {
    fn start(&mut self) {
        let run = self
            .node
            .spawn_run(&["--keepalive-secs", "1", "--dead-after-secs", "2"]);
        self.run = Some(run);
    }

    fn kill(&mut self) {
        if let Some(mut run) = self.run.take() {
            run.kill9();
            self.past.push(run);
            self.kills += 1;
        }
    }

    fn runs(&self) -> impl Iterator<Item = &Running> {
        self.past.iter().chain(self.run.iter())
    }

    /// Sessions this client lost: every `online` with `resumed: false` after its very first one.
    fn sessions_lost(&self) -> usize {
        let fresh: usize = self
            .runs()
            .map(|r| {
                r.named("connection")
                    .iter()
                    .filter(|e| e["state"] == "online" && e["resumed"] == false)
                    .count()
            })
            .sum();
        fresh.saturating_sub(1)
    }

    fn pending(&self) -> usize {
        self.node.pending()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "campaign: timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn fault_campaign_loses_and_doubles_nothing() {
    let seed = env_u64("TETHER_CAMPAIGN_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let steps = env_u64("TETHER_CAMPAIGN_STEPS").unwrap_or(120);
    eprintln!("campaign: seed {seed}, {steps} steps (TETHER_CAMPAIGN_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let mut prosody = Prosody::start(ProsodyOptions {
        mam: true,
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    prosody.register("alice", "alice-secret").unwrap();
    prosody.register("bob", "bob-secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = prosody.ca_file();
    let mut peers: Vec<Peer> = ["alice", "bob"]
        .into_iter()
        .map(|name| {
            let proxy = Proxy::start(prosody.addr());
            let node = Node::new(
                dir.path(),
                name,
                &format!("{name}-secret"),
                proxy.addr(),
                &ca,
            );
            Peer {
                name,
                node,
                proxy,
                run: None,
                past: Vec::new(),
                kills: 0,
            }
        })
        .collect();
    for p in &mut peers {
        p.start();
        let run = p.run.as_ref().unwrap();
        assert!(run.wait_online(LONG), "{}: {}", p.name, run.diagnostics());
    }

    // Bodies each peer sent, by sender index.
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut log = Vec::new();
    let mut prosody_restarts = 0;
    for step in 0..steps {
        let who = rng.below(2) as usize;
        let p = &mut peers[who];
        match rng.below(20) {
            0..=7 => {
                let n = 1 + rng.below(15) as usize;
                let to = format!("{}@localhost", if who == 0 { "bob" } else { "alice" });
                let prefix = format!("c{seed:x}-{}-{step}", p.name);
                p.node.send_many(&to, n, &prefix);
                sent[who].extend((0..n).map(|i| format!("{prefix} {i}")));
                log.push(format!("{step}:{}+{n}", p.name));
            }
            8..=10 => {
                p.proxy.drop_all();
                log.push(format!("{step}:drop-{}", p.name));
            }
            11..=12 => {
                // A silently dead link: the client must notice and reconnect.
                p.proxy.blackhole_current();
                log.push(format!("{step}:stall-{}", p.name));
            }
            13..=15 => {
                p.kill();
                std::thread::sleep(Duration::from_millis(rng.below(1500)));
                p.start();
                log.push(format!("{step}:kill-{}", p.name));
            }
            16 => {
                prosody.restart().expect("restart prosody");
                prosody_restarts += 1;
                log.push(format!("{step}:restart-prosody"));
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100 + rng.below(700)));
    }
    eprintln!("campaign schedule: {}", log.join(" "));

    // The faults stop. Everyone settles: nothing may stay pending.
    for p in &peers {
        if p.run.is_none() {
            continue;
        }
        wait_until(&format!("{} to settle", p.name), LONG, || p.pending() == 0);
    }
    let failed: Vec<usize> = peers.iter().map(|p| p.node.count_out("failed")).collect();
    for (p, f) in peers.iter().zip(&failed) {
        assert!(
            *f == 0 || p.sessions_lost() > 0,
            "{}: {f} messages failed although it never lost a session",
            p.name
        );
    }
    // The users resend what failed (same ids), and it settles again.
    for (p, f) in peers.iter().zip(&failed) {
        if *f > 0 {
            let out = p.node.exec(&["resend", "--all-failed"]);
            assert_eq!(out.code, Some(0), "{}", out.stderr);
            wait_until(&format!("{}'s resend", p.name), LONG, || p.pending() == 0);
            assert_eq!(p.node.count_out("failed"), 0, "{}: failed again", p.name);
        }
    }

    // Every message reached its receiver exactly once.
    let mut duplicates = 0;
    let mut lost = 0;
    for (from, to) in [(0, 1), (1, 0)] {
        let sender = &peers[from];
        let receiver = &peers[to];
        let want = &sent[from];
        let mut have: HashMap<String, usize> = HashMap::new();
        wait_until(
            &format!("{} to have {}'s messages", receiver.name, sender.name),
            LONG,
            || {
                have.clear();
                for r in receiver
                    .node
                    .messages(&["--direction", "in", "--peer", &sender.node.jid])
                {
                    *have
                        .entry(r["body"].as_str().unwrap_or_default().to_owned())
                        .or_default() += 1;
                }
                want.iter().all(|b| have.contains_key(b))
            },
        );
        duplicates += have.values().filter(|c| **c > 1).count();
        lost += want.iter().filter(|b| !have.contains_key(*b)).count();
        let rows = sender.node.messages(&["--direction", "out"]);
        assert_eq!(rows.len(), want.len(), "{}: rows", sender.name);
        for r in &rows {
            let state = r["state"].as_str().unwrap_or_default();
            assert!(
                CONFIRMED.contains(&state),
                "{}: a row ended {state}: {r}",
                sender.name
            );
        }
    }
    // The inbound direction: Prosody checks every `<a h/>` the clients send against what it sent
    // them, and closes the stream if one disagrees ("Client acknowledged more/less stanzas");
    // the client checks the server's `h` the same way (`handled-count-too-high`).
    for p in &peers {
        for run in p.runs() {
            for e in run.events() {
                let text = e.to_string();
                assert!(
                    !(text.contains("acknowledged") || text.contains("handled-count")),
                    "{}: the SM counters disagreed: {e}",
                    p.name
                );
                assert!(
                    !(e["event"] == "error" && e["kind"] == "protocol"),
                    "{}: protocol error: {e}",
                    p.name
                );
            }
        }
    }
    for p in &peers {
        // The last receipts and markers are untracked stanzas: their ack may take a moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sm = p.node.sm();
            if sm["acked_h"] == sm["outbound_count"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: SM counters not settled: {sm}",
                p.name
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let total: usize = sent.iter().map(Vec::len).sum();
    let summary = format!(
        "campaign seed={seed} steps={steps}: sent={total} delivered={} failed={} resent={} duplicates={duplicates} lost={lost} kills={} prosody_restarts={prosody_restarts} sessions_lost={}",
        total - lost,
        failed.iter().sum::<usize>(),
        failed.iter().sum::<usize>(),
        peers.iter().map(|p| p.kills).sum::<usize>(),
        peers.iter().map(Peer::sessions_lost).sum::<usize>(),
    );
    eprintln!("{summary}");
    assert_eq!((duplicates, lost), (0, 0), "{summary}");
}
