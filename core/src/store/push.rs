//! Push notifications (XEP-0357): the app's wish for this account, kept until the server has
//! confirmed it. The session engine tells the server (`engine/push.rs`); this module only keeps
//! the wish and what the server last said of it.

use rusqlite::OptionalExtension;

use super::{now_ms, Result, Store};

/// What the app wants of push for this account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushWant {
    /// Push to `service`/`node`; told to the server on every new session.
    Enable,
    /// Stop pushing to `service`/`node`; the row goes once the server confirmed it.
    Disable,
}

/// What the server last said of the wish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushState {
    /// Not answered yet (or changed since).
    Pending,
    /// The server confirmed it.
    Enabled,
    /// The server refused it (`error` says why); told again on the next new session.
    Refused,
}

/// The push settings of an account.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// The app server's JID (XEP-0357's "XMPP Push Service").
    pub service: String,
    /// The node the app server provisioned for this device.
    pub node: String,
    /// The `secret` publish option the app server wants back with each notification.
    pub secret: Option<String>,
    /// Enable or disable.
    pub want: PushWant,
    /// What the server said.
    pub state: PushState,
    /// Why the server refused it.
    pub error: Option<String>,
}

impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSettings")
            .field("service", &self.service)
            .field("node", &self.node)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("want", &self.want)
            .field("state", &self.state)
            .field("error", &self.error)
            .finish()
    }
}

fn want_str(w: PushWant) -> &'static str {
    match w {
        PushWant::Enable => "enable",
        PushWant::Disable => "disable",
    }
}

impl Store {
    /// Records the wish to push to `service`/`node` (replacing any earlier one), pending until
    /// the server confirms it.
    pub fn set_push(
        &mut self,
        account: i64,
        service: &str,
        node: &str,
        secret: Option<&str>,
    ) -> Result<PushSettings> {
        self.conn.execute(
            "INSERT INTO push (account_id, service, node, secret, want, state, error, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'enable', 'pending', NULL, ?5)
             ON CONFLICT (account_id) DO UPDATE SET service = ?2, node = ?3, secret = ?4,
                 want = 'enable', state = 'pending', error = NULL, updated_at = ?5",
            rusqlite::params![account, service, node, secret, now_ms()],
        )?;
        Ok(self.push(account)?.expect("just written"))
    }

    /// Records the wish to stop pushing. `false` when nothing was enabled (nothing to tell the
    /// server: disabling is idempotent).
    pub fn unset_push(&mut self, account: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE push SET want = 'disable', state = 'pending', error = NULL, updated_at = ?2
             WHERE account_id = ?1",
            rusqlite::params![account, now_ms()],
        )?;
        Ok(n > 0)
    }

    /// The account's push settings, if any.
    pub fn push(&self, account: i64) -> Result<Option<PushSettings>> {
        Ok(self
            .conn
            .query_row(
                "SELECT service, node, secret, want, state, error FROM push WHERE account_id = ?1",
                [account],
                |r| {
                    let want: String = r.get(3)?;
                    let state: String = r.get(4)?;
                    Ok(PushSettings {
                        service: r.get(0)?,
                        node: r.get(1)?,
                        secret: r.get(2)?,
                        want: if want == "disable" {
                            PushWant::Disable
                        } else {
                            PushWant::Enable
                        },
                        state: match state.as_str() {
                            "enabled" => PushState::Enabled,
                            "refused" => PushState::Refused,
                            _ => PushState::Pending,
                        },
                        error: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// The server answered the wish `want` for `service`/`node` (`Ok` or the refusal). An answer
    /// to a wish that has changed since is ignored (`false`): the new one is told anew. A
    /// confirmed disable removes the row.
    pub fn push_answered(
        &mut self,
        account: i64,
        want: PushWant,
        service: &str,
        node: &str,
        outcome: std::result::Result<(), String>,
    ) -> Result<bool> {
        let matches = "account_id = ?1 AND want = ?2 AND service = ?3 AND node = ?4";
        let n = match (want, outcome) {
            (PushWant::Disable, Ok(())) => self.conn.execute(
                &format!("DELETE FROM push WHERE {matches}"),
                rusqlite::params![account, want_str(want), service, node],
            )?,
            (_, outcome) => {
                let (state, error) = match outcome {
                    Ok(()) => ("enabled", None),
                    Err(e) => ("refused", Some(e)),
                };
                self.conn.execute(
                    &format!(
                        "UPDATE push SET state = ?5, error = ?6, updated_at = ?7 WHERE {matches}"
                    ),
                    rusqlite::params![
                        account,
                        want_str(want),
                        service,
                        node,
                        state,
                        error,
                        now_ms()
                    ],
                )?
            }
        };
        Ok(n > 0)
    }
}
