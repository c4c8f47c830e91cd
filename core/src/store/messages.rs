//! Message rows and their state changes. Every function that moves messages takes the SM snapshot
//! that the same change produced and writes both in one transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use ts_rs::TS;

use super::references::{Stored, Updated};
use super::rows::{move_one, row_to_message, ROW_COLUMNS};
pub use super::rows::{Action, InboundMessage, MessageRow, Quoted, ReactionCount, StateChange};
use super::{now_ms, save_sm, Result, Store, StoreError};
use crate::delivery::{Direction, State};
use crate::sm::{Seq, SmSnapshot};

/// One conversation in the list.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Conversation {
    /// The contact or room.
    pub peer: String,
    /// `chat` or `groupchat`.
    pub kind: String,
    /// The newest message's text.
    pub last_body: String,
    /// When it was sent (ms): the sender's or the server's timestamp when one came with it,
    /// else when it was committed here. The list is ordered by it, the newest first.
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
#[derive(Clone, Debug, Default)]
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
    /// What it does to another message, if anything.
    pub action: Option<Action>,
    /// The id the stanza names that message by (for an action or a reply).
    pub target: Option<String>,
    /// A reaction's emoji (JSON array), or the quote a reply carries for older clients.
    pub payload: Option<String>,
    /// The author of the message replied to, when it is not us (XEP-0461 `to`).
    pub reply_to_jid: Option<String>,
    /// The file it carries, uploaded.
    pub file: Option<OutboxFile>,
    /// A direct invitation's room (XEP-0249).
    pub invite: Option<String>,
}

