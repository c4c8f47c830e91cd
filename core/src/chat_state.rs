//! XEP-0085 chat states ("typing..."): the sending policy, sans-IO.
//!
//! Chat states are not messages: they are never stored, never put in the outbox and never sent
//! again after a reconnect (a stale "typing" is worse than none). The policy here decides what
//! goes out and when:
//!
//! - only to a contact that has shown it understands them (it sent us one); until then our
//!   messages carry `<active/>`, which is how XEP-0085 §5.1 discovers support;
//! - only changes: the front end may report every keystroke as `composing`, one goes out, and
//!   it is refreshed at most every [`COMPOSING_REFRESH`];
//! - at most one per contact per [`MIN_INTERVAL`]: a change inside it waits, and only the newest
//!   wanted state goes out when the interval ends;
//! - `composing` becomes `paused` by itself after [`PAUSE_AFTER`] without a keystroke, so a
//!   front end that forgets to say so never leaves the contact watching a dead indicator.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A XEP-0085 chat state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum ChatState {
    /// Paying attention to the conversation.
    Active,
    /// Typing.
    Composing,
    /// Stopped typing for a moment.
    Paused,
    /// Not looking at the conversation.
    Inactive,
    /// Left the conversation.
    Gone,
}

impl ChatState {
    /// The element's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatState::Active => "active",
            ChatState::Composing => "composing",
            ChatState::Paused => "paused",
            ChatState::Inactive => "inactive",
            ChatState::Gone => "gone",
        }
    }
}

impl std::str::FromStr for ChatState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "active" => ChatState::Active,
            "composing" => ChatState::Composing,
            "paused" => ChatState::Paused,
            "inactive" => ChatState::Inactive,
            "gone" => ChatState::Gone,
            other => {
                return Err(format!(
                    "unknown chat state {other:?} (active, composing, paused, inactive or gone)"
                ))
            }
        })
    }
}

/// The shortest time between two chat states to one contact.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often an unchanged `composing` is sent again while the user keeps typing.
pub const COMPOSING_REFRESH: Duration = Duration::from_secs(30);
/// How long after the last keystroke `composing` becomes `paused`.
pub const PAUSE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Peer {
    /// The contact sent us a chat state: it understands them.
    supports: bool,
    /// The contact's verified capabilities (XEP-0115) list chat states.
    advertised: bool,
    /// What we last sent it on this connection, and when.
    sent: Option<(ChatState, Instant)>,
    /// A change that waits for [`MIN_INTERVAL`].
    wanted: Option<ChatState>,
    /// The last keystroke (a `composing` from the front end).
    typed: Option<Instant>,
}

/// The chat-state policy for every contact of one account.
#[derive(Debug, Default)]
pub struct ChatStates {
    peers: HashMap<String, Peer>,
}

impl ChatStates {
    /// The contact `peer` (a bare JID) sent a chat state: it understands them.
    pub fn on_received(&mut self, peer: &str) {
        self.peers.entry(peer.to_owned()).or_default().supports = true;
    }

    /// What the verified capabilities of `peer`'s online resources say of chat states (the
    /// engine tells it on every presence that changes them).
    pub fn on_advertised(&mut self, peer: &str, advertised: bool) {
        if advertised {
            self.peers.entry(peer.to_owned()).or_default().advertised = true;
        } else if let Some(p) = self.peers.get_mut(peer) {
            p.advertised = false;
        }
    }

    /// Whether `peer` has shown it understands chat states: it sent one, or its verified
    /// capabilities list them.
    pub fn supports(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.supports || p.advertised)
    }

    /// A message to `peer` went out; it carries `<active/>`.
    pub fn on_message_sent(&mut self, peer: &str, now: Instant) {
        let p = self.peers.entry(peer.to_owned()).or_default();
        p.sent = Some((ChatState::Active, now));
        p.typed = None;
        // The message ends what was typed: nothing waiting is sent after it.
        p.wanted = None;
    }

    /// The user's state in the conversation with `peer` is `state`. Returns the state to send
    /// now, if any (see the module's rules).
    pub fn want(&mut self, peer: &str, state: ChatState, now: Instant) -> Option<ChatState> {
        let p = self.peers.entry(peer.to_owned()).or_default();
        if !(p.supports || p.advertised) {
            return None;
        }
        p.typed = (state == ChatState::Composing).then_some(now);
        let unchanged = match p.sent {
            Some((s, at)) if s == state => {
                state != ChatState::Composing || now.duration_since(at) < COMPOSING_REFRESH
            }
            _ => false,
        };
        if unchanged {
            p.wanted = None;
            return None;
        }
        if let Some((_, at)) = p.sent {
            if now.duration_since(at) < MIN_INTERVAL {
                p.wanted = Some(state);
                return None;
            }
        }
        p.wanted = None;
        p.sent = Some((state, now));
        Some(state)
    }

    /// The next time [`ChatStates::on_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| {
                let waiting = p.wanted.and(p.sent).map(|(_, at)| at + MIN_INTERVAL);
                let pause = match (p.sent, p.typed) {
                    (Some((ChatState::Composing, _)), Some(t)) => Some(t + PAUSE_AFTER),
                    _ => None,
                };
                waiting.into_iter().chain(pause).min()
            })
            .min()
    }

    /// What is due at `now`: waiting changes, and `paused` for a contact we showed typing
    /// [`PAUSE_AFTER`] ago. Each is recorded as sent.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<(String, ChatState)> {
        let mut out = Vec::new();
        for (peer, p) in &mut self.peers {
            if let (Some(ChatState::Composing), Some(t)) = (p.sent.map(|s| s.0), p.typed) {
                if now >= t + PAUSE_AFTER && p.wanted.is_none() {
                    p.wanted = Some(ChatState::Paused);
                    p.typed = None;
                }
            }
            let Some(wanted) = p.wanted else { continue };
            let due = p.sent.is_none_or(|(_, at)| now >= at + MIN_INTERVAL);
            if due {
                p.wanted = None;
                if p.sent.map(|s| s.0) != Some(wanted) {
                    p.sent = Some((wanted, now));
                    if wanted == ChatState::Composing {
                        // Becomes paused by itself, like any composing.
                        p.typed = Some(p.typed.unwrap_or(now));
                    }
                    out.push((peer.clone(), wanted));
                }
            }
        }
        out.sort();
        out
    }

    /// The connection is gone: nothing pending is sent on the next one, and what the contacts saw
    /// is forgotten (their servers tell them we went offline). Support stays known.
    pub fn on_link_lost(&mut self) {
        for p in self.peers.values_mut() {
            p.sent = None;
            p.wanted = None;
            p.typed = None;
        }
    }
}

