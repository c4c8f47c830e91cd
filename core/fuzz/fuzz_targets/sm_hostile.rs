//! The XEP-0198 engine driven by a hostile server: any nonza at any moment, any `h`, parsed from
//! XML where the session would parse it, interleaved with sends, inbound stanzas, link drops and
//! process restarts (snapshot + unacked rows, as the store keeps them).
//!
//! Invariants, beyond "never panics":
//! - a tag is settled (acked or lost) at most once, and only a tag that was sent;
//! - an `h` beyond what was written is refused, and a refused input changes nothing;
//! - after a restart the engine holds exactly the tags the "store" still had in flight.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tether_core::sm::{Phase, Seq, SmConfig, StreamManager};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::sm::{self, Nonza};

#[derive(Arbitrary, Debug)]
enum Op {
    Send { tagged: bool },
    StartEnable,
    StartResume,
    /// A nonza from the server, built from fields.
    Enabled { resume: bool, id: u8 },
    Resumed { h: u32, previd: u8 },
    Failed { h: Option<u32> },
    /// `<a h/>` with an h near what was really sent (deep paths) or anywhere.
    AckNear { delta: i8 },
    Ack { h: u32 },
    Req,
    /// Raw XML from the server, parsed as the session parses nonzas.
    Raw(String),
    Inbound,
    Disconnect,
    ProtocolError,
    Restart,
    Tick { ms: u16 },
}

struct Harness {
    sm: StreamManager<u64>,
    now: Instant,
    next_tag: u64,
    /// Tags in flight (sent, not settled) with their last seq, as the store keeps them.
    in_flight: BTreeMap<u64, Option<Seq>>,
    settled: BTreeSet<u64>,
    written: u32,
}

impl Harness {
    fn settle(&mut self, tags: &[u64]) {
        for t in tags {
            assert!(self.in_flight.remove(t).is_some(), "tag {t} settled twice or never sent");
            assert!(self.settled.insert(*t));
        }
    }

    fn send(&mut self, tag: Option<u64>) {
        if !self.sm.can_send() {
            return;
        }
        let seq = self.sm.on_sent(tag, self.now);
        if seq.is_some() {
            self.written = self.written.wrapping_add(1);
        }
        // Without SM nothing will ever ack it: the session fails such messages on disconnect,
        // outside the engine.
        if let (Some(t), Some(_)) = (tag, seq) {
            self.in_flight.insert(t, seq);
        }
    }

    fn nonza(&mut self, n: Nonza) {
        match n {
            Nonza::Enabled(e) => {
                let _ = self.sm.on_enabled(&e);
            }
            Nonza::Resumed(r) => {
                if let Ok(s) = self.sm.on_resumed(&r) {
                    self.settle(&s.acked);
                    for t in s.rest {
                        // Re-sent in order before anything new.
                        let seq = self.sm.on_sent(Some(t), self.now);
                        self.in_flight.insert(t, seq);
                    }
                }
            }
            // Like the session: `<failed/>` only answers `<resume/>`; elsewhere it is reported and
            // ignored.
            Nonza::Failed(f) if self.sm.phase() == Phase::Resuming => {
                let s = self.sm.on_resume_failed(f.h);
                self.settle(&s.acked);
                self.settle(&s.rest);
            }
            Nonza::Ack(a) => {
                let before = (self.sm.snapshot().clone(), self.sm.unacked_len());
                match self.sm.on_ack(a.h) {
                    Ok(tags) => self.settle(&tags),
                    Err(_) => {
                        assert_eq!(before.0, *self.sm.snapshot(), "a refused ack changed state");
                        assert_eq!(before.1, self.sm.unacked_len());
                    }
                }
            }
            Nonza::Req(_) => {
                let _ = self.sm.answer_request();
            }
            _ => {}
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let config = SmConfig {
        request_after: 3,
        request_delay: Duration::from_millis(50),
        max_in_flight: 16,
    };
    let mut h = Harness {
        sm: StreamManager::new(config.clone()),
        now: Instant::now(),
        next_tag: 0,
        in_flight: BTreeMap::new(),
        settled: BTreeSet::new(),
        written: 0,
    };
    for op in ops.into_iter().take(256) {
        match op {
            Op::Send { tagged } => {
                let tag = tagged.then(|| {
                    h.next_tag += 1;
                    h.next_tag
                });
                h.send(tag);
            }
            Op::StartEnable => {
                // The engine's contract, kept by the session: tags of an older stream are settled
                // (failed) before a new stream is enabled.
                let old = h.sm.take_unsettled();
                h.settle(&old);
                let _ = h.sm.start_enable();
            }
            Op::StartResume => {
                let _ = h.sm.start_resume();
            }
            Op::Enabled { resume, id } => h.nonza(Nonza::Enabled(sm::Enabled {
                id: Some(sm::StreamId(format!("s{}", id % 4))),
                location: None,
                max: None,
                resume,
            })),
            Op::Resumed { h: hh, previd } => h.nonza(Nonza::Resumed(sm::Resumed {
                h: hh,
                previd: sm::StreamId(format!("s{}", previd % 4)),
            })),
            Op::Failed { h: hh } => h.nonza(Nonza::Failed(sm::Failed { h: hh, error: None })),
            Op::AckNear { delta } => {
                let base = h.sm.snapshot().acked_h;
                let hh = base.wrapping_add(h.sm.in_flight()).wrapping_add(delta as i32 as u32);
                h.nonza(Nonza::Ack(sm::A { h: hh }));
            }
            Op::Ack { h: hh } => h.nonza(Nonza::Ack(sm::A { h: hh })),
            Op::Req => h.nonza(Nonza::Req(sm::R)),
            Op::Raw(xml) => {
                if let Ok(el) = xml.parse::<Element>() {
                    if let Ok(n) = Nonza::try_from(el) {
                        h.nonza(n);
                    }
                }
            }
            Op::Inbound => h.sm.on_inbound_handled(),
            Op::Disconnect => {
                let resumable = h.sm.can_resume();
                let tags = h.sm.on_disconnect();
                if !resumable {
                    h.settle(&tags);
                }
            }
            Op::ProtocolError => {
                let tags = h.sm.take_unsettled();
                h.settle(&tags);
            }
            Op::Restart => {
                // What the store keeps: the snapshot and each in-flight row's seq.
                let snap = h.sm.snapshot().clone();
                let mut numbered = Vec::new();
                let mut unnumbered = Vec::new();
                for (t, seq) in &h.in_flight {
                    match seq {
                        Some(s) => numbered.push((*s, *t)),
                        None => unnumbered.push(*t),
                    }
                }
                let (mut sm, invalid) = StreamManager::restore(config.clone(), snap, numbered);
                h.settle(&unnumbered);
                h.settle(&invalid);
                if sm.can_resume() {
                    let _ = sm.on_disconnect();
                } else {
                    let lost = sm.take_unsettled();
                    h.settle(&lost);
                }
                assert_eq!(sm.unacked_len(), h.in_flight.len(), "restart lost or invented rows");
                h.sm = sm;
            }
            Op::Tick { ms } => {
                h.now += Duration::from_millis(ms as u64);
                if h.sm.poll_request(h.now) {
                    h.sm.on_request_sent();
                }
            }
        }
    }
    // Whatever happened, every tag is either settled or still tracked by the engine.
    assert_eq!(h.sm.unacked_len(), h.in_flight.len());
});
