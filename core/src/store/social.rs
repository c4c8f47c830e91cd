//! Rooms, roster, subscription requests and archive sync state.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use ts_rs::TS;

use super::control::{enqueue, ControlKind};
use super::{now_ms, save_sm, Move, Result, StateChange, Store};
use crate::sm::SmSnapshot;

/// A group-chat room this account wants to be in.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Room {
    /// The room's bare JID.
    pub jid: String,
    /// Our nickname.
    pub nick: String,
    /// Whether the room confirmed our presence on the current session.
    pub joined: bool,
}

/// Someone in a room (XEP-0045), as the room last said.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Occupant {
    /// Their nickname in the room.
    pub nick: String,
    /// Their real bare JID, when the room shows it to us.
    pub jid: Option<String>,
    /// `moderator`, `participant`, `visitor`.
    pub role: String,
    /// `owner`, `admin`, `member`, `none`.
    pub affiliation: String,
}

/// A roster entry.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, TS)]
pub struct Contact {
    /// Bare JID.
    pub jid: String,
    /// Display name.
    pub name: Option<String>,
    /// none, to, from, both.
    pub subscription: String,
    /// A subscription request of ours is pending.
    pub ask: bool,
    /// Last presence seen: available or unavailable.
    pub presence: String,
    /// The nickname they publish (else their vCard's full name): the name shown when the user
    /// gave them none.
    pub nick: Option<String>,
    /// Their avatar's SHA-1 ([`Store::avatar`] gives the bytes).
    pub avatar: Option<String>,
}

const CONTACT_COLUMNS: &str = "r.jid, r.name, r.subscription, r.ask, r.presence,
     COALESCE(p.nick, p.full_name), p.avatar
     FROM roster r LEFT JOIN profiles p ON p.account_id = r.account_id AND p.jid = r.jid";

fn row_to_contact(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    Ok(Contact {
        jid: r.get(0)?,
        name: r.get(1)?,
        subscription: r.get(2)?,
        ask: r.get(3)?,
        presence: r.get(4)?,
        nick: r.get(5)?,
        avatar: r.get(6)?,
    })
}

impl Store {
    /// Wants to be in `room` as `nick` (persisted) and queues the join; the room's bookmark
    /// (XEP-0402) is to be published, so the user's other devices join it too.
    pub fn join_room(&mut self, account: i64, room: &str, nick: &str) -> Result<()> {
        let tx = super::Tx::begin(&mut self.conn)?;
        tx.execute(
            "INSERT INTO rooms (account_id, jid, nick, joined) VALUES (?1, ?2, ?3, 0)
             ON CONFLICT(account_id, jid) DO UPDATE SET nick = excluded.nick, joined = 0",
            params![account, room, nick],
        )?;
        enqueue(&tx, account, ControlKind::MucJoin, room, None, Some(nick))?;
        super::bookmarks::wish(&tx, account, room, super::BookmarkWant::Publish, Some(nick))?;
        tx.commit()?;
        Ok(())
    }

    /// Leaves `room` (forgets it) and queues the leave. Returns false if it was not a room of ours.
    pub fn leave_room(&mut self, account: i64, room: &str) -> Result<bool> {
        let tx = super::Tx::begin(&mut self.conn)?;
        if !super::bookmarks::leave(&tx, account, room)? {
            return Ok(false);
        }
        super::bookmarks::wish(&tx, account, room, super::BookmarkWant::Retract, None)?;
        tx.commit()?;
        Ok(true)
    }

