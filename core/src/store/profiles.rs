//! Profiles (XEP-0084 avatars, XEP-0153 vCard-based avatars, XEP-0172 nicknames, XEP-0292 and
//! XEP-0054 vCards): what each contact, and our own account, publishes of itself, with the
//! avatars' bytes kept once by their SHA-1, and the user's own changes still to be told to the
//! server. An avatar is stored only after [`crate::profile::check_avatar`] passed; an avatar no
//! profile or wish names any more is deleted in the transaction that let it go.
//!
//! Our own profile shows the user's change at once; what the server (or another device of
//! ours) says of a field does not override a change of the user's not yet told.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use ts_rs::TS;

use super::{now_ms, Result, Store};
use crate::profile::Avatar;

/// What a contact (or our own account) publishes of itself.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, TS)]
pub struct Profile {
    /// Bare JID.
    pub jid: String,
    /// The nickname they chose (XEP-0172, else their vCard's).
    pub nick: Option<String>,
    /// Their full name (their vCard's).
    pub full_name: Option<String>,
    /// Their avatar's SHA-1 (lowercase hex), whose bytes [`Store::avatar`] gives.
    pub avatar: Option<String>,
    /// The avatar's image type.
    pub avatar_mime: Option<String>,
}

/// Where a profile's avatar came from: PEP (XEP-0084) is preferred to the vCard (XEP-0153).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvatarSource {
    /// XEP-0084, the user's PEP avatar.
    Pep,
    /// XEP-0153, the vCard's photo.
    Vcard,
}

impl AvatarSource {
    fn as_str(self) -> &'static str {
        match self {
            AvatarSource::Pep => "pep",
            AvatarSource::Vcard => "vcard",
        }
    }
}

/// A change of the user's own profile, still to be told to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileWish {
    /// The nickname (`None`: remove it).
    Nick(Option<String>),
    /// The avatar, by SHA-1 (`None`: remove it).
    Avatar(Option<String>),
}

impl ProfileWish {
    fn key(&self) -> &'static str {
        match self {
            ProfileWish::Nick(_) => "nick",
            ProfileWish::Avatar(_) => "avatar",
        }
    }

    fn value(&self) -> Option<&str> {
        match self {
            ProfileWish::Nick(v) | ProfileWish::Avatar(v) => v.as_deref(),
        }
    }
}

/// Which name a setter writes, from where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameField {
    /// The nickname the contact published (XEP-0172): it wins over a vCard's.
    Nick,
    /// The nickname in the contact's vCard (XEP-0292, XEP-0054): kept unless a XEP-0172 one is.
    VcardNick,
    /// The full name (the vCard's).
    FullName,
}

const PROFILE_SQL: &str = "SELECT p.jid, p.nick, p.full_name, p.avatar, a.mime
     FROM profiles p LEFT JOIN avatars a ON a.sha1 = p.avatar";

fn row_to_profile(r: &rusqlite::Row<'_>) -> rusqlite::Result<Profile> {
    Ok(Profile {
        jid: r.get(0)?,
        nick: r.get(1)?,
        full_name: r.get(2)?,
        avatar: r.get(3)?,
        avatar_mime: r.get(4)?,
    })
}

fn wished(tx: &Connection, account: i64, what: &str) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM profile_wishes WHERE account_id = ?1 AND what = ?2",
            params![account, what],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn ensure_row(tx: &Connection, account: i64, jid: &str) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO profiles (account_id, jid, updated_at) VALUES (?1, ?2, ?3)",
        params![account, jid, now_ms()],
    )?;
    Ok(())
}

fn put_avatar(tx: &Connection, avatar: &Avatar) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO avatars (sha1, mime, data, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![avatar.sha1, avatar.mime, avatar.data, now_ms()],
    )?;
    Ok(())
}

/// Deletes the avatars that no profile and no wish names (in the caller's transaction).
pub(super) fn prune_avatars(tx: &Connection) -> Result<()> {
    tx.execute(
        "DELETE FROM avatars WHERE
             NOT EXISTS (SELECT 1 FROM profiles WHERE avatar = avatars.sha1)
         AND NOT EXISTS (SELECT 1 FROM profile_wishes
                         WHERE what = 'avatar' AND value = avatars.sha1)",
        [],
    )?;
    Ok(())
}

