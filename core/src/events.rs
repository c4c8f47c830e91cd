//! The client's event stream: one typed enum that every front end adapts (the CLI prints each event
//! as one JSON line; Tauri and the FFI forward them).

use serde::Serialize;
use ts_rs::TS;

use crate::delivery::State;
use crate::store::StateChange;

/// One event. Serialized with an `event` field naming it, StanzaJS style:
/// `{"event":"message:acked","id":"...","peer":"bob@localhost","state":"acked"}`.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
#[serde(untagged)]
pub enum Event {
    /// An outgoing message changed state (`message:sent` at send(), `message:written`,
    /// `message:hibernated`, `message:retry`, `message:acked`, `message:failed`,
    /// `message:discarded`, ...).
    Message(MessageEvent),
    /// A new incoming message was committed (`message:received`). Duplicates raise nothing.
    Received(ReceivedEvent),
    /// A message was corrected, retracted or reacted to (`message:updated`): read it again.
    Updated(UpdatedEvent),
    /// A file's transfer moved (`file:slot`, `file:progress`, `file:uploaded`,
    /// `file:downloaded`, `file:failed`).
    Transfer(TransferEvent),
    /// The connection changed (`connection`).
    Connection(ConnectionEvent),
    /// Something went wrong that the user should know (`error`).
    Error(ErrorEvent),
    /// Presence, roster, rooms, archive sync, CSI (`presence`, `subscription:request`, `roster`,
    /// `room:joined`, `mam:synced`, `csi`).
    Social(SocialEvent),
}

/// Events about people and rooms rather than single messages.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
#[serde(tag = "event")]
pub enum SocialEvent {
    /// A contact's resource came or went.
    #[serde(rename = "presence")]
    Presence {
        /// Full JID.
        from: String,
        /// Available or not.
        available: bool,
    },
    /// Someone asks to see our presence; answer with accept/deny.
    #[serde(rename = "subscription:request")]
    SubscriptionRequest {
        /// Bare JID.
        from: String,
    },
    /// A roster entry changed.
    #[serde(rename = "roster")]
    Roster {
        /// Bare JID.
        jid: String,
        /// none, to, from, both, remove.
        subscription: String,
    },
    /// A room confirmed our presence.
    #[serde(rename = "room:joined")]
    RoomJoined {
        /// Room bare JID.
        room: String,
        /// Our nick.
        nick: String,
    },
    /// A room had dropped us while the stream lived (a self-ping, XEP-0410, said so): it is
    /// being joined again, and what was posted meanwhile is caught up from its archive.
    #[serde(rename = "room:rejoining")]
    RoomRejoining {
        /// Room bare JID.
        room: String,
        /// What the room answered.
        reason: String,
    },
    /// The user's bookmarks (XEP-0402) joined or left a room on this device: another device of
    /// theirs joined or left it, or the server's list said so at login.
    #[serde(rename = "room:bookmark")]
    RoomBookmark {
        /// Room bare JID.
        room: String,
        /// Joined (else left).
        joined: bool,
    },
    /// What a contact (or our own account) publishes of itself changed: its avatar, nickname
    /// or name (read it with `profile`).
    #[serde(rename = "profile")]
    Profile {
        /// Bare JID.
        jid: String,
    },
    /// Events were dropped on the way to this listener (it fell behind): read the account's
    /// state again from the store, which has all of it.
    #[serde(rename = "events:missed")]
    EventsMissed {
        /// How many.
        #[ts(type = "number")]
        count: u64,
    },
    /// An archive catch-up finished.
    #[serde(rename = "mam:synced")]
    MamSynced {
        /// The archive (own bare JID or a room).
        archive: String,
        /// New messages stored.
        #[ts(type = "number")]
        count: u64,
    },
    /// The server was told our client state (XEP-0352).
    #[serde(rename = "csi")]
    Csi {
        /// `inactive` or `active`.
        state: &'static str,
    },
    /// A contact's chat state (XEP-0085): typing, stopped, or gone from the conversation. Never
    /// stored; forget it when a message from them arrives or the connection drops.
    #[serde(rename = "chat:state")]
    ChatState {
        /// The contact's bare JID.
        from: String,
        /// `composing`, `paused`, `active`, `inactive` or `gone`.
        state: crate::chat_state::ChatState,
    },
    /// The server answered a push request (XEP-0357).
    #[serde(rename = "push")]
    Push {
        /// `enabled`, `disabled` or `refused`.
        state: &'static str,
        /// The app server's JID.
        service: String,
        /// The node.
        node: String,
        /// Why it was refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        error: Option<String>,
    },
    /// A blocklist entry changed (XEP-0191): the server confirmed the user's block or unblock,
    /// refused it, or another device of ours changed the list.
    #[serde(rename = "blocking")]
    Blocking {
        /// The entry: a bare or full JID, or a domain.
        jid: String,
        /// `blocked`, `unblocked` or `refused`.
        state: &'static str,
        /// Why the server refused it (the entry keeps the user's wish, told again on the next
        /// session; a blocked entry stays blocked here meanwhile).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        error: Option<String>,
    },
}