/// The file of an outgoing message, as its stanza announces it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxFile {
    /// Where it can be fetched.
    pub url: String,
    /// Its name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// MIME type.
    pub media_type: String,
    /// SHA-256 (hex).
    pub sha256: String,
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

    /// Commits a direct invitation (XEP-0249) to `room` for `to`: a message of its own, with the
    /// delivery guarantees of any message (its text: `reason`, else a line saying what it is,
    /// which is also what a client without the feature shows; `reason` itself is kept in
    /// `payload`, for the invitation's `reason` attribute).
    pub fn enqueue_invite(
        &mut self,
        account: i64,
        to: &str,
        room: &str,
        reason: Option<&str>,
    ) -> Result<StateChange> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        let body = reason
            .map(|r| format!("{r} ({room})"))
            .unwrap_or_else(|| format!("an invitation to {room}"));
        let tx = super::Tx::begin(&mut self.conn)?;
        let now = now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        tx.prepare_cached(
            "INSERT INTO messages (id, origin_id, account_id, peer, direction, body, state,
                                   created_at, updated_at, kind, invite, payload)
             VALUES (?1, ?1, ?2, ?3, 'out', ?4, 'queued', ?5, ?5, 'chat', ?6, ?7)",
        )?
        .execute(params![id, account, to, body, now, room, reason])?;
        let change = StateChange {
            key: tx.last_insert_rowid(),
            id,
            peer: to.to_owned(),
            state: State::Queued,
            error: None,
            body: None,
        };
        tx.commit()?;
        Ok(change)
    }

    /// The oldest `limit` queued messages that may go out now. A room message waits until the
    /// room has answered this session's join: sent before, the room would refuse it as coming
    /// from a non-occupant (`not-acceptable`). After a refused join it goes out, and the room's
    /// error reply fails it with the room's reason.
    pub fn queued(&self, account: i64, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(QUEUED_SQL)?;
        let rows = stmt
            .query_map(params![account, limit as i64], row_to_outbox)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Loads, in the order given, the outbox items among `keys` that are still in flight (`sent`,
    /// `hibernated`, `retrying`): what may be re-sent after `<resumed/>`. A message that a receipt
    /// already moved on is not re-sent.
    pub fn resendable(&self, keys: &[i64]) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM messages m LEFT JOIN messages t ON t.seq_local = m.target_key
             LEFT JOIN attachments a ON a.message_key = m.seq_local
             WHERE m.seq_local = ?1 AND m.state IN ('sent', 'hibernated', 'retrying')"
        ))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let item = stmt.query_row([k], row_to_outbox).optional()?;
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
        Ok(self.store_inbound_full(account, msg, snap)?.change)
    }

    /// [`Store::store_inbound`], saying also which messages the new row changed (a correction,
    /// retraction or reaction, or one that waited for it) and what was refused.
    pub fn store_inbound_full(
        &mut self,
        account: i64,
        msg: &InboundMessage,
        snap: Option<&SmSnapshot>,
    ) -> Result<Stored> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let stored = insert_inbound(&tx, account, msg)?;
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
        Ok(stored)
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
                take_stanza_id(&tx, account, room, key, sid)?;
                super::references::link_waiting(&tx, account, key)?;
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
                     AND peer = ?2 AND action IS NULL ORDER BY seq_local DESC LIMIT 1",
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
        // A displayed marker goes to a peer that may understand it: one whose verified
        // capabilities (XEP-0115) list markers, or whose capabilities are unknown.
        let markers = super::caps::peer_features_in(&tx, &self.path, account, peer)?
            .is_none_or(|f| f.contains(super::caps::MARKERS));
        if kind == "chat" && markers {
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
                Some(c) => {
                    if to == State::Queued {
                        super::attachments::restart_upload(&tx, key)?;
                    }
                    changes.push(c)
                }
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
        let mut row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM messages m WHERE account_id = ?1 AND id = ?2
                     ORDER BY direction = 'out' DESC LIMIT 1"
                ),
                params![account, id],
                row_to_message,
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownMessage(id.to_owned()))?;
        super::references::decorate(
            &self.conn,
            &self.blobs,
            account,
            std::slice::from_mut(&mut row),
        )?;
        Ok(row)
    }

    /// Messages matching `filter`, in local commit order.
    pub fn messages(&self, account: i64, filter: &MessageFilter) -> Result<Vec<MessageRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM messages m WHERE account_id = ?1
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
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut rows = rows;
        super::references::decorate(&self.conn, &self.blobs, account, &mut rows)?;
        Ok(rows)
    }

    /// A page of the conversation with `peer`: up to `limit` messages before `before` (a
    /// [`MessageRow::seq`]; `None` for the newest), returned oldest first. Rows that only act on
    /// another message (corrections, retractions, reactions) are not listed: they show in the
    /// message they act on.
    pub fn page(
        &self,
        account: i64,
        peer: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MessageRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM messages m WHERE account_id = ?1 AND peer = ?2
               AND seq_local < ?3 AND action IS NULL ORDER BY seq_local DESC LIMIT ?4"
        ))?;
        let mut rows: Vec<MessageRow> = stmt
            .query_map(
                params![account, peer, before.unwrap_or(i64::MAX), limit as i64],
                row_to_message,
            )?
            .collect::<rusqlite::Result<_>>()?;
        rows.reverse();
        super::references::decorate(&self.conn, &self.blobs, account, &mut rows)?;
        Ok(rows)
    }

    /// The newest row's key (0 for none): a mark to list what arrives after it.
    pub fn last_key(&self, account: i64) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT coalesce(max(seq_local), 0) FROM messages WHERE account_id = ?1",
            [account],
            |r| r.get(0),
        )?)
    }

    /// The incoming messages committed after the row `after` (a [`Self::last_key`]), oldest
    /// first: what a wake-up brought (rows that only act on another are left out).
    pub fn received_after(&self, account: i64, after: i64) -> Result<Vec<MessageRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM messages m WHERE account_id = ?1 AND seq_local > ?2
               AND direction = 'in' AND action IS NULL ORDER BY seq_local"
        ))?;
        let rows = stmt
            .query_map(params![account, after], row_to_message)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Every conversation with its newest message, unread and failed counts, newest first (by
    /// when the newest message was sent). Its cost grows with the number of conversations, not
    /// of messages: [`CONVERSATIONS_SQL`].
    pub fn conversations(&self, account: i64) -> Result<Vec<Conversation>> {
        let mut stmt = self.conn.prepare_cached(CONVERSATIONS_SQL)?;
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

    /// How many outgoing messages still wait for the server (queued, sent, hibernated, retrying)
    /// or for the archive's answer (checking).
    pub fn pending_count(&self, account: i64) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT (SELECT count(*) FROM messages WHERE account_id = ?1
                          AND state IN ('queued', 'sent', 'hibernated', 'retrying'))
                      + (SELECT count(*) FROM messages WHERE account_id = ?1
                          AND state = 'checking')",
            )?
            .query_row([account], |r| r.get(0))?)
    }

    /// Keys of the messages being checked against an archive, oldest first: every one (`None`),
    /// the account's own archive's (`Some(None)`: one-to-one chats), or one room's.
    pub fn checking(&self, account: i64, archive: Option<Option<&str>>) -> Result<Vec<i64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq_local FROM messages WHERE account_id = ?1 AND state = 'checking'
               AND (?2 = 0 OR (?3 IS NULL AND kind = 'chat') OR (kind = 'groupchat' AND peer = ?3))
             ORDER BY seq_local",
        )?;
        let (scoped, room) = match archive {
            None => (false, None),
            Some(room) => (true, room),
        };
        let keys = stmt
            .query_map(params![account, scoped, room], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(keys)
    }

    /// The rooms that have messages being checked.
    pub fn rooms_checking(&self, account: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT peer FROM messages WHERE account_id = ?1 AND state = 'checking'
               AND kind = 'groupchat' ORDER BY peer",
        )?;
        let rooms = stmt
            .query_map([account], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rooms)
    }

    /// Our own one-to-one message to `peer` (by origin-id, else id `key`) appeared in the
    /// account's archive: the server has it. A message still waiting for that proof (`sent`,
    /// `hibernated`, `retrying`, `checking`) becomes `acked` and takes the archive's stanza-id.
    /// Returns the change, or `None` when no such message of ours waits (the caller then stores
    /// the result as any other, de-duplicated). Part of the caller's transaction.
    pub fn archived(
        &mut self,
        account: i64,
        peer: &str,
        key: &str,
        stanza_id: Option<&str>,
    ) -> Result<Option<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let row: Option<i64> = tx
            .prepare_cached(
                "SELECT seq_local FROM messages WHERE account_id = ?1 AND direction = 'out'
                 AND peer = ?2 AND (origin_id = ?3 OR id = ?3)
                 AND state IN ('sent', 'hibernated', 'retrying', 'checking')",
            )?
            .query_row(params![account, peer, key], |r| r.get(0))
            .optional()?;
        let mut change = None;
        if let Some(row) = row {
            if let Some(sid) = stanza_id {
                take_stanza_id(&tx, account, peer, row, sid)?;
                super::references::link_waiting(&tx, account, row)?;
            }
            change = move_one(&tx, row, State::Acked, None, None, now_ms())?;
        }
        tx.commit()?;
        Ok(change)
    }
}

