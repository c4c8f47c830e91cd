//! The records, enums and errors that cross the FFI, and their conversions from the core's types.
//! Nothing here decides anything: each type mirrors one of the core's.

use tether_core::events::{ConnState, Event, SocialEvent};
use tether_core::store::{Contact as CoreContact, Conversation as CoreConversation, MessageRow};

/// Why a call failed. Mirrors `tether_core::Error`'s classes. (The field is `reason`, not
/// `message`, which Kotlin's `Exception` already has.)
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TetherError {
    /// Bad arguments (a malformed JID, an empty nick, a missing CA file, ...).
    #[error("{reason}")]
    Usage {
        /// What was wrong.
        reason: String,
    },
    /// The server rejected the credentials. Final: the client stops until the user acts.
    #[error("{reason}")]
    Auth {
        /// The server's reason.
        reason: String,
    },
    /// TLS failed or the certificate is not trusted. Final.
    #[error("{reason}")]
    Tls {
        /// What failed.
        reason: String,
    },
    /// The network failed. The client retries by itself.
    #[error("{reason}")]
    Network {
        /// What failed.
        reason: String,
    },
    /// The server broke the protocol.
    #[error("{reason}")]
    Protocol {
        /// What it did.
        reason: String,
    },
    /// The database failed, or is not a Tether database, or is damaged. Nothing was changed.
    #[error("{reason}")]
    Database {
        /// What failed.
        reason: String,
    },
    /// A deadline passed.
    #[error("{reason}")]
    Timeout {
        /// What was waited for.
        reason: String,
    },
    /// Tether itself failed (a background thread panicked): a bug, never the app's doing.
    #[error("{reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
    /// The client was closed; open a new one.
    #[error("{reason}")]
    Closed {
        /// What was asked of it.
        reason: String,
    },
}

impl From<tether_core::Error> for TetherError {
    fn from(e: tether_core::Error) -> Self {
        use tether_core::events::ErrorKind as K;
        let reason = e.to_string();
        // The core's one classification of its errors ([`tether_core::Error::kind`]).
        match e.kind() {
            K::Usage => TetherError::Usage { reason },
            K::Auth => TetherError::Auth { reason },
            K::Tls => TetherError::Tls { reason },
            K::Network => TetherError::Network { reason },
            K::Database => TetherError::Database { reason },
            K::Timeout => TetherError::Timeout { reason },
            K::Internal => TetherError::Internal { reason },
            K::Protocol | K::Stanza | K::Security | K::Mam | K::Roster | K::Presence => {
                TetherError::Protocol { reason }
            }
        }
    }
}

impl From<tether_core::store::StoreError> for TetherError {
    fn from(e: tether_core::store::StoreError) -> Self {
        tether_core::Error::from(e).into()
    }
}

/// A message's delivery state (see DESIGN.md's state machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum DeliveryState {
    /// Committed, not yet written to a stream.
    Queued,
    /// Written to a stream, not yet acked by the server.
    Sent,
    /// The stream broke while it was unacked; resumption may still save it.
    Hibernated,
    /// Re-sent after the stream was resumed.
    Retrying,
    /// The stream was lost for good before the server confirmed it: the account's archive is
    /// being asked whether the server has it, before the user is.
    Checking,
    /// The server has it.
    Acked,
    /// A room echoed it back.
    Reflected,
    /// The recipient's device has it (XEP-0184).
    Delivered,
    /// The recipient has seen it (XEP-0333).
    Displayed,
    /// Not confirmed and cannot be resumed, or refused: ask the user to resend or discard.
    Failed,
    /// The user chose not to resend it.
    Discarded,
    /// An incoming message.
    Received,
}

impl From<tether_core::State> for DeliveryState {
    fn from(s: tether_core::State) -> Self {
        use tether_core::State as S;
        match s {
            S::Queued => DeliveryState::Queued,
            S::Sent => DeliveryState::Sent,
            S::Hibernated => DeliveryState::Hibernated,
            S::Retrying => DeliveryState::Retrying,
            S::Checking => DeliveryState::Checking,
            S::Acked => DeliveryState::Acked,
            S::Reflected => DeliveryState::Reflected,
            S::Delivered => DeliveryState::Delivered,
            S::Displayed => DeliveryState::Displayed,
            S::Failed => DeliveryState::Failed,
            S::Discarded => DeliveryState::Discarded,
            S::Received => DeliveryState::Received,
        }
    }
}

