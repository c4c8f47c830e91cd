//! Files on messages: the durable upload job of ours and the download of theirs (schema v8).
//!
//! Ours: [`Store::enqueue_file`] commits the message and its attachment (`slot-needed`) in one
//! transaction, after the blob is in the blob store. The engine asks the server's upload service
//! for a slot ([`Store::needing_slot`], [`Store::set_slot`]); the transfer worker PUTs the blob
//! ([`Store::uploads`], [`Store::uploaded`]); only then does the message leave the outbox (it
//! waits in `queued`, see `QUEUED_SQL`), with the file's URL. Each step survives a kill: a slot
//! is asked again, a PUT made again. A final refusal (too large, quota, forbidden) fails the
//! message with the reason, and the user decides, as for text.
//!
//! Theirs: a message with a link (XEP-0066) and maybe metadata (XEP-0446) gets an attachment
//! `remote`; the worker downloads it into the blob store (resuming after a kill), checks the size
//! and the announced hash, and marks it `downloaded`, or `failed` with the reason.

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::move_one;
pub use super::rows::{Attachment, InboundFile};
use super::{now_ms, Result, Store, StoreError};
use crate::delivery::State;
use crate::store::StateChange;

/// A file the user picked, already in the blob store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFile {
    /// The name to send it under.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// MIME type.
    pub media_type: String,
    /// SHA-256 (hex): its blob.
    pub sha256: String,
}

/// An upload that needs a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotNeeded {
    /// The message's key.
    pub key: i64,
    /// The file's name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// MIME type.
    pub media_type: String,
}

/// An upload with a slot: what to PUT where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The message's key.
    pub key: i64,
    /// The message's id.
    pub id: String,
    /// The recipient.
    pub peer: String,
    /// The blob.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// MIME type.
    pub media_type: String,
    /// Where to PUT.
    pub put_url: String,
    /// Headers to send with the PUT.
    pub headers: Vec<(String, String)>,
    /// Where it will be fetched from.
    pub get_url: String,
}

/// A download to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// The message's key.
    pub key: i64,
    /// The message's id.
    pub id: String,
    /// The conversation.
    pub peer: String,
    /// Where from.
    pub url: String,
    /// Announced size.
    pub size: Option<u64>,
    /// Announced SHA-256 (hex).
    pub sha256: Option<String>,
}

/// The attachment of message `key`, if it has one.
pub(super) fn attachment(
    conn: &Connection,
    blobs: &super::Blobs,
    key: i64,
) -> Result<Option<Attachment>> {
    Ok(conn
        .prepare_cached(
            "SELECT name, size, media_type, sha256, url, transfer, done_bytes, error
             FROM attachments WHERE message_key = ?1",
        )?
        .query_row([key], |r| {
            Ok(Attachment {
                name: r.get(0)?,
                size: r.get(1)?,
                media_type: r.get(2)?,
                sha256: r.get(3)?,
                url: r.get(4)?,
                transfer: r.get(5)?,
                done_bytes: r.get(6)?,
                error: r.get(7)?,
                local_path: None,
            })
        })
        .optional()?
        .map(|mut a| {
            let here = matches!(
                a.transfer.as_str(),
                "slot-needed" | "uploading" | "uploaded"
            ) || a.transfer == "downloaded"
                || (a.transfer == "failed" && a.url.is_none());
            if let (true, Some(sha)) = (here, &a.sha256) {
                if blobs.has(sha) {
                    a.local_path = Some(blobs.path(sha).to_string_lossy().into_owned());
                }
            }
            a
        }))
}

/// Stores the attachment of an inbound message (part of its transaction).
pub(super) fn insert_inbound(
    tx: &Connection,
    account: i64,
    key: i64,
    f: &InboundFile,
) -> Result<()> {
    let transfer = if f.refused.is_some() {
        "failed"
    } else {
        "remote"
    };
    tx.prepare_cached(
        "INSERT INTO attachments (message_key, account_id, name, size, media_type, sha256, url,
                                  transfer, error, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        key,
        account,
        f.name,
        f.size.map(|s| s as i64),
        f.media_type,
        f.sha256,
        f.url,
        transfer,
        f.refused,
        now_ms()
    ])?;
    Ok(())
}

