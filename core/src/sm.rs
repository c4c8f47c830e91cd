//! XEP-0198 Stream Management, sans-IO.
//!
//! [`StreamManager`] is a pure state machine in the style of quinn-proto: it never touches a socket, a
//! clock or a database. The I/O layer feeds it what happened (a stanza was written, an `<a/>` arrived,
//! the link broke) and the current time, and it answers with what to do (which messages are now acked,
//! which must be resent, whether to send `<r/>`). Its persistent part is a [`SmSnapshot`] that the
//! caller writes to the store in the same transaction as the change that moved it.
//!
//! Counters are mod 2^32: every comparison is made on distances from the last acknowledged `h`, with
//! `wrapping_*` arithmetic, so the engine behaves the same across the wrap.
//!
//! Each stanza written while SM is enabled gets a sequence number (`seq`): the value of the outbound
//! counter after counting it, so that a server `h >= seq` (in wrapping distance) covers it. Stanzas
//! carry an optional tag (`T`, the store's message key): untagged ones (presence, iq) count in `h` but
//! are never reported back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Outbound sequence number of a stanza: the outbound counter's value once the stanza is counted.
pub type Seq = u32;

/// Tunables of the engine. The defaults suit a phone on a bad network as well as a desktop.
#[derive(Clone, Debug)]
pub struct SmConfig {
    /// Request an ack (`<r/>`) once this many stanzas are unrequested. (The session also asks at
    /// the end of every batch it writes, and [`Self::request_delay`] covers a quiet tail, so this
    /// only spaces the requests inside a long burst: each costs the server a parse and an answer,
    /// and us a commit of the ack. At 5 the server spent about 1.2x the CPU per message it spends
    /// on the raw benchmark client; at 32 about 1.05x: BENCHMARKS.md.)
    pub request_after: u32,
    /// ... or once the oldest unrequested stanza is this old.
    pub request_delay: Duration,
    /// Stop writing new stanzas while this many are unacked (flow control). It bounds how many
    /// messages a failed resumption leaves for the user to confirm (the rest stay queued and go out
    /// on the next session by themselves). (Prosody's 500-stanza limit, `smacks_max_queue_size`,
    /// is on its own queue towards us, not on what we send; a window of 448 measured no
    /// difference beyond this machine's noise: BENCHMARKS.md.)
    pub max_in_flight: u32,
}

impl Default for SmConfig {
    fn default() -> Self {
        SmConfig {
            request_after: 32,
            request_delay: Duration::from_millis(100),
            max_in_flight: 256,
        }
    }
}

/// The persistent part of the SM state, written on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmSnapshot {
    /// The server's stream id (`<enabled id/>`), present while a stream may be resumed.
    pub stream_id: Option<String>,
    /// Whether the server allowed resumption.
    pub resumable: bool,
    /// The server's preferred reconnection address (`<enabled location/>`), if any.
    pub location: Option<String>,
    /// The server's maximum resumption time in seconds (`<enabled max/>`), if any.
    pub max: Option<u32>,
    /// Inbound stanzas handled (committed) by us, mod 2^32.
    pub inbound_h: u32,
    /// Outbound stanzas written by us since `<enabled/>`, mod 2^32.
    pub outbound_count: u32,
    /// The last `h` the server acknowledged, mod 2^32.
    pub acked_h: u32,
}

/// A protocol violation by the server. The caller closes the stream and drops the SM state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// The server acknowledged more stanzas than were sent (or its `h` went backwards).
    #[error("handled-count-too-high: server h={h} but only {send_count} stanzas were sent")]
    HandledCountTooHigh {
        /// The server's `h`.
        h: u32,
        /// What we had sent, mod 2^32.
        send_count: u32,
    },
    /// `<resumed/>` named a stream other than the one we asked to resume.
    #[error("server resumed stream {got:?}, but {expected:?} was requested")]
    WrongStream {
        /// The stream id we sent in `<resume previd/>`.
        expected: String,
        /// The id in `<resumed previd/>`.
        got: String,
    },
    /// An SM element that makes no sense in the current phase.
    #[error("unexpected stream-management element: {0}")]
    Unexpected(&'static str),
}

/// What the engine is doing with the current (or last) stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No SM on this stream (not negotiated, or the server lacks it).
    Disabled,
    /// `<enable/>` sent, waiting for `<enabled/>`.
    Enabling,
    /// `<resume/>` sent, waiting for `<resumed/>` or `<failed/>`.
    Resuming,
    /// Counting on a live stream.
    Enabled,
    /// The stream broke; it may be resumed if [`SmSnapshot::resumable`].
    Detached,
}

