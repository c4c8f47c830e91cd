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

impl Store {
    /// Adds the account (one per database for now).
    pub fn add_account(&mut self, new: &NewAccount) -> Result<Account> {
        if let Some(existing) = self.account_opt()? {
            return Err(StoreError::AccountExists(existing.jid));
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
        self.account()
    }

    /// The account, or [`StoreError::NoAccount`].
    pub fn account(&self) -> Result<Account> {
        self.account_opt()?.ok_or(StoreError::NoAccount)
    }

    fn account_opt(&self) -> Result<Option<Account>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, jid, password, server, ca_file, insecure_plaintext, resource, direct_tls
                 FROM accounts ORDER BY id LIMIT 1",
                [],
                |r| {
                    Ok(Account {
                        id: r.get(0)?,
                        jid: r.get(1)?,
                        password: r.get(2)?,
                        server: r.get(3)?,
                        ca_file: r.get(4)?,
                        insecure_plaintext: r.get(5)?,
                        resource: r.get(6)?,
                        direct_tls: r.get(7)?,
                    })
                },
            )
            .optional()?)
    }
}
