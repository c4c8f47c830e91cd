//! Messages that act on another one: XEP-0308 corrections, XEP-0424 retractions, XEP-0444
//! reactions, and XEP-0461 replies.
//!
//! Each is a row of `messages` of its own, so it is durable, de-duplicated and delivered exactly as
//! a text message is (same outbox, same states, same archive check). It names its target by the
//! id the stanza uses (`target`) and is linked to the target's row (`target_key`) as soon as that
//! row is here: at once when the target is known, or when the target arrives later (archive order
//! is not send order). Nothing is ever rewritten in the target: its current text, whether it was
//! retracted and its reactions are read from the rows linked to it, so applying one twice, or in
//! any order, gives the same result, and every correction stays as the edit history.
//!
//! Only the sender of a message may correct or retract it: a correction or retraction from anyone
//! else is refused (not stored, or unlinked and deleted when its target arrives) and reported.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use ts_rs::TS;

use super::rows::{row_to_message, Action, InboundMessage, Quoted, ReactionCount, ROW_COLUMNS};
use super::rows::{MessageRow, StateChange};
use super::{now_ms, Result, Store, StoreError};
use crate::delivery::{Direction, State};

/// Most emoji in one reaction set.
pub const MAX_REACTIONS: usize = 32;
/// Most bytes of one reaction (a long emoji sequence is about 30).
pub const MAX_REACTION_BYTES: usize = 64;

/// What the user does to a message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// Replace the text of our message.
    Correct(String),
    /// Take our message back.
    Retract,
    /// Our whole set of reactions to a message (empty: none any more).
    React(Vec<String>),
    /// Answer a message with this text.
    Reply(String),
}

/// One version of a message's text.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Edit {
    /// The text.
    pub body: String,
    /// When it was written (the sender's or server's time if known, else when it was stored; ms).
    #[ts(type = "number")]
    pub at: i64,
}

/// A message that an action changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Updated {
    /// The conversation.
    pub peer: String,
    /// The changed message's id.
    pub id: String,
    /// What changed it.
    pub action: Action,
}

/// Why an inbound message was not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A correction or retraction of a message its sender did not write (a security event).
    Forged(String),
    /// It names something it cannot act on (a reaction, say).
    Invalid(String),
}

/// What storing an inbound message did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The new row (`None`: a duplicate, or refused).
    pub change: Option<StateChange>,
    /// Messages whose text, retraction or reactions changed.
    pub updated: Vec<Updated>,
    /// What was refused: this message, or actions that waited for it and came from someone else.
    pub refused: Vec<Refusal>,
}