/// The outcome of `<resumed/>` or `<failed/>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement<T> {
    /// Messages the server's `h` covers: they are `acked`.
    pub acked: Vec<T>,
    /// Messages it does not cover, in their original order: re-sent after `<resumed/>`, `failed`
    /// after `<failed/>`.
    pub rest: Vec<T>,
}

/// The XEP-0198 engine. `T` is the caller's tag for a tracked stanza (a message key). Cloning it
/// keeps a copy to go back to if what it was told could not be committed.
#[derive(Clone, Debug)]
pub struct StreamManager<T> {
    config: SmConfig,
    phase: Phase,
    snap: SmSnapshot,
    /// Tracked stanzas written but not yet covered by the server's `h`, oldest first.
    unacked: VecDeque<(Seq, T)>,
    /// Stanzas written since the last `<r/>`, and when the oldest of them was written.
    unrequested: u32,
    unrequested_since: Option<Instant>,
}

impl<T: Clone> StreamManager<T> {
    /// A fresh engine with no stream.
    pub fn new(config: SmConfig) -> Self {
        StreamManager {
            config,
            phase: Phase::Disabled,
            snap: SmSnapshot::default(),
            unacked: VecDeque::new(),
            unrequested: 0,
            unrequested_since: None,
        }
    }

    /// An engine restored from the store after a restart: `snap` as persisted, `unacked` the tagged
    /// stanzas the store still has in flight (any order; they are sorted by wrapping distance from the
    /// acked `h`). The engine is [`Phase::Detached`]: the stream is gone, resumption may bring it back.
    ///
    /// Also returns the tags whose seq lies outside what the snapshot says is in flight: only a
    /// damaged store holds such rows, and no `h` can be trusted to cover them, so the caller marks
    /// them failed (the user decides).
    pub fn restore(
        config: SmConfig,
        snap: SmSnapshot,
        unacked: impl IntoIterator<Item = (Seq, T)>,
    ) -> (Self, Vec<T>) {
        let base = snap.acked_h;
        let in_flight = snap.outbound_count.wrapping_sub(base);
        type Tagged<T> = Vec<(Seq, T)>;
        let (mut valid, invalid): (Tagged<T>, Tagged<T>) =
            unacked.into_iter().partition(|(seq, _)| {
                let d = seq.wrapping_sub(base);
                d >= 1 && d <= in_flight
            });
        valid.sort_by_key(|(seq, _)| seq.wrapping_sub(base));
        let mut sm = StreamManager::new(config);
        sm.phase = if snap.stream_id.is_some() && snap.resumable {
            Phase::Detached
        } else {
            Phase::Disabled
        };
        sm.snap = snap;
        sm.unacked = valid.into();
        (sm, invalid.into_iter().map(|(_, t)| t).collect())
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The persistent state to write to the store.
    pub fn snapshot(&self) -> &SmSnapshot {
        &self.snap
    }

    /// Whether a broken stream can be resumed (a stream id is known and the server allowed it).
    pub fn can_resume(&self) -> bool {
        self.snap.resumable && self.snap.stream_id.is_some()
    }

    /// Whether SM counts stanzas on the live stream.
    pub fn is_enabled(&self) -> bool {
        self.phase == Phase::Enabled
    }

    /// Stanzas written and not yet acknowledged (tracked or not).
    pub fn in_flight(&self) -> u32 {
        self.snap.outbound_count.wrapping_sub(self.snap.acked_h)
    }

    /// Tagged stanzas written and not yet acknowledged.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Whether flow control allows writing another stanza now.
    pub fn can_send(&self) -> bool {
        self.phase != Phase::Enabled || self.in_flight() < self.config.max_in_flight
    }

    /// Begin enabling: the caller writes `<enable resume='true'/>`.
    pub fn start_enable(&mut self) -> xmpp_parsers::sm::Enable {
        self.phase = Phase::Enabling;
        xmpp_parsers::sm::Enable::new().with_resume()
    }

    /// `<enabled/>` arrived: counters start from zero on this new stream. Tagged stanzas of an older
    /// stream must have been settled by the caller before (see [`Self::take_unsettled`]).
    pub fn on_enabled(&mut self, enabled: &xmpp_parsers::sm::Enabled) -> Result<(), SmError> {
        if self.phase != Phase::Enabling {
            return Err(SmError::Unexpected("enabled"));
        }
        self.snap = SmSnapshot {
            stream_id: enabled.id.as_ref().map(|id| id.0.clone()),
            resumable: enabled.resume && enabled.id.is_some(),
            location: enabled.location.clone(),
            max: enabled.max,
            inbound_h: 0,
            outbound_count: 0,
            acked_h: 0,
        };
        debug_assert!(
            self.unacked.is_empty(),
            "tags of an older stream were not settled before <enable/>"
        );
        self.unacked.clear();
        self.reset_requests();
        self.phase = Phase::Enabled;
        Ok(())
    }

    /// The server refused to enable SM (`<failed/>` in answer to `<enable/>`): go on without it.
    pub fn on_enable_failed(&mut self) {
        self.phase = Phase::Disabled;
        self.snap = SmSnapshot::default();
    }

    /// The `<resume/>` a resumable stream would send, without starting it (asked inline in a
    /// SASL2 login; [`Self::start_resume`] is called when the answer comes).
    pub fn resume_request(&self) -> Option<xmpp_parsers::sm::Resume> {
        let id = self
            .snap
            .stream_id
            .clone()
            .filter(|_| self.snap.resumable)?;
        Some(xmpp_parsers::sm::Resume {
            h: self.snap.inbound_h,
            previd: xmpp_parsers::sm::StreamId(id),
        })
    }

    /// Begin resuming: the caller writes the returned `<resume/>`. `None` when nothing is resumable.
    pub fn start_resume(&mut self) -> Option<xmpp_parsers::sm::Resume> {
        let id = self
            .snap
            .stream_id
            .clone()
            .filter(|_| self.snap.resumable)?;
        self.phase = Phase::Resuming;
        Some(xmpp_parsers::sm::Resume {
            h: self.snap.inbound_h,
            previd: xmpp_parsers::sm::StreamId(id),
        })
    }

    /// `<resumed/>` arrived. Messages covered by `h` are acked; the rest, in order, must be re-sent
    /// now, before anything new (the caller calls [`Self::on_sent`] for each). The inbound counter is
    /// kept: only `<enable/>` resets it.
    pub fn on_resumed(
        &mut self,
        resumed: &xmpp_parsers::sm::Resumed,
    ) -> Result<Settlement<T>, SmError> {
        if self.phase != Phase::Resuming {
            return Err(SmError::Unexpected("resumed"));
        }
        let expected = self.snap.stream_id.clone().unwrap_or_default();
        if resumed.previd.0 != expected {
            return Err(SmError::WrongStream {
                expected,
                got: resumed.previd.0.clone(),
            });
        }
        let settlement = self.settle(resumed.h)?;
        // The server counts our re-sent stanzas from its h.
        self.snap.outbound_count = resumed.h;
        self.snap.acked_h = resumed.h;
        self.reset_requests();
        self.phase = Phase::Enabled;
        Ok(settlement)
    }

    /// `<failed/>` arrived in answer to `<resume/>`. What `h` covers is acked (a bad `h` covers
    /// nothing), the rest has failed: never re-sent without the user. The SM state is dropped.
    pub fn on_resume_failed(&mut self, h: Option<u32>) -> Settlement<T> {
        let settlement = match h.map(|h| self.settle(h)) {
            Some(Ok(s)) => s,
            _ => Settlement {
                acked: Vec::new(),
                rest: self.unacked.drain(..).map(|(_, t)| t).collect(),
            },
        };
        self.drop_state();
        settlement
    }

    /// A stanza was written. Returns its sequence number when SM counts it. Call it *before* the
    /// bytes go out, and persist the snapshot with the message's new seq in the same transaction.
    pub fn on_sent(&mut self, tag: Option<T>, now: Instant) -> Option<Seq> {
        if self.phase != Phase::Enabled {
            return None;
        }
        self.snap.outbound_count = self.snap.outbound_count.wrapping_add(1);
        let seq = self.snap.outbound_count;
        if let Some(tag) = tag {
            self.unacked.push_back((seq, tag));
        }
        self.unrequested += 1;
        self.unrequested_since.get_or_insert(now);
        Some(seq)
    }

    /// Takes back the newest `n` [`Self::on_sent`] calls that returned a seq: their stanzas were
    /// never written, because the commit that numbered them failed. Without it the stream would
    /// count stanzas the server never got, and the next `<a/>` would look short by `n`.
    pub fn on_unsent(&mut self, n: u32) {
        if self.phase != Phase::Enabled {
            return;
        }
        for _ in 0..n {
            if self
                .unacked
                .back()
                .is_some_and(|(seq, _)| *seq == self.snap.outbound_count)
            {
                self.unacked.pop_back();
            }
            self.snap.outbound_count = self.snap.outbound_count.wrapping_sub(1);
        }
        self.unrequested = self.unrequested.saturating_sub(n);
        if self.unrequested == 0 {
            self.unrequested_since = None;
        }
    }

    /// `<a h/>` arrived: returns the tags it newly covers, oldest first.
    pub fn on_ack(&mut self, h: u32) -> Result<Vec<T>, SmError> {
        if self.phase != Phase::Enabled {
            return Err(SmError::Unexpected("a"));
        }
        let s = self.settle(h)?;
        self.snap.acked_h = h;
        debug_assert!(s.rest.is_empty());
        Ok(s.acked)
    }

    /// An inbound stanza has been handled and what it carries committed: count it.
    pub fn on_inbound_handled(&mut self) {
        if self.phase == Phase::Enabled {
            self.snap.inbound_h = self.snap.inbound_h.wrapping_add(1);
        }
    }

    /// Takes back [`Self::on_inbound_handled`] for a stanza whose commit failed: `h` must never
    /// cover what the store does not hold (the server keeps it and delivers it again).
    pub fn on_inbound_uncommitted(&mut self) {
        if self.phase == Phase::Enabled {
            self.snap.inbound_h = self.snap.inbound_h.wrapping_sub(1);
        }
    }

    /// The server's `<r/>`: the `<a/>` to answer with.
    pub fn answer_request(&self) -> xmpp_parsers::sm::A {
        xmpp_parsers::sm::A::new(self.snap.inbound_h)
    }

    /// Whether to write `<r/>` now. If it returns true the caller writes it and it counts as sent.
    pub fn poll_request(&mut self, now: Instant) -> bool {
        if self.phase != Phase::Enabled || self.unrequested == 0 {
            return false;
        }
        let due = self.unrequested >= self.config.request_after
            || self
                .unrequested_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.request_delay);
        if due {
            self.reset_requests();
        }
        due
    }