/// The id an outgoing row names its target by (see [`QUEUED_SQL`]).
macro_rules! wire_target {
    () => {
        "coalesce(m.target, CASE WHEN m.kind = 'groupchat' AND coalesce(m.action, '') != 'correct'
                                 THEN t.stanza_id ELSE t.id END)"
    };
}

/// The columns of an [`OutboxItem`] of `messages m LEFT JOIN messages t` (its target).
macro_rules! outbox_columns {
    () => {
        concat!(
            "m.seq_local, m.id, m.origin_id, m.peer, m.body, m.kind, m.action, ",
            wire_target!(),
            ", m.payload,
             CASE WHEN t.direction = 'in' THEN
                  CASE WHEN m.kind = 'groupchat' THEN m.peer || '/' || t.from_nick ELSE m.peer END
             END,
             a.url, a.name, a.size, a.media_type, a.sha256, m.invite"
        )
    };
}

/// The conversation list of account `?1`. The peers are found by skipping through the
/// `messages_peer` index one peer at a time (a seek per conversation, not a scan of the
/// messages); each one's newest message is the last of its entries there that is not an action
/// (a correction or reaction); the unread and failed counts come from partial indexes that hold
/// only those rows.
pub(crate) const CONVERSATIONS_SQL: &str = "
    WITH RECURSIVE peers(p) AS (
        SELECT (SELECT min(peer) FROM messages WHERE account_id = ?1)
        UNION ALL
        SELECT (SELECT min(peer) FROM messages WHERE account_id = ?1 AND peer > p)
          FROM peers WHERE p IS NOT NULL
    ), newest(seq) AS (
        SELECT (SELECT seq_local FROM messages x
                 WHERE x.account_id = ?1 AND x.peer = p AND x.action IS NULL
                 ORDER BY x.seq_local DESC LIMIT 1)
          FROM peers WHERE p IS NOT NULL
    )
    SELECT m.peer, m.kind, m.body, coalesce(m.server_ts, m.created_at) AS at, m.direction,
           (SELECT count(*) FROM messages u INDEXED BY messages_unread
             WHERE u.account_id = ?1 AND u.peer = m.peer
               AND u.direction = 'in' AND u.state = 'received' AND u.action IS NULL),
           (SELECT count(*) FROM messages f INDEXED BY messages_failed
             WHERE f.account_id = ?1 AND f.peer = m.peer AND f.state = 'failed')
      FROM newest JOIN messages m ON m.seq_local = newest.seq
     ORDER BY at DESC, m.seq_local DESC";

