//! The control outbox: stanzas that carry no user text but must not be lost (receipts, displayed
//! markers, presence answers, room joins). Like messages they are committed before they are written
//! and tracked by SM; unlike messages they are idempotent, so after a failed resumption they are
//! simply written again, and once acked they are deleted.

use rusqlite::{params, Connection};

use super::{now_ms, Result, Store};
use crate::sm::Seq;

/// What a control row sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// A XEP-0184 receipt for message `ref_id`, to `target` (full JID).
    Receipt,
    /// A XEP-0333 displayed marker for message `ref_id`, to `target`.
    Displayed,
    /// A presence of type `payload` (subscribe, subscribed, unsubscribed) to `target`.
    Presence,
    /// Join room `target` with nick `payload`.
    MucJoin,
    /// Leave room `target` (nick `payload`).
    MucLeave,
}

impl ControlKind {
    fn as_str(self) -> &'static str {
        match self {
            ControlKind::Receipt => "receipt",
            ControlKind::Displayed => "displayed",
            ControlKind::Presence => "presence",
            ControlKind::MucJoin => "muc-join",
            ControlKind::MucLeave => "muc-leave",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "receipt" => ControlKind::Receipt,
            "displayed" => ControlKind::Displayed,
            "presence" => ControlKind::Presence,
            "muc-join" => ControlKind::MucJoin,
            "muc-leave" => ControlKind::MucLeave,
            _ => return None,
        })
    }
}

/// A control row ready to be written.
#[derive(Clone, Debug)]
pub struct ControlItem {
    /// Local key.
    pub key: i64,
    /// What to send.
    pub kind: ControlKind,
    /// To whom.
    pub target: String,
    /// The message it refers to (receipts, markers).
    pub ref_id: Option<String>,
    /// Kind-specific data (presence type, nick).
    pub payload: Option<String>,
}

/// A change to a control row, applied with message moves in [`Store::apply_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMove {
    /// Written to a stream (with its SM seq, if SM is on).
    Written {
        /// The row.
        key: i64,
        /// Its seq.
        seq: Option<Seq>,
    },
    /// Acked by the server (or written without SM): delete it.
    Done {
        /// The row.
        key: i64,
    },
    /// Its stream is gone for good: write it again on the next one.
    Pending {
        /// The row.
        key: i64,
    },
}

pub(crate) fn enqueue(
    conn: &Connection,
    account: i64,
    kind: ControlKind,
    target: &str,
    ref_id: Option<&str>,
    payload: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO control (account_id, kind, target, ref_id, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        account,
        kind.as_str(),
        target,
        ref_id,
        payload,
        now_ms()
    ])?;
    Ok(())
}

pub(crate) fn apply_moves(conn: &Connection, moves: &[ControlMove]) -> Result<()> {
    for m in moves {
        match *m {
            ControlMove::Written { key, seq } => conn
                .prepare_cached(
                    "UPDATE control SET state = 'written', sm_seq = ?2 WHERE seq_local = ?1",
                )?
                .execute(params![key, seq])?,
            ControlMove::Done { key } => conn
                .prepare_cached("DELETE FROM control WHERE seq_local = ?1")?
                .execute([key])?,
            ControlMove::Pending { key } => conn
                .prepare_cached(
                    "UPDATE control SET state = 'pending', sm_seq = NULL WHERE seq_local = ?1",
                )?
                .execute([key])?,
        };
    }
    Ok(())
}

const CONTROL_COLUMNS: &str = "seq_local, kind, target, ref_id, payload";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<ControlItem>> {
    let kind: String = r.get(1)?;
    // The CHECK constraint admits only known kinds; a row from a newer schema would be skipped.
    let Some(kind) = ControlKind::parse(&kind) else {
        tracing::warn!(kind, "unknown control row kind; skipped");
        return Ok(None);
    };
    Ok(Some(ControlItem {
        key: r.get(0)?,
        kind,
        target: r.get(2)?,
        ref_id: r.get(3)?,
        payload: r.get(4)?,
    }))
}

impl Store {
    /// Queues a control stanza.
    pub fn enqueue_control(
        &mut self,
        account: i64,
        kind: ControlKind,
        target: &str,
        ref_id: Option<&str>,
        payload: Option<&str>,
    ) -> Result<()> {
        enqueue(&self.conn, account, kind, target, ref_id, payload)
    }

    /// The oldest `limit` pending control rows.
    pub fn pending_control(&self, account: i64, limit: usize) -> Result<Vec<ControlItem>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CONTROL_COLUMNS} FROM control
             WHERE account_id = ?1 AND state = 'pending' ORDER BY seq_local LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![account, limit as i64], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// Control rows among `keys` that still exist, in the order given (re-sent after `<resumed/>`).
    pub fn control_items(&self, keys: &[i64]) -> Result<Vec<ControlItem>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CONTROL_COLUMNS} FROM control WHERE seq_local = ?1"
        ))?;
        let mut out = Vec::new();
        for k in keys {
            let mut rows = stmt.query([k])?;
            if let Some(r) = rows.next()? {
                out.extend(row(r)?);
            }
        }
        Ok(out)
    }

    /// Control rows written to a stream, with their seq (for restoring the SM engine).
    pub fn control_in_flight(&self, account: i64) -> Result<Vec<(Option<Seq>, i64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sm_seq, seq_local FROM control WHERE account_id = ?1 AND state = 'written'
             ORDER BY seq_local",
        )?;
        let rows = stmt
            .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}
