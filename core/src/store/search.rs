//! Full-text search over every conversation (SQLite FTS5).
//!
//! `messages_fts` is an external-content FTS5 table over `messages.body` (schema v12): it keeps
//! only the index, and triggers on `messages` keep it in step in the same statement, so in the same
//! transaction as the message itself: a message is searchable exactly when it is stored, and a
//! rolled-back group commit leaves no index entry behind. The rows indexed are the ones whose text
//! a person reads: messages (`action IS NULL`, replies included) and corrections (their text
//! replaces the target's). Reactions and retractions carry no text to find.
//!
//! A hit counts only where its text is the message's *current* text, the same rule as
//! [`Store::page`]'s rows (the newest correction that was not discarded, else the message's own):
//! an old version of a corrected message is not found, a retracted message is not found, and a
//! correction is shown as the message it corrects.
//!
//! The user's words are never FTS5 syntax: each is quoted (a `"` in it doubled), so `AND`, `*`,
//! `NEAR(`, `:` or an unbalanced quote are words like any other, and the last one matches as a
//! prefix (search as one types). A word with punctuation inside (`e-mail`, `NEAR(the`) stands for
//! its parts in that order, side by side.

use rusqlite::params;
use serde::Serialize;
use ts_rs::TS;

use super::references::decorate;
use super::rows::{row_to_message_offset, MessageRow, ROW_COLUMNS};
use super::{Result, Store, StoreError};

/// The most results of one page.
pub const MAX_SEARCH_PAGE: usize = 200;
/// The longest query accepted (bytes).
pub const MAX_QUERY_BYTES: usize = 1_000;
/// The most words of one query.
pub const MAX_QUERY_WORDS: usize = 16;

/// What to search, and which page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// The words, as the user typed them: every word must appear, the last one as a prefix.
    pub text: String,
    /// Only this account's messages (`None`: every account's).
    pub account: Option<i64>,
    /// Only this conversation (a bare JID).
    pub peer: Option<String>,
    /// The page after the one that ended with this [`SearchHit::cursor`] (`None`: the newest).
    pub before: Option<i64>,
    /// The most hits (at most [`MAX_SEARCH_PAGE`]).
    pub limit: usize,
}

/// One message found.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct SearchHit {
    /// Where the next page starts (pass it as [`SearchQuery::before`]). It is the row whose text
    /// matched: the message's own, or its newest correction's.
    #[ts(type = "number")]
    pub cursor: i64,
    /// The account it belongs to.
    #[ts(type = "number")]
    pub account: i64,
    /// The message as a conversation shows it (its current text; page its history around
    /// [`MessageRow::seq`] to jump to it).
    pub message: MessageRow,
}

/// The FTS5 query for the user's words: each word a quoted string, the last one a prefix. `None`
/// when there is no word at all.
pub fn fts_query(text: &str) -> std::result::Result<Option<String>, String> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "a search is at most {MAX_QUERY_BYTES} bytes ({} given)",
            text.len()
        ));
    }
    if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err("a search cannot contain control characters".into());
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() > MAX_QUERY_WORDS {
        return Err(format!(
            "a search is at most {MAX_QUERY_WORDS} words ({} given)",
            words.len()
        ));
    }
    if words.is_empty() {
        return Ok(None);
    }
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    Ok(Some(format!("{}*", quoted.join(" "))))
}

impl Store {
    /// The messages whose current text has every word of `query.text`, newest first, a page at a
    /// time. An empty query is refused ([`StoreError::Refused`]), as are one over
    /// [`MAX_QUERY_BYTES`] or [`MAX_QUERY_WORDS`] and control characters; a word of punctuation
    /// alone matches nothing.
    pub fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        let fts = fts_query(&query.text)
            .map_err(StoreError::Refused)?
            .ok_or_else(|| StoreError::Refused("a search needs at least one word".into()))?;
        if query.limit == 0 || query.limit > MAX_SEARCH_PAGE {
            return Err(StoreError::Refused(format!(
                "a page of search results holds 1 to {MAX_SEARCH_PAGE} hits ({} asked)",
                query.limit
            )));
        }
        // FTS5 walks its index newest row first (rowid = seq_local) and stops at the limit; each
        // candidate is kept only where its text is what the conversation shows.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT h.seq_local, h.account_id, {ROW_COLUMNS}
             FROM messages_fts f
             JOIN messages h ON h.seq_local = f.rowid
             JOIN messages m ON m.seq_local = CASE WHEN h.action = 'correct' THEN h.target_key
                                                   ELSE h.seq_local END
             WHERE messages_fts MATCH ?1 AND f.rowid < ?2
               AND (?3 IS NULL OR h.account_id = ?3) AND (?4 IS NULL OR h.peer = ?4)
               AND m.action IS NULL AND h.state != 'discarded'
               AND NOT EXISTS (SELECT 1 FROM messages r WHERE r.account_id = m.account_id
                   AND r.target_key = m.seq_local AND r.action = 'retract' AND r.state != 'discarded')
               AND h.seq_local = coalesce(
                   (SELECT c.seq_local FROM messages c WHERE c.account_id = m.account_id
                      AND c.target_key = m.seq_local AND c.action = 'correct'
                      AND c.state != 'discarded'
                    ORDER BY coalesce(c.server_ts, c.created_at) DESC, c.seq_local DESC LIMIT 1),
                   m.seq_local)
             ORDER BY f.rowid DESC LIMIT ?5"
        ))?;
        let mut hits = stmt
            .query_map(
                params![
                    fts,
                    query.before.unwrap_or(i64::MAX),
                    query.account,
                    query.peer,
                    query.limit as i64
                ],
                |r| {
                    let cursor: i64 = r.get(0)?;
                    let account: i64 = r.get(1)?;
                    let message = row_to_message_offset(r, 2)?;
                    Ok(SearchHit {
                        cursor,
                        account,
                        message,
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for hit in &mut hits {
            decorate(
                &self.conn,
                &self.blobs,
                hit.account,
                std::slice::from_mut(&mut hit.message),
            )?;
        }
        Ok(hits)
    }
}
