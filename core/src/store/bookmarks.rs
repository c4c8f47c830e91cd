//! Bookmarks (XEP-0402): the rooms that follow the user across devices. The rooms themselves are
//! in `rooms` (store/social.rs); this module keeps what is still to be told to the server (a
//! bookmark to publish for a room joined here, one to retract for a room left here) and applies
//! what the server's list and its notifications say, without overriding a wish not yet told.

use rusqlite::{params, Connection, OptionalExtension};

use super::control::{enqueue, ControlKind};
use super::{now_ms, Result, Store};

/// What is still to be told to the server about a room's bookmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookmarkWant {
    /// Publish it (the room was joined here).
    Publish,
    /// Retract it (the room was left here).
    Retract,
}

impl BookmarkWant {
    fn as_str(self) -> &'static str {
        match self {
            BookmarkWant::Publish => "publish",
            BookmarkWant::Retract => "retract",
        }
    }
}

/// A bookmark as the server has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bookmark {
    /// The room's bare JID (the item id).
    pub room: String,
    /// Join it on every device.
    pub autojoin: bool,
    /// The nick to join with, if the bookmark names one.
    pub nick: Option<String>,
}

/// Records `want` for `room` in the caller's transaction (replacing an earlier wish).
pub(super) fn wish(
    tx: &Connection,
    account: i64,
    room: &str,
    want: BookmarkWant,
    nick: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO bookmark_wishes (account_id, jid, want, nick, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id, jid) DO UPDATE SET want = ?3, nick = ?4, updated_at = ?5",
        params![account, room, want.as_str(), nick, now_ms()],
    )?;
    Ok(())
}

fn wanted(tx: &Connection, account: i64, room: &str) -> Result<Option<BookmarkWant>> {
    Ok(tx
        .query_row(
            "SELECT want FROM bookmark_wishes WHERE account_id = ?1 AND jid = ?2",
            params![account, room],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|w| {
            if w == "retract" {
                BookmarkWant::Retract
            } else {
                BookmarkWant::Publish
            }
        }))
}

fn in_rooms(tx: &Connection, account: i64, room: &str) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM rooms WHERE account_id = ?1 AND jid = ?2",
            params![account, room],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

impl Store {
    /// The wishes still to be told: `(room, want, nick)`, by room.
    pub fn bookmark_wishes(
        &self,
        account: i64,
    ) -> Result<Vec<(String, BookmarkWant, Option<String>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, want, nick FROM bookmark_wishes WHERE account_id = ?1 ORDER BY jid",
        )?;
        let rows = stmt.query_map([account], |r| {
            let want: String = r.get(1)?;
            Ok((
                r.get(0)?,
                if want == "retract" {
                    BookmarkWant::Retract
                } else {
                    BookmarkWant::Publish
                },
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The server confirmed `want` for `room`: the wish goes, unless it changed since.
    pub fn bookmark_told(&mut self, account: i64, room: &str, want: BookmarkWant) -> Result<()> {
        self.conn.execute(
            "DELETE FROM bookmark_wishes WHERE account_id = ?1 AND jid = ?2 AND want = ?3",
            params![account, room, want.as_str()],
        )?;
        Ok(())
    }

    /// The server's whole list: rooms bookmarked to autojoin that are not ours are joined (with
    /// the bookmark's nick, else `default_nick`); rooms of ours that are not on it were left on
    /// another device and are left here, unless the user's own wish (join or leave here) waits
    /// to be told. Returns `(joined, left)`.
    pub fn bookmarks_synced(
        &mut self,
        account: i64,
        server: &[Bookmark],
        default_nick: &str,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let ours: Vec<String> = tx
            .prepare("SELECT jid FROM rooms WHERE account_id = ?1")?
            .query_map([account], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut left = Vec::new();
        for room in ours {
            let listed = server.iter().any(|b| b.room == room && b.autojoin);
            if !listed && wanted(&tx, account, &room)?.is_none() && leave(&tx, account, &room)? {
                left.push(room);
            }
        }
        let joined = join_listed(&tx, account, server, default_nick)?;
        tx.commit()?;
        Ok((joined, left))
    }

    /// A notification of the bookmarks node (another device of ours changed it): published
    /// bookmarks to autojoin are joined, others (and retracted ones) left, unless the user's own
    /// wish for that room waits to be told. Returns `(joined, left)`.
    pub fn bookmarks_pushed(
        &mut self,
        account: i64,
        published: &[Bookmark],
        retracted: &[String],
        default_nick: &str,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let mut left = Vec::new();
        let gone = published
            .iter()
            .filter(|b| !b.autojoin)
            .map(|b| &b.room)
            .chain(retracted);
        for room in gone {
            if wanted(&tx, account, room)?.is_none() && leave(&tx, account, room)? {
                left.push(room.clone());
            }
        }
        let joined = join_listed(&tx, account, published, default_nick)?;
        tx.commit()?;
        Ok((joined, left))
    }
}

/// Joins the autojoin bookmarks not joined here (no wish of ours is recorded: the server has it).
fn join_listed(
    tx: &Connection,
    account: i64,
    bookmarks: &[Bookmark],
    default_nick: &str,
) -> Result<Vec<String>> {
    let mut joined = Vec::new();
    for b in bookmarks.iter().filter(|b| b.autojoin) {
        if in_rooms(tx, account, &b.room)? || wanted(tx, account, &b.room)?.is_some() {
            continue;
        }
        let nick = b.nick.as_deref().unwrap_or(default_nick);
        tx.execute(
            "INSERT INTO rooms (account_id, jid, nick, joined) VALUES (?1, ?2, ?3, 0)",
            params![account, b.room, nick],
        )?;
        enqueue(tx, account, ControlKind::MucJoin, &b.room, None, Some(nick))?;
        joined.push(b.room.clone());
    }
    Ok(joined)
}

/// Forgets who was in `room`, in the caller's transaction: we left it, or it is joined anew and
/// says it again.
pub(super) fn forget_occupants(tx: &rusqlite::Connection, account: i64, room: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM occupants WHERE account_id = ?1 AND room = ?2",
        params![account, room],
    )?;
    Ok(())
}

/// Forgets a room and queues our leave, in the caller's transaction; `false` when it was not a
/// room of ours. (No wish is recorded here: [`Store::leave_room`] adds the retract for a room the
/// user left on this device.)
pub(super) fn leave(tx: &Connection, account: i64, room: &str) -> Result<bool> {
    let nick: Option<String> = tx
        .query_row(
            "DELETE FROM rooms WHERE account_id = ?1 AND jid = ?2 RETURNING nick",
            params![account, room],
            |r| r.get(0),
        )
        .optional()?;
    let Some(nick) = nick else {
        return Ok(false);
    };
    forget_occupants(tx, account, room)?;
    enqueue(tx, account, ControlKind::MucLeave, room, None, Some(&nick))?;
    Ok(true)
}
