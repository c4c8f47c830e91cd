use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use xmpp_parsers::sm::{Enabled, Resumed, StreamId};

fn enabled(id: &str) -> Enabled {
    Enabled {
        id: Some(StreamId(id.to_owned())),
        location: None,
        max: Some(60),
        resume: true,
    }
}

fn live(id: &str) -> StreamManager<u64> {
    let mut sm = StreamManager::new(SmConfig::default());
    sm.start_enable();
    sm.on_enabled(&enabled(id)).unwrap();
    sm
}

#[test]
fn ack_covers_in_order_and_rejects_too_high() {
    let now = Instant::now();
    let mut sm = live("s1");
    assert_eq!(sm.on_sent(Some(1), now), Some(1));
    assert_eq!(sm.on_sent(None, now), Some(2)); // presence: counted, not reported
    assert_eq!(sm.on_sent(Some(3), now), Some(3));
    assert_eq!(sm.on_ack(1).unwrap(), vec![1]);
    assert_eq!(sm.on_ack(2).unwrap(), Vec::<u64>::new());
    let err = sm.on_ack(4).unwrap_err();
    assert_eq!(
        err,
        SmError::HandledCountTooHigh {
            h: 4,
            send_count: 3
        }
    );
    // The bad h changed nothing: the real ack still works.
    assert_eq!(sm.on_ack(3).unwrap(), vec![3]);
    assert_eq!(sm.in_flight(), 0);
}

#[test]
fn h_going_backwards_is_rejected() {
    let now = Instant::now();
    let mut sm = live("s1");
    for t in 0..3 {
        sm.on_sent(Some(t), now);
    }
    sm.on_ack(3).unwrap();
    assert!(matches!(
        sm.on_ack(2),
        Err(SmError::HandledCountTooHigh { .. })
    ));
}

#[test]
fn counters_wrap_at_2_pow_32() {
    let now = Instant::now();
    let snap = SmSnapshot {
        stream_id: Some("s".into()),
        resumable: true,
        inbound_h: u32::MAX,
        outbound_count: u32::MAX - 1,
        acked_h: u32::MAX - 1,
        ..Default::default()
    };
    let (mut sm, invalid) = StreamManager::<u64>::restore(SmConfig::default(), snap, []);
    assert!(invalid.is_empty());
    let resume = sm.start_resume().unwrap();
    assert_eq!(resume.h, u32::MAX);
    let s = sm
        .on_resumed(&Resumed {
            h: u32::MAX - 1,
            previd: StreamId("s".into()),
        })
        .unwrap();
    assert!(s.acked.is_empty() && s.rest.is_empty());
    let seqs: Vec<_> = (0..4).map(|t| sm.on_sent(Some(t), now).unwrap()).collect();
    assert_eq!(seqs, vec![u32::MAX, 0, 1, 2]);
    assert_eq!(sm.on_ack(0).unwrap(), vec![0, 1]);
    assert_eq!(sm.on_ack(2).unwrap(), vec![2, 3]);
    assert!(sm.on_ack(3).is_err());
    sm.on_inbound_handled();
    assert_eq!(sm.answer_request().h, 0);
}

#[test]
fn resumed_acks_covered_and_returns_rest_in_order() {
    let now = Instant::now();
    let mut sm = live("s1");
    for t in 10..15 {
        sm.on_sent(Some(t), now);
    }
    assert_eq!(sm.on_disconnect(), vec![10, 11, 12, 13, 14]);
    assert_eq!(sm.phase(), Phase::Detached);
    sm.start_resume().unwrap();
    let s = sm
        .on_resumed(&Resumed {
            h: 2,
            previd: StreamId("s1".into()),
        })
        .unwrap();
    assert_eq!(s.acked, vec![10, 11]);
    assert_eq!(s.rest, vec![12, 13, 14]);
    // re-sent stanzas are numbered from the server's h
    assert_eq!(sm.on_sent(Some(12), now), Some(3));
}

#[test]
fn resumed_for_another_stream_is_an_error() {
    let now = Instant::now();
    let mut sm = live("s1");
    sm.on_sent(Some(1), now);
    sm.on_disconnect();
    sm.start_resume().unwrap();
    let err = sm
        .on_resumed(&Resumed {
            h: 1,
            previd: StreamId("other".into()),
        })
        .unwrap_err();
    assert!(matches!(err, SmError::WrongStream { .. }));
}