impl From<DeliveryState> for tether_core::State {
    fn from(s: DeliveryState) -> Self {
        use tether_core::State as S;
        match s {
            DeliveryState::Queued => S::Queued,
            DeliveryState::Sent => S::Sent,
            DeliveryState::Hibernated => S::Hibernated,
            DeliveryState::Retrying => S::Retrying,
            DeliveryState::Checking => S::Checking,
            DeliveryState::Acked => S::Acked,
            DeliveryState::Reflected => S::Reflected,
            DeliveryState::Delivered => S::Delivered,
            DeliveryState::Displayed => S::Displayed,
            DeliveryState::Failed => S::Failed,
            DeliveryState::Discarded => S::Discarded,
            DeliveryState::Received => S::Received,
        }
    }
}

/// Whether a message is ours or theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Direction {
    /// Sent by this account (from this or another device).
    Outgoing,
    /// Received by this account.
    Incoming,
}

impl From<tether_core::Direction> for Direction {
    fn from(d: tether_core::Direction) -> Self {
        match d {
            tether_core::Direction::Out => Direction::Outgoing,
            tether_core::Direction::In => Direction::Incoming,
        }
    }
}

/// The connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Connecting, authenticating, resuming or binding.
    Connecting,
    /// The session is up.
    Online,
    /// Not connected.
    Offline,
}

impl From<ConnState> for ConnectionState {
    fn from(s: ConnState) -> Self {
        match s {
            ConnState::Connecting => ConnectionState::Connecting,
            ConnState::Online => ConnectionState::Online,
            ConnState::Offline => ConnectionState::Offline,
        }
    }
}

/// One stored message.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Message {
    /// Local order; page backwards with it.
    pub seq: i64,
    /// The stanza id, kept across resends.
    pub id: String,
    /// The other side's bare JID (the room, for group chat).
    pub peer: String,
    /// Ours or theirs.
    pub direction: Direction,
    /// The text.
    pub body: String,
    /// The delivery state.
    pub state: DeliveryState,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Times written to a stream.
    pub attempts: i64,
    /// Committed locally (ms since the epoch).
    pub created_at_ms: i64,
    /// Last state change (ms).
    pub updated_at_ms: i64,
    /// Acked by the server (ms).
    pub acked_at_ms: Option<i64>,
    /// The sender's or server's timestamp for incoming messages (ms).
    pub server_ts_ms: Option<i64>,
    /// Group chat.
    pub groupchat: bool,
    /// Sent by another device of this account.
    pub other_device: bool,
    /// For group chat: the sender's nick.
    pub from_nick: Option<String>,
    /// What this row does to another message; `None` for a message of its own (maybe a reply).
    /// `page()` lists only messages of their own; `messages()` and `failed_messages()` list all.
    pub action: Option<MessageAction>,
    /// The id of the message it acts on or answers, as the stanza names it.
    pub target: Option<String>,
    /// The text was corrected (`body` is the newest version; `edits()` has them all).
    pub edited: bool,
    /// The sender took it back: show a placeholder instead of the body.
    pub retracted: bool,
    /// Reactions to it.
    pub reactions: Vec<Reaction>,
    /// For a reply: the message it answers, as this device has it (never the sender's quote).
    pub reply_to: Option<QuotedMessage>,
    /// The file it carries, if any.
    pub file: Option<FileInfo>,
    /// A direct invitation (XEP-0249) to this room (its bare JID): offer to join it.
    pub invite: Option<String>,
}

/// A file on a message (mirrors `tether_core::store::Attachment`).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FileInfo {
    /// The file's name (safe to show and to save under).
    pub name: String,
    /// Bytes (as announced, for theirs).
    pub size: Option<i64>,
    /// MIME type.
    pub media_type: Option<String>,
    /// SHA-256 (hex).
    pub sha256: Option<String>,
    /// Where it can be fetched.
    pub url: Option<String>,
    /// `slot-needed`, `uploading`, `uploaded`, `remote`, `downloading`, `downloaded`, `failed`.
    pub transfer: String,
    /// Bytes moved in the current transfer.
    pub done_bytes: i64,
    /// Why the transfer failed.
    pub error: Option<String>,
    /// Where it is on this device, once here.
    pub local_path: Option<String>,
}

