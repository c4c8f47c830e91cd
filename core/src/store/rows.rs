//! The message row as front ends see it, the inbound message as the engine hands it over, and the
//! one state move every other store module builds on: the base the store's modules share
//! (`messages`, `references` and `attachments` import it; it imports none of them).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use ts_rs::TS;

use super::Result;
use crate::delivery::{Direction, State};
use crate::sm::Seq;

/// A message as the CLI prints it and front ends show it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct MessageRow {
    /// Local order (for paging: ask for rows before this one).
    #[ts(type = "number")]
    pub seq: i64,
    /// The stanza id (kept across resends).
    pub id: String,
    /// XEP-0359 origin-id.
    pub origin_id: Option<String>,
    /// XEP-0359 stanza-id stamped by our server.
    pub stanza_id: Option<String>,
    /// Bare JID of the other side.
    pub peer: String,
    /// `out` or `in`.
    pub direction: Direction,
    /// The text.
    pub body: String,
    /// Delivery state.
    pub state: State,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Times written to a stream.
    #[ts(type = "number")]
    pub attempts: i64,
    /// Committed locally (ms since epoch).
    #[ts(type = "number")]
    pub created_at: i64,
    /// Last state change (ms).
    #[ts(type = "number")]
    pub updated_at: i64,
    /// Last written to a stream (ms).
    #[ts(type = "number | null")]
    pub sent_at: Option<i64>,
    /// Acked by the server (ms).
    #[ts(type = "number | null")]
    pub acked_at: Option<i64>,
    /// The sender's or server's timestamp, for inbound messages (ms).
    #[ts(type = "number | null")]
    pub server_ts: Option<i64>,
    /// `chat` or `groupchat`.
    pub kind: String,
    /// Sent by another device of this account (learnt from a carbon or the archive).
    pub other_device: bool,
    /// For group chat: the sender's nickname in the room.
    pub from_nick: Option<String>,
    /// What this row does to another message; `None` for a message of its own (maybe a reply).
    pub action: Option<Action>,
    /// The id of the message it acts on or replies to, as the stanza names it (the room's
    /// stanza-id in group chat).
    pub target: Option<String>,
    /// The text was corrected: `body` is the newest correction's, [`Store::edits`] has them all.
    pub edited: bool,
    /// The sender took the message back.
    pub retracted: bool,
    /// Reactions to the message: each emoji, how many reacted with it, whether we did.
    pub reactions: Vec<ReactionCount>,
    /// For a reply: the message it answers, as this store has it (never the quote the sender put
    /// in the body: that one could say anything). `None` until that message is here.
    pub reply_to: Option<Quoted>,
    /// The file it carries, if any.
    pub file: Option<Attachment>,
    /// A direct invitation (XEP-0249) to this room: its bare JID.
    pub invite: Option<String>,
    /// The row of the message it acts on or replies to, once it is here.
    #[serde(skip)]
    #[ts(skip)]
    pub target_key: Option<i64>,
}

/// What a message does to an earlier one.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash, TS)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// XEP-0308: replaces the text of a message of the same sender.
    Correct,
    /// XEP-0424: takes back a message of the same sender.
    Retract,
    /// XEP-0444: the sender's reactions to a message (a new set replaces the sender's old one).
    React,
}

impl Action {
    /// The name stored in `messages.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Correct => "correct",
            Action::Retract => "retract",
            Action::React => "react",
        }
    }

    /// The stored name back (`None` for an unknown one).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "correct" => Some(Action::Correct),
            "retract" => Some(Action::Retract),
            "react" => Some(Action::React),
            _ => None,
        }
    }
}

/// One emoji of a message's reactions.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct ReactionCount {
    /// The emoji.
    pub emoji: String,
    /// How many senders reacted with it.
    #[ts(type = "number")]
    pub count: i64,
    /// Whether we are one of them.
    pub mine: bool,
}

/// The message a reply answers.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Quoted {
    /// Its id.
    pub id: String,
    /// Its current text; `None` if it was retracted.
    pub body: Option<String>,
    /// Its direction (`out`: we wrote it).
    pub direction: Direction,
    /// For group chat: its sender's nickname.
    pub from_nick: Option<String>,
}