#[test]
fn failed_with_and_without_h() {
    let now = Instant::now();
    let mut sm = live("s1");
    for t in 0..4 {
        sm.on_sent(Some(t), now);
    }
    sm.on_disconnect();
    sm.start_resume().unwrap();
    let s = sm.on_resume_failed(Some(1));
    assert_eq!((s.acked, s.rest), (vec![0], vec![1, 2, 3]));
    assert!(!sm.can_resume());

    let mut sm = live("s2");
    for t in 0..2 {
        sm.on_sent(Some(t), now);
    }
    sm.on_disconnect();
    sm.start_resume().unwrap();
    let s = sm.on_resume_failed(None);
    assert_eq!((s.acked, s.rest), (vec![], vec![0, 1]));

    // a bad h on <failed/> acks nothing
    let mut sm = live("s3");
    sm.on_sent(Some(7), now);
    sm.on_disconnect();
    sm.start_resume().unwrap();
    let s = sm.on_resume_failed(Some(99));
    assert_eq!((s.acked, s.rest), (vec![], vec![7]));
}

#[test]
fn request_policy_by_count_and_delay() {
    let t0 = Instant::now();
    let mut sm = live("s");
    sm.on_sent(Some(1), t0);
    assert!(!sm.poll_request(t0));
    assert_eq!(sm.poll_timeout(), Some(t0 + Duration::from_millis(100)));
    assert!(sm.poll_request(t0 + Duration::from_millis(100)));
    assert!(!sm.poll_request(t0 + Duration::from_millis(200)));
    let every = SmConfig::default().request_after;
    for t in 0..u64::from(every) - 1 {
        sm.on_sent(Some(t), t0);
    }
    assert!(
        !sm.poll_request(t0),
        "one short of the count, before the delay"
    );
    sm.on_sent(Some(99), t0);
    assert!(sm.poll_request(t0), "the count reached");
}

#[test]
fn flow_control_stops_under_prosody_limit() {
    let now = Instant::now();
    let mut sm = live("s");
    let mut n = 0;
    while sm.can_send() {
        sm.on_sent(Some(n), now);
        n += 1;
    }
    assert!(n < 500, "{n} in flight");
    sm.on_ack(10).unwrap();
    assert!(sm.can_send());
}

#[test]
fn restore_rejects_seqs_outside_the_window() {
    let snap = SmSnapshot {
        stream_id: Some("s".into()),
        resumable: true,
        outbound_count: 10,
        acked_h: 5,
        ..Default::default()
    };
    let (sm, invalid) = StreamManager::restore(
        SmConfig::default(),
        snap,
        [(7, 'b'), (6, 'a'), (11, 'x'), (5, 'y')],
    );
    assert_eq!(invalid, vec!['x', 'y']);
    assert_eq!(sm.unacked_len(), 2);
}

// ---------------------------------------------------------------------------------------------------
// Property test: any interleaving of sends, deliveries, acks, drops, restarts, resumes and failures
// leaves every message in exactly one state, never acks a message the server did not get, and loses
// nothing: at the end every message is acked, or failed only where a resumption failed.