/// What a message does to an earlier one (mirrors `tether_core::store::Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MessageAction {
    /// XEP-0308: replaces its text.
    Correct,
    /// XEP-0424: takes it back.
    Retract,
    /// XEP-0444: the sender's reactions to it.
    React,
}

impl From<tether_core::store::Action> for MessageAction {
    fn from(a: tether_core::store::Action) -> Self {
        use tether_core::store::Action as A;
        match a {
            A::Correct => MessageAction::Correct,
            A::Retract => MessageAction::Retract,
            A::React => MessageAction::React,
        }
    }
}

/// One emoji of a message's reactions.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Reaction {
    /// The emoji.
    pub emoji: String,
    /// How many reacted with it.
    pub count: i64,
    /// Whether we did.
    pub mine: bool,
}

/// The message a reply answers.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct QuotedMessage {
    /// Its id.
    pub id: String,
    /// Its current text; `None` if it was retracted.
    pub body: Option<String>,
    /// Ours or theirs.
    pub direction: Direction,
    /// For group chat: its sender's nick.
    pub from_nick: Option<String>,
}

/// One version of a message's text.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct EditVersion {
    /// The text.
    pub body: String,
    /// When it was written (ms since the epoch).
    pub at_ms: i64,
}

impl From<tether_core::store::Edit> for EditVersion {
    fn from(e: tether_core::store::Edit) -> Self {
        EditVersion {
            body: e.body,
            at_ms: e.at,
        }
    }
}

/// A message found by [`crate::TetherClient::search`].
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct SearchHit {
    /// Where the next page starts: pass the last hit's as `before`.
    pub cursor: i64,
    /// The message as its conversation shows it (its current text); page around its `seq` to
    /// show it in its history.
    pub message: Message,
}

impl From<tether_core::store::SearchHit> for SearchHit {
    fn from(h: tether_core::store::SearchHit) -> Self {
        SearchHit {
            cursor: h.cursor,
            message: h.message.into(),
        }
    }
}

/// A XEP-0085 chat state (mirrors `tether_core::chat_state::ChatState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ChatState {
    /// Paying attention.
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

impl From<tether_core::chat_state::ChatState> for ChatState {
    fn from(s: tether_core::chat_state::ChatState) -> Self {
        use tether_core::chat_state::ChatState as C;
        match s {
            C::Active => ChatState::Active,
            C::Composing => ChatState::Composing,
            C::Paused => ChatState::Paused,
            C::Inactive => ChatState::Inactive,
            C::Gone => ChatState::Gone,
        }
    }
}

impl From<ChatState> for tether_core::chat_state::ChatState {
    fn from(s: ChatState) -> Self {
        use tether_core::chat_state::ChatState as C;
        match s {
            ChatState::Active => C::Active,
            ChatState::Composing => C::Composing,
            ChatState::Paused => C::Paused,
            ChatState::Inactive => C::Inactive,
            ChatState::Gone => C::Gone,
        }
    }
}

impl From<MessageRow> for Message {
    fn from(m: MessageRow) -> Self {
        Message {
            seq: m.seq,
            id: m.id,
            peer: m.peer,
            direction: m.direction.into(),
            body: m.body,
            state: m.state.into(),
            error: m.error,
            attempts: m.attempts,
            created_at_ms: m.created_at,
            updated_at_ms: m.updated_at,
            acked_at_ms: m.acked_at,
            server_ts_ms: m.server_ts,
            groupchat: m.kind == "groupchat",
            other_device: m.other_device,
            from_nick: m.from_nick,
            action: m.action.map(Into::into),
            target: m.target,
            edited: m.edited,
            retracted: m.retracted,
            reactions: m
                .reactions
                .into_iter()
                .map(|r| Reaction {
                    emoji: r.emoji,
                    count: r.count,
                    mine: r.mine,
                })
                .collect(),
            invite: m.invite,
            file: m.file.map(|f| FileInfo {
                name: f.name,
                size: f.size,
                media_type: f.media_type,
                sha256: f.sha256,
                url: f.url,
                transfer: f.transfer,
                done_bytes: f.done_bytes,
                error: f.error,
                local_path: f.local_path,
            }),
            reply_to: m.reply_to.map(|q| QuotedMessage {
                id: q.id,
                body: q.body,
                direction: q.direction.into(),
                from_nick: q.from_nick,
            }),
        }
    }
}