/// A message that changed state: the material of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// Local key.
    pub key: i64,
    /// Stanza id.
    pub id: String,
    /// Bare JID of the other side.
    pub peer: String,
    /// The new state.
    pub state: State,
    /// The error, for `failed`.
    pub error: Option<String>,
    /// The body, for `received` (the event carries it).
    pub body: Option<String>,
}

/// A message learnt from the network (live, a carbon, or the archive), parsed and checked by the
/// connection layer. Usually incoming; `Out` for our own messages seen through a carbon or the archive.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    /// `In`, or `Out` for a message of this account sent from another device.
    pub direction: Direction,
    /// `chat` or `groupchat`.
    pub kind: &'static str,
    /// For group chat: the sender's nickname.
    pub from_nick: Option<String>,
    /// Answer with a XEP-0184 receipt to this full JID (live messages that asked for one).
    pub receipt_to: Option<String>,
    /// Stanza id, if any.
    pub id: Option<String>,
    /// XEP-0359 origin-id, if any.
    pub origin_id: Option<String>,
    /// XEP-0359 stanza-id whose `by` is our own bare JID, if any.
    pub stanza_id: Option<String>,
    /// The other side's bare JID (the room, for group chat).
    pub peer: String,
    /// The text.
    pub body: String,
    /// XEP-0203 delay stamp (ms), if any.
    pub server_ts: Option<i64>,
    /// What it does to another message, if anything.
    pub action: Option<Action>,
    /// The id of the message it acts on or replies to.
    pub target: Option<String>,
    /// For a reaction: the sender's whole set of emoji now.
    pub reactions: Vec<String>,
    /// A file it links to (XEP-0066, with XEP-0446 metadata).
    pub file: Option<InboundFile>,
    /// A direct invitation to this room (XEP-0249), its bare JID.
    pub invite: Option<String>,
}

/// A file on a message, as front ends show it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Attachment {
    /// The file's name (safe to show and to save under).
    pub name: String,
    /// Bytes (as announced, for theirs).
    #[ts(type = "number | null")]
    pub size: Option<i64>,
    /// MIME type, if known.
    pub media_type: Option<String>,
    /// SHA-256 (hex): ours always; theirs once downloaded, or as announced.
    pub sha256: Option<String>,
    /// Where it can be fetched (ours once uploaded).
    pub url: Option<String>,
    /// `slot-needed`, `uploading`, `uploaded`, `remote`, `downloading`, `downloaded`, `failed`.
    pub transfer: String,
    /// Bytes moved so far in the current transfer.
    #[ts(type = "number")]
    pub done_bytes: i64,
    /// Why the transfer failed.
    pub error: Option<String>,
    /// Where the file is on this device, once it is here.
    pub local_path: Option<String>,
}

/// A file announced by an incoming message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InboundFile {
    /// Where to fetch it.
    pub url: String,
    /// Its name (made safe).
    pub name: String,
    /// Announced size.
    pub size: Option<u64>,
    /// Announced MIME type.
    pub media_type: Option<String>,
    /// Announced SHA-256 (hex).
    pub sha256: Option<String>,
    /// Why it will not be fetched (a non-HTTPS link, say); stored as `failed` with it.
    pub refused: Option<String>,
}

/// The columns of a [`MessageRow`] of `messages m`: the body is the newest correction's, if any.
pub(crate) const ROW_COLUMNS: &str =
    "m.seq_local, m.id, m.origin_id, m.stanza_id, m.peer, m.direction,
    coalesce((SELECT c.body FROM messages c WHERE c.account_id = m.account_id
                AND c.target_key = m.seq_local AND c.action = 'correct' AND c.state != 'discarded'
              ORDER BY coalesce(c.server_ts, c.created_at) DESC, c.seq_local DESC LIMIT 1), m.body),
    m.state, m.error, m.attempts, m.created_at, m.updated_at, m.sent_at, m.acked_at, m.server_ts,
    m.kind, m.other_device, m.from_nick, m.action, m.target, m.target_key,
    m.invite,
    EXISTS (SELECT 1 FROM messages c WHERE c.account_id = m.account_id
              AND c.target_key = m.seq_local AND c.action = 'correct' AND c.state != 'discarded'),
    EXISTS (SELECT 1 FROM messages c WHERE c.account_id = m.account_id
              AND c.target_key = m.seq_local AND c.action = 'retract' AND c.state != 'discarded')";

