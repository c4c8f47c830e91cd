//! The store's part of Tether's benchmarks (issue "Performance"): batched commit rate against one
//! transaction per message (and against a store without the search index), opening a large store
//! (default 1,000,000 messages) to read a conversation's newest page, with the process's RSS, and
//! full-text search over it against a LIKE scan of the same file. Prints tables (Markdown).
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
use tether_core::{Client, ClientConfig, Inbox};

const PEERS: usize = 10;
const BATCH: usize = 10_000;
const PAGE: usize = 50;
const REPEAT: usize = 7;

fn main() {
    let mut messages = 1_000_000usize;
    let mut dir = std::env::temp_dir().join("tether-bench");
    // `--accounts N`: only the several-accounts measures, on a store of N messages.
    let mut accounts: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rss-probe" => {
                rss_probe(&PathBuf::from(args.next().expect("PATH")));
                return;
            }
            "--rss-probe-inbox" => {
                rss_probe_inbox(&PathBuf::from(args.next().expect("PATH")));
                return;
            }
            "--accounts" => accounts = args.next().and_then(|v| v.parse().ok()),
            "--messages" => messages = args.next().and_then(|v| v.parse().ok()).expect("N"),
            "--dir" => dir = PathBuf::from(args.next().expect("DIR")),
            other => panic!("unknown argument {other}"),
        }
    }
    std::fs::create_dir_all(&dir).expect("bench dir");
    if let Some(total) = accounts {
        several_accounts(&dir, total);
        return;
    }

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
    // The same batches on a store whose search index is switched off (its triggers dropped): what
    // keeping the index in the messages' transaction costs.
    let bare = dir.join("commit-no-index.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", bare.display()));
    }
    let mut store = Store::open(&bare, &StoreOptions::default()).expect("open");
    let account = add_account(&mut store);
    drop(store);
    rusqlite::Connection::open(&bare)
        .and_then(|c| {
            c.execute_batch(
                "DROP TRIGGER messages_fts_insert; DROP TRIGGER messages_fts_delete;
                 DROP TRIGGER messages_fts_update;",
            )
        })
        .expect("drop the index triggers");
    let mut store = Store::open(&bare, &StoreOptions::default()).expect("open");
    let t = Instant::now();
    for chunk in batch.chunks(1_000) {
        store.enqueue_many(account, chunk).expect("enqueue");
    }
    let unindexed_rate = batch_n as f64 / t.elapsed().as_secs_f64();
    drop(store);

    // 2. A large store: built once, then opened cold-ish (new connection) and paged.
    // (v2: bodies of words, for the search; the v1 files had digits and x's.)
    let big = dir.join(format!("store-v2-{messages}.db"));
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
    // 3. Search, on the client open above: a word query, newest first, a page of 50, against the
    // same question asked without the index (a LIKE scan, newest first, stopping at 50).
    let client = keep.as_ref().expect("client");
    let raw =
        rusqlite::Connection::open_with_flags(&big, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
    let mut search_rows = Vec::new();
    for (label, q, like) in [
        ("a common word", word(1), vec![word(1)]),
        ("a word in ~1% of messages", word(60), vec![word(60)]),
        (
            "a rare word",
            word(VOCABULARY - 3),
            vec![word(VOCABULARY - 3)],
        ),
        // Past the vocabulary: in no message, so the scan reads the whole table.
        (
            "a word in no message",
            word(VOCABULARY * 20 + 7),
            vec![word(VOCABULARY * 20 + 7)],
        ),
        (
            "two words",
            format!("{} {}", word(5), word(40)),
            vec![word(5), word(40)],
        ),
        (
            "a prefix (3 letters)",
            word(60)[..3].to_string(),
            vec![word(60)[..3].to_string()],
        ),
    ] {
        let mut fts = Vec::new();
        let mut scan = Vec::new();
        let mut hits = 0;
        for _ in 0..REPEAT {
            let t = Instant::now();
            hits = client.search(&q, None, None, PAGE).expect("search").len();
            fts.push(t.elapsed());
            let t = Instant::now();
            let n = like_scan(&raw, &like);
            scan.push(t.elapsed());
            assert!(n >= hits, "the scan finds at least what the index finds");
        }
        let total: i64 = raw
            .query_row(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?1",
                [tether_core::store::fts_query(&q).unwrap().unwrap()],
                |r| r.get(0),
            )
            .expect("count");
        let (f, l) = (ms(median(&mut fts)), ms(median(&mut scan)));
        search_rows.push(format!(
            "| {label} (`{q}`: {total} messages) | {hits} | {f:.2} ms | {l:.1} ms | {:.3}x |",
            f / l
        ));
    }
    drop(raw);
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
    println!(
        "| commit, batches of 1,000, without the search index (baseline) | {unindexed_rate:.0} msg/s (with the index: {:.2}x) |",
        batch_rate / unindexed_rate
    );
    println!();
    println!("| search ({messages} messages, newest first, a page of {PAGE}) | hits | index (FTS5), median | LIKE scan (baseline), median | against the baseline |");
    println!("|---|---:|---:|---:|---:|");
    for row in search_rows {
        println!("{row}");
    }
}

