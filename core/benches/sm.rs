//! The SM engine's own cost: numbering stanzas and settling the server's acks, with no I/O and no
//! store. Baseline: numbering alone, in the same run.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tether_core::sm::{SmConfig, SmSnapshot, StreamManager};
use xmpp_parsers::sm::{Resumed, StreamId};

const N: u32 = 10_000;

/// A live engine on a resumed stream, with flow control out of the way.
fn live() -> StreamManager<u32> {
    let snap = SmSnapshot {
        stream_id: Some("bench".into()),
        resumable: true,
        ..Default::default()
    };
    let config = SmConfig {
        max_in_flight: u32::MAX,
        ..SmConfig::default()
    };
    let (mut sm, _) = StreamManager::restore(config, snap, []);
    sm.start_resume().expect("resumable");
    sm.on_resumed(&Resumed {
        h: 0,
        previd: StreamId("bench".into()),
    })
    .expect("resumed");
    sm
}

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("sm");
    g.throughput(Throughput::Elements(u64::from(N)));
    // (name, settle an ack every this many stanzas)
    for (name, ack_every) in [
        ("number 10,000 stanzas (baseline)", None),
        ("number 10,000 stanzas and settle an ack every 32", Some(32)),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                live,
                |mut sm| {
                    let now = Instant::now();
                    for t in 0..N {
                        sm.on_sent(Some(t), now);
                        if ack_every.is_some_and(|k| (t + 1) % k == 0) {
                            sm.on_ack(t + 1).expect("valid h");
                        }
                    }
                    sm
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
