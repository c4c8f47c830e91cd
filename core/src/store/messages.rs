//! Message rows and their state changes. Every function that moves messages takes the SM snapshot
//! that the same change produced and writes both in one transaction.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{now_ms, save_sm, Result, Store, StoreError};
use crate::delivery::{Direction, State};
use crate::sm::{Seq, SmSnapshot};

/// A message as the CLI prints it and front ends show it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MessageRow {
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
    pub attempts: i64,
    /// Committed locally (ms since epoch).
    pub created_at: i64,
    /// Last state change (ms).
    pub updated_at: i64,
    /// Last written to a stream (ms).
    pub sent_at: Option<i64>,
    /// Acked by the server (ms).
    pub acked_at: Option<i64>,
    /// The sender's or server's timestamp, for inbound messages (ms).
    pub server_ts: Option<i64>,
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

/// An incoming chat message, parsed and checked by the connection layer.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    /// Stanza id, if any.
    pub id: Option<String>,
    /// XEP-0359 origin-id, if any.
    pub origin_id: Option<String>,
    /// XEP-0359 stanza-id whose `by` is our own bare JID, if any.
    pub stanza_id: Option<String>,
    /// Sender bare JID.
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

const ROW_COLUMNS: &str = "id, origin_id, stanza_id, peer, direction, body, state, error, attempts,
    created_at, updated_at, sent_at, acked_at, server_ts";

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    let dir: String = r.get(4)?;
    let state: String = r.get(6)?;
    Ok(MessageRow {
        id: r.get(0)?,
        origin_id: r.get(1)?,
        stanza_id: r.get(2)?,
        peer: r.get(3)?,
        direction: if dir == "in" {
            Direction::In
        } else {
            Direction::Out
        },
        body: r.get(5)?,
        state: state.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
        })?,
        error: r.get(7)?,
        attempts: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        sent_at: r.get(11)?,
        acked_at: r.get(12)?,
        server_ts: r.get(13)?,
    })
}

