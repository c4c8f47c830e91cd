//! The per-message delivery state machine (DESIGN.md), in one place.
//!
//! Every outgoing message row carries a [`State`]. [`State::can_move_to`] is the single rule for which
//! moves are legal; the store refuses any other (its `UPDATE`s name the legal source states), so a late
//! or duplicated event never moves a message backwards.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use ts_rs::TS;

/// Where a message stands. Outgoing messages use every state but `Received`; incoming ones are
/// `Received` (and `Displayed` once the user has read them, in a later issue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, TS)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Committed, not yet written to a stream (offline, connecting, or held by flow control).
    Queued,
    /// Written to a stream, not yet covered by the server's `h` (or written without SM).
    Sent,
    /// The stream broke while the message was unacked; resumption may still save it.
    Hibernated,
    /// Re-sent after a successful `<resumed/>`.
    Retrying,
    /// The stream was lost for good before the server confirmed it: the account's own archive is
    /// being asked whether the server has it (then `acked`) before the user is (then `failed`).
    Checking,
    /// The server's `h` covers it.
    Acked,
    /// A MUC echoed it from our own occupant JID.
    Reflected,
    /// The recipient's XEP-0184 receipt arrived.
    Delivered,
    /// The recipient's XEP-0333 displayed marker arrived.
    Displayed,
    /// Not covered by the server's `h` and resumption failed, or an error came back. Needs the user.
    Failed,
    /// The user chose not to resend it.
    Discarded,
    /// An incoming message, committed.
    Received,
}

impl State {
    /// Every state, in declaration order.
    pub const ALL: [State; 12] = [
        State::Queued,
        State::Sent,
        State::Hibernated,
        State::Retrying,
        State::Checking,
        State::Acked,
        State::Reflected,
        State::Delivered,
        State::Displayed,
        State::Failed,
        State::Discarded,
        State::Received,
    ];

    /// States in which a message still waits for the server (`run --until-idle` waits for none).
    pub const PENDING: [State; 5] = [
        State::Queued,
        State::Sent,
        State::Hibernated,
        State::Retrying,
        State::Checking,
    ];

    /// The name stored in the database and printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sent => "sent",
            State::Hibernated => "hibernated",
            State::Retrying => "retrying",
            State::Checking => "checking",
            State::Acked => "acked",
            State::Reflected => "reflected",
            State::Delivered => "delivered",
            State::Displayed => "displayed",
            State::Failed => "failed",
            State::Discarded => "discarded",
            State::Received => "received",
        }
    }

    /// The event emitted when a message enters this state. StanzaJS names where StanzaJS has one
    /// (`message:sent` is emitted by `send()`, for the `queued` state; see [`crate::events`]).
    pub fn event_name(self) -> &'static str {
        match self {
            State::Queued => "message:sent",
            State::Sent => "message:written",
            State::Hibernated => "message:hibernated",
            State::Retrying => "message:retry",
            State::Checking => "message:checking",
            State::Acked => "message:acked",
            State::Reflected => "message:reflected",
            State::Delivered => "message:delivered",
            State::Displayed => "message:displayed",
            State::Failed => "message:failed",
            State::Discarded => "message:discarded",
            State::Received => "message:received",
        }
    }

    /// Whether a message may move from `self` to `to`. This is the whole delivery state machine.
    pub fn can_move_to(self, to: State) -> bool {
        use State::*;
        match (self, to) {
            // Written to a stream (SM or not), or re-sent after resumption.
            (Queued, Sent) | (Hibernated, Retrying) => true,
            // The link broke while unacked.
            (Sent | Retrying, Hibernated) => true,
            // The stream is gone for good before the server confirmed it: ask the archive first.
            (Sent | Hibernated | Retrying, Checking) => true,
            // The server's h covers it, or the account's archive holds it (which proves as much;
            // the archive may show it before the h does).
            (Sent | Hibernated | Retrying | Checking, Acked) => true,
            // The archive does not hold it, a protocol error, or an error stanza came back (an
            // error bounce may follow the server's ack).
            (Sent | Hibernated | Retrying | Checking | Acked, Failed) => true,
            // Later confirmations only move forward. A receipt or marker proves the server had the
            // message, so it may overtake the server's ack; the ack then finds nothing to move.
            (Sent | Hibernated | Retrying | Checking | Acked, Reflected) => true,
            (Sent | Hibernated | Retrying | Checking | Acked | Reflected, Delivered) => true,
            (
                Sent | Hibernated | Retrying | Checking | Acked | Reflected | Delivered,
                Displayed,
            ) => true,
            // A room refused our join: its queued messages cannot go out (an error stanza, before
            // any byte of them was written).
            (Queued, Failed) => true,
            // The user's decision on a failed message.
            (Failed, Queued | Discarded) => true,
            // The user reads an incoming message.
            (Received, Displayed) => true,
            _ => false,
        }
    }

    /// The states from which a move to `to` is legal.
    pub fn sources_of(to: State) -> Vec<State> {
        State::ALL
            .into_iter()
            .filter(|from| from.can_move_to(to))
            .collect()
    }

    /// Whether the message is waiting for the server.
    pub fn is_pending(self) -> bool {
        State::PENDING.contains(&self)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state name.
#[derive(Debug, thiserror::Error)]
#[error("unknown message state {0:?} (expected one of: queued, sent, hibernated, retrying, checking, acked, reflected, delivered, displayed, failed, discarded, received)")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Direction of a message relative to the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Sent by this account.
    Out,
    /// Received by this account.
    In,
}

impl Direction {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in State::ALL {
            assert_eq!(st.as_str().parse::<State>().unwrap(), st);
        }
        assert!("bogus".parse::<State>().is_err());
    }

    #[test]
    fn failed_is_left_only_by_the_user() {
        let exits: Vec<_> = State::ALL
            .into_iter()
            .filter(|to| State::Failed.can_move_to(*to))
            .collect();
        assert_eq!(exits, vec![State::Queued, State::Discarded]);
    }

    #[test]
    fn confirmations_never_move_backwards() {
        for (a, b) in [
            (State::Delivered, State::Acked),
            (State::Displayed, State::Delivered),
            (State::Acked, State::Sent),
            (State::Acked, State::Hibernated),
            (State::Discarded, State::Queued),
            (State::Checking, State::Sent),
            (State::Checking, State::Queued),
            (State::Acked, State::Checking),
        ] {
            assert!(!a.can_move_to(b), "{a} -> {b}");
        }
    }
}