/// One outgoing message for [`crate::TetherClient::send_many`].
#[derive(Clone, Debug, uniffi::Record)]
pub struct OutgoingMessage {
    /// The recipient's bare JID.
    pub to: String,
    /// The text.
    pub body: String,
}

/// One entry of the conversation list.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Conversation {
    /// The contact or room.
    pub peer: String,
    /// Group chat.
    pub groupchat: bool,
    /// The newest message's text.
    pub last_body: String,
    /// When its newest message was sent (ms): the sender's or the server's timestamp when one
    /// came with it, else when it was committed here.
    pub last_at_ms: i64,
    /// Whether the newest message is ours.
    pub last_outgoing: bool,
    /// Incoming messages not yet read.
    pub unread: i64,
    /// Failed messages waiting for the user's decision.
    pub failed: i64,
}

impl From<CoreConversation> for Conversation {
    fn from(c: CoreConversation) -> Self {
        Conversation {
            peer: c.peer,
            groupchat: c.kind == "groupchat",
            last_body: c.last_body,
            last_at_ms: c.last_at,
            last_outgoing: c.last_outgoing,
            unread: c.unread,
            failed: c.failed,
        }
    }
}

/// A group chat this account is in (or wants to be in).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Room {
    /// The room's bare JID.
    pub jid: String,
    /// Our nick.
    pub nick: String,
    /// Whether the room confirmed our presence on the current session.
    pub joined: bool,
}

impl From<tether_core::store::Room> for Room {
    fn from(r: tether_core::store::Room) -> Self {
        Room {
            jid: r.jid,
            nick: r.nick,
            joined: r.joined,
        }
    }
}

/// Someone in a room (XEP-0045), as the room last said.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RoomOccupant {
    /// Their nickname in the room.
    pub nick: String,
    /// Their real bare JID, when the room shows it.
    pub jid: Option<String>,
    /// `moderator`, `participant`, `visitor`.
    pub role: String,
    /// `owner`, `admin`, `member`, `none`.
    pub affiliation: String,
}

impl From<tether_core::store::Occupant> for RoomOccupant {
    fn from(o: tether_core::store::Occupant) -> Self {
        RoomOccupant {
            nick: o.nick,
            jid: o.jid,
            role: o.role,
            affiliation: o.affiliation,
        }
    }
}

/// A roster entry.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Contact {
    /// Bare JID.
    pub jid: String,
    /// Display name.
    pub name: Option<String>,
    /// `none`, `to`, `from` or `both`.
    pub subscription: String,
    /// A subscription request of ours is pending.
    pub ask: bool,
    /// Last presence seen: `available` or `unavailable`.
    pub presence: String,
    /// The nickname they publish (else their vCard's full name): the name to show when `name`
    /// is none.
    pub nick: Option<String>,
    /// Their avatar's SHA-1 (`TetherClient.avatar` gives the image).
    pub avatar: Option<String>,
}

impl From<CoreContact> for Contact {
    fn from(c: CoreContact) -> Self {
        Contact {
            jid: c.jid,
            name: c.name,
            subscription: c.subscription,
            ask: c.ask,
            presence: c.presence,
            nick: c.nick,
            avatar: c.avatar,
        }
    }
}

/// What a contact (or the user's own account) publishes of itself: XEP-0172 nickname, vCard
/// name (XEP-0292, XEP-0054), avatar (XEP-0084, XEP-0153).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Profile {
    /// Bare JID.
    pub jid: String,
    /// The nickname they chose.
    pub nick: Option<String>,
    /// Their full name.
    pub full_name: Option<String>,
    /// Their avatar's SHA-1.
    pub avatar: Option<String>,
    /// The avatar's image type.
    pub avatar_mime: Option<String>,
}

impl From<tether_core::store::Profile> for Profile {
    fn from(p: tether_core::store::Profile) -> Self {
        Profile {
            jid: p.jid,
            nick: p.nick,
            full_name: p.full_name,
            avatar: p.avatar,
            avatar_mime: p.avatar_mime,
        }
    }
}

/// An avatar's image, as stored (checked: an image whose SHA-1 is its id).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AvatarImage {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub mime: String,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The account of a database.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AccountInfo {
    /// The bare JID.
    pub jid: String,
    /// `host:port` used instead of the SRV lookup, if set.
    pub server: Option<String>,
    /// The resource this database always binds.
    pub resource: String,
}