/// A failed file message the user resends: its upload starts again (the blob is still here).
pub(super) fn restart_upload(tx: &Connection, key: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE attachments SET transfer = 'slot-needed', error = NULL, slot_attempts = 0,
                                done_bytes = 0, put_url = NULL, put_headers = NULL, url = NULL,
                                updated_at = ?2
         WHERE message_key = ?1 AND transfer = 'failed' AND sha256 IS NOT NULL",
    )?
    .execute(params![key, now_ms()])?;
    Ok(())
}

/// [`Store::needing_slot`], asked on every outbox pump: it names `attachments_work`'s own
/// condition word for word, so SQLite uses that partial index instead of scanning every file.
pub(crate) const NEEDING_SLOT_SQL: &str =
    "SELECT a.message_key, a.name, a.size, a.media_type FROM attachments a
     JOIN messages m ON m.seq_local = a.message_key
     WHERE a.account_id = ?1 AND a.transfer = 'slot-needed'
       AND a.transfer IN ('slot-needed', 'uploading', 'remote', 'downloading')
       AND m.state = 'queued'
     ORDER BY a.message_key";

impl Store {
    /// Commits a message to `to` carrying `file` (already in the blob store), in one transaction:
    /// the message `queued`, its upload `slot-needed`. Returns the message's change.
    pub fn enqueue_file(&mut self, account: i64, to: &str, file: &NewFile) -> Result<StateChange> {
        if !self.blobs.has(&file.sha256) {
            return Err(StoreError::Refused(format!(
                "the file {} is not in the blob store",
                file.name
            )));
        }
        let tx = super::Tx::begin(&mut self.conn)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        tx.prepare_cached(
            "INSERT INTO messages (id, origin_id, account_id, peer, direction, body, state,
                                   created_at, updated_at, kind)
             VALUES (?1, ?1, ?2, ?3, 'out', '', 'queued', ?4, ?4,
                     CASE WHEN EXISTS (SELECT 1 FROM rooms WHERE account_id = ?2 AND jid = ?3)
                          THEN 'groupchat' ELSE 'chat' END)",
        )?
        .execute(params![id, account, to, now])?;
        let key = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO attachments (message_key, account_id, name, size, media_type, sha256,
                                      transfer, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'slot-needed', ?7)",
        )?
        .execute(params![
            key,
            account,
            file.name,
            file.size as i64,
            file.media_type,
            file.sha256,
            now
        ])?;
        tx.commit()?;
        Ok(StateChange {
            key,
            id,
            peer: to.to_owned(),
            state: State::Queued,
            error: None,
            body: None,
        })
    }

    /// Our uploads that need a slot (their message still queued), oldest first.
    pub fn needing_slot(&self, account: i64) -> Result<Vec<SlotNeeded>> {
        let mut stmt = self.conn.prepare_cached(NEEDING_SLOT_SQL)?;
        let rows = stmt
            .query_map([account], |r| {
                Ok(SlotNeeded {
                    key: r.get(0)?,
                    name: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    media_type: r
                        .get::<_, Option<String>>(3)?
                        .unwrap_or_else(|| "application/octet-stream".into()),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The server granted a slot: the upload may start.
    pub fn set_slot(
        &mut self,
        key: i64,
        put_url: &str,
        headers: &[(String, String)],
        get_url: &str,
    ) -> Result<()> {
        let headers = serde_json::to_string(headers).expect("strings serialize");
        self.conn
            .prepare_cached(
                "UPDATE attachments SET transfer = 'uploading', put_url = ?2, put_headers = ?3,
                                        url = ?4, done_bytes = 0, error = NULL, updated_at = ?5
                 WHERE message_key = ?1 AND transfer = 'slot-needed'",
            )?
            .execute(params![key, put_url, headers, get_url, now_ms()])?;
        Ok(())
    }

    /// The upload of message `key` cannot go on now. `final_`: it never will (too large, quota,
    /// forbidden, a hostile slot): the attachment and its message fail with `why`, and the user
    /// decides. Otherwise a new slot is asked for later; after three the failure is final.
    pub fn upload_failed(&mut self, key: i64, why: &str, final_: bool) -> Result<Vec<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let attempts: i64 = tx
            .prepare_cached(
                "UPDATE attachments SET slot_attempts = slot_attempts + 1, updated_at = ?2
                 WHERE message_key = ?1 RETURNING slot_attempts",
            )?
            .query_row(params![key, now_ms()], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let mut changes = Vec::new();
        if final_ || attempts >= 3 {
            tx.prepare_cached(
                "UPDATE attachments SET transfer = 'failed', error = ?2, put_url = NULL,
                                        put_headers = NULL, url = NULL WHERE message_key = ?1",
            )?
            .execute(params![key, why])?;
            changes.extend(move_one(
                &tx,
                key,
                State::Failed,
                Some(why),
                None,
                now_ms(),
            )?);
        } else {
            tx.prepare_cached(
                "UPDATE attachments SET transfer = 'slot-needed', error = ?2, put_url = NULL,
                                        put_headers = NULL, url = NULL, done_bytes = 0
                 WHERE message_key = ?1",
            )?
            .execute(params![key, why])?;
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Our uploads with a slot, oldest first.
    pub fn uploads(&self, account: i64) -> Result<Vec<Upload>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.message_key, m.id, m.peer, a.sha256, a.size, a.media_type, a.put_url,
                    a.put_headers, a.url
             FROM attachments a JOIN messages m ON m.seq_local = a.message_key
             WHERE a.account_id = ?1 AND a.transfer = 'uploading' ORDER BY a.message_key",
        )?;
        let rows = stmt
            .query_map([account], |r| {
                let headers: Option<String> = r.get(7)?;
                Ok(Upload {
                    key: r.get(0)?,
                    id: r.get(1)?,
                    peer: r.get(2)?,
                    sha256: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    media_type: r
                        .get::<_, Option<String>>(5)?
                        .unwrap_or_else(|| "application/octet-stream".into()),
                    put_url: r.get(6)?,
                    headers: headers
                        .and_then(|h| serde_json::from_str(&h).ok())
                        .unwrap_or_default(),
                    get_url: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The PUT of message `key` succeeded: the message may go, its body the file's URL (what a
    /// client without XEP-0066 shows). Returns whether it was still uploading.
    pub fn uploaded(&mut self, key: i64) -> Result<bool> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let n = tx
            .prepare_cached(
                "UPDATE attachments SET transfer = 'uploaded', done_bytes = size, error = NULL,
                                        updated_at = ?2
                 WHERE message_key = ?1 AND transfer = 'uploading'",
            )?
            .execute(params![key, now_ms()])?;
        tx.prepare_cached(
            "UPDATE messages SET body = (SELECT url FROM attachments WHERE message_key = ?1)
             WHERE seq_local = ?1 AND body = ''",
        )?
        .execute([key])?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// Files of incoming messages still to fetch, oldest first.
    pub fn downloads(&self, account: i64) -> Result<Vec<Download>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.message_key, m.id, m.peer, a.url, a.size, a.sha256
             FROM attachments a JOIN messages m ON m.seq_local = a.message_key
             WHERE a.account_id = ?1 AND a.transfer IN ('remote', 'downloading')
             ORDER BY a.message_key",
        )?;
        let rows = stmt
            .query_map([account], |r| {
                Ok(Download {
                    key: r.get(0)?,
                    id: r.get(1)?,
                    peer: r.get(2)?,
                    url: r.get(3)?,
                    size: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
                    sha256: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A download of message `key` started (or resumed).
    pub fn downloading(&mut self, key: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE attachments SET transfer = 'downloading', updated_at = ?2
                 WHERE message_key = ?1 AND transfer IN ('remote', 'downloading')",
            )?
            .execute(params![key, now_ms()])?;
        Ok(())
    }

    /// The file of message `key` is here, checked, as blob `sha256`.
    pub fn downloaded(&mut self, key: i64, sha256: &str, size: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE attachments SET transfer = 'downloaded', sha256 = ?2, size = ?3,
                                        done_bytes = ?3, error = NULL, updated_at = ?4
                 WHERE message_key = ?1",
            )?
            .execute(params![key, sha256, size as i64, now_ms()])?;
        Ok(())
    }

    /// The download of message `key` failed for good (a hash mismatch, a body larger than
    /// announced, a refused URL): the file is not shown as valid.
    pub fn download_failed(&mut self, key: i64, why: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE attachments SET transfer = 'failed', error = ?2, updated_at = ?3
                 WHERE message_key = ?1",
            )?
            .execute(params![key, why, now_ms()])?;
        Ok(())
    }

    /// Files still moving: uploads waiting for a slot or uploading, downloads to do.
    pub fn transfers_pending(&self, account: i64) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM attachments WHERE account_id = ?1
                 AND transfer IN ('slot-needed', 'uploading', 'remote', 'downloading')",
            )?
            .query_row([account], |r| r.get(0))?)
    }

    /// The blob store beside this database.
    pub fn blobs(&self) -> &super::Blobs {
        &self.blobs
    }
}