/// Moves one message (by key) to `to` if its current state allows it. Returns the change.
fn move_one(
    tx: &Transaction<'_>,
    key: i64,
    to: State,
    error: Option<&str>,
    seq: Option<Seq>,
    now: i64,
) -> Result<Option<StateChange>> {
    let sources = State::sources_of(to);
    let in_list = sources
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    // sm_seq stays only while the message is in flight on an SM stream.
    let keep_seq = matches!(to, State::Sent | State::Retrying | State::Hibernated);
    let sql = format!(
        "UPDATE messages SET state = ?2, updated_at = ?3,
            error = CASE WHEN ?2 = 'failed' THEN ?4 WHEN ?2 = 'queued' THEN NULL ELSE error END,
            sm_seq = CASE WHEN ?6 THEN coalesce(?5, sm_seq) ELSE NULL END,
            attempts = attempts + (?2 IN ('sent', 'retrying')),
            sent_at = CASE WHEN ?2 IN ('sent', 'retrying') THEN ?3 ELSE sent_at END,
            acked_at = CASE WHEN ?2 = 'acked' THEN ?3 ELSE acked_at END
         WHERE seq_local = ?1 AND state IN ({in_list})
         RETURNING id, peer"
    );
    let changed = tx
        .prepare_cached(&sql)?
        .query_row(params![key, to.as_str(), now, error, seq, keep_seq], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
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
        let tx = self.conn.transaction()?;
        let now = now_ms();
        let mut out = Vec::with_capacity(messages.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO messages (id, origin_id, account_id, peer, direction, body, state,
                                       created_at, updated_at)
                 VALUES (?1, ?1, ?2, ?3, 'out', ?4, 'queued', ?5, ?5)",
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

    /// The oldest `limit` queued messages.
    pub fn queued(&self, account: i64, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq_local, id, origin_id, peer, body FROM messages
             WHERE account_id = ?1 AND state = 'queued' ORDER BY seq_local LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![account, limit as i64], |r| {
                Ok(OutboxItem {
                    key: r.get(0)?,
                    id: r.get(1)?,
                    origin_id: r.get(2)?,
                    peer: r.get(3)?,
                    body: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Loads outbox items by key (for re-sending after `<resumed/>`), in the order given.
    pub fn outbox_items(&self, keys: &[i64]) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq_local, id, origin_id, peer, body FROM messages WHERE seq_local = ?1",
        )?;
        keys.iter()
            .map(|k| {
                Ok(stmt.query_row([k], |r| {
                    Ok(OutboxItem {
                        key: r.get(0)?,
                        id: r.get(1)?,
                        origin_id: r.get(2)?,
                        peer: r.get(3)?,
                        body: r.get(4)?,
                    })
                })?)
            })
            .collect()
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
        let tx = self.conn.transaction()?;
        let now = now_ms();
        let mut changes = Vec::with_capacity(moves.len());
        for m in moves {
            if let Some(c) = move_one(&tx, m.key, m.to, m.error.as_deref(), m.seq, now)? {
                changes.push(c);
            }
        }
        if let Some(snap) = snap {
            save_sm(&tx, account, snap)?;
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Outgoing messages in flight (`sent`, `hibernated`, `retrying`) with their SM seq, for
    /// restoring the SM engine after a restart.
    pub fn in_flight(&self, account: i64) -> Result<Vec<(Option<Seq>, i64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sm_seq, seq_local FROM messages
             WHERE account_id = ?1 AND direction = 'out' AND state IN ('sent', 'hibernated', 'retrying')
             ORDER BY seq_local",
        )?;
        let rows = stmt
            .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Commits an inbound message and counts it in the inbound `h` (`snap`, already incremented by
    /// the caller) in one transaction. A duplicate (same origin-id, or same id when the sender set no
    /// origin-id, from the same peer; or the same server stanza-id) is not stored again, but still
    /// counted. Returns the new row's change, or `None` for a duplicate.
    pub fn store_inbound(
        &mut self,
        account: i64,
        msg: &InboundMessage,
        snap: &SmSnapshot,
    ) -> Result<Option<StateChange>> {
        let tx = self.conn.transaction()?;
        let dedupe_key = msg.origin_id.as_ref().or(msg.id.as_ref());
        let mut duplicate = false;
        if let Some(key) = dedupe_key {
            duplicate = tx
                .prepare_cached(
                    "SELECT 1 FROM messages WHERE account_id = ?1 AND direction = 'in' AND peer = ?2
                     AND (origin_id = ?3 OR (origin_id IS NULL AND id = ?3))",
                )?
                .exists(params![account, msg.peer, key])?;
        }
        if !duplicate {
            if let Some(sid) = &msg.stanza_id {
                duplicate = tx
                    .prepare_cached(
                        "SELECT 1 FROM messages WHERE account_id = ?1 AND stanza_id = ?2",
                    )?
                    .exists(params![account, sid])?;
            }
        }
        let change = if duplicate {
            None
        } else {
            let now = now_ms();
            let id = msg
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            tx.prepare_cached(
                "INSERT INTO messages (id, origin_id, stanza_id, account_id, peer, direction, body,
                                       state, created_at, updated_at, server_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'in', ?6, 'received', ?7, ?7, ?8)",
            )?
            .execute(params![
                id,
                dedupe_key,
                msg.stanza_id,
                account,
                msg.peer,
                msg.body,
                now,
                msg.server_ts
            ])?;
            Some(StateChange {
                key: tx.last_insert_rowid(),
                id,
                peer: msg.peer.clone(),
                state: State::Received,
                error: None,
                body: Some(msg.body.clone()),
            })
        };
        save_sm(&tx, account, snap)?;
        tx.commit()?;
        Ok(change)
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
        let tx = self.conn.transaction()?;
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