/// An account of a store, as [`crate::client::accounts`] lists it.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AccountEntry {
    /// The bare JID.
    pub jid: String,
    /// Whether it connects (a disabled account keeps its history and queue).
    pub enabled: bool,
}

/// A row of the unified conversation list: a conversation and the account it belongs to.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AccountConversation {
    /// The account's bare JID.
    pub account: String,
    /// The conversation.
    pub conversation: Conversation,
}

impl From<tether_core::inbox::InboxConversation> for AccountConversation {
    fn from(c: tether_core::inbox::InboxConversation) -> Self {
        AccountConversation {
            account: c.account,
            conversation: c.conversation.into(),
        }
    }
}

impl From<&tether_core::store::Account> for AccountInfo {
    fn from(a: &tether_core::store::Account) -> Self {
        AccountInfo {
            jid: a.jid.clone(),
            server: a.server.clone(),
            resource: a.resource.clone(),
        }
    }
}

/// What to create with [`crate::add_account`].
#[derive(Clone, Debug, uniffi::Record)]
pub struct AccountSettings {
    /// The bare JID.
    pub jid: String,
    /// The password to store in the (owner-only) database. Leave it empty to keep it in the
    /// platform's keychain instead and hand it over with `set_password` after each `open`.
    pub password: String,
    /// `host:port` to connect to instead of the SRV lookup.
    pub server: Option<String>,
    /// A PEM file of CA certificates to trust instead of the system's (a test server's CA).
    pub ca_file: Option<String>,
    /// Skip TLS entirely. For loopback tests only: the password would cross the network in clear.
    pub insecure_plaintext_for_tests: bool,
    /// `server` speaks TLS from the first byte (XEP-0368 Direct TLS) instead of STARTTLS.
    #[uniffi(default = false)]
    pub direct_tls: bool,
}

/// How a [`crate::TetherClient::wake`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum WakeOutcome {
    /// Everything the server held is stored and acked, everything queued sent; the stream is
    /// kept for the app.
    Done,
    /// The deadline came first: what is committed stays (and is acked); the rest comes next time.
    Deadline,
    /// The app process drives the stream: nothing was done (show a generic notification).
    Yielded,
    /// No session before the deadline (`error` says why).
    Offline,
}

impl From<tether_core::wake::WakeOutcome> for WakeOutcome {
    fn from(o: tether_core::wake::WakeOutcome) -> Self {
        use tether_core::wake::WakeOutcome as W;
        match o {
            W::Done => WakeOutcome::Done,
            W::Deadline => WakeOutcome::Deadline,
            W::Yielded => WakeOutcome::Yielded,
            W::Offline => WakeOutcome::Offline,
        }
    }
}

/// New messages from one conversation, for a notification.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct WakeConversation {
    /// The contact's or room's bare JID.
    pub peer: String,
    /// How many new messages.
    pub count: u64,
    /// Who wrote them, each once.
    pub senders: Vec<String>,
    /// Their texts, oldest first, when asked for (empty otherwise).
    pub bodies: Vec<String>,
}

/// What [`crate::TetherClient::wake`] returns.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct WakeSummary {
    /// How it ended.
    pub outcome: WakeOutcome,
    /// New messages in all.
    pub new_messages: u64,
    /// Per conversation.
    pub conversations: Vec<WakeConversation>,
    /// Why, for `Offline`.
    pub error: Option<String>,
    /// How long it took (ms).
    pub elapsed_ms: u64,
}

impl From<tether_core::wake::WakeSummary> for WakeSummary {
    fn from(s: tether_core::wake::WakeSummary) -> Self {
        WakeSummary {
            outcome: s.outcome.into(),
            new_messages: s.new_messages,
            conversations: s
                .conversations
                .into_iter()
                .map(|c| WakeConversation {
                    peer: c.peer,
                    count: c.count,
                    senders: c.senders,
                    bodies: c.bodies,
                })
                .collect(),
            error: s.error,
            elapsed_ms: s.elapsed_ms,
        }
    }
}

