//! Message rows and their state changes. Every function that moves messages takes the SM snapshot
//! that the same change produced and writes both in one transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use ts_rs::TS;

use super::{now_ms, save_sm, Result, Store, StoreError};
use crate::delivery::{Direction, State};
use crate::sm::{Seq, SmSnapshot};

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
}

/// One conversation in the list.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Conversation {
    /// The contact or room.
    pub peer: String,
    /// `chat` or `groupchat`.
    pub kind: String,
    /// The newest message's text.
    pub last_body: String,
    /// When it was committed (ms).
    #[ts(type = "number")]
    pub last_at: i64,
    /// Whether the newest message is ours.
    pub last_outgoing: bool,
    /// Incoming messages not yet read.
    #[ts(type = "number")]
    pub unread: i64,
    /// Failed messages waiting for the user.
    #[ts(type = "number")]
    pub failed: i64,
}

/// A queued message ready to be written.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    /// Local key (row id).
    pub key: i64,
    /// Stanza id.
    pub id: String,
    /// origin-id (same as id for messages Tether wrote).
    pub origin_id: Option<String>,
    /// Recipient bare JID.
    pub peer: String,
    /// The text.
    pub body: String,
    /// `chat` or `groupchat`.
    pub kind: String,
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
}

/// One state move for [`Store::apply`].
#[derive(Clone, Debug)]
pub struct Move {
    /// The message's local key.
    pub key: i64,
    /// The target state.
    pub to: State,
    /// The error, for `failed`.
    pub error: Option<String>,
    /// The new SM sequence number, for `sent` / `retrying` on an SM stream.
    pub seq: Option<Seq>,
}

impl Move {
    /// A plain move of `key` to `to`.
    pub fn to(key: i64, to: State) -> Move {
        Move {
            key,
            to,
            error: None,
            seq: None,
        }
    }

    /// A move of `key` to `failed`, with the reason the user will see.
    pub fn failed(key: i64, reason: impl Into<String>) -> Move {
        Move {
            error: Some(reason.into()),
            ..Move::to(key, State::Failed)
        }
    }
}

/// Which messages [`Store::messages`] lists.
#[derive(Clone, Debug, Default)]
pub struct MessageFilter {
    /// Only this peer.
    pub peer: Option<String>,
    /// Only this state.
    pub state: Option<State>,
    /// Only this direction.
    pub direction: Option<Direction>,
}

const ROW_COLUMNS: &str =
    "seq_local, id, origin_id, stanza_id, peer, direction, body, state, error, attempts,
    created_at, updated_at, sent_at, acked_at, server_ts, kind, other_device, from_nick";

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    let dir: String = r.get(5)?;
    let state: String = r.get(7)?;
    Ok(MessageRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        origin_id: r.get(2)?,
        stanza_id: r.get(3)?,
        peer: r.get(4)?,
        direction: if dir == "in" {
            Direction::In
        } else {
            Direction::Out
        },
        body: r.get(6)?,
        state: state.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
        })?,
        error: r.get(8)?,
        attempts: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        sent_at: r.get(12)?,
        acked_at: r.get(13)?,
        server_ts: r.get(14)?,
        kind: r.get(15)?,
        other_device: r.get(16)?,
        from_nick: r.get(17)?,
    })
}

pub(crate) fn apply_moves(tx: &Connection, moves: &[Move]) -> Result<Vec<StateChange>> {
    let now = now_ms();
    let mut changes = Vec::with_capacity(moves.len());
    for m in moves {
        if let Some(c) = move_one(tx, m.key, m.to, m.error.as_deref(), m.seq, now)? {
            changes.push(c);
        }
    }
    Ok(changes)
}

