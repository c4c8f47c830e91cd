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
    let rss_before = rss_kib();
    let mut open_checked = Vec::new();
    let mut open_plain = Vec::new();
    let mut page_times = Vec::new();
    let mut keep = None;
    for _ in 0..REPEAT {
        let t = Instant::now();
        let store = Store::open(&big, &StoreOptions::default()).expect("open");
        open_checked.push(t.elapsed());
        drop(store);
        let t = Instant::now();
        let store = Store::open(
            &big,
            &StoreOptions {
                check_integrity: false,
                ..StoreOptions::default()
            },
        )
        .expect("open");
        open_plain.push(t.elapsed());
        let account = store.account().expect("account").id;
        let t = Instant::now();
        let rows = store.page(account, &peer(0), None, PAGE).expect("page");
        page_times.push(t.elapsed());
        assert_eq!(rows.len(), PAGE.min(messages / PEERS));
        keep = Some(store);
    }
    let rss = rss_kib();
    drop(keep);

    println!("| store measure | value |");
    println!("|---|---|");
    println!("| commit, one transaction per message (baseline) | {single_rate:.0} msg/s |");
    println!(
        "| commit, batches of 1,000 | {batch_rate:.0} msg/s ({:.0}x the baseline) |",
        batch_rate / single_rate
    );
    println!("| store size | {messages} messages, {PEERS} conversations |");
    println!(
        "| open with quick_check (the default) | median {:.1} ms |",
        ms(median(&mut open_checked))
    );
    println!(
        "| open without quick_check | median {:.1} ms |",
        ms(median(&mut open_plain))
    );
    println!(
        "| newest page ({PAGE} rows) of one conversation | median {:.2} ms |",
        ms(median(&mut page_times))
    );
    println!(
        "| open (default) + newest page | {:.1} ms |",
        ms(median(&mut open_checked)) + ms(median(&mut page_times))
    );
    println!(
        "| RSS before opening / with the store open | {} / {} KiB |",
        rss_before, rss
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

/// The process's resident set, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