/// Sets `jid`'s avatar to `sha1` (already in `avatars`, or `None`) in the caller's transaction.
/// Returns whether it changed.
fn set_avatar_tx(
    tx: &Connection,
    account: i64,
    jid: &str,
    sha1: Option<&str>,
    source: AvatarSource,
) -> Result<bool> {
    ensure_row(tx, account, jid)?;
    let changed = tx.execute(
        "UPDATE profiles SET avatar = ?3, avatar_source = ?4, updated_at = ?5
         WHERE account_id = ?1 AND jid = ?2
           AND (avatar IS NOT ?3 OR avatar_source IS NOT ?4)",
        params![account, jid, sha1, source.as_str(), now_ms()],
    )? == 1;
    if changed {
        prune_avatars(tx)?;
    }
    Ok(changed)
}

impl Store {
    /// `jid`'s profile, if anything of it is known.
    pub fn profile(&self, account: i64, jid: &str) -> Result<Option<Profile>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "{PROFILE_SQL} WHERE p.account_id = ?1 AND p.jid = ?2"
            ))?
            .query_row(params![account, jid], row_to_profile)
            .optional()?)
    }

    /// Every profile known to the account, by JID.
    pub fn profiles(&self, account: i64) -> Result<Vec<Profile>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{PROFILE_SQL} WHERE p.account_id = ?1 ORDER BY p.jid"
        ))?;
        let rows = stmt
            .query_map([account], row_to_profile)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// An avatar's type and bytes, by SHA-1.
    pub fn avatar(&self, sha1: &str) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT mime, data FROM avatars WHERE sha1 = ?1")?
            .query_row([sha1.to_ascii_lowercase()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Where `jid`'s avatar came from, if it has one.
    pub fn avatar_source(&self, account: i64, jid: &str) -> Result<Option<AvatarSource>> {
        let source: Option<Option<String>> = self
            .conn
            .prepare_cached(
                "SELECT avatar_source FROM profiles WHERE account_id = ?1 AND jid = ?2",
            )?
            .query_row(params![account, jid], |r| r.get(0))
            .optional()?;
        Ok(match source.flatten().as_deref() {
            Some("pep") => Some(AvatarSource::Pep),
            Some("vcard") => Some(AvatarSource::Vcard),
            _ => None,
        })
    }

    /// `jid` published `avatar` (checked), or that its avatar is one already here (`sha1`
    /// only), or none (`None`). A field of our own with the user's change not yet told is left
    /// as the user set it. Returns whether the profile changed.
    pub fn set_profile_avatar(
        &mut self,
        account: i64,
        jid: &str,
        avatar: AvatarUpdate<'_>,
        source: AvatarSource,
    ) -> Result<bool> {
        let tx = super::Tx::begin(&mut self.conn)?;
        if wished(&tx, account, "avatar")? && is_own(&tx, account, jid)? {
            return Ok(false);
        }
        let sha1 = match avatar {
            AvatarUpdate::Bytes(a) => {
                put_avatar(&tx, a)?;
                Some(a.sha1.as_str())
            }
            AvatarUpdate::Known(sha1) => {
                let here = tx
                    .query_row("SELECT 1 FROM avatars WHERE sha1 = ?1", [sha1], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !here {
                    return Ok(false);
                }
                Some(sha1)
            }
            AvatarUpdate::None => None,
        };
        let changed = set_avatar_tx(&tx, account, jid, sha1, source)?;
        tx.commit()?;
        Ok(changed)
    }

    /// Whether the avatar with this SHA-1 is here.
    pub fn has_avatar(&self, sha1: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM avatars WHERE sha1 = ?1")?
            .query_row([sha1], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// `jid`'s nickname or full name is `value` (checked). A vCard's nickname does not
    /// override a published XEP-0172 one. Our own, with the user's change not yet told, is left
    /// as the user set it. Returns whether it changed.
    pub fn set_profile_name(
        &mut self,
        account: i64,
        jid: &str,
        field: NameField,
        value: Option<&str>,
    ) -> Result<bool> {
        let tx = super::Tx::begin(&mut self.conn)?;
        if field != NameField::FullName
            && wished(&tx, account, "nick")?
            && is_own(&tx, account, jid)?
        {
            return Ok(false);
        }
        ensure_row(&tx, account, jid)?;
        let sql = match field {
            NameField::Nick => {
                // An empty one removes it: a vCard's may show again.
                "UPDATE profiles SET nick = ?3, updated_at = ?4,
                     nick_source = CASE WHEN ?3 IS NULL THEN NULL ELSE 'pep' END
                 WHERE account_id = ?1 AND jid = ?2
                   AND (nick IS NOT ?3
                        OR nick_source IS NOT CASE WHEN ?3 IS NULL THEN NULL ELSE 'pep' END)"
            }
            NameField::VcardNick => {
                "UPDATE profiles SET nick = ?3, nick_source = 'vcard', updated_at = ?4
                 WHERE account_id = ?1 AND jid = ?2 AND nick IS NOT ?3
                   AND nick_source IS NOT 'pep'"
            }
            NameField::FullName => {
                "UPDATE profiles SET full_name = ?3, updated_at = ?4
                 WHERE account_id = ?1 AND jid = ?2 AND full_name IS NOT ?3"
            }
        };
        let changed = tx.execute(sql, params![account, jid, value, now_ms()])? == 1;
        tx.commit()?;
        Ok(changed)
    }

    /// The user changes their own profile: the avatar's bytes (if any) are stored, the change
    /// is kept until the server confirms it ([`Store::profile_told`]), and our own profile
    /// shows it at once, all in one transaction.
    pub fn wish_profile(
        &mut self,
        account: i64,
        own: &str,
        wish: &ProfileWish,
        avatar: Option<&Avatar>,
    ) -> Result<()> {
        let tx = super::Tx::begin(&mut self.conn)?;
        if let Some(a) = avatar {
            put_avatar(&tx, a)?;
        }
        tx.execute(
            "INSERT INTO profile_wishes (account_id, what, value, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account_id, what) DO UPDATE SET value = ?3, updated_at = ?4",
            params![account, wish.key(), wish.value(), now_ms()],
        )?;
        match wish {
            ProfileWish::Nick(nick) => {
                ensure_row(&tx, account, own)?;
                tx.execute(
                    "UPDATE profiles SET nick = ?3, nick_source = 'pep', updated_at = ?4
                     WHERE account_id = ?1 AND jid = ?2",
                    params![account, own, nick, now_ms()],
                )?;
            }
            ProfileWish::Avatar(sha1) => {
                set_avatar_tx(&tx, account, own, sha1.as_deref(), AvatarSource::Pep)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The user's changes still to be told, nickname first.
    pub fn profile_wishes(&self, account: i64) -> Result<Vec<ProfileWish>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT what, value FROM profile_wishes WHERE account_id = ?1 ORDER BY what DESC",
        )?;
        let rows = stmt
            .query_map([account], |r| {
                let what: String = r.get(0)?;
                let value: Option<String> = r.get(1)?;
                Ok(if what == "nick" {
                    ProfileWish::Nick(value)
                } else {
                    ProfileWish::Avatar(value)
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The server confirmed `wish`: it goes, unless the user changed it since.
    pub fn profile_told(&mut self, account: i64, wish: &ProfileWish) -> Result<()> {
        let tx = super::Tx::begin(&mut self.conn)?;
        tx.execute(
            "DELETE FROM profile_wishes WHERE account_id = ?1 AND what = ?2 AND value IS ?3",
            params![account, wish.key(), wish.value()],
        )?;
        prune_avatars(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

/// What [`Store::set_profile_avatar`] sets.
#[derive(Clone, Copy, Debug)]
pub enum AvatarUpdate<'a> {
    /// An avatar fetched and checked.
    Bytes(&'a Avatar),
    /// An avatar already here, by SHA-1 (nothing changes if it is not).
    Known(&'a str),
    /// No avatar.
    None,
}

fn is_own(tx: &Connection, account: i64, jid: &str) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM accounts WHERE id = ?1 AND jid = ?2",
            params![account, jid],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