/// The outbox query ([`Store::queued`]): it names `messages_pending`'s own condition word for
/// word, or SQLite would not use that partial index and would scan the account on every pump.
///
/// A row that acts on (or replies to) another message goes out naming that message's id; in group
/// chat (except a correction, which names the id) that is the room's stanza-id, so a row acting on
/// our own room message waits until the room has reflected it.
pub(crate) const QUEUED_SQL: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM messages m LEFT JOIN messages t ON t.seq_local = m.target_key
             LEFT JOIN attachments a ON a.message_key = m.seq_local
             WHERE m.account_id = ?1 AND m.state = 'queued'
               -- The index's own condition, word for word, so SQLite uses messages_pending
               -- (it does not infer it from state = 'queued' and scanned the account otherwise).
               AND m.state IN ('queued', 'sent', 'hibernated', 'retrying')
               -- A room message waits for this session's join (joined: 1 in, -1 refused, so
               -- it fails with the room's reason; 0 not yet, 2 lost and rejoining: it waits).
               AND (m.kind = 'chat' OR EXISTS (SELECT 1 FROM rooms r WHERE r.account_id = ?1
                                             AND r.jid = m.peer AND r.joined IN (1, -1)))
               AND (m.target_key IS NULL OR ",
    wire_target!(),
    " IS NOT NULL)
               -- A file message waits for its upload.
               AND (a.message_key IS NULL OR a.transfer = 'uploaded')
             ORDER BY m.seq_local LIMIT ?2"
);

const OUTBOX_COLUMNS: &str = outbox_columns!();

fn row_to_outbox(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        key: r.get(0)?,
        id: r.get(1)?,
        origin_id: r.get(2)?,
        peer: r.get(3)?,
        body: r.get(4)?,
        kind: r.get(5)?,
        action: r
            .get::<_, Option<String>>(6)?
            .as_deref()
            .and_then(Action::parse),
        target: r.get(7)?,
        payload: r.get(8)?,
        reply_to_jid: r.get(9)?,
        file: match r.get::<_, Option<String>>(10)? {
            Some(url) => Some(OutboxFile {
                url,
                name: r.get(11)?,
                size: r.get::<_, Option<i64>>(12)?.unwrap_or(0) as u64,
                media_type: r
                    .get::<_, Option<String>>(13)?
                    .unwrap_or_else(|| "application/octet-stream".into()),
                sha256: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
            }),
            None => None,
        },
        invite: r.get(15)?,
    })
}

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

/// Our message `key` to `peer` takes the `stanza_id` the server (or room) gave it, unless it has
/// one, or another message of that conversation has that id already.
fn take_stanza_id(tx: &Connection, account: i64, peer: &str, key: i64, sid: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE messages SET stanza_id = ?2 WHERE seq_local = ?1 AND stanza_id IS NULL
         AND NOT EXISTS (SELECT 1 FROM messages WHERE account_id = ?3 AND peer = ?4
                         AND stanza_id = ?2)",
    )?
    .execute(params![key, sid, account, peer])?;
    Ok(())
}

fn insert_inbound(tx: &Connection, account: i64, msg: &InboundMessage) -> Result<Stored> {
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
        return Ok(Stored::default());
    }
    let mut stored = Stored::default();
    let mut target_key = None;
    if let Some(target) = &msg.target {
        match super::references::resolve_inbound(tx, account, msg, target)? {
            Ok(Some((key, target_id))) => {
                target_key = Some(key);
                if let Some(action) = msg.action {
                    stored.updated.push(Updated {
                        peer: msg.peer.clone(),
                        id: target_id,
                        action,
                    });
                }
            }
            Ok(None) => {}
            Err(refusal) => {
                stored.refused.push(refusal);
                return Ok(stored);
            }
        }
    }
    let payload = (msg.action == Some(Action::React))
        .then(|| serde_json::to_string(&msg.reactions).expect("strings serialize"));
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
                               state, created_at, updated_at, server_ts, kind, other_device, from_nick,
                               action, target, target_key, payload, invite)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18)",
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
        msg.from_nick,
        msg.action.map(Action::as_str),
        msg.target,
        target_key,
        payload,
        msg.invite
    ])?;
    let key = tx.last_insert_rowid();
    if let Some(f) = &msg.file {
        super::attachments::insert_inbound(tx, account, key, f)?;
    }
    if msg.action.is_none() {
        let linked = super::references::link_waiting(tx, account, key)?;
        stored.updated.extend(linked.updated);
        stored.refused.extend(linked.refused);
    }
    stored.change = Some(StateChange {
        key,
        id,
        peer: msg.peer.clone(),
        state,
        error: None,
        body: Some(msg.body.clone()),
    });
    Ok(stored)
}