    /// The rooms this account wants to be in.
    pub fn rooms(&self, account: i64) -> Result<Vec<Room>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, nick, joined FROM rooms WHERE account_id = ?1 ORDER BY jid",
        )?;
        let rows = stmt
            .query_map([account], |r| {
                Ok(Room {
                    jid: r.get(0)?,
                    nick: r.get(1)?,
                    // 1 joined, 0 not (yet) on this session, -1 refused on this session, 2 lost
                    // (the room dropped us) and being rejoined.
                    joined: r.get::<_, i64>(2)? == 1,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A new session: rooms are not joined until they confirm; queue a join for each. Who was in
    /// them is forgotten: each room says it again when it lets us in.
    pub fn rejoin_rooms(&mut self, account: i64) -> Result<Vec<Room>> {
        let rooms = self.rooms(account)?;
        let tx = super::Tx::begin(&mut self.conn)?;
        tx.execute(
            "UPDATE rooms SET joined = 0 WHERE account_id = ?1",
            [account],
        )?;
        tx.execute("DELETE FROM occupants WHERE account_id = ?1", [account])?;
        for room in &rooms {
            enqueue(
                &tx,
                account,
                ControlKind::MucJoin,
                &room.jid,
                None,
                Some(&room.nick),
            )?;
        }
        tx.commit()?;
        Ok(rooms)
    }

    /// The room confirmed our presence. Returns whether it was a rejoin after the room had
    /// dropped us ([`Store::room_lost`]): what was posted meanwhile is then to be caught up from
    /// the room's archive.
    pub fn room_joined(&mut self, account: i64, room: &str) -> Result<bool> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let lost = tx
            .query_row(
                "SELECT joined = 2 FROM rooms WHERE account_id = ?1 AND jid = ?2",
                params![account, room],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .unwrap_or(false);
        tx.execute(
            "UPDATE rooms SET joined = 1 WHERE account_id = ?1 AND jid = ?2",
            params![account, room],
        )?;
        tx.commit()?;
        Ok(lost)
    }

    /// The room dropped us while the stream lived (a self-ping said so, XEP-0410): it is
    /// joined again (the join queued in this transaction); what we post to it waits for the
    /// room's answer, and the rejoin catches up from its archive. `false` when the room is not
    /// one we were in.
    pub fn room_lost(&mut self, account: i64, room: &str) -> Result<bool> {
        let tx = super::Tx::begin(&mut self.conn)?;
        let nick: Option<String> = tx
            .query_row(
                "UPDATE rooms SET joined = 2 WHERE account_id = ?1 AND jid = ?2 AND joined = 1
                 RETURNING nick",
                params![account, room],
                |r| r.get(0),
            )
            .optional()?;
        let Some(nick) = nick else {
            return Ok(false);
        };
        super::bookmarks::forget_occupants(&tx, account, room)?;
        enqueue(&tx, account, ControlKind::MucJoin, room, None, Some(&nick))?;
        tx.commit()?;
        Ok(true)
    }

    /// An occupant of `room` came (`Some`, with what the room says of them) or went (`None`).
    /// Only for a room of ours: `false` (nothing kept) for any other, which is someone's forgery
    /// or a room we left.
    pub fn set_occupant(
        &mut self,
        account: i64,
        room: &str,
        nick: &str,
        present: Option<&Occupant>,
    ) -> Result<bool> {
        if self.room_nick(account, room)?.is_none() {
            return Ok(false);
        }
        match present {
            Some(o) => self.conn.prepare_cached(
                "INSERT INTO occupants (account_id, room, nick, jid, role, affiliation, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (account_id, room, nick) DO UPDATE SET
                     jid = excluded.jid, role = excluded.role, affiliation = excluded.affiliation,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![account, room, nick, o.jid, o.role, o.affiliation, super::now_ms()])?,
            None => self
                .conn
                .prepare_cached(
                    "DELETE FROM occupants WHERE account_id = ?1 AND room = ?2 AND nick = ?3",
                )?
                .execute(params![account, room, nick])?,
        };
        Ok(true)
    }

    /// Who is in `room`, by nick.
    pub fn occupants(&self, account: i64, room: &str) -> Result<Vec<Occupant>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT nick, jid, role, affiliation FROM occupants
             WHERE account_id = ?1 AND room = ?2 ORDER BY nick",
        )?;
        let rows = stmt
            .query_map(params![account, room], |r| {
                Ok(Occupant {
                    nick: r.get(0)?,
                    jid: r.get(1)?,
                    role: r.get(2)?,
                    affiliation: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The rooms this session is in (joined and confirmed), with our nick.
    pub fn joined_rooms(&self, account: i64) -> Result<Vec<Room>> {
        Ok(self
            .rooms(account)?
            .into_iter()
            .filter(|r| r.joined)
            .collect())
    }

    /// The room refused our join on this session. In one transaction (with `snap`, the SM state
    /// that counts the refusal): the messages that waited for the join fail with `why`, and later
    /// ones are no longer held (sent, the room answers each with its error, which fails it with
    /// the room's reason). Returns the changes.
    pub fn room_refused(
        &mut self,
        account: i64,
        room: &str,
        why: &str,
        snap: Option<&SmSnapshot>,
    ) -> Result<Vec<StateChange>> {
        let tx = super::Tx::begin(&mut self.conn)?;
        tx.execute(
            "UPDATE rooms SET joined = -1 WHERE account_id = ?1 AND jid = ?2",
            params![account, room],
        )?;
        let moves: Vec<Move> = tx
            .prepare_cached(
                "SELECT seq_local FROM messages WHERE account_id = ?1 AND peer = ?2
                 AND kind = 'groupchat' AND state = 'queued' ORDER BY seq_local",
            )?
            .query_map(params![account, room], |r| r.get(0))?
            .map(|key| key.map(|k| Move::failed(k, why)))
            .collect::<rusqlite::Result<_>>()?;
        let changes = super::messages::apply_moves(&tx, &moves)?;
        if let Some(snap) = snap {
            save_sm(&tx, account, snap)?;
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Our nickname in `room`, if it is one of ours.
    pub fn room_nick(&self, account: i64, room: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT nick FROM rooms WHERE account_id = ?1 AND jid = ?2")?
            .query_row(params![account, room], |r| r.get(0))
            .optional()?)
    }

    /// The stored roster version.
    pub fn roster_ver(&self, account: i64) -> Result<Option<String>> {
        Ok(self.conn.query_row(
            "SELECT roster_ver FROM accounts WHERE id = ?1",
            [account],
            |r| r.get(0),
        )?)
    }

    /// Applies a roster result (`replace`: the full roster) or push, and its version.
    pub fn update_roster(
        &mut self,
        account: i64,
        items: &[Contact],
        ver: Option<&str>,
        replace: bool,
    ) -> Result<()> {
        let tx = super::Tx::begin(&mut self.conn)?;
        if replace {
            let keep: Vec<&str> = items.iter().map(|c| c.jid.as_str()).collect();
            let existing: Vec<String> = tx
                .prepare("SELECT jid FROM roster WHERE account_id = ?1")?
                .query_map([account], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for jid in existing.iter().filter(|j| !keep.contains(&j.as_str())) {
                tx.execute(
                    "DELETE FROM roster WHERE account_id = ?1 AND jid = ?2",
                    params![account, jid],
                )?;
            }
        }
        for c in items {
            if c.subscription == "remove" {
                tx.execute(
                    "DELETE FROM roster WHERE account_id = ?1 AND jid = ?2",
                    params![account, c.jid],
                )?;
                continue;
            }
            tx.execute(
                "INSERT INTO roster (account_id, jid, name, subscription, ask) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(account_id, jid) DO UPDATE SET name = excluded.name,
                   subscription = excluded.subscription, ask = excluded.ask",
                params![account, c.jid, c.name, c.subscription, c.ask],
            )?;
        }
        if let Some(ver) = ver {
            tx.execute(
                "UPDATE accounts SET roster_ver = ?2 WHERE id = ?1",
                params![account, ver],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// One roster entry.
    pub fn contact(&self, account: i64, jid: &str) -> Result<Option<Contact>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {CONTACT_COLUMNS} WHERE r.account_id = ?1 AND r.jid = ?2"
            ))?
            .query_row(params![account, jid], row_to_contact)
            .optional()?)
    }

    /// Records a contact's presence (only for roster entries).
    pub fn set_presence(&mut self, account: i64, jid: &str, presence: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE roster SET presence = ?3 WHERE account_id = ?1 AND jid = ?2")?
            .execute(params![account, jid, presence])?;
        Ok(())
    }

    /// A new session: nobody's presence is known yet.
    pub fn reset_presence(&mut self, account: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE roster SET presence = 'unavailable' WHERE account_id = ?1",
            [account],
        )?;
        Ok(())
    }

    /// The roster.
    pub fn contacts(&self, account: i64) -> Result<Vec<Contact>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CONTACT_COLUMNS} WHERE r.account_id = ?1 ORDER BY r.jid"
        ))?;
        let rows = stmt
            .query_map([account], row_to_contact)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Records an incoming subscription request. Returns false if it was already pending.
    pub fn add_subscription_request(&mut self, account: i64, jid: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO subscription_requests (account_id, jid, created_at) VALUES (?1, ?2, ?3)",
            params![account, jid, now_ms()],
        )? == 1)
    }

    /// Pending incoming subscription requests.
    pub fn subscription_requests(&self, account: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid FROM subscription_requests WHERE account_id = ?1 ORDER BY created_at",
        )?;
        let rows = stmt
            .query_map([account], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Answers a subscription request (accept also asks back), or asks for one (`answer` None).
    pub fn subscription(&mut self, account: i64, jid: &str, answer: Option<bool>) -> Result<()> {
        let tx = super::Tx::begin(&mut self.conn)?;
        tx.execute(
            "DELETE FROM subscription_requests WHERE account_id = ?1 AND jid = ?2",
            params![account, jid],
        )?;
        let types: &[&str] = match answer {
            Some(true) => &["subscribed", "subscribe"],
            Some(false) => &["unsubscribed"],
            None => &["subscribe"],
        };
        for t in types {
            enqueue(&tx, account, ControlKind::Presence, jid, None, Some(t))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The last archive id synced from `archive` ("" = the account's own archive).
    pub fn mam_last_id(&self, account: i64, archive: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT last_id FROM mam_state WHERE account_id = ?1 AND archive = ?2")?
            .query_row(params![account, archive], |r| r.get(0))
            .optional()?)
    }

    /// The archive catch-up a previous run left unfinished (the session engine's JSON).
    pub fn load_mam_sync(&self, account: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT state FROM mam_sync WHERE account_id = ?1")?
            .query_row([account], |r| r.get(0))
            .optional()?)
    }

    /// Records the archive catch-up in progress (`None`: none is).
    pub fn save_mam_sync(&mut self, account: i64, state: Option<&str>) -> Result<()> {
        match state {
            Some(state) => self
                .conn
                .prepare_cached(
                    "INSERT INTO mam_sync (account_id, state) VALUES (?1, ?2)
                     ON CONFLICT(account_id) DO UPDATE SET state = excluded.state",
                )?
                .execute(params![account, state])?,
            None => self
                .conn
                .prepare_cached("DELETE FROM mam_sync WHERE account_id = ?1")?
                .execute([account])?,
        };
        Ok(())
    }

    /// Records the last archive id synced from `archive`.
    pub fn set_mam_last_id(
        &mut self,
        account: i64,
        archive: &str,
        last: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO mam_state (account_id, archive, last_id, synced_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(account_id, archive) DO UPDATE SET
                   last_id = coalesce(excluded.last_id, last_id), synced_at = excluded.synced_at",
            )?
            .execute(params![account, archive, last, now_ms()])?;
        Ok(())
    }
}