/// Tunables for [`crate::TetherClient::open`]; the defaults suit a phone (the core's mobile
/// profile).
#[derive(Clone, Debug, uniffi::Record)]
pub struct ClientOptions {
    /// First reconnect delay (ms); doubles with jitter per failure.
    #[uniffi(default = 500)]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay (ms).
    #[uniffi(default = 60000)]
    pub reconnect_max_ms: u64,
    /// Silence (s) after which the client checks the link with an ack request. The mobile
    /// profile's 300 s (Conversations and Monal ping as rarely): at most 12 wake-ups an idle
    /// hour; after `network_changed`, `resume` and `wake` the link is checked at once instead.
    #[uniffi(default = 300)]
    pub keepalive_secs: u64,
    /// Time (s) the server has to answer that before the link counts as dead.
    #[uniffi(default = 10)]
    pub dead_after_secs: u64,
    /// Time (s) the immediate check after `network_changed` or `resume` has.
    #[uniffi(default = 5)]
    pub quick_probe_secs: u64,
    /// How many events the listener may fall behind before older ones are dropped and it gets
    /// [`TetherEvent::EventsMissed`] (the store still has every state). Bounds memory.
    #[uniffi(default = 65536)]
    pub event_buffer: u32,
}

/// The core's defaults (`tether_core::contract::Defaults`). uniffi needs the foreign languages'
/// defaults as literals in the attributes above; a test checks they are these.
impl Default for ClientOptions {
    fn default() -> Self {
        let d = tether_core::contract::Defaults::profile(tether_core::config::Profile::Mobile);
        ClientOptions {
            reconnect_min_ms: d.reconnect_min_ms,
            reconnect_max_ms: d.reconnect_max_ms,
            keepalive_secs: d.keepalive_secs,
            dead_after_secs: d.dead_after_secs,
            quick_probe_secs: d.quick_probe_secs,
            event_buffer: tether_core::config::EVENT_BUFFER as u32,
        }
    }
}

#[cfg(test)]
mod defaults_tests {
    /// The literal defaults the foreign languages get (`#[uniffi(default = N)]` on each field of
    /// `ClientOptions`) are the core's: read from this file's source, compared with `Default`.
    #[test]
    fn the_foreign_defaults_are_the_cores() {
        let src = include_str!("types.rs");
        let start = src.find("pub struct ClientOptions").expect("ClientOptions");
        let body = &src[start..src[start..].find("\n}").map(|e| start + e).unwrap()];
        let mut literal = None;
        let mut seen = 0;
        let d = super::ClientOptions::default();
        for line in body.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("#[uniffi(default = ") {
                literal = Some(
                    v.trim_end_matches(")]")
                        .replace('_', "")
                        .parse::<u64>()
                        .unwrap(),
                );
            } else if let Some(field) = line
                .strip_prefix("pub ")
                .filter(|f| !f.starts_with("struct"))
            {
                let name = field.split(':').next().unwrap();
                let want = match name {
                    "reconnect_min_ms" => d.reconnect_min_ms,
                    "reconnect_max_ms" => d.reconnect_max_ms,
                    "keepalive_secs" => d.keepalive_secs,
                    "dead_after_secs" => d.dead_after_secs,
                    "quick_probe_secs" => d.quick_probe_secs,
                    "event_buffer" => d.event_buffer as u64,
                    other => panic!("a new option {other}: add it here"),
                };
                assert_eq!(literal.take(), Some(want), "the uniffi default of {name}");
                seen += 1;
            }
        }
        assert_eq!(seen, 6);
    }
}

impl From<&ClientOptions> for tether_core::ClientConfig {
    fn from(o: &ClientOptions) -> Self {
        use std::time::Duration;
        tether_core::ClientConfig {
            reconnect_min: Duration::from_millis(o.reconnect_min_ms),
            reconnect_max: Duration::from_millis(o.reconnect_max_ms.max(o.reconnect_min_ms)),
            keepalive: Duration::from_secs(o.keepalive_secs.max(1)),
            dead_after: Duration::from_secs(o.dead_after_secs.max(1)),
            quick_probe: Duration::from_secs(o.quick_probe_secs.max(1)),
            event_buffer: o.event_buffer.max(1) as usize,
            ..tether_core::ClientConfig::profile(tether_core::config::Profile::Mobile)
        }
    }
}