pub(super) fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    row_to_message_offset(r, 0)
}

/// [`row_to_message`] for a query whose [`ROW_COLUMNS`] start at column `o`.
pub(super) fn row_to_message_offset(
    r: &rusqlite::Row<'_>,
    o: usize,
) -> rusqlite::Result<MessageRow> {
    let dir: String = r.get(o + 5)?;
    let state: String = r.get(o + 7)?;
    Ok(MessageRow {
        seq: r.get(o)?,
        id: r.get(o + 1)?,
        origin_id: r.get(o + 2)?,
        stanza_id: r.get(o + 3)?,
        peer: r.get(o + 4)?,
        direction: if dir == "in" {
            Direction::In
        } else {
            Direction::Out
        },
        body: r.get(o + 6)?,
        state: state.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                o + 7,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        })?,
        error: r.get(o + 8)?,
        attempts: r.get(o + 9)?,
        created_at: r.get(o + 10)?,
        updated_at: r.get(o + 11)?,
        sent_at: r.get(o + 12)?,
        acked_at: r.get(o + 13)?,
        server_ts: r.get(o + 14)?,
        kind: r.get(o + 15)?,
        other_device: r.get(o + 16)?,
        from_nick: r.get(o + 17)?,
        action: r
            .get::<_, Option<String>>(o + 18)?
            .as_deref()
            .and_then(Action::parse),
        target: r.get(o + 19)?,
        target_key: r.get(o + 20)?,
        invite: r.get(o + 21)?,
        edited: r.get(o + 22)?,
        retracted: r.get(o + 23)?,
        reactions: Vec::new(),
        reply_to: None,
        file: None,
    })
}

/// Moves one message (by key) to `to` if its current state allows it. Returns the change.
///
/// The row is read by its key and the machine's rule checked here; the UPDATE then names the state
/// it read. (An `UPDATE ... RETURNING` did both in one statement, but SQLite gathers RETURNING rows
/// in a temporary b-tree it opens per execution, which cost more than the update itself; this runs
/// several times per message.)
pub(super) fn move_one(
    tx: &Connection,
    key: i64,
    to: State,
    error: Option<&str>,
    seq: Option<Seq>,
    now: i64,
) -> Result<Option<StateChange>> {
    let row = tx
        .prepare_cached("SELECT id, peer, state, error FROM messages WHERE seq_local = ?1")?
        .query_row([key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?;
    let Some((id, peer, from, kept_error)) = row else {
        return Ok(None);
    };
    // A move to `failed` (or `checking`) without a reason keeps the one the row has (a check
    // that ends fails a message with the reason it was checked for), and its event says it.
    let error = match (to, error) {
        (State::Failed | State::Checking, None) => kept_error.as_deref(),
        (_, e) => e,
    };
    let legal = from.parse::<State>().is_ok_and(|from| from.can_move_to(to));
    if !legal {
        return Ok(None);
    }
    // sm_seq stays only while the message is in flight on an SM stream.
    let keep_seq = matches!(to, State::Sent | State::Retrying | State::Hibernated);
    let moved = tx
        .prepare_cached(
            "UPDATE messages SET state = ?2, updated_at = ?3,
                error = CASE WHEN ?2 IN ('failed', 'checking') THEN coalesce(?4, error)
                             WHEN ?2 IN ('queued', 'acked', 'reflected', 'delivered', 'displayed')
                             THEN NULL ELSE error END,
                sm_seq = CASE WHEN ?6 THEN coalesce(?5, sm_seq) ELSE NULL END,
                attempts = attempts + (?2 IN ('sent', 'retrying')),
                sent_at = CASE WHEN ?2 IN ('sent', 'retrying') THEN ?3 ELSE sent_at END,
                acked_at = CASE WHEN ?2 = 'acked' THEN ?3 ELSE acked_at END
             WHERE seq_local = ?1 AND state = ?7",
        )?
        .execute(params![key, to.as_str(), now, error, seq, keep_seq, from])?;
    let changed = (moved == 1).then_some((id, peer));
    Ok(changed.map(|(id, peer)| StateChange {
        key,
        id,
        peer,
        state: to,
        error: error.map(str::to_owned),
        body: None,
    }))
}