/// The search without the index: every word a substring, newest first, stopping at a page.
fn like_scan(conn: &rusqlite::Connection, words: &[String]) -> usize {
    let clause = vec!["body LIKE ?"; words.len()].join(" AND ");
    let patterns: Vec<String> = words.iter().map(|w| format!("%{w}%")).collect();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT seq_local FROM messages WHERE {clause} AND action IS NULL
             ORDER BY seq_local DESC LIMIT {PAGE}"
        ))
        .expect("prepare");
    stmt.query_map(rusqlite::params_from_iter(patterns.iter()), |r| {
        r.get::<_, i64>(0)
    })
    .expect("scan")
    .count()
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

/// The number of distinct words of the generated texts.
const VOCABULARY: usize = 5_000;

/// About 100 bytes, as in the throughput goal: the message's number, then words drawn from
/// [`VOCABULARY`] with a skewed (log-uniform) frequency, as in real text: a few words are in most
/// messages, most words in few.
fn body(i: usize) -> String {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut text = format!("{i:07}");
    while text.len() < 100 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let u = (state >> 11) as f64 / (1u64 << 53) as f64;
        let rank = (VOCABULARY as f64).powf(u) as usize;
        text.push(' ');
        text.push_str(&word(rank.clamp(1, VOCABULARY)));
    }
    text
}

/// The word of frequency rank `rank` (1: the most common): letters only, distinct per rank.
fn word(rank: usize) -> String {
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "du", "ga", "ho", "ji", "fe", "ba",
        "zu", "ce", "wo", "xi", "ny",
    ];
    let mut n = rank;
    let mut w = String::new();
    loop {
        w.push_str(SYLLABLES[n % 20]);
        n /= 20;
        if n == 0 {
            break;
        }
    }
    w
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

/// Accounts in the several-accounts store.
const ACCOUNTS: usize = 5;
/// Conversations per account there.
const CONVERSATIONS: usize = 40;

/// The conversation list's query before schema v16 (a scan of the account's messages, with a
/// correlated lookup per row): the baseline of the several-accounts table.
const LIST_BEFORE_V16: &str = "
    SELECT m.peer, m.kind, m.body, coalesce(m.server_ts, m.created_at) AS at, m.direction,
           (SELECT count(*) FROM messages u WHERE u.account_id = ?1 AND u.peer = m.peer
              AND u.direction = 'in' AND u.state = 'received' AND u.action IS NULL),
           (SELECT count(*) FROM messages f WHERE f.account_id = ?1 AND f.peer = m.peer
              AND f.state = 'failed')
      FROM messages m
     WHERE m.account_id = ?1 AND m.seq_local = (
           SELECT max(seq_local) FROM messages x WHERE x.account_id = ?1 AND x.peer = m.peer
              AND x.action IS NULL)
     ORDER BY at DESC, m.seq_local DESC";

