//! Entity capabilities (XEP-0115): what each verified capabilities hash stands for, and which hash
//! each online peer resource announced. The engine (`engine/caps.rs`) decides what to ask and
//! verifies the hash; this module only keeps what was verified, so a hash is asked for once per
//! installation, not once per session.

use std::collections::BTreeSet;

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, Result, Store, StoreError};

/// The most verified hashes kept; beyond it the oldest go (a peer changing its features on every
/// presence cannot grow the file without bound).
pub const MAX_CAPS: i64 = 10_000;
/// The most announced resources kept per account.
pub const MAX_PEER_CAPS: i64 = 10_000;

/// XEP-0333's feature: a peer whose verified capabilities lack it gets no displayed markers.
pub const MARKERS: &str = "urn:xmpp:chat-markers:0";

/// A verified identity: category, type and name.
pub type CapsIdentity = (String, String, Option<String>);

impl Store {
    /// The features a verified hash stands for, or `None` if it was never verified here.
    pub fn caps_features(&self, algo: &str, ver: &str) -> Result<Option<BTreeSet<String>>> {
        let json: Option<String> = self
            .conn
            .prepare_cached("SELECT features FROM caps WHERE algo = ?1 AND ver = ?2")?
            .query_row(params![algo, ver], |r| r.get(0))
            .optional()?;
        json.map(|j| decode(&self.path, &j)).transpose()
    }

    /// Keeps what a hash stands for, once the engine computed the same hash from the answer.
    pub fn add_caps(
        &mut self,
        algo: &str,
        ver: &str,
        identities: &[CapsIdentity],
        features: &BTreeSet<String>,
    ) -> Result<()> {
        let ids = serde_json::to_string(identities).map_err(encode_error)?;
        let feats = serde_json::to_string(features).map_err(encode_error)?;
        self.conn
            .prepare_cached(
                "INSERT INTO caps (algo, ver, identities, features, verified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (algo, ver) DO UPDATE SET verified_at = excluded.verified_at",
            )?
            .execute(params![algo, ver, ids, feats, now_ms()])?;
        self.conn
            .prepare_cached(
                "DELETE FROM caps WHERE rowid IN (SELECT rowid FROM caps ORDER BY verified_at DESC
                 LIMIT -1 OFFSET ?1)",
            )?
            .execute([MAX_CAPS])?;
        Ok(())
    }

    /// Peer resource `jid` (a full JID) announced `algo`/`ver`.
    pub fn set_peer_caps(&mut self, account: i64, jid: &str, algo: &str, ver: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO peer_caps (account_id, jid, algo, ver, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account_id, jid) DO UPDATE
                 SET algo = excluded.algo, ver = excluded.ver, seen_at = excluded.seen_at",
            )?
            .execute(params![account, jid, algo, ver, now_ms()])?;
        self.conn
            .prepare_cached(
                "DELETE FROM peer_caps WHERE rowid IN (SELECT rowid FROM peer_caps
                 WHERE account_id = ?1 ORDER BY seen_at DESC LIMIT -1 OFFSET ?2)",
            )?
            .execute(params![account, MAX_PEER_CAPS])?;
        Ok(())
    }

    /// Peer resource `jid` went offline (or announced no capabilities).
    pub fn remove_peer_caps(&mut self, account: i64, jid: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM peer_caps WHERE account_id = ?1 AND jid = ?2")?
            .execute(params![account, jid])?;
        Ok(())
    }

    /// A new session: every peer announces itself again.
    pub fn clear_peer_caps(&mut self, account: i64) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM peer_caps WHERE account_id = ?1")?
            .execute([account])?;
        Ok(())
    }

    /// What the online resources of `bare` support, as their verified hashes say: the union over
    /// them, or `None` when none of them announced a verified hash (unknown, not "nothing").
    pub fn peer_features(&self, account: i64, bare: &str) -> Result<Option<BTreeSet<String>>> {
        peer_features_in(&self.conn, &self.path, account, bare)
    }
}

/// [`Store::peer_features`] inside a transaction.
pub(super) fn peer_features_in(
    conn: &Connection,
    path: &Path,
    account: i64,
    bare: &str,
) -> Result<Option<BTreeSet<String>>> {
    // The resources of `bare` are the JIDs from "bare/" up to "bare0" ('0' follows '/').
    let mut stmt = conn.prepare_cached(
        "SELECT c.features FROM peer_caps p JOIN caps c ON c.algo = p.algo AND c.ver = p.ver
         WHERE p.account_id = ?1 AND p.jid >= ?2 AND p.jid < ?3",
    )?;
    let rows = stmt
        .query_map(
            params![account, format!("{bare}/"), format!("{bare}0")],
            |r| r.get::<_, String>(0),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut all = BTreeSet::new();
    for json in rows {
        all.extend(decode(path, &json)?);
    }
    Ok(Some(all))
}

fn decode(path: &Path, json: &str) -> Result<BTreeSet<String>> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("a capabilities row is not a feature list: {e}"),
    })
}

fn encode_error(e: serde_json::Error) -> StoreError {
    StoreError::Refused(format!("cannot encode capabilities: {e}"))
}