/// Everything the listener hears. The names in the comments are the CLI's JSON event names.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum TetherEvent {
    /// An outgoing message changed state (`message:sent`, `message:written`, `message:hibernated`,
    /// `message:retry`, `message:acked`, `message:delivered`, `message:displayed`,
    /// `message:failed`, `message:discarded`, ...).
    MessageState {
        /// The event name, e.g. `message:acked`.
        name: String,
        /// The message id.
        id: String,
        /// The recipient.
        peer: String,
        /// The new state.
        state: DeliveryState,
        /// Why, for `message:failed`: show it with Resend / Discard.
        error: Option<String>,
    },
    /// A new message was committed (`message:received`): incoming, or ours from another device.
    /// Duplicates raise nothing.
    MessageReceived {
        /// The message id.
        id: String,
        /// The other side (the room, for group chat).
        from: String,
        /// The text.
        body: String,
        /// Theirs, or ours from another device.
        direction: Direction,
        /// For group chat: the room.
        room: Option<String>,
        /// For group chat: the sender's nick.
        nick: Option<String>,
    },
    /// A message was corrected, retracted or reacted to (`message:updated`): read it again.
    MessageUpdated {
        /// The changed message's id.
        id: String,
        /// The conversation.
        peer: String,
        /// What changed it.
        action: MessageAction,
    },
    /// A contact's chat state (`chat:state`): typing, stopped, gone. Never stored; forget it when
    /// a message from them arrives or the connection drops.
    ChatStateChanged {
        /// The contact's bare JID.
        from: String,
        /// The state.
        state: ChatState,
    },
    /// The server answered a push request (`push`): `enabled`, `disabled` or `refused`.
    Push {
        /// `enabled`, `disabled` or `refused`.
        state: String,
        /// The app server's JID.
        service: String,
        /// The node.
        node: String,
        /// Why it was refused.
        error: Option<String>,
    },
    /// A room had dropped us (`room:rejoining`, found by a XEP-0410 self-ping): it is being
    /// joined again and what was posted meanwhile caught up from its archive.
    RoomRejoining {
        /// Room bare JID.
        room: String,
        /// What the room answered.
        reason: String,
    },
    /// What a contact (or the user's own account) publishes of itself changed (`profile`):
    /// read it with `TetherClient.profile`.
    ProfileChanged {
        /// Bare JID.
        jid: String,
    },
    /// The user's bookmarks (XEP-0402) joined or left a room on this device (`room:bookmark`).
    RoomBookmark {
        /// Room bare JID.
        room: String,
        /// Joined (else left).
        joined: bool,
    },
    /// A blocklist entry changed (`blocking`, XEP-0191): the server confirmed a block or an
    /// unblock, refused it, or another device of the user's changed the list.
    Blocking {
        /// The entry: a bare or full JID, or a domain.
        jid: String,
        /// `blocked`, `unblocked` or `refused`.
        state: String,
        /// Why it was refused.
        error: Option<String>,
    },
    /// A file's transfer moved (`file:slot`, `file:progress`, `file:uploaded`,
    /// `file:downloaded`, `file:failed`).
    Transfer {
        /// The event name.
        name: String,
        /// The message's id.
        id: Option<String>,
        /// Bytes moved so far.
        done: u64,
        /// Bytes in all, if known.
        total: Option<u64>,
        /// Why it failed.
        error: Option<String>,
    },
    /// The connection changed (`connection`).
    Connection {
        /// The new state.
        state: ConnectionState,
        /// For `Online`: whether the previous stream was resumed (nothing lost in between).
        resumed: Option<bool>,
        /// For `Offline`: why.
        reason: Option<String>,
        /// For `Offline`: when the next attempt starts (absent when none will).
        retry_in_ms: Option<u64>,
    },
    /// Something the user should know (`error`); `kind` is `auth`, `tls`, `network`,
    /// `protocol`, `database`, `stanza`, `security`, ...
    Error {
        /// The class.
        kind: String,
        /// What happened.
        message: String,
    },
    /// A contact's resource came or went (`presence`).
    Presence {
        /// Full JID.
        from: String,
        /// Available or not.
        available: bool,
    },
    /// Someone asks to see our presence (`subscription:request`).
    SubscriptionRequest {
        /// Bare JID.
        from: String,
    },
    /// A roster entry changed (`roster`).
    Roster {
        /// Bare JID.
        jid: String,
        /// `none`, `to`, `from`, `both` or `remove`.
        subscription: String,
    },
    /// A room confirmed our presence (`room:joined`).
    RoomJoined {
        /// The room.
        room: String,
        /// Our nick.
        nick: String,
    },
    /// An archive catch-up finished (`mam:synced`).
    MamSynced {
        /// The archive: our bare JID or a room.
        archive: String,
        /// New messages stored.
        count: u64,
    },
    /// The server was told the app's state (`csi`): after `suspend()` / `resume()`.
    Csi {
        /// Inactive (background) or active.
        inactive: bool,
    },
    /// The listener fell more than `event_buffer` events behind and this many were dropped.
    /// Nothing is lost: reload what is on screen from the store.
    EventsMissed {
        /// How many.
        count: u64,
    },
    /// The client stopped: after `close()` (no error), or on a final error (wrong password,
    /// untrusted certificate, broken database) that needs the user. `connect()` starts it again.
    Stopped {
        /// Why, if it was an error.
        error: Option<TetherError>,
    },
}

