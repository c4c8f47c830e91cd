//! The store's group commit against a transaction per stanza: 64 inbound chat messages, each with
//! its receipt row and the SM state, committed to a real SQLite file (`synchronous=FULL`, WAL), as
//! the session does for a burst the socket delivered at once. Baseline: one transaction each.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether_core::sm::SmSnapshot;
use tether_core::store::{InboundMessage, NewAccount, Store, StoreOptions};
use tether_core::Direction;

const BURST: u32 = 64;

fn message(n: u64) -> InboundMessage {
    InboundMessage {
        direction: Direction::In,
        kind: "chat",
        from_nick: None,
        receipt_to: Some("bob@localhost/phone".into()),
        id: Some(format!("m{n}")),
        origin_id: Some(format!("o{n}")),
        stanza_id: None,
        peer: "bob@localhost".into(),
        body: format!("{n:010} {}", "x".repeat(89)),
        server_ts: None,
        action: None,
        target: None,
        reactions: vec![],
        file: None,
        invite: None,
    }
}

fn commits(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store =
        Store::open(dir.path().join("bench.db"), &StoreOptions::default()).expect("store");
    let account = store
        .add_account(&NewAccount {
            jid: "alice@localhost".into(),
            password: "pw".into(),
            server: None,
            ca_file: None,
            insecure_plaintext: false,
            direct_tls: false,
        })
        .expect("account")
        .id;
    let mut n: u64 = 0;
    let mut snap = SmSnapshot {
        stream_id: Some("bench".into()),
        resumable: true,
        ..Default::default()
    };
    let mut g = c.benchmark_group("inbound burst of 64");
    g.throughput(Throughput::Elements(u64::from(BURST)));
    g.sample_size(20);
    g.bench_function("a transaction per message (baseline)", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                n += 1;
                snap.inbound_h = snap.inbound_h.wrapping_add(1);
                store
                    .store_inbound(account, &message(n), Some(&snap))
                    .expect("stored");
            }
        })
    });
    g.bench_function("one group commit", |b| {
        b.iter(|| {
            store.begin_group().expect("group");
            for _ in 0..BURST {
                n += 1;
                snap.inbound_h = snap.inbound_h.wrapping_add(1);
                store
                    .store_inbound(account, &message(n), None)
                    .expect("stored");
            }
            store.save_sm(account, &snap).expect("snapshot");
            assert!(store.commit_group().expect("commit"));
        })
    });
    g.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