/// An outgoing message's state change.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
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
    #[ts(optional)]
    pub error: Option<String>,
}

/// A message changed because of another one: a correction, a retraction, or reactions.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct UpdatedEvent {
    /// `message:updated`.
    pub event: &'static str,
    /// The changed message's id.
    pub id: String,
    /// The conversation.
    pub peer: String,
    /// What changed it.
    pub action: crate::store::Action,
}

/// A file's transfer moved on.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct TransferEvent {
    /// `file:slot`, `file:progress`, `file:uploaded`, `file:downloaded` or `file:failed`.
    pub event: &'static str,
    /// The message's local key (its id is in `id` when known).
    #[ts(type = "number")]
    pub key: i64,
    /// The message's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub id: Option<String>,
    /// Bytes moved so far.
    #[ts(type = "number")]
    pub done: u64,
    /// Bytes in all, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub total: Option<u64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub error: Option<String>,
}

/// A new message learnt from the network: incoming, or ours from another device.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct ReceivedEvent {
    /// Always `message:received`.
    pub event: &'static str,
    /// The message id.
    pub id: String,
    /// The other side's bare JID (the room, for group chat).
    pub from: String,
    /// The text.
    pub body: String,
    /// `in`, or `out` for our own message sent from another device.
    pub direction: crate::delivery::Direction,
    /// For group chat: the room.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub room: Option<String>,
    /// For group chat: the sender's nick.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub nick: Option<String>,
}

/// Connection states.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, TS)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    /// Connecting, authenticating, resuming or binding.
    Connecting,
    /// The session is up.
    Online,
    /// Not connected; see `reason` and `retry_in_ms`.
    Offline,
}

/// The kind of an error event: the one list of them (the CLI prints it lowercase as `kind`; the
/// desktop and the bindings show or branch on it). The first eight are also [`crate::Error`]'s
/// kinds (its [`crate::Error::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Bad arguments or configuration (a malformed JID, a missing CA file, ...).
    Usage,
    /// The server refused the credentials. Final: never retried.
    Auth,
    /// TLS failed or the certificate is not trusted. Final.
    Tls,
    /// The network failed; the client retries with backoff.
    Network,
    /// The server broke the protocol; the client reconnects.
    Protocol,
    /// The store failed (full, locked, damaged, not a Tether database).
    Database,
    /// A deadline the caller set passed.
    Timeout,
    /// Tether itself failed (a background thread panicked): a bug.
    Internal,
    /// A stanza could not be used: malformed, or an outbox row that cannot become a stanza.
    Stanza,
    /// A forgery was refused: a carbon, an archive result or a roster push from someone not
    /// entitled to send it. Nothing of it was stored.
    Security,
    /// The archive catch-up failed or was skipped for an archive.
    Mam,
    /// The roster fetch failed.
    Roster,
    /// A presence error from a contact or a room.
    Presence,
}

impl ErrorKind {
    /// The lowercase name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::Auth => "auth",
            ErrorKind::Tls => "tls",
            ErrorKind::Network => "network",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Database => "database",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
            ErrorKind::Stanza => "stanza",
            ErrorKind::Security => "security",
            ErrorKind::Mam => "mam",
            ErrorKind::Roster => "roster",
            ErrorKind::Presence => "presence",
        }
    }
}

/// A connection state change.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct ConnectionEvent {
    /// Always `connection`.
    pub event: &'static str,
    /// The new state.
    pub state: ConnState,
    /// For `online`: whether the previous stream was resumed (nothing was lost in between).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub resumed: Option<bool>,
    /// For `offline`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
    /// For `offline`: when the next attempt starts, if one will.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub retry_in_ms: Option<u64>,
}

/// An error worth showing.
#[derive(Clone, Debug, Serialize, PartialEq, TS)]
pub struct ErrorEvent {
    /// Always `error`.
    pub event: &'static str,
    /// What kind of error (see [`ErrorKind`]).
    pub kind: ErrorKind,
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
                direction: crate::delivery::Direction::In,
                room: None,
                nick: None,
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

    /// A transfer event.
    pub fn transfer(
        event: &'static str,
        key: i64,
        done: u64,
        total: Option<u64>,
        error: Option<String>,
    ) -> Event {
        Event::Transfer(TransferEvent {
            event,
            key,
            id: None,
            done,
            total,
            error,
        })
    }

    /// A CSI event.
    pub fn csi(inactive: bool) -> Event {
        Event::Social(SocialEvent::Csi {
            state: if inactive { "inactive" } else { "active" },
        })
    }

    /// An error event.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Event {
        Event::Error(ErrorEvent {
            event: "error",
            kind,
            message: message.into(),
        })
    }
}