impl From<Event> for TetherEvent {
    fn from(e: Event) -> Self {
        match e {
            Event::Message(m) => TetherEvent::MessageState {
                name: m.event.to_owned(),
                id: m.id,
                peer: m.peer,
                state: m.state.into(),
                error: m.error,
            },
            Event::Received(r) => TetherEvent::MessageReceived {
                id: r.id,
                from: r.from,
                body: r.body,
                direction: r.direction.into(),
                room: r.room,
                nick: r.nick,
            },
            Event::Updated(u) => TetherEvent::MessageUpdated {
                id: u.id,
                peer: u.peer,
                action: u.action.into(),
            },
            Event::Transfer(t) => TetherEvent::Transfer {
                name: t.event.to_owned(),
                id: t.id,
                done: t.done,
                total: t.total,
                error: t.error,
            },
            Event::Connection(c) => TetherEvent::Connection {
                state: c.state.into(),
                resumed: c.resumed,
                reason: c.reason,
                retry_in_ms: c.retry_in_ms,
            },
            Event::Error(e) => TetherEvent::Error {
                kind: e.kind.as_str().to_owned(),
                message: e.message,
            },
            Event::Social(s) => match s {
                SocialEvent::Presence { from, available } => {
                    TetherEvent::Presence { from, available }
                }
                SocialEvent::SubscriptionRequest { from } => {
                    TetherEvent::SubscriptionRequest { from }
                }
                SocialEvent::Roster { jid, subscription } => {
                    TetherEvent::Roster { jid, subscription }
                }
                SocialEvent::RoomJoined { room, nick } => TetherEvent::RoomJoined { room, nick },
                SocialEvent::MamSynced { archive, count } => {
                    TetherEvent::MamSynced { archive, count }
                }
                SocialEvent::EventsMissed { count } => TetherEvent::EventsMissed { count },
                SocialEvent::Csi { state } => TetherEvent::Csi {
                    inactive: state == "inactive",
                },
                SocialEvent::ChatState { from, state } => TetherEvent::ChatStateChanged {
                    from,
                    state: state.into(),
                },
                SocialEvent::Push {
                    state,
                    service,
                    node,
                    error,
                } => TetherEvent::Push {
                    state: state.to_owned(),
                    service,
                    node,
                    error,
                },
                SocialEvent::RoomBookmark { room, joined } => {
                    TetherEvent::RoomBookmark { room, joined }
                }
                SocialEvent::Profile { jid } => TetherEvent::ProfileChanged { jid },
                SocialEvent::RoomRejoining { room, reason } => {
                    TetherEvent::RoomRejoining { room, reason }
                }
                SocialEvent::Blocking { jid, state, error } => TetherEvent::Blocking {
                    jid,
                    state: state.to_owned(),
                    error,
                },
            },
        }
    }
}

/// One blocklist entry (XEP-0191).
#[derive(Clone, Debug, uniffi::Record)]
pub struct BlockedEntry {
    /// A bare or full JID, or a domain.
    pub jid: String,
    /// `block`, or `unblock` while the server has not confirmed the unblock.
    pub want: String,
    /// `pending`, `confirmed` or `refused`.
    pub state: String,
    /// Why the server refused it.
    pub error: Option<String>,
}

impl From<tether_core::store::BlockEntry> for BlockedEntry {
    fn from(e: tether_core::store::BlockEntry) -> Self {
        BlockedEntry {
            jid: e.jid,
            want: e.want.as_str().to_owned(),
            state: e.state.as_str().to_owned(),
            error: e.error,
        }
    }
}
