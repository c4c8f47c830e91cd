//! The account row: who we are and how to reach the server.

use rusqlite::OptionalExtension;

use super::{now_ms, Result, Store, StoreError};

/// A configured account. `password` never reaches a log: `Debug` redacts it.
#[derive(Clone)]
pub struct Account {
    /// Row id.
    pub id: i64,
    /// The bare JID.
    pub jid: String,
    /// The password (the database file is owner-only).
    pub password: String,
    /// `host:port` to connect to instead of the SRV lookup.
    pub server: Option<String>,
    /// A PEM file of CA certificates to trust instead of the system's (test servers).
    pub ca_file: Option<String>,
    /// Skip STARTTLS (loopback tests only).
    pub insecure_plaintext: bool,
    /// `server` speaks TLS from the first byte (XEP-0368 Direct TLS) instead of STARTTLS.
    pub direct_tls: bool,
    /// The resource this database always binds, so a new session replaces our old one.
    pub resource: String,
    /// Whether the account connects: a disabled account keeps its history and its queue, and
    /// nothing runs for it until it is enabled again.
    pub enabled: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("jid", &self.jid)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .field("ca_file", &self.ca_file)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .field("direct_tls", &self.direct_tls)
            .field("resource", &self.resource)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// What [`Store::add_account`] needs.
#[derive(Clone)]
pub struct NewAccount {
    /// The bare JID.
    pub jid: String,
    /// The password.
    pub password: String,
    /// `host:port`, if not by SRV.
    pub server: Option<String>,
    /// A CA file for a test server.
    pub ca_file: Option<String>,
    /// Skip STARTTLS (tests only).
    pub insecure_plaintext: bool,
    /// `server` speaks Direct TLS (XEP-0368).
    pub direct_tls: bool,
}

/// The columns [`account_row`] reads, in its order.
const ACCOUNT_COLUMNS: &str =
    "id, jid, password, server, ca_file, insecure_plaintext, resource, direct_tls, enabled";

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        jid: r.get(1)?,
        password: r.get(2)?,
        server: r.get(3)?,
        ca_file: r.get(4)?,
        insecure_plaintext: r.get(5)?,
        resource: r.get(6)?,
        direct_tls: r.get(7)?,
        enabled: r.get(8)?,
    })
}

/// The tables that hold an account's rows, children before the rows they point at (the
/// database enforces its foreign keys). [`Store::remove_account`] empties each of them.
const ACCOUNT_TABLES: &[&str] = &[
    "attachments",
    "control",
    "messages",
    "sm_state",
    "rooms",
    "roster",
    "subscription_requests",
    "mam_state",
    "mam_sync",
    "push",
    "login",
    "peer_caps",
    "blocklist",
    "bookmark_wishes",
    "occupants",
    "profiles",
    "profile_wishes",
];

impl Store {
    /// Adds an account. A store holds any number of accounts, each with its own rows; a JID is
    /// there at most once ([`StoreError::AccountExists`]).
    pub fn add_account(&mut self, new: &NewAccount) -> Result<Account> {
        if self.account_by_jid_opt(&new.jid)?.is_some() {
            return Err(StoreError::AccountExists(new.jid.clone()));
        }
        let resource = format!("tether-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        self.conn.execute(
            "INSERT INTO accounts (jid, password, server, ca_file, insecure_plaintext, resource, created_at,
                                   direct_tls)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                new.jid,
                new.password,
                new.server,
                new.ca_file,
                new.insecure_plaintext,
                resource,
                now_ms(),
                new.direct_tls
            ],
        )?;
        self.account_by_jid(&new.jid)
    }

    /// Every account, in the order they were added.
    pub fn accounts(&self) -> Result<Vec<Account>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], account_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The store's one account: [`StoreError::NoAccount`] when it has none, and
    /// [`StoreError::WhichAccount`] when it has several (the caller has to name one).
    pub fn account(&self) -> Result<Account> {
        let mut all = self.accounts()?;
        match all.len() {
            0 => Err(StoreError::NoAccount),
            1 => Ok(all.remove(0)),
            _ => Err(StoreError::WhichAccount(
                all.into_iter().map(|a| a.jid).collect(),
            )),
        }
    }

    /// The account with this bare JID, or [`StoreError::UnknownAccount`].
    pub fn account_by_jid(&self, jid: &str) -> Result<Account> {
        self.account_by_jid_opt(jid)?
            .ok_or_else(|| StoreError::UnknownAccount(jid.to_owned()))
    }

    fn account_by_jid_opt(&self, jid: &str) -> Result<Option<Account>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE jid = ?1"),
                [jid],
                account_row,
            )
            .optional()?)
    }

    /// Enables or disables the account with row id `account`; `false` when it already was.
    pub fn set_account_enabled(&mut self, account: i64, enabled: bool) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE accounts SET enabled = ?2 WHERE id = ?1 AND enabled != ?2",
            rusqlite::params![account, enabled],
        )? == 1)
    }

    /// Removes the account with row id `account` and every row it owns (its messages, queue,
    /// rooms, roster, stream state), in one transaction: all of it goes, or none. Returns the
    /// hashes of the blobs that no remaining account's attachment names, for the caller to
    /// delete once this has committed.
    pub fn remove_account(&mut self, account: i64) -> Result<Vec<String>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let orphans: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT DISTINCT sha256 FROM attachments a
                 WHERE account_id = ?1 AND sha256 IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM attachments b
                                   WHERE b.sha256 = a.sha256 AND b.account_id != ?1)",
            )?;
            let rows = stmt
                .query_map([account], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
        for table in ACCOUNT_TABLES {
            tx.execute(
                &format!("DELETE FROM {table} WHERE account_id = ?1"),
                [account],
            )?;
        }
        if tx.execute("DELETE FROM accounts WHERE id = ?1", [account])? == 0 {
            return Err(StoreError::UnknownAccount(format!("#{account}")));
        }
        super::profiles::prune_avatars(&tx)?;
        tx.commit()?;
        Ok(orphans)
    }
}