/// Moves one message (by key) to `to` if its current state allows it. Returns the change.
///
/// The row is read by its key and the machine's rule checked here; the UPDATE then names the state
/// it read. (An `UPDATE ... RETURNING` did both in one statement, but SQLite gathers RETURNING rows
/// in a temporary b-tree it opens per execution, which cost more than the update itself; this runs
/// several times per message.)
fn move_one(
    tx: &Connection,
    key: i64,
    to: State,
    error: Option<&str>,
    seq: Option<Seq>,
    now: i64,
) -> Result<Option<StateChange>> {
    let row = tx
        .prepare_cached("SELECT id, peer, state FROM messages WHERE seq_local = ?1")?
        .query_row([key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let Some((id, peer, from)) = row else {
        return Ok(None);
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
                error = CASE WHEN ?2 = 'failed' THEN ?4 WHEN ?2 = 'queued' THEN NULL ELSE error END,
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

impl Store {
    /// Commits a new outgoing message (`queued`). Returns its row; the id doubles as origin-id.
    pub fn enqueue(&mut self, account: i64, to: &str, body: &str) -> Result<MessageRow> {
        let ids = self.enqueue_many(account, &[(to.to_owned(), body.to_owned())])?;
        self.message(account, &ids[0].id)
    }

    /// Commits many outgoing messages in one transaction, in order.
    pub fn enqueue_many(
        &mut self,
        account: i64,
        messages: &[(String, String)],
    ) -> Result<Vec<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let now = now_ms();
        let mut out = Vec::with_capacity(messages.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO messages (id, origin_id, account_id, peer, direction, body, state,
                                       created_at, updated_at, kind)
                 VALUES (?1, ?1, ?2, ?3, 'out', ?4, 'queued', ?5, ?5,
                         CASE WHEN EXISTS (SELECT 1 FROM rooms WHERE account_id = ?2 AND jid = ?3)
                              THEN 'groupchat' ELSE 'chat' END)",
            )?;
            for (to, body) in messages {
                let id = uuid::Uuid::new_v4().to_string();
                stmt.execute(params![id, account, to, body, now])?;
                out.push(StateChange {
                    key: tx.last_insert_rowid(),
                    id,
                    peer: to.clone(),
                    state: State::Queued,
                    error: None,
                    body: None,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// The oldest `limit` queued messages that may go out now. A room message waits until the
    /// room has answered this session's join: sent before, the room would refuse it as coming
    /// from a non-occupant (`not-acceptable`). After a refused join it goes out, and the room's
    /// error reply fails it with the room's reason.
    pub fn queued(&self, account: i64, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(QUEUED_SQL)?;
        let rows = stmt
            .query_map(params![account, limit as i64], |r| {
                Ok(OutboxItem {
                    key: r.get(0)?,
                    id: r.get(1)?,
                    origin_id: r.get(2)?,
                    peer: r.get(3)?,
                    body: r.get(4)?,
                    kind: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Loads, in the order given, the outbox items among `keys` that are still in flight (`sent`,
    /// `hibernated`, `retrying`): what may be re-sent after `<resumed/>`. A message that a receipt
    /// already moved on is not re-sent.
    pub fn resendable(&self, keys: &[i64]) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq_local, id, origin_id, peer, body, kind FROM messages
             WHERE seq_local = ?1 AND state IN ('sent', 'hibernated', 'retrying')",
        )?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let item = stmt
                .query_row([k], |r| {
                    Ok(OutboxItem {
                        key: r.get(0)?,
                        id: r.get(1)?,
                        origin_id: r.get(2)?,
                        peer: r.get(3)?,
                        body: r.get(4)?,
                        kind: r.get(5)?,
                    })
                })
                .optional()?;
            out.extend(item);
        }
        Ok(out)
    }

    /// Moves many messages to `to` (each only if its state allows), writing `snap` in the same
    /// transaction. Returns the changes that happened.
    pub fn transition(
        &mut self,
        account: i64,
        keys: &[i64],
        to: State,
        error: Option<&str>,
        snap: Option<&SmSnapshot>,
    ) -> Result<Vec<StateChange>> {
        let moves: Vec<Move> = keys
            .iter()
            .map(|&key| Move {
                key,
                to,
                error: error.map(str::to_owned),
                seq: None,
            })
            .collect();
        self.apply(account, &moves, snap)
    }

    /// Applies many moves (each only if the message's state allows it) and writes `snap`, all in one
    /// transaction. Returns the changes that happened, in order.
    pub fn apply(
        &mut self,
        account: i64,
        moves: &[Move],
        snap: Option<&SmSnapshot>,
    ) -> Result<Vec<StateChange>> {
        self.apply_all(account, moves, &[], snap)
    }

    /// Outgoing messages in flight (`sent`, `hibernated`, `retrying`) with their SM seq, for
    /// restoring the SM engine after a restart.
    pub fn in_flight(&self, account: i64) -> Result<Vec<(Option<Seq>, i64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sm_seq, seq_local FROM messages
             WHERE account_id = ?1 AND direction = 'out' AND state IN ('sent', 'hibernated', 'retrying')
               AND state IN ('queued', 'sent', 'hibernated', 'retrying') -- messages_pending's condition
             ORDER BY seq_local",
        )?;
        let rows = stmt
            .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Commits a message learnt from the network and counts it in the inbound `h` (`snap`, already
    /// incremented by the caller), in one transaction; queues the receipt it asked for in the same
    /// transaction. A duplicate (same origin-id, or same id when the sender set no origin-id, with
    /// the same peer and direction; our own row with that id; or the same server stanza-id) is not
    /// stored again, but still counted, and its receipt is answered again (the first answer may have
    /// been lost). Returns the new row's change, or `None` for a duplicate.
    pub fn store_inbound(
        &mut self,
        account: i64,
        msg: &InboundMessage,
        snap: Option<&SmSnapshot>,
    ) -> Result<Option<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let change = insert_inbound(&tx, account, msg)?;
        if let (Some(to), Some(id)) = (&msg.receipt_to, &msg.id) {
            super::control::enqueue(
                &tx,
                account,
                super::ControlKind::Receipt,
                to,
                Some(id),
                None,
            )?;
        }
        if let Some(snap) = snap {
            save_sm(&tx, account, snap)?;
        }
        tx.commit()?;
        Ok(change)
    }

    /// Our group-chat message came back from the room (matched by origin-id, else id): it becomes
    /// `reflected` and takes the room's stanza-id. Returns the change, if any.
    pub fn reflect(
        &mut self,
        account: i64,
        room: &str,
        id: &str,
        stanza_id: Option<&str>,
        snap: Option<&SmSnapshot>,
    ) -> Result<Option<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let key: Option<i64> = tx
            .prepare_cached(
                "SELECT seq_local FROM messages WHERE account_id = ?1 AND direction = 'out'
                 AND peer = ?2 AND (origin_id = ?3 OR id = ?3)",
            )?
            .query_row(params![account, room, id], |r| r.get(0))
            .optional()?;
        let mut change = None;
        if let Some(key) = key {
            if let Some(sid) = stanza_id {
                tx.prepare_cached(
                    "UPDATE messages SET stanza_id = ?2 WHERE seq_local = ?1 AND stanza_id IS NULL
                     AND NOT EXISTS (SELECT 1 FROM messages WHERE account_id = ?3 AND peer = ?4
                                     AND stanza_id = ?2)",
                )?
                .execute(params![key, sid, account, room])?;
            }
            change = move_one(&tx, key, State::Reflected, None, None, now_ms())?;
        }
        if let Some(snap) = snap {
            save_sm(&tx, account, snap)?;
        }
        tx.commit()?;
        Ok(change)
    }

    /// Whether we have an outgoing message to `peer` with this origin-id or id.
    pub fn has_outgoing(&self, account: i64, peer: &str, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM messages WHERE account_id = ?1 AND direction = 'out' AND peer = ?2
                 AND (origin_id = ?3 OR id = ?3)",
            )?
            .exists(params![account, peer, id])?)
    }

    /// A receipt (`Delivered`) or displayed marker (`Displayed`) from `peer` for our message `id`.
    /// A marker also covers our earlier messages to that peer. States only move forward.
    pub fn confirm(
        &mut self,
        account: i64,
        peer: &str,
        id: &str,
        to: State,
        snap: Option<&SmSnapshot>,
    ) -> Result<Vec<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let key: Option<i64> = tx
            .prepare_cached(
                "SELECT seq_local FROM messages WHERE account_id = ?1 AND direction = 'out'
                 AND peer = ?2 AND id = ?3",
            )?
            .query_row(params![account, peer, id], |r| r.get(0))
            .optional()?;
        let mut keys = Vec::new();
        if let Some(key) = key {
            if to == State::Displayed {
                let mut stmt = tx.prepare_cached(
                    "SELECT seq_local FROM messages WHERE account_id = ?1 AND direction = 'out'
                     AND peer = ?2 AND seq_local <= ?3
                     AND state IN ('sent', 'hibernated', 'retrying', 'acked', 'reflected', 'delivered')
                     ORDER BY seq_local",
                )?;
                keys = stmt
                    .query_map(params![account, peer, key], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
            } else {
                keys.push(key);
            }
        }
        let now = now_ms();
        let mut changes = Vec::new();
        for key in keys {
            changes.extend(move_one(&tx, key, to, None, None, now)?);
        }
        if let Some(snap) = snap {
            save_sm(&tx, account, snap)?;
        }
        tx.commit()?;
        Ok(changes)
    }

    /// The user read the conversation with `peer` up to incoming message `up_to` (default: the
    /// newest): those messages become `displayed` and a displayed marker for the newest is queued.
    /// Returns (the marked id, how many rows changed), or `None` if there is nothing from `peer`.
    pub fn mark_read(
        &mut self,
        account: i64,
        peer: &str,
        up_to: Option<&str>,
    ) -> Result<Option<(String, usize)>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let target: Option<(i64, String)> = match up_to {
            Some(id) => tx
                .prepare_cached(
                    "SELECT seq_local, id FROM messages WHERE account_id = ?1 AND direction = 'in'
                     AND peer = ?2 AND id = ?3",
                )?
                .query_row(params![account, peer, id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
            None => tx
                .prepare_cached(
                    "SELECT seq_local, id FROM messages WHERE account_id = ?1 AND direction = 'in'
                     AND peer = ?2 ORDER BY seq_local DESC LIMIT 1",
                )?
                .query_row(params![account, peer], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
        };
        let Some((key, id)) = target else {
            return match up_to {
                Some(id) => Err(StoreError::UnknownMessage(id.to_owned())),
                None => Ok(None),
            };
        };
        let n = tx
            .prepare_cached(
                "UPDATE messages SET state = 'displayed', updated_at = ?4
                 WHERE account_id = ?1 AND direction = 'in' AND peer = ?2 AND seq_local <= ?3
                 AND state = 'received'",
            )?
            .execute(params![account, peer, key, now_ms()])?;
        let kind: String = tx.query_row(
            "SELECT kind FROM messages WHERE seq_local = ?1",
            [key],
            |r| r.get(0),
        )?;
        if kind == "chat" {
            super::control::enqueue(
                &tx,
                account,
                super::ControlKind::Displayed,
                peer,
                Some(&id),
                None,
            )?;
        }
        tx.commit()?;
        Ok(Some((id, n)))
    }

    /// The key of our outgoing message with this stanza id, if any.
    pub fn outgoing_key(&self, account: i64, id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq_local FROM messages WHERE account_id = ?1 AND direction = 'out' AND id = ?2",
            )?
            .query_row(params![account, id], |r| r.get(0))
            .optional()?)
    }

    /// The user confirms a resend: each failed message goes back to `queued`, keeping its id and
    /// origin-id. Errors (changing nothing) if an id is unknown or not failed.
    pub fn resend(&mut self, account: i64, ids: &[String]) -> Result<Vec<StateChange>> {
        self.user_decision(account, ids, State::Queued)
    }

    /// The user discards failed messages.
    pub fn discard(&mut self, account: i64, ids: &[String]) -> Result<Vec<StateChange>> {
        self.user_decision(account, ids, State::Discarded)
    }

    /// Ids of every failed outgoing message, oldest first.
    pub fn failed_ids(&self, account: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM messages WHERE account_id = ?1 AND direction = 'out' AND state = 'failed'
             ORDER BY seq_local",
        )?;
        let ids = stmt
            .query_map([account], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    fn user_decision(
        &mut self,
        account: i64,
        ids: &[String],
        to: State,
    ) -> Result<Vec<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let now = now_ms();
        let mut changes = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(i64, String)> = tx
                .prepare_cached(
                    "SELECT seq_local, state FROM messages
                     WHERE account_id = ?1 AND direction = 'out' AND id = ?2",
                )?
                .query_row(params![account, id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((key, state)) = row else {
                return Err(StoreError::UnknownMessage(id.clone()));
            };
            match move_one(&tx, key, to, None, None, now)? {
                Some(c) => changes.push(c),
                None => {
                    return Err(StoreError::WrongState {
                        id: id.clone(),
                        state,
                        expected: "failed".into(),
                    })
                }
            }
        }
        tx.commit()?;
        Ok(changes)
    }

    /// One message by id (outgoing first).
    pub fn message(&self, account: i64, id: &str) -> Result<MessageRow> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM messages WHERE account_id = ?1 AND id = ?2
                     ORDER BY direction = 'out' DESC LIMIT 1"
                ),
                params![account, id],
                row_to_message,
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownMessage(id.to_owned()))
    }

    /// Messages matching `filter`, in local commit order.
    pub fn messages(&self, account: i64, filter: &MessageFilter) -> Result<Vec<MessageRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM messages WHERE account_id = ?1
               AND (?2 IS NULL OR peer = ?2) AND (?3 IS NULL OR state = ?3)
               AND (?4 IS NULL OR direction = ?4)
             ORDER BY seq_local"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    account,
                    filter.peer,
                    filter.state.map(State::as_str),
                    filter.direction.map(Direction::as_str)
                ],
                row_to_message,
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A page of the conversation with `peer`: up to `limit` messages before `before` (a
    /// [`MessageRow::seq`]; `None` for the newest), returned oldest first.
    pub fn page(
        &self,
        account: i64,
        peer: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MessageRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM messages WHERE account_id = ?1 AND peer = ?2
               AND seq_local < ?3 ORDER BY seq_local DESC LIMIT ?4"
        ))?;
        let mut rows: Vec<MessageRow> = stmt
            .query_map(
                params![account, peer, before.unwrap_or(i64::MAX), limit as i64],
                row_to_message,
            )?
            .collect::<rusqlite::Result<_>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Every conversation with its newest message, unread and failed counts, newest first.
    pub fn conversations(&self, account: i64) -> Result<Vec<Conversation>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.peer, m.kind, m.body, m.created_at, m.direction,
                    (SELECT count(*) FROM messages u WHERE u.account_id = ?1 AND u.peer = m.peer
                       AND u.direction = 'in' AND u.state = 'received'),
                    (SELECT count(*) FROM messages f WHERE f.account_id = ?1 AND f.peer = m.peer
                       AND f.state = 'failed')
             FROM messages m
             WHERE m.account_id = ?1 AND m.seq_local = (
                SELECT max(seq_local) FROM messages x WHERE x.account_id = ?1 AND x.peer = m.peer)
             ORDER BY m.seq_local DESC",
        )?;
        let rows = stmt
            .query_map([account], |r| {
                Ok(Conversation {
                    peer: r.get(0)?,
                    kind: r.get(1)?,
                    last_body: r.get(2)?,
                    last_at: r.get(3)?,
                    last_outgoing: r.get::<_, String>(4)? == "out",
                    unread: r.get(5)?,
                    failed: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// How many outgoing messages still wait for the server (queued, sent, hibernated, retrying).
    pub fn pending_count(&self, account: i64) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM messages WHERE account_id = ?1
             AND state IN ('queued', 'sent', 'hibernated', 'retrying')",
            )?
            .query_row([account], |r| r.get(0))?)
    }
}

/// The outbox query ([`Store::queued`]): it names `messages_pending`'s own condition word for
/// word, or SQLite would not use that partial index and would scan the account on every pump.
pub(crate) const QUEUED_SQL: &str =
    "SELECT seq_local, id, origin_id, peer, body, kind FROM messages m
             WHERE account_id = ?1 AND state = 'queued'
               -- The index's own condition, word for word, so SQLite uses messages_pending
               -- (it does not infer it from state = 'queued' and scanned the account otherwise).
               AND state IN ('queued', 'sent', 'hibernated', 'retrying')
               AND (kind = 'chat' OR EXISTS (SELECT 1 FROM rooms r WHERE r.account_id = ?1
                                             AND r.jid = m.peer AND r.joined != 0))
             ORDER BY seq_local LIMIT ?2";

/// Inbound de-duplication of an incoming message: the same origin-id, or (for a row without
/// one) the same id. The direction is a literal, so that SQLite can use the partial indexes.
pub(crate) const DEDUPE_IN_SQL: [&str; 2] = [
    "SELECT 1 FROM messages WHERE account_id = ?1 AND direction = 'in' AND peer = ?2
     AND origin_id = ?3",
    "SELECT 1 FROM messages WHERE account_id = ?1 AND direction = 'in' AND peer = ?2
     AND id = ?3 AND origin_id IS NULL",
];

/// De-duplication of our own messages seen through a carbon or the archive: origin-id or id.
pub(crate) const DEDUPE_OUT_SQL: [&str; 2] = [
    "SELECT 1 FROM messages WHERE account_id = ?1 AND direction = 'out' AND peer = ?2
     AND origin_id = ?3",
    "SELECT 1 FROM messages WHERE account_id = ?1 AND direction = 'out' AND peer = ?2
     AND id = ?3",
];

fn insert_inbound(
    tx: &Connection,
    account: i64,
    msg: &InboundMessage,
) -> Result<Option<StateChange>> {
    let dedupe_key = msg.origin_id.as_ref().or(msg.id.as_ref());
    let mut duplicate = false;
    if let Some(key) = dedupe_key {
        // The same origin-id, or (for a row that has none) the same id; for our own messages
        // (carbons, archive) the id too. One indexed lookup each: the direction is a literal so
        // that SQLite can use the partial indexes (with a parameter it scanned the conversation).
        let lookups = match msg.direction {
            Direction::In => &DEDUPE_IN_SQL,
            Direction::Out => &DEDUPE_OUT_SQL,
        };
        for sql in lookups.iter() {
            if tx
                .prepare_cached(sql)?
                .exists(params![account, msg.peer, key])?
            {
                duplicate = true;
                break;
            }
        }
    }
    if !duplicate {
        if let Some(sid) = &msg.stanza_id {
            // Only within the same conversation: a stanza-id that a peer forged (a server that
            // does not strip them lets it through) can then only shadow that peer's own messages.
            duplicate = tx
                .prepare_cached(
                    "SELECT 1 FROM messages WHERE account_id = ?1 AND peer = ?2 AND stanza_id = ?3",
                )?
                .exists(params![account, msg.peer, sid])?;
        }
    }
    if duplicate {
        return Ok(None);
    }
    let now = now_ms();
    let id = msg
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Our own messages seen through a carbon or the archive: the server has them (acked).
    let state = match msg.direction {
        Direction::In => State::Received,
        Direction::Out => State::Acked,
    };
    tx.prepare_cached(
        "INSERT INTO messages (id, origin_id, stanza_id, account_id, peer, direction, body,
                               state, created_at, updated_at, server_ts, kind, other_device, from_nick)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        id,
        dedupe_key,
        msg.stanza_id,
        account,
        msg.peer,
        msg.direction.as_str(),
        msg.body,
        state.as_str(),
        now,
        msg.server_ts,
        msg.kind,
        msg.direction == Direction::Out,
        msg.from_nick
    ])?;
    Ok(Some(StateChange {
        key: tx.last_insert_rowid(),
        id,
        peer: msg.peer.clone(),
        state,
        error: None,
        body: Some(msg.body.clone()),
    }))
}
