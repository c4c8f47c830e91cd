//! Blocking (XEP-0191): the user's blocklist, kept per entry with the user's wish and what the
//! server said of it. The session engine tells the server (`engine/blocking.rs`); this module
//! keeps the list, answers "is this sender blocked?", and merges what the server sends.
//!
//! An entry is a JID as XEP-0191 names it: a bare or full JID, or a domain. A sender is blocked
//! when the user's wish for any of its forms (full, bare, domain, domain/resource) is `block`,
//! whether the server confirmed it yet or not: the user's choice applies at once, locally.

use rusqlite::OptionalExtension;

use super::{now_ms, Result, Store};

/// What the user wants for a blocklist entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
pub enum BlockWant {
    /// Blocked: nothing of theirs is shown; told to the server until it confirmed it.
    Block,
    /// Unblocked, not yet confirmed by the server (the row goes once it is).
    Unblock,
}

/// What the server last said of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
pub enum BlockState {
    /// Not told yet, or on its way.
    Pending,
    /// On the server's list (for `Block`).
    Confirmed,
    /// The server refused it (`error` says why); told again on the next new session.
    Refused,
}

/// One entry of the blocklist.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
pub struct BlockEntry {
    /// The JID as blocked: bare, full, or a domain.
    pub jid: String,
    /// Block or unblock.
    pub want: BlockWant,
    /// What the server said.
    pub state: BlockState,
    /// Why the server refused it.
    pub error: Option<String>,
}

impl BlockWant {
    /// `block` or `unblock`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockWant::Block => "block",
            BlockWant::Unblock => "unblock",
        }
    }
}

impl BlockState {
    /// `pending`, `confirmed` or `refused`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockState::Pending => "pending",
            BlockState::Confirmed => "confirmed",
            BlockState::Refused => "refused",
        }
    }
}

/// The forms of `jid` an entry may name (XEP-0191 §3.4, the matching rules of XEP-0016): the
/// full JID, the bare JID, the domain and domain/resource, each only once.
pub fn block_forms(jid: &tokio_xmpp::jid::Jid) -> Vec<String> {
    let mut forms = vec![jid.to_string(), jid.to_bare().to_string()];
    forms.push(jid.domain().to_string());
    if let Some(res) = jid.resource() {
        forms.push(format!("{}/{}", jid.domain(), res));
    }
    forms.sort();
    forms.dedup();
    forms
}