/// Issue 16's several-accounts goal: a store of `total` messages across [`ACCOUNTS`] accounts
/// ([`CONVERSATIONS`] each; half in, half out; the newest 100 in of each account unread),
/// opened as the app opens it: the inbox, the unified list, one conversation's newest page.
/// The baseline, in the same run: the list query before schema v16 for one account.
fn several_accounts(dir: &std::path::Path, total: usize) {
    let path = dir.join(format!("store-accounts-v1-{total}.db"));
    if !path.exists() {
        let t = Instant::now();
        let inbox = Inbox::open(&path, ClientConfig::default()).expect("create");
        for a in 0..ACCOUNTS {
            inbox
                .add_account(&NewAccount {
                    jid: format!("user{a}@bench.example"),
                    password: "bench".into(),
                    server: Some("127.0.0.1:5222".into()),
                    ca_file: None,
                    insecure_plaintext: false,
                    direct_tls: false,
                })
                .expect("account");
        }
        drop(inbox);
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        let per = total / ACCOUNTS;
        for a in 1..=ACCOUNTS as i64 {
            let mut from = 0usize;
            while from < per {
                let to = (from + 200_000).min(per);
                let tx = conn.transaction().expect("tx");
                tx.execute(
                    "WITH RECURSIVE n(i) AS (SELECT ?2 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?3)
                     INSERT INTO messages (id, origin_id, account_id, peer, direction, body, state,
                                           created_at, updated_at, server_ts, kind)
                     SELECT printf('m%d-%d', ?1, i), printf('m%d-%d', ?1, i), ?1,
                            printf('peer%d@bench.example', i % ?5),
                            CASE i % 2 WHEN 0 THEN 'in' ELSE 'out' END,
                            printf('%07d %s message of a long history %s', i,
                                   substr('kalominesutaripovedugahojifebazucewoxiny', (i * 7) % 30 + 1, 6),
                                   substr('kalominesutaripovedugahojifebazucewoxiny', (i * 13) % 30 + 1, 4)),
                            CASE WHEN i % 2 = 1 THEN 'acked'
                                 WHEN i >= ?4 THEN 'received' ELSE 'displayed' END,
                            1700000000000 + i * 1000, 1700000000000 + i * 1000,
                            CASE i % 2 WHEN 0 THEN 1700000000000 + i * 1000 END, 'chat'
                       FROM n",
                    rusqlite::params![a, from as i64, to as i64, per as i64 - 200, CONVERSATIONS as i64],
                )
                .expect("insert");
                tx.commit().expect("commit");
                from = to;
            }
        }
        drop(conn);
        eprintln!("built {} in {:.1?}", path.display(), t.elapsed());
    }
    let first = "user0@bench.example";
    let mut open_list_page = Vec::new();
    let mut list_only = Vec::new();
    let mut checked = Vec::new();
    let mut before = Vec::new();
    let mut rows = 0;
    for i in 0..REPEAT {
        let t = Instant::now();
        let inbox = Inbox::open(&path, ClientConfig::default()).expect("open");
        let list = inbox.conversations().expect("list");
        let client = inbox.client(first).expect("client");
        let page = client
            .page(&list[0].conversation.peer, None, PAGE)
            .expect("page");
        open_list_page.push(t.elapsed());
        assert_eq!(list.len(), ACCOUNTS * CONVERSATIONS.min(total / ACCOUNTS));
        assert_eq!(page.len(), PAGE.min(total / ACCOUNTS / CONVERSATIONS));
        rows = list.len();
        let t = Instant::now();
        inbox.conversations().expect("list");
        list_only.push(t.elapsed());
        // The background integrity check of this open ends before the next open starts, so
        // that no run is measured beside another's check.
        client.verify().expect("the store passes its check");
        checked.push(t.elapsed());
        if i < 3 {
            let raw = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open read-only");
            let t = Instant::now();
            let n = raw
                .prepare(LIST_BEFORE_V16)
                .expect("prepare")
                .query_map([1], |_| Ok(()))
                .expect("query")
                .count();
            before.push(t.elapsed());
            assert_eq!(n, CONVERSATIONS.min(total / ACCOUNTS));
        }
    }
    let probe = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--rss-probe-inbox")
        .arg(&path)
        .output()
        .expect("rss probe");
    assert!(probe.status.success(), "rss probe: {probe:?}");
    let probe = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
    let (now, list, old) = (
        ms(median(&mut open_list_page)),
        ms(median(&mut list_only)),
        ms(median(&mut before)),
    );
    println!("| several accounts: {total} messages, {ACCOUNTS} accounts, {rows} conversations | median | against the baseline |");
    println!("|---|---:|---:|");
    println!(
        "| open the store, the unified list of every account, the newest page ({PAGE}) of one conversation | {now:.2} ms | {:.4}x |",
        now / old
    );
    println!(
        "| the unified list alone ({ACCOUNTS} accounts) | {list:.2} ms | {:.4}x |",
        list / old
    );
    println!(
        "| baseline: the list query before schema v16, one account of {} messages | {old:.1} ms | 1x |",
        total / ACCOUNTS
    );
    println!(
        "| the store's background integrity check done (writes wait for it) | {:.0} ms after open | |",
        ms(median(&mut checked))
    );
    println!("| RSS of a fresh process with the inbox open, the list and the page shown: before / after / peak | {probe} | |");
}

fn rss_probe_inbox(path: &std::path::Path) {
    let before = status_kib("VmRSS:");
    let inbox = Inbox::open(path, ClientConfig::default()).expect("open");
    let list = inbox.conversations().expect("list");
    inbox
        .client(&list[0].account)
        .expect("client")
        .page(&list[0].conversation.peer, None, PAGE)
        .expect("page");
    println!(
        "{before} / {} / {} KiB",
        status_kib("VmRSS:"),
        status_kib("VmHWM:")
    );
}