/// A reaction set as it may be stored: each emoji once, in order. Refuses an empty or oversized
/// emoji, control characters, or more than [`MAX_REACTIONS`].
pub fn check_reactions(emoji: &[String]) -> std::result::Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(emoji.len());
    for e in emoji {
        if e.is_empty() || e.len() > MAX_REACTION_BYTES || e.chars().any(char::is_control) {
            return Err(format!(
                "a reaction must be 1 to {MAX_REACTION_BYTES} bytes without control characters"
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    if out.len() > MAX_REACTIONS {
        return Err(format!("at most {MAX_REACTIONS} reactions to one message"));
    }
    Ok(out)
}

/// The quote a reply carries for clients without XEP-0461: each line behind `> `.
pub fn quote(text: &str) -> String {
    text.lines().map(|l| format!("> {l}\n")).collect()
}

/// The target row as a lookup finds it.
struct Target {
    key: i64,
    id: String,
    direction: String,
    from_nick: Option<String>,
    action: Option<String>,
    target_key: Option<i64>,
}

/// Lookups of a target by the id a stanza names it with, in this order: the archive's or room's
/// stanza-id, then origin-id and id of incoming, then of outgoing messages (the direction is a
/// literal so that SQLite uses the partial indexes).
const TARGET_SQL: [&str; 5] = [
    "SELECT seq_local, id, direction, from_nick, action, target_key FROM messages
     WHERE account_id = ?1 AND peer = ?2 AND stanza_id = ?3",
    "SELECT seq_local, id, direction, from_nick, action, target_key FROM messages
     WHERE account_id = ?1 AND direction = 'in' AND peer = ?2 AND origin_id = ?3",
    "SELECT seq_local, id, direction, from_nick, action, target_key FROM messages
     WHERE account_id = ?1 AND direction = 'in' AND peer = ?2 AND id = ?3",
    "SELECT seq_local, id, direction, from_nick, action, target_key FROM messages
     WHERE account_id = ?1 AND direction = 'out' AND peer = ?2 AND origin_id = ?3",
    "SELECT seq_local, id, direction, from_nick, action, target_key FROM messages
     WHERE account_id = ?1 AND direction = 'out' AND peer = ?2 AND id = ?3",
];

impl Target {
    /// A row of `SELECT seq_local, id, direction, from_nick, action, target_key`.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Target> {
        Ok(Target {
            key: r.get(0)?,
            id: r.get(1)?,
            direction: r.get(2)?,
            from_nick: r.get(3)?,
            action: r.get(4)?,
            target_key: r.get(5)?,
        })
    }
}

fn find(tx: &Connection, account: i64, peer: &str, target: &str) -> Result<Option<Target>> {
    for sql in TARGET_SQL {
        let found = tx
            .prepare_cached(sql)?
            .query_row(params![account, peer, target], Target::from_row)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn by_key(tx: &Connection, key: i64) -> Result<Option<Target>> {
    Ok(tx
        .prepare_cached(
            "SELECT seq_local, id, direction, from_nick, action, target_key FROM messages
             WHERE seq_local = ?1",
        )?
        .query_row([key], Target::from_row)
        .optional()?)
}

/// Whether the sender of an action (its direction, and nick in a room) wrote the target.
fn same_sender(kind: &str, dir: &str, nick: Option<&str>, target: &Target) -> bool {
    target.direction == dir && (kind != "groupchat" || target.from_nick.as_deref() == nick)
}

fn forged(msg: &InboundMessage, action: Action, target: &str, whose: &str) -> Refusal {
    let sender = match (&msg.from_nick, msg.direction) {
        (Some(nick), _) => format!("{} in {}", nick, msg.peer),
        (None, Direction::Out) => "another device of this account".to_owned(),
        (None, Direction::In) => msg.peer.clone(),
    };
    Refusal::Forged(format!(
        "refused a {} of message {target} from {sender}: only its sender may do that, and it is {whose}",
        action.as_str()
    ))
}

/// Where an inbound action or reply goes: its target's row (`Ok(Some)`), not here yet
/// (`Ok(None)`: it waits), or refused.
pub(super) fn resolve_inbound(
    tx: &Connection,
    account: i64,
    msg: &InboundMessage,
    target: &str,
) -> Result<std::result::Result<Option<(i64, String)>, Refusal>> {
    let Some(mut t) = find(tx, account, &msg.peer, target)? else {
        // A correction or retraction naming a message of another conversation is someone taking
        // over what another person wrote. (A scan, but only for a correction whose target is not
        // in its own conversation.)
        if matches!(msg.action, Some(Action::Correct | Action::Retract)) {
            let other: Option<String> = tx
                .prepare_cached(
                    "SELECT peer FROM messages WHERE account_id = ?1 AND peer != ?2
                     AND (id = ?3 OR origin_id = ?3 OR stanza_id = ?3) AND action IS NULL LIMIT 1",
                )?
                .query_row(params![account, msg.peer, target], |r| r.get(0))
                .optional()?;
            if let (Some(other), Some(action)) = (other, msg.action) {
                let whose = format!("in the conversation with {other}");
                return Ok(Err(forged(msg, action, target, &whose)));
            }
        }
        return Ok(Ok(None));
    };
    // Clients that correct a correction name the last version: that is the same message.
    if t.action.as_deref() == Some("correct") {
        match t.target_key.map(|k| by_key(tx, k)).transpose()?.flatten() {
            Some(original) => t = original,
            None => return Ok(Ok(None)),
        }
    }
    if t.action.is_some() {
        return Ok(Err(Refusal::Invalid(format!(
            "message {target} in {} is a {}, which nothing can act on",
            msg.peer,
            t.action.as_deref().unwrap_or_default()
        ))));
    }
    if let Some(action @ (Action::Correct | Action::Retract)) = msg.action {
        if !same_sender(
            msg.kind,
            msg.direction.as_str(),
            msg.from_nick.as_deref(),
            &t,
        ) {
            let whose = match (&t.from_nick, t.direction.as_str()) {
                (Some(n), _) => format!("{n}'s"),
                (None, "out") => "ours".to_owned(),
                (None, _) => format!("{}'s", msg.peer),
            };
            return Ok(Err(forged(msg, action, target, &whose)));
        }
    }
    Ok(Ok(Some((t.key, t.id))))
}

/// The rows that waited for message `key` (they name one of its ids) are linked to it, each only if
/// it may act on it; a waiting correction or retraction from someone else is deleted and reported.
pub(super) fn link_waiting(tx: &Connection, account: i64, key: i64) -> Result<Stored> {
    /// The message that arrived.
    struct Arrived {
        ids: [Option<String>; 3],
        peer: String,
        kind: String,
        action: Option<String>,
        target: Target,
    }
    let row: Option<Arrived> = tx
        .prepare_cached(
            "SELECT id, origin_id, stanza_id, direction, from_nick, peer, kind, action
             FROM messages WHERE seq_local = ?1",
        )?
        .query_row([key], |r| {
            let id: String = r.get(0)?;
            Ok(Arrived {
                ids: [Some(id.clone()), r.get(1)?, r.get(2)?],
                peer: r.get(5)?,
                kind: r.get(6)?,
                action: r.get(7)?,
                target: Target {
                    key,
                    id,
                    direction: r.get(3)?,
                    from_nick: r.get(4)?,
                    action: None,
                    target_key: None,
                },
            })
        })
        .optional()?;
    let mut out = Stored::default();
    let Some(Arrived {
        ids,
        peer,
        kind,
        action: None,
        target,
    }) = row
    else {
        return Ok(out);
    };
    let id = target.id.clone();
    /// A row that waited for it.
    struct Waiting {
        key: i64,
        action: Option<Action>,
        direction: String,
        nick: Option<String>,
        target: String,
    }
    let waiting: Vec<Waiting> = tx
        .prepare_cached(
            "SELECT seq_local, action, direction, from_nick, target FROM messages
             WHERE account_id = ?1 AND peer = ?2 AND target IN (?3, ?4, ?5)
               AND target IS NOT NULL AND target_key IS NULL
             ORDER BY seq_local",
        )?
        .query_map(params![account, peer, ids[0], ids[1], ids[2]], |r| {
            Ok(Waiting {
                key: r.get(0)?,
                action: r
                    .get::<_, Option<String>>(1)?
                    .as_deref()
                    .and_then(Action::parse),
                direction: r.get(2)?,
                nick: r.get(3)?,
                target: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for Waiting {
        key: wkey,
        action: waction,
        direction: wdir,
        nick: wnick,
        target: wtarget,
    } in waiting
    {
        let allowed = match waction {
            Some(Action::Correct | Action::Retract) => {
                same_sender(&kind, &wdir, wnick.as_deref(), &target)
            }
            _ => true,
        };
        if !allowed {
            tx.prepare_cached("DELETE FROM messages WHERE seq_local = ?1")?
                .execute([wkey])?;
            let sender = wnick.unwrap_or_else(|| peer.clone());
            out.refused.push(Refusal::Forged(format!(
                "refused a {} of message {wtarget} from {sender} in {peer}: only its sender may do that",
                waction.map(Action::as_str).unwrap_or("change")
            )));
            continue;
        }
        tx.prepare_cached("UPDATE messages SET target_key = ?2 WHERE seq_local = ?1")?
            .execute(params![wkey, key])?;
        if let Some(action) = waction {
            out.updated.push(Updated {
                peer: peer.clone(),
                id: id.clone(),
                action,
            });
        }
    }
    Ok(out)
}

/// Fills in what the rows linked to each row say: reactions, and the message a reply answers.
pub(super) fn decorate(
    conn: &Connection,
    blobs: &super::Blobs,
    account: i64,
    rows: &mut [MessageRow],
) -> Result<()> {
    for row in rows.iter_mut().filter(|r| r.action.is_none()) {
        row.file = super::attachments::attachment(conn, blobs, row.seq)?;
        row.reactions = reactions(conn, account, row.seq)?;
        if let Some(k) = row.target_key {
            row.reply_to = conn
                .prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS} FROM messages m WHERE seq_local = ?1"
                ))?
                .query_row([k], row_to_message)
                .optional()?
                .map(|t| Quoted {
                    id: t.id,
                    body: (!t.retracted).then_some(t.body),
                    direction: t.direction,
                    from_nick: t.from_nick,
                });
        }
    }
    Ok(())
}

/// The reactions to message `key`: each sender's newest set counts (our own from any device as
/// one sender), each emoji in the order first seen.
fn reactions(conn: &Connection, account: i64, key: i64) -> Result<Vec<ReactionCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT direction, from_nick, payload FROM messages
         WHERE account_id = ?1 AND target_key = ?2 AND action = 'react' AND state != 'discarded'
         ORDER BY coalesce(server_ts, created_at), seq_local",
    )?;
    let mut order: Vec<(bool, Option<String>)> = Vec::new();
    let mut latest: HashMap<(bool, Option<String>), Vec<String>> = HashMap::new();
    let rows = stmt.query_map(params![account, key], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (dir, nick, payload) = row?;
        let mine = dir == "out";
        let sender = (mine, if mine { None } else { nick });
        let set: Vec<String> = payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        if !latest.contains_key(&sender) {
            order.push(sender.clone());
        }
        latest.insert(sender, set);
    }
    let mut out: Vec<ReactionCount> = Vec::new();
    for sender in order {
        for emoji in &latest[&sender] {
            match out.iter_mut().find(|c| &c.emoji == emoji) {
                Some(c) => {
                    c.count += 1;
                    c.mine |= sender.0;
                }
                None => out.push(ReactionCount {
                    emoji: emoji.clone(),
                    count: 1,
                    mine: sender.0,
                }),
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Commits what the user does to message `target_id` of the conversation with `peer` as an
    /// outgoing row (`queued`, sent after its target, with the same delivery guarantees as a text
    /// message). Only our own messages can be corrected or retracted; a reaction set is checked
    /// ([`check_reactions`]). Returns the new row's change.
    pub fn enqueue_reference(
        &mut self,
        account: i64,
        peer: &str,
        target_id: &str,
        what: &Reference,
    ) -> Result<StateChange> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let target: Option<MessageRow> = tx
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM messages m WHERE account_id = ?1 AND peer = ?2
                 AND id = ?3 ORDER BY action IS NULL DESC, direction = 'out' DESC LIMIT 1"
            ))?
            .query_row(params![account, peer, target_id], row_to_message)
            .optional()?;
        let Some(target) = target else {
            return Err(StoreError::UnknownMessage(format!(
                "{target_id} (with {peer})"
            )));
        };
        let refuse = |why: String| Err(StoreError::Refused(why));
        if target.action.is_some() {
            return refuse(format!("message {target_id} is not a message of its own"));
        }
        let ours = target.direction == Direction::Out;
        if matches!(what, Reference::Correct(_) | Reference::Retract) && !ours {
            return refuse(format!(
                "only its sender may correct or retract message {target_id}, and that is {peer}"
            ));
        }
        let (action, body, payload) = match what {
            Reference::Correct(body) if body.trim().is_empty() => {
                return refuse("a correction needs a text (retract the message instead)".into())
            }
            Reference::Reply(body) if body.trim().is_empty() => {
                return refuse("a reply needs a text".into())
            }
            Reference::Correct(body) => (Some(Action::Correct), body.clone(), None),
            Reference::Retract => (Some(Action::Retract), String::new(), None),
            Reference::React(emoji) => {
                let set = check_reactions(emoji).map_err(StoreError::Refused)?;
                let json = serde_json::to_string(&set).expect("strings serialize");
                (Some(Action::React), String::new(), Some(json))
            }
            Reference::Reply(body) => {
                let quoted = if target.retracted {
                    String::new()
                } else {
                    quote(&target.body)
                };
                (None, body.clone(), Some(quoted))
            }
        };
        // In a room everything but a correction names the room's stanza-id, which our own message
        // only has once the room reflected it: until then the row waits (see `QUEUED_SQL`).
        let wire = if target.kind == "groupchat" && action != Some(Action::Correct) {
            target.stanza_id.clone()
        } else {
            Some(target.id.clone())
        };
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        tx.prepare_cached(
            "INSERT INTO messages (id, origin_id, account_id, peer, direction, body, state,
                                   created_at, updated_at, kind, action, target, target_key, payload)
             VALUES (?1, ?1, ?2, ?3, 'out', ?4, 'queued', ?5, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            id,
            account,
            peer,
            body,
            now,
            target.kind,
            action.map(Action::as_str),
            wire,
            target.seq,
            payload
        ])?;
        let key = tx.last_insert_rowid();
        tx.commit()?;
        Ok(StateChange {
            key,
            id,
            peer: peer.to_owned(),
            state: State::Queued,
            error: None,
            body: None,
        })
    }

    /// Every version of message `id`'s text in the conversation with `peer`, oldest first: the
    /// original, then each correction (a discarded one of ours is not a version).
    pub fn edits(&self, account: i64, peer: &str, id: &str) -> Result<Vec<Edit>> {
        let original: Option<(i64, String, i64)> = self
            .conn
            .prepare_cached(
                "SELECT seq_local, body, coalesce(server_ts, created_at) FROM messages
                 WHERE account_id = ?1 AND peer = ?2 AND id = ?3 AND action IS NULL
                 ORDER BY direction = 'out' DESC LIMIT 1",
            )?
            .query_row(params![account, peer, id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((key, body, at)) = original else {
            return Err(StoreError::UnknownMessage(format!("{id} (with {peer})")));
        };
        let mut out = vec![Edit { body, at }];
        let mut stmt = self.conn.prepare_cached(
            "SELECT body, coalesce(server_ts, created_at) FROM messages
             WHERE account_id = ?1 AND target_key = ?2 AND action = 'correct'
               AND state != 'discarded'
             ORDER BY coalesce(server_ts, created_at), seq_local",
        )?;
        let rows = stmt.query_map(params![account, key], |r| {
            Ok(Edit {
                body: r.get(0)?,
                at: r.get(1)?,
            })
        })?;
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }
}