impl Store {
    /// Records the user's wish for each of `jids` (already normalised), pending until the server
    /// confirms it; an entry's earlier wish is replaced.
    pub fn set_block(&mut self, account: i64, jids: &[String], want: BlockWant) -> Result<()> {
        let tx = super::Tx::begin(&mut self.conn)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO blocklist (account_id, jid, want, state, error, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', NULL, ?4)
                 ON CONFLICT (account_id, jid) DO UPDATE SET want = ?3, state = 'pending',
                     error = NULL, updated_at = ?4",
            )?;
            for jid in jids {
                stmt.execute(rusqlite::params![account, jid, want.as_str(), now_ms()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The blocklist as the user sees it: every entry the user wants blocked, and the unblocks
    /// not yet confirmed, by JID.
    pub fn blocklist(&self, account: i64) -> Result<Vec<BlockEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, want, state, error FROM blocklist WHERE account_id = ?1 ORDER BY jid",
        )?;
        let rows = stmt.query_map([account], |r| {
            let want: String = r.get(1)?;
            let state: String = r.get(2)?;
            Ok(BlockEntry {
                jid: r.get(0)?,
                want: if want == "unblock" {
                    BlockWant::Unblock
                } else {
                    BlockWant::Block
                },
                state: match state.as_str() {
                    "confirmed" => BlockState::Confirmed,
                    "refused" => BlockState::Refused,
                    _ => BlockState::Pending,
                },
                error: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether what `from` sends is blocked (any of its forms wanted blocked).
    pub fn is_blocked(&self, account: i64, from: &tokio_xmpp::jid::Jid) -> Result<bool> {
        let forms = block_forms(from);
        let marks = vec!["?"; forms.len()].join(", ");
        let sql = format!(
            "SELECT 1 FROM blocklist WHERE account_id = ? AND want = 'block' AND jid IN ({marks})
             LIMIT 1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let params = std::iter::once(&account as &dyn rusqlite::ToSql)
            .chain(forms.iter().map(|f| f as &dyn rusqlite::ToSql));
        Ok(stmt
            .query_row(rusqlite::params_from_iter(params), |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The entries whose wish is still to be told: `(block, unblock)`.
    pub fn block_pending(&self, account: i64) -> Result<(Vec<String>, Vec<String>)> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, want FROM blocklist WHERE account_id = ?1 AND state = 'pending'
             ORDER BY jid",
        )?;
        let mut block = Vec::new();
        let mut unblock = Vec::new();
        let rows = stmt.query_map([account], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (jid, want) = row?;
            if want == "unblock" {
                unblock.push(jid);
            } else {
                block.push(jid);
            }
        }
        Ok((block, unblock))
    }

    /// A new session: what the server refused is told again.
    pub fn block_retry(&mut self, account: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE blocklist SET state = 'pending' WHERE account_id = ?1 AND state = 'refused'",
            [account],
        )?;
        Ok(())
    }

    /// The server answered the wish `want` for `jids`: confirmed (a block is kept, an unblock
    /// removed) or refused with the reason. Entries whose wish changed since are left for the
    /// next telling. Returns the entries the answer settled.
    pub fn block_answered(
        &mut self,
        account: i64,
        want: BlockWant,
        jids: &[String],
        outcome: std::result::Result<(), String>,
    ) -> Result<Vec<String>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let mut settled = Vec::new();
        {
            let sql = match (want, &outcome) {
                (BlockWant::Unblock, Ok(())) => {
                    "DELETE FROM blocklist WHERE account_id = ?1 AND jid = ?2 AND want = ?3
                         AND state = 'pending'"
                }
                (BlockWant::Block, Ok(())) => {
                    "UPDATE blocklist SET state = 'confirmed', error = ?4, updated_at = ?5
                     WHERE account_id = ?1 AND jid = ?2 AND want = ?3 AND state = 'pending'"
                }
                (_, Err(_)) => {
                    "UPDATE blocklist SET state = 'refused', error = ?4, updated_at = ?5
                     WHERE account_id = ?1 AND jid = ?2 AND want = ?3 AND state = 'pending'"
                }
            };
            let mut stmt = tx.prepare(sql)?;
            let error = outcome.err();
            for jid in jids {
                let n = if want == BlockWant::Unblock && error.is_none() {
                    stmt.execute(rusqlite::params![account, jid, want.as_str()])?
                } else {
                    stmt.execute(rusqlite::params![
                        account,
                        jid,
                        want.as_str(),
                        error,
                        now_ms()
                    ])?
                };
                if n > 0 {
                    settled.push(jid.clone());
                }
            }
        }
        tx.commit()?;
        Ok(settled)
    }

    /// The server's whole list (the answer to `<blocklist/>`): confirmed entries it lacks were
    /// unblocked elsewhere and go; its entries are confirmed, except where the user's own wish
    /// waits to be told (that wish is newer). Returns `(blocked, unblocked)`: what changed.
    pub fn blocklist_synced(
        &mut self,
        account: i64,
        server: &[String],
    ) -> Result<(Vec<String>, Vec<String>)> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let mut gone = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT jid FROM blocklist WHERE account_id = ?1 AND want = 'block'
                 AND state = 'confirmed'",
            )?;
            let confirmed: Vec<String> = stmt
                .query_map([account], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for jid in confirmed {
                if !server.contains(&jid) {
                    tx.execute(
                        "DELETE FROM blocklist WHERE account_id = ?1 AND jid = ?2",
                        rusqlite::params![account, jid],
                    )?;
                    gone.push(jid);
                }
            }
        }
        let blocked = Self::blocks_learnt(&tx, account, server)?;
        tx.commit()?;
        Ok((blocked, gone))
    }

    /// A blocklist push (another device of ours, or the server, changed the list): `block` adds
    /// `jids`, else removes them (all of them when `jids` is empty, as XEP-0191 says). A wish of
    /// the user's own that waits to be told stays (it is told after, so it is the last word).
    /// Returns the entries that changed.
    pub fn blocklist_pushed(
        &mut self,
        account: i64,
        block: bool,
        jids: &[String],
    ) -> Result<Vec<String>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let changed = if block {
            Self::blocks_learnt(&tx, account, jids)?
        } else {
            let mut stmt = tx.prepare(
                "DELETE FROM blocklist WHERE account_id = ?1 AND want = 'block'
                 AND state = 'confirmed' AND (?2 IS NULL OR jid = ?2) RETURNING jid",
            )?;
            let mut changed = Vec::new();
            if jids.is_empty() {
                let rows = stmt.query_map(rusqlite::params![account, None::<String>], |r| {
                    r.get::<_, String>(0)
                })?;
                changed = rows.collect::<rusqlite::Result<_>>()?;
            }
            for jid in jids {
                let rows =
                    stmt.query_map(rusqlite::params![account, jid], |r| r.get::<_, String>(0))?;
                changed.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            changed.sort();
            changed
        };
        tx.commit()?;
        Ok(changed)
    }

    /// The server says `jids` are blocked: kept as confirmed, unless the user's own wish for an
    /// entry is not confirmed yet. Returns those newly blocked (not here before).
    fn blocks_learnt(
        tx: &rusqlite::Connection,
        account: i64,
        jids: &[String],
    ) -> Result<Vec<String>> {
        let mut learnt = Vec::new();
        let mut before =
            tx.prepare("SELECT want, state FROM blocklist WHERE account_id = ?1 AND jid = ?2")?;
        for jid in jids {
            let row: Option<(String, String)> = before
                .query_row(rusqlite::params![account, jid], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match row.as_ref().map(|(w, s)| (w.as_str(), s.as_str())) {
                // Already so.
                Some(("block", "confirmed")) => {}
                // The user's own wish, not confirmed yet (waiting, or refused and told again
                // on the next session): it stays, and is told.
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO blocklist (account_id, jid, want, state, error, updated_at)
                         VALUES (?1, ?2, 'block', 'confirmed', NULL, ?3)",
                        rusqlite::params![account, jid, now_ms()],
                    )?;
                    learnt.push(jid.clone());
                }
            }
        }
        Ok(learnt)
    }
}
