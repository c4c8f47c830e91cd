//! The client's event stream: one typed enum that every front end adapts (the CLI prints each event
//! as one JSON line; Tauri and the FFI forward them).

use serde::Serialize;

use crate::delivery::State;
use crate::store::StateChange;

/// One event. Serialized with an `event` field naming it, StanzaJS style:
/// `{"event":"message:acked","id":"...","peer":"bob@localhost","state":"acked"}`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Event {
    /// An outgoing message changed state (`message:sent` at send(), `message:written`,
    /// `message:hibernated`, `message:retry`, `message:acked`, `message:failed`,
    /// `message:discarded`, ...).
    Message(MessageEvent),
    /// A new incoming message was committed (`message:received`). Duplicates raise nothing.
    Received(ReceivedEvent),
    /// The connection changed (`connection`).
    Connection(ConnectionEvent),
    /// Something went wrong that the user should know (`error`).
    Error(ErrorEvent),
}

/// An outgoing message's state change.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MessageEvent {
    /// The event name, e.g. `message:acked` (see [`State::event_name`]).
    pub event: &'static str,
    /// The message id.
    pub id: String,
    /// The recipient's bare JID.
    pub peer: String,
    /// The new state.
    pub state: State,
    /// Why, for `message:failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An incoming message.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReceivedEvent {
    /// Always `message:received`.
    pub event: &'static str,
    /// The message id.
    pub id: String,
    /// The sender's bare JID.
    pub from: String,
    /// The text.
    pub body: String,
}

/// Connection states.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    /// Connecting, authenticating, resuming or binding.
    Connecting,
    /// The session is up.
    Online,
    /// Not connected; see `reason` and `retry_in_ms`.
    Offline,
}

/// A connection state change.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ConnectionEvent {
    /// Always `connection`.
    pub event: &'static str,
    /// The new state.
    pub state: ConnState,
    /// For `online`: whether the previous stream was resumed (nothing was lost in between).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
    /// For `offline`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `offline`: when the next attempt starts, if one will.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// An error worth showing.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ErrorEvent {
    /// Always `error`.
    pub event: &'static str,
    /// A short class: `auth`, `tls`, `network`, `protocol`, `database`, `stanza`.
    pub kind: &'static str,
    /// What happened.
    pub message: String,
}

impl Event {
    /// The event for a message state change.
    pub fn from_change(c: &StateChange) -> Event {
        match c.state {
            State::Received => Event::Received(ReceivedEvent {
                event: "message:received",
                id: c.id.clone(),
                from: c.peer.clone(),
                body: c.body.clone().unwrap_or_default(),
            }),
            state => Event::Message(MessageEvent {
                event: state.event_name(),
                id: c.id.clone(),
                peer: c.peer.clone(),
                state,
                error: c.error.clone(),
            }),
        }
    }

    /// A connection event.
    pub fn connection(
        state: ConnState,
        resumed: Option<bool>,
        reason: Option<String>,
        retry_in_ms: Option<u64>,
    ) -> Event {
        Event::Connection(ConnectionEvent {
            event: "connection",
            state,
            resumed,
            reason,
            retry_in_ms,
        })
    }

    /// An error event.
    pub fn error(kind: &'static str, message: impl Into<String>) -> Event {
        Event::Error(ErrorEvent {
            event: "error",
            kind,
            message: message.into(),
        })
    }
}