    /// The caller wrote an `<r/>` on its own schedule (inside a batch): restart the policy's count.
    pub fn on_request_sent(&mut self) {
        self.reset_requests();
    }

    /// How many stanzas the policy lets go unrequested: a batch writer puts an `<r/>` after every
    /// this many stanzas, so acks flow while a long batch is still on the wire.
    pub fn request_every(&self) -> u32 {
        self.config.request_after.max(1)
    }

    /// When [`Self::poll_request`] will next become true without other input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Enabled {
            return None;
        }
        self.unrequested_since
            .map(|t| t + self.config.request_delay)
    }

    /// The link broke. Returns the tags still unacked: `hibernated` if the stream can be resumed,
    /// else `failed` (the caller decides by [`Self::can_resume`], asked before this call).
    pub fn on_disconnect(&mut self) -> Vec<T> {
        let tags: Vec<T> = self.unacked.iter().map(|(_, t)| t.clone()).collect();
        if self.can_resume() {
            self.phase = Phase::Detached;
        } else {
            self.unacked.clear();
            self.drop_state();
        }
        self.reset_requests();
        tags
    }

    /// Drop every unacked tag and the SM state (after a protocol error or a clean close). Returns
    /// the tags that were unacked: their fate is unknown to us, so the caller marks them failed.
    pub fn take_unsettled(&mut self) -> Vec<T> {
        let tags = self.unacked.drain(..).map(|(_, t)| t).collect();
        self.drop_state();
        tags
    }

    fn drop_state(&mut self) {
        self.snap = SmSnapshot::default();
        self.phase = Phase::Disabled;
        self.reset_requests();
    }

    fn reset_requests(&mut self) {
        self.unrequested = 0;
        self.unrequested_since = None;
    }

    /// Pops what `h` newly covers. Errors, changing nothing, if `h` is beyond what was sent.
    fn settle(&mut self, h: u32) -> Result<Settlement<T>, SmError> {
        let newly = h.wrapping_sub(self.snap.acked_h);
        let in_flight = self.in_flight();
        if newly > in_flight {
            return Err(SmError::HandledCountTooHigh {
                h,
                send_count: self.snap.outbound_count,
            });
        }
        let base = self.snap.acked_h;
        let mut acked = Vec::new();
        while let Some((seq, _)) = self.unacked.front() {
            if seq.wrapping_sub(base) <= newly {
                acked.push(self.unacked.pop_front().expect("front exists").1);
            } else {
                break;
            }
        }
        let rest = if self.phase == Phase::Resuming {
            self.unacked.drain(..).map(|(_, t)| t).collect()
        } else {
            Vec::new()
        };
        Ok(Settlement { acked, rest })
    }
}

#[cfg(test)]
mod tests;
