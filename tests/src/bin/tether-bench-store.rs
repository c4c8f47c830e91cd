//! The store's part of Tether's benchmarks (issue "Performance"): batched commit rate against one
//! transaction per message, and opening a large store (default 1,000,000 messages) to read a
//! conversation's newest page, with the process's RSS. Prints a table (Markdown).
//!
//! ```sh
//! cargo run --release -p tether-e2e --bin tether-bench-store -- [--messages N] [--dir DIR]
//! ```
//!
//! The large store is built once per size in `DIR` (default: a `tether-bench` directory in the
//! system temp dir) and reused by later runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tether_core::store::{NewAccount, Store, StoreOptions};
use tether_core::{Client, ClientConfig};

const PEERS: usize = 10;
const BATCH: usize = 10_000;
const PAGE: usize = 50;
const REPEAT: usize = 7;

fn main() {
    let mut messages = 1_000_000usize;
    let mut dir = std::env::temp_dir().join("tether-bench");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rss-probe" => {
                rss_probe(&PathBuf::from(args.next().expect("PATH")));
                return;
            }
            "--messages" => messages = args.next().and_then(|v| v.parse().ok()).expect("N"),
            "--dir" => dir = PathBuf::from(args.next().expect("DIR")),
            other => panic!("unknown argument {other}"),
        }
    }
    std::fs::create_dir_all(&dir).expect("bench dir");

    // 1. Commit rates, on a fresh store: one transaction per message (the baseline), then batches.
    let fresh = dir.join("commit.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fresh.display()));
    }
    let mut store = Store::open(&fresh, &StoreOptions::default()).expect("open");
    let account = add_account(&mut store);
    let single_n = 500;
    let t = Instant::now();
    for i in 0..single_n {
        store
            .enqueue_many(account, &[(peer(i), body(i))])
            .expect("enqueue");
    }
    let single_rate = single_n as f64 / t.elapsed().as_secs_f64();
    let batch_n = 20_000.min(messages.max(1_000));
    let batch: Vec<(String, String)> = (0..batch_n).map(|i| (peer(i), body(i))).collect();
    let t = Instant::now();
    for chunk in batch.chunks(1_000) {
        store.enqueue_many(account, chunk).expect("enqueue");
    }
    let batch_rate = batch_n as f64 / t.elapsed().as_secs_f64();
    drop(store);

    // 2. A large store: built once, then opened cold-ish (new connection) and paged.
    let big = dir.join(format!("store-{messages}.db"));
    if !big.exists() {
        let t = Instant::now();
        let mut store = Store::open(&big, &StoreOptions::default()).expect("open");
        let account = add_account(&mut store);
        let mut done = 0;
        while done < messages {
            let n = BATCH.min(messages - done);
            let chunk: Vec<(String, String)> =
                (done..done + n).map(|i| (peer(i), body(i))).collect();
            store.enqueue_many(account, &chunk).expect("enqueue");
            done += n;
        }
        eprintln!("built {} in {:.1?}", big.display(), t.elapsed());
    }
    // What an app does: Client::open, then the newest page of a conversation. The integrity check
    // runs in the background; the first write waits for it, so its time is reported too.
    let mut first_page = Vec::new();
    let mut verified = Vec::new();
    let mut open_checked = Vec::new();
    let mut keep = None;
    for i in 0..REPEAT {
        let t = Instant::now();
        let client = Client::open(&big, ClientConfig::default()).expect("open");
        let rows = client.page(&peer(0), None, PAGE).expect("page");
        first_page.push(t.elapsed());
        assert_eq!(rows.len(), PAGE.min(messages / PEERS));
        client
            .verify()
            .expect("the store passes its integrity check");
        verified.push(t.elapsed());
        keep = Some(client);
        if i < 3 {
            // The old way, for comparison: the check before open returns.
            let t = Instant::now();
            let store = Store::open(&big, &StoreOptions::default()).expect("open");
            let account = store.account().expect("account").id;
            store.page(account, &peer(0), None, PAGE).expect("page");
            open_checked.push(t.elapsed());
        }
    }
    drop(keep);
    // RSS in a process of its own that only opens the store, reads the page and waits for the
    // check, so nothing of the runs above is counted.
    let probe = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--rss-probe")
        .arg(&big)
        .output()
        .expect("rss probe");
    assert!(probe.status.success(), "rss probe: {probe:?}");
    let probe = String::from_utf8_lossy(&probe.stdout).trim().to_owned();

    println!("| store measure | value |");
    println!("|---|---|");
    println!("| commit, one transaction per message (baseline) | {single_rate:.0} msg/s |");
    println!(
        "| commit, batches of 1,000 | {batch_rate:.0} msg/s ({:.0}x the baseline) |",
        batch_rate / single_rate
    );
    println!("| store size | {messages} messages, {PEERS} conversations |");
    println!(
        "| Client::open + newest page ({PAGE} rows) of one conversation | median {:.2} ms |",
        ms(median(&mut first_page))
    );
    println!(
        "| background integrity check done (writes wait for it) | median {:.0} ms after open |",
        ms(median(&mut verified))
    );
    println!(
        "| open with the check before returning + newest page (before this change) | median {:.0} ms |",
        ms(median(&mut open_checked))
    );
    println!("| RSS of a process with the client open (fresh process): before open / after the page and the check / peak | {probe} |");
}

/// Opens the client on `path`, reads the newest page, waits for the integrity check, and prints
/// the RSS before, after, and the peak.
fn rss_probe(path: &std::path::Path) {
    let before = status_kib("VmRSS:");
    let client = Client::open(path, ClientConfig::default()).expect("open");
    client.page(&peer(0), None, PAGE).expect("page");
    client.verify().expect("check");
    println!(
        "{before} / {} / {} KiB",
        status_kib("VmRSS:"),
        status_kib("VmHWM:")
    );
}

fn add_account(store: &mut Store) -> i64 {
    store
        .add_account(&NewAccount {
            jid: "bench@localhost".into(),
            password: "bench".into(),
            server: Some("127.0.0.1:5222".into()),
            ca_file: None,
            insecure_plaintext: false,
            direct_tls: false,
        })
        .expect("account")
        .id
}

fn peer(i: usize) -> String {
    format!("peer{}@localhost", i % PEERS)
}

/// 100 bytes, as in the throughput goal.
fn body(i: usize) -> String {
    format!("{i:010} {}", "x".repeat(89))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A line of `/proc/self/status` in KiB (`VmRSS:` the resident set, `VmHWM:` its peak).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
