//! What a fast reconnect keeps between logins: this installation's SASL2 client id (the server
//! ties FAST tokens and the Bind2 resource to it) and the FAST token itself. The token is a
//! credential: it lives in this owner-only file, as the password does when there is no keyring.

use rusqlite::OptionalExtension;

use super::{Result, Store};
use crate::auth::FastToken;

impl Store {
    /// This installation's SASL2 client id, made on first use and kept.
    pub fn login_client_id(&mut self, account: i64) -> Result<uuid::Uuid> {
        let fresh = uuid::Uuid::new_v4().to_string();
        self.conn.execute(
            "INSERT INTO login (account_id, client_id) VALUES (?1, ?2)
             ON CONFLICT (account_id) DO NOTHING",
            rusqlite::params![account, fresh],
        )?;
        let id: String = self.conn.query_row(
            "SELECT client_id FROM login WHERE account_id = ?1",
            [account],
            |r| r.get(0),
        )?;
        // A row written by hand with a bad id is replaced rather than trusted.
        match uuid::Uuid::parse_str(&id) {
            Ok(u) => Ok(u),
            Err(_) => {
                tracing::warn!("the stored SASL2 client id is not a UUID: replaced");
                self.conn.execute(
                    "UPDATE login SET client_id = ?2, fast_token = NULL, fast_mechanism = NULL,
                         fast_expires_ms = NULL WHERE account_id = ?1",
                    rusqlite::params![account, fresh],
                )?;
                Ok(uuid::Uuid::parse_str(&fresh).expect("a fresh UUID"))
            }
        }
    }

    /// The FAST token, if the server gave one and it has not expired at `now_ms`.
    pub fn fast_token(&self, account: i64, now_ms: i64) -> Result<Option<FastToken>> {
        let row = self
            .conn
            .query_row(
                "SELECT fast_mechanism, fast_token, fast_expires_ms, fast_count FROM login
                 WHERE account_id = ?1 AND fast_token IS NOT NULL",
                [account],
                |r| {
                    Ok(FastToken {
                        mechanism: r.get(0)?,
                        secret: r.get(1)?,
                        expires_ms: r.get(2)?,
                        count: r.get(3)?,
                    })
                },
            )
            .optional()?;
        Ok(row.filter(|t| t.expires_ms > now_ms))
    }

    /// Counts one more use of the token (XEP-0484's replay counter) and returns it as it must go
    /// out: the count is committed before the login that sends it.
    pub fn use_fast_token(&mut self, account: i64, now_ms: i64) -> Result<Option<FastToken>> {
        self.conn.execute(
            "UPDATE login SET fast_count = fast_count + 1
             WHERE account_id = ?1 AND fast_token IS NOT NULL",
            [account],
        )?;
        self.fast_token(account, now_ms)
    }

    /// The server's last SASL2 offer (its `<authentication/>`, as XML), if remembered.
    pub fn sasl2_offer(&self, account: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT sasl2_offer FROM login WHERE account_id = ?1",
                [account],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Remembers (or forgets) the server's SASL2 offer.
    pub fn set_sasl2_offer(&mut self, account: i64, xml: Option<&str>) -> Result<()> {
        self.login_client_id(account)?;
        self.conn.execute(
            "UPDATE login SET sasl2_offer = ?2 WHERE account_id = ?1",
            rusqlite::params![account, xml],
        )?;
        Ok(())
    }

    /// Keeps a new token (asked for, or rotated by the server), or forgets it (`None`: refused,
    /// or the account logs out).
    pub fn set_fast_token(&mut self, account: i64, token: Option<&FastToken>) -> Result<()> {
        self.login_client_id(account)?;
        self.conn.execute(
            "UPDATE login SET fast_mechanism = ?2, fast_token = ?3, fast_expires_ms = ?4,
                 fast_count = 0 WHERE account_id = ?1",
            rusqlite::params![
                account,
                token.map(|t| t.mechanism.as_str()),
                token.map(|t| t.secret.as_str()),
                token.map(|t| t.expires_ms),
            ],
        )?;
        Ok(())
    }
}