#[derive(Clone, Debug)]
enum Op {
    Send {
        tagged: bool,
    },
    /// A batch numbered whose commit failed: never written, its numbering taken back.
    SendUncommitted(u8),
    Deliver(u8),
    Ack,
    Drop,
    Restart,
    Resume,
    ResumeFails {
        with_h: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<bool>().prop_map(|tagged| Op::Send { tagged }),
        1 => any::<u8>().prop_map(|n| Op::SendUncommitted(n % 8)),
        4 => any::<u8>().prop_map(|n| Op::Deliver(n % 8)),
        3 => Just(Op::Ack),
        1 => Just(Op::Drop),
        1 => Just(Op::Restart),
        2 => Just(Op::Resume),
        1 => any::<bool>().prop_map(|with_h| Op::ResumeFails { with_h }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    InFlight,
    Acked,
    Failed,
}

struct Model {
    sm: StreamManager<u64>,
    status: BTreeMap<u64, St>,
    /// Written by the client, not yet read by the server (lost on a drop).
    wire: VecDeque<Option<u64>>,
    /// What the server has received on the current session, counted mod 2^32 from `base`.
    server_h: u32,
    server_got: std::collections::BTreeSet<u64>,
    next_tag: u64,
    connected: bool,
    stream_no: u32,
    now: Instant,
}

impl Model {
    fn new(offset: u32) -> Self {
        // Start from a persisted stream near the wrap.
        let snap = SmSnapshot {
            stream_id: Some("s0".into()),
            resumable: true,
            outbound_count: offset,
            acked_h: offset,
            inbound_h: offset,
            ..Default::default()
        };
        let (mut sm, _) = StreamManager::restore(SmConfig::default(), snap, []);
        sm.start_resume().unwrap();
        sm.on_resumed(&Resumed {
            h: offset,
            previd: StreamId("s0".into()),
        })
        .unwrap();
        Model {
            sm,
            status: BTreeMap::new(),
            wire: VecDeque::new(),
            server_h: offset,
            server_got: Default::default(),
            next_tag: 0,
            connected: true,
            stream_no: 0,
            now: Instant::now(),
        }
    }

    fn mark(&mut self, tags: &[u64], st: St) {
        for t in tags {
            let old = self.status.insert(*t, st);
            assert!(old.is_some(), "unknown tag {t}");
        }
    }

    fn deliver(&mut self, n: usize) {
        for _ in 0..n {
            let Some(item) = self.wire.pop_front() else {
                break;
            };
            self.server_h = self.server_h.wrapping_add(1);
            if let Some(t) = item {
                self.server_got.insert(t);
            }
        }
    }

    fn write(&mut self, tag: Option<u64>) {
        self.sm.on_sent(tag, self.now).expect("enabled");
        self.wire.push_back(tag);
    }

    fn new_stream(&mut self) {
        self.stream_no += 1;
        self.sm.start_enable();
        self.sm
            .on_enabled(&enabled(&format!("s{}", self.stream_no)))
            .unwrap();
        self.server_h = 0;
        self.wire.clear();
        self.connected = true;
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send { tagged } => {
                if self.connected && self.sm.can_send() {
                    let tag = tagged.then(|| {
                        self.next_tag += 1;
                        self.status.insert(self.next_tag, St::InFlight);
                        self.next_tag
                    });
                    self.write(tag);
                }
            }
            Op::SendUncommitted(n) => {
                if self.connected {
                    let mut numbered = 0;
                    for i in 0..n {
                        if !self.sm.can_send() {
                            break;
                        }
                        let tag = (i % 2 == 0).then_some(u64::MAX - u64::from(i));
                        self.sm.on_sent(tag, self.now).expect("enabled");
                        numbered += 1;
                    }
                    self.sm.on_unsent(numbered);
                }
            }
            Op::Deliver(n) => {
                if self.connected {
                    self.deliver(n as usize)
                }
            }
            Op::Ack => {
                if self.connected {
                    let acked = self.sm.on_ack(self.server_h).expect("valid h");
                    for t in &acked {
                        assert!(self.server_got.contains(t), "acked {t} never received");
                    }
                    self.mark(&acked, St::Acked);
                }
            }
            Op::Drop => {
                if self.connected {
                    self.connected = false;
                    self.wire.clear();
                    let resumable = self.sm.can_resume();
                    let tags = self.sm.on_disconnect();
                    assert!(resumable, "every model stream is resumable");
                    for t in &tags {
                        assert_eq!(self.status[t], St::InFlight);
                    }
                }
            }
            Op::Restart => {
                if !self.connected {
                    // What the store holds: the snapshot and each in-flight message's seq.
                    let snap = self.sm.snapshot().clone();
                    let unacked: Vec<(Seq, u64)> = self.sm.unacked.iter().cloned().collect();
                    let (sm, invalid) = StreamManager::restore(
                        SmConfig::default(),
                        snap,
                        unacked.into_iter().rev(),
                    );
                    assert!(invalid.is_empty());
                    self.sm = sm;
                }
            }
            Op::Resume => {
                if !self.connected && self.sm.start_resume().is_some() {
                    let s = self
                        .sm
                        .on_resumed(&Resumed {
                            h: self.server_h,
                            previd: StreamId(format!("s{}", self.stream_no)),
                        })
                        .expect("resume");
                    for t in &s.acked {
                        assert!(self.server_got.contains(t));
                    }
                    self.mark(&s.acked, St::Acked);
                    self.connected = true;
                    for t in s.rest {
                        assert_eq!(self.status[&t], St::InFlight);
                        self.write(Some(t));
                    }
                }
            }
            Op::ResumeFails { with_h } => {
                if !self.connected && self.sm.start_resume().is_some() {
                    let s = self.sm.on_resume_failed(with_h.then_some(self.server_h));
                    for t in &s.acked {
                        assert!(self.server_got.contains(t));
                    }
                    self.mark(&s.acked, St::Acked);
                    self.mark(&s.rest, St::Failed);
                    self.new_stream();
                }
            }
        }
    }

    fn finish(&mut self) {
        if !self.connected {
            self.apply(Op::Resume);
        }
        let n = self.wire.len();
        self.deliver(n);
        self.apply(Op::Ack);
        for (t, st) in &self.status {
            match st {
                St::Acked => assert!(self.server_got.contains(t)),
                St::Failed => {}
                St::InFlight => panic!("message {t} still in flight after a full ack"),
            }
        }
        assert_eq!(self.sm.in_flight(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_message_lost_or_double_settled(
        offset in prop_oneof![Just(0u32), Just(u32::MAX - 20), Just(u32::MAX), any::<u32>()],
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut m = Model::new(offset);
        for op in ops {
            m.apply(op);
        }
        m.finish();
    }
}

#[test]
fn a_count_whose_commit_failed_is_taken_back_across_the_wrap() {
    let snap = SmSnapshot {
        stream_id: Some("s".into()),
        resumable: true,
        inbound_h: u32::MAX,
        ..Default::default()
    };
    let (mut sm, _) = StreamManager::<u64>::restore(SmConfig::default(), snap, []);
    sm.start_resume().unwrap();
    sm.on_resumed(&Resumed {
        h: 0,
        previd: StreamId("s".into()),
    })
    .unwrap();
    sm.on_inbound_handled();
    assert_eq!(sm.answer_request().h, 0, "wrapped");
    sm.on_inbound_uncommitted();
    assert_eq!(
        sm.answer_request().h,
        u32::MAX,
        "taken back across the wrap"
    );
    assert_eq!(
        sm.snapshot().inbound_h,
        u32::MAX,
        "and so is what gets persisted"
    );
}

#[test]
fn stanzas_numbered_but_never_written_are_taken_back_across_the_wrap() {
    let snap = SmSnapshot {
        stream_id: Some("s".into()),
        resumable: true,
        outbound_count: u32::MAX - 1,
        acked_h: u32::MAX - 1,
        ..Default::default()
    };
    let (mut sm, _) = StreamManager::<u64>::restore(SmConfig::default(), snap, []);
    sm.start_resume().unwrap();
    sm.on_resumed(&Resumed {
        h: u32::MAX - 1,
        previd: StreamId("s".into()),
    })
    .unwrap();
    let now = Instant::now();
    assert_eq!(sm.on_sent(Some(1), now), Some(u32::MAX));
    // The batch whose commit fails: numbered, never written.
    assert_eq!(sm.on_sent(Some(2), now), Some(0));
    assert_eq!(sm.on_sent(None, now), Some(1));
    assert_eq!(sm.on_sent(Some(3), now), Some(2));
    sm.on_unsent(3);
    assert_eq!(sm.in_flight(), 1);
    assert_eq!(sm.unacked_len(), 1);
    assert_eq!(sm.snapshot().outbound_count, u32::MAX);
    // The server's count of the one written stanza settles it; a count that covers the taken-back
    // ones is too high.
    assert!(sm.on_ack(1).is_err(), "h covering unwritten stanzas");
    assert_eq!(sm.on_ack(u32::MAX).unwrap(), vec![1]);
    // Numbering goes on from there.
    assert_eq!(sm.on_sent(Some(4), now), Some(0));
}