impl PartialOrd for ChatState {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ChatState {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "bob@localhost";

    #[test]
    fn nothing_goes_to_a_contact_that_never_showed_support() {
        let mut c = ChatStates::default();
        let t = Instant::now();
        assert_eq!(c.want(BOB, ChatState::Composing, t), None);
        assert_eq!(c.poll_timeout(), None);
        c.on_received(BOB);
        assert_eq!(
            c.want(BOB, ChatState::Composing, t),
            Some(ChatState::Composing)
        );
    }

    #[test]
    fn keystrokes_send_one_composing_then_paused_by_itself() {
        let mut c = ChatStates::default();
        c.on_received(BOB);
        let t = Instant::now();
        let mut sent = vec![];
        for i in 0..50 {
            sent.extend(c.want(
                BOB,
                ChatState::Composing,
                t + Duration::from_millis(100 * i),
            ));
        }
        assert_eq!(sent, vec![ChatState::Composing], "one per change");
        let last = t + Duration::from_millis(4900);
        assert_eq!(c.poll_timeout(), Some(last + PAUSE_AFTER));
        assert!(c
            .on_timeout(last + PAUSE_AFTER - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            c.on_timeout(last + PAUSE_AFTER),
            vec![(BOB.to_owned(), ChatState::Paused)]
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn changes_inside_the_interval_wait_and_only_the_newest_goes_out() {
        let mut c = ChatStates::default();
        c.on_received(BOB);
        let t = Instant::now();
        assert!(c.want(BOB, ChatState::Composing, t).is_some());
        let ms = |n| t + Duration::from_millis(n);
        assert_eq!(c.want(BOB, ChatState::Paused, ms(200)), None);
        assert_eq!(c.want(BOB, ChatState::Inactive, ms(400)), None);
        assert_eq!(c.poll_timeout(), Some(t + MIN_INTERVAL));
        assert_eq!(
            c.on_timeout(t + MIN_INTERVAL),
            vec![(BOB.to_owned(), ChatState::Inactive)]
        );
    }

    #[test]
    fn a_long_composing_is_refreshed_and_a_lost_link_forgets_everything_pending() {
        let mut c = ChatStates::default();
        c.on_received(BOB);
        let t = Instant::now();
        assert!(c.want(BOB, ChatState::Composing, t).is_some());
        assert!(c
            .want(BOB, ChatState::Composing, t + COMPOSING_REFRESH)
            .is_some());
        assert!(c
            .want(
                BOB,
                ChatState::Paused,
                t + COMPOSING_REFRESH + Duration::from_millis(10)
            )
            .is_none());
        c.on_link_lost();
        assert_eq!(
            c.poll_timeout(),
            None,
            "nothing is resent after a reconnect"
        );
        assert!(c.supports(BOB));
    }

    /// A keystroke held back by the interval, then the message: nothing stale follows it; and a
    /// held-back composing that does go out still pauses by itself.
    #[test]
    fn nothing_held_back_goes_out_after_the_message_and_a_late_composing_still_pauses() {
        let mut c = ChatStates::default();
        c.on_received(BOB);
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        assert!(c.want(BOB, ChatState::Composing, t).is_some());
        assert!(
            c.want(BOB, ChatState::Paused, ms(300)).is_none(),
            "held back"
        );
        c.on_message_sent(BOB, ms(400));
        assert_eq!(c.poll_timeout(), None);
        assert!(
            c.on_timeout(ms(2000)).is_empty(),
            "nothing after the message"
        );
        // Typing again at once is held back, then goes, then pauses by itself.
        assert!(c.want(BOB, ChatState::Composing, ms(500)).is_none());
        assert_eq!(
            c.on_timeout(ms(1400)),
            vec![(BOB.to_owned(), ChatState::Composing)]
        );
        let pause_at = c.poll_timeout().expect("a pause is due");
        assert_eq!(
            c.on_timeout(pause_at),
            vec![(BOB.to_owned(), ChatState::Paused)]
        );
    }

    #[test]
    fn a_sent_message_counts_as_active() {
        let mut c = ChatStates::default();
        c.on_received(BOB);
        let t = Instant::now();
        assert!(c.want(BOB, ChatState::Composing, t).is_some());
        c.on_message_sent(BOB, t + Duration::from_secs(2));
        assert_eq!(c.poll_timeout(), None, "no paused after the message went");
        assert_eq!(
            c.want(BOB, ChatState::Active, t + Duration::from_secs(4)),
            None
        );
    }
}
