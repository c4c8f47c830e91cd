//! The I/O driver: login (TCP, TLS, SASL), one connection's socket loop (`session.rs`), and the
//! reconnect policy with backoff. Every protocol decision is the session engine's
//! ([`crate::engine::Engine`]); this module only moves bytes, keeps time and reconnects.

mod backoff;
pub(crate) mod login;
pub mod register;
pub(crate) mod session;

pub use backoff::Backoff;
pub use login::tls_config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Engine, SessionEnd};
use crate::error::{Error, Result};
use crate::events::{ConnState, ErrorKind, Event};
use crate::shared::Shared;
use crate::store::NewAccount;

/// Announces what the engine has to say.
fn announce(shared: &Shared, engine: &mut Engine) {
    while let Some(event) = engine.poll_event() {
        shared.emit(event);
    }
}

/// How [`drive`] runs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Mode {
    /// When another process holds the stream: return [`Driven::Yielded`] at once instead of
    /// waiting for it (a wake-up leaves the stream to a running app).
    pub yield_if_held: bool,
    /// Suspend (keep the stream resumable) when idle, and at this time whatever is pending.
    pub suspend: Option<Option<Instant>>,
}

/// How [`drive`] ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Driven {
    /// Shut down, idle, or suspended.
    Done,
    /// Another process holds the stream ([`Mode::yield_if_held`]).
    Yielded,
}

/// How often a process that waits for the stream lock looks again.
const LOCK_POLL: Duration = Duration::from_millis(250);

/// Takes the stream lock ([`crate::store::StreamLock`]): waiting for it (saying so) unless
/// `mode` yields. `None`: yielded, or shut down while waiting.
async fn take_stream_lock(
    shared: &Shared,
    mode: Mode,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<crate::store::StreamLock>> {
    let db = shared.store().path().to_path_buf();
    let mut said = false;
    loop {
        if let Some(lock) = crate::store::StreamLock::try_take(&db, shared.account.id)? {
            return Ok(Some(lock));
        }
        if mode.yield_if_held {
            tracing::info!("another process drives this account's stream: leaving it to it");
            return Ok(None);
        }
        if !said {
            said = true;
            shared.emit(Event::connection(
                ConnState::Offline,
                None,
                Some("another process drives this account's stream: waiting for it to stop".into()),
                Some(LOCK_POLL.as_millis() as u64),
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(LOCK_POLL) => {}
            _ = shutdown.changed() => return Ok(None),
        }
    }
}

/// Runs the account until shutdown, a final error, or idle (see [`crate::Client::run`]), with
/// the stream lock held throughout: the engine is restored from the store only once no other
/// process can be writing the stream's state.
pub(crate) async fn drive(shared: Arc<Shared>, mode: Mode) -> Result<Driven> {
    let mut shutdown = shared.shutdown.subscribe();
    let Some(_lock) = take_stream_lock(&shared, mode, &mut shutdown).await? else {
        return Ok(if *shutdown.borrow() {
            Driven::Done
        } else {
            Driven::Yielded
        });
    };
    run_locked(&shared, mode, &mut shutdown)
        .await
        .map(|()| Driven::Done)
}

async fn run_locked(
    shared: &Arc<Shared>,
    mode: Mode,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let shared = shared.clone();
    // No session on a store that has not passed its integrity check: it would ack into it.
    let integrity = shared.integrity.clone();
    let verdict = tokio::task::spawn_blocking(move || integrity.wait())
        .await
        .map_err(|e| Error::Internal(format!("the integrity check panicked: {e}")))?;
    if let Err(e) = verdict {
        shared.emit(Event::error(e.kind(), e.to_string()));
        return Err(e);
    }
    let mut engine = Engine::restore(
        shared.config.clone(),
        &shared.account,
        &mut shared.store(),
        Instant::now(),
    )?;
    if let Some(deadline) = mode.suspend {
        engine.set_suspend_when_idle(deadline);
    }
    announce(&shared, &mut engine);
    let tls = if shared.account.insecure_plaintext {
        tracing::warn!("insecure plaintext connection requested: for loopback tests only");
        None
    } else {
        Some(tls_config(shared.account.ca_file.as_deref())?)
    };
    let mut backoff = Backoff::new(shared.config.reconnect_min, shared.config.reconnect_max);
    let mut sasl2_ok = true;
    let mut fast_ok = true;
    // The server's SASL2 offer from the last login (kept in the store for the next process):
    // the next login writes its <authenticate/> with the stream header.
    let mut offer = load_offer(&shared);
    // tokio-xmpp's own read timeouts only bound the login: the engine keeps the live link's
    // deadlines, so the session loop skips soft timeouts, and they are set past the engine's
    // (each would otherwise be one more wake-up of an idle session).
    let timeouts = tokio_xmpp::xmlstream::Timeouts {
        read_timeout: shared.config.keepalive + shared.config.dead_after,
        response_timeout: shared.config.dead_after,
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let Some(password) = shared.password() else {
            let e = Error::Auth(
                "no password: it is neither in the database nor given by the app (is the keyring locked?)"
                    .into(),
            );
            shared.emit(Event::error(e.kind(), e.to_string()));
            return Err(e);
        };
        shared.emit(Event::connection(ConnState::Connecting, None, None, None));
        // A store locked by another process (or full) while the plan is read is retried like a
        // lost link, not the end of the run.
        let attempt = match login_plan(&shared, &engine, sasl2_ok, fast_ok) {
            Ok(mut plan) => {
                plan.offer = if sasl2_ok { offer.take() } else { None };
                tokio::select! {
                    r = login::login(
                        &shared.account,
                        &password,
                        tls.as_ref(),
                        timeouts,
                        shared.config.max_stanza_bytes,
                        &plan,
                    ) => r,
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) => Err(e),
        };
        let reason = match attempt {
            Ok(login::Attempt::In(logged_in)) => {
                if let Some(done) = &logged_in.sasl2 {
                    keep_token(&shared, done.token.as_ref())?;
                    offer = Some(done.offer.clone());
                    keep_offer(&shared, &done.offer);
                }
                tracing::info!(
                    transport = ?logged_in.transport,
                    sasl2 = logged_in.sasl2.is_some(),
                    fast = logged_in.sasl2.as_ref().is_some_and(|d| d.used_fast),
                    pipelined = logged_in.sasl2.as_ref().is_some_and(|d| d.pipelined),
                    "logged in"
                );
                let end =
                    session::run(&shared, &mut engine, *logged_in, shutdown, &mut backoff).await;
                announce(&shared, &mut engine);
                match end {
                    Ok(SessionEnd::Done) => return Ok(()),
                    Ok(SessionEnd::Lost(e)) => e,
                    Err(e) => {
                        shared.emit(Event::error(e.kind(), e.to_string()));
                        return Err(e);
                    }
                }
            }
            Ok(login::Attempt::FastRejected(why)) => {
                // XEP-0484: the token is gone; the password once, at once (a refused password
                // then stops as a wrong password does).
                tracing::info!(
                    "the server refused the FAST token ({why}): logging in with the password"
                );
                forget_token(&shared)?;
                fast_ok = false;
                continue;
            }
            Ok(login::Attempt::Sasl2Broken(e)) => {
                // A server whose SASL2 misbehaves gets SASL1 from now on (in this process).
                tracing::warn!("SASL2 failed ({e}): falling back to SASL1");
                shared.emit(Event::error(e.kind(), e.to_string()));
                sasl2_ok = false;
                if let Err(e) = shared.store().set_sasl2_offer(shared.account.id, None) {
                    tracing::warn!("cannot forget the SASL2 offer: {e}");
                }
                e
            }
            Err(e) if !e.is_retryable() => {
                shared.emit(Event::error(e.kind(), e.to_string()));
                return Err(e);
            }
            Err(e) => e,
        };
        // The link is gone: the engine settles what was in flight.
        if let Error::Store(e) = &reason {
            shared.emit(Event::error(reason.kind(), e.to_string()));
        }
        match engine.handle_link_lost(&mut shared.store(), Instant::now()) {
            Ok(()) => announce(&shared, &mut engine),
            // The store is full or locked: the rows keep their last committed state (the next
            // session or start settles them again from the SM state), and we retry.
            Err(Error::Store(e)) if e.is_transient() => {
                tracing::warn!("could not record the disconnect: {e}");
                shared.emit(Event::error(
                    ErrorKind::Database,
                    format!("could not record the disconnect (retrying): {e}"),
                ));
            }
            Err(e) => return Err(e),
        }

        let delay = backoff.next_delay();
        tracing::info!(%reason, ?delay, "offline");
        shared.emit(Event::connection(
            ConnState::Offline,
            None,
            Some(reason.to_string()),
            Some(delay.as_millis() as u64),
        ));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.wake.notified() => backoff.reset(),
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// What the next login brings: the client id, the FAST token (its replay count committed
/// first; its secret from the front end's vault when it keeps one), and the stream to resume
/// inline.
pub(crate) fn login_plan(
    shared: &Shared,
    engine: &Engine,
    sasl2: bool,
    fast: bool,
) -> Result<login::LoginPlan> {
    let account = shared.account.id;
    let vault = shared.vault();
    let (client_id, mut token) = {
        let mut store = shared.store();
        let client_id = store.login_client_id(account)?;
        let token = if fast && sasl2 {
            store.use_fast_token(account, crate::store::now_ms())?
        } else {
            None
        };
        (client_id, token)
    };
    // An empty secret in the store: it is in the vault.
    if let Some(t) = token.as_mut().filter(|t| t.secret.is_empty()) {
        match vault.as_ref().map(|v| v.fast_secret()) {
            Some(Ok(Some(secret))) => t.secret = secret,
            Some(Ok(None)) | None => token = None,
            Some(Err(e)) => {
                tracing::warn!(
                    "cannot read the FAST token from the vault ({e}): using the password"
                );
                token = None;
            }
        }
    }
    Ok(login::LoginPlan {
        client_id,
        token,
        resume: engine.inline_resume(),
        sasl2,
        offer: None,
    })
}

/// The SASL2 offer the store remembers, if it still parses.
fn load_offer(shared: &Shared) -> Option<tokio_xmpp::parsers::sasl2::Authentication> {
    let xml = shared
        .store()
        .sasl2_offer(shared.account.id)
        .map_err(|e| tracing::warn!("cannot read the remembered SASL2 offer: {e}"))
        .ok()??;
    let el: tokio_xmpp::minidom::Element = xml.parse().ok()?;
    tokio_xmpp::parsers::sasl2::Authentication::try_from(el).ok()
}

/// Remembers the server's SASL2 offer (serialized by minidom) for the next process.
fn keep_offer(shared: &Shared, offer: &tokio_xmpp::parsers::sasl2::Authentication) {
    let el: tokio_xmpp::minidom::Element = offer.clone().into();
    let xml = String::from(&el);
    if let Err(e) = shared
        .store()
        .set_sasl2_offer(shared.account.id, Some(&xml))
    {
        tracing::warn!("cannot remember the SASL2 offer: {e}");
    }
}

/// Keeps the token a SASL2 login gave (asked for, or rotated): its secret in the vault when
/// the front end keeps one (the store then holds an empty secret), else in the store.
pub(crate) fn keep_token(shared: &Shared, token: Option<&crate::auth::FastToken>) -> Result<()> {
    let Some(t) = token else { return Ok(()) };
    let vault = shared.vault();
    let stored = match vault {
        Some(v) => match v.set_fast_secret(Some(&t.secret)) {
            Ok(()) => crate::auth::FastToken {
                secret: String::new(),
                ..t.clone()
            },
            Err(e) => {
                // Not kept at all rather than kept somewhere the user did not choose.
                tracing::warn!(
                    "cannot keep the FAST token in the vault ({e}): the password stays in use"
                );
                shared.store().set_fast_token(shared.account.id, None)?;
                return Ok(());
            }
        },
        None => t.clone(),
    };
    shared
        .store()
        .set_fast_token(shared.account.id, Some(&stored))?;
    Ok(())
}

/// Forgets the FAST token (the server refused it), in the store and the vault.
pub(crate) fn forget_token(shared: &Shared) -> Result<()> {
    shared.store().set_fast_token(shared.account.id, None)?;
    let vault = shared.vault();
    if let Some(v) = vault {
        if let Err(e) = v.set_fast_secret(None) {
            tracing::warn!("cannot remove the FAST token from the vault: {e}");
        }
    }
    Ok(())
}

impl From<crate::sm::SmError> for Error {
    fn from(e: crate::sm::SmError) -> Self {
        Error::Protocol(e.to_string())
    }
}

/// The account `new` with its JID in normal form, checked: a bare JID with a user part, and a
/// CA file that loads.
pub(crate) fn checked_account(new: &NewAccount) -> Result<NewAccount> {
    let jid: tokio_xmpp::jid::BareJid = new
        .jid
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID {:?}: {e}", new.jid)))?;
    if jid.node().is_none() {
        return Err(Error::Usage(format!("JID {jid} has no user part")));
    }
    if let Some(ca) = &new.ca_file {
        tls_config(Some(ca))?;
    }
    Ok(NewAccount {
        jid: jid.to_string(),
        ..new.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{FastToken, SecretVault, FAST_MECHANISM};
    use std::sync::Mutex;

    /// A vault in memory (the desktop's is the OS keyring); `broken` refuses every write.
    #[derive(Default)]
    struct MemVault {
        secret: Mutex<Option<String>>,
        broken: bool,
    }

    impl SecretVault for MemVault {
        fn fast_secret(&self) -> std::result::Result<Option<String>, String> {
            Ok(self.secret.lock().unwrap().clone())
        }
        fn set_fast_secret(&self, secret: Option<&str>) -> std::result::Result<(), String> {
            if self.broken {
                return Err("the keyring is locked".into());
            }
            *self.secret.lock().unwrap() = secret.map(str::to_owned);
            Ok(())
        }
    }

    fn client(dir: &tempfile::TempDir) -> crate::Client {
        let path = dir.path().join("t.db");
        crate::Client::add_account(
            &path,
            &crate::store::NewAccount {
                jid: "alice@localhost".into(),
                password: String::new(),
                server: None,
                ca_file: None,
                insecure_plaintext: false,
                direct_tls: false,
            },
        )
        .unwrap();
        crate::Client::open(&path, crate::ClientConfig::default()).unwrap()
    }

    fn engine(c: &crate::Client) -> Engine {
        let shared = c.shared();
        Engine::restore(
            shared.config.clone(),
            &shared.account,
            &mut shared.store(),
            Instant::now(),
        )
        .unwrap()
    }

    fn token(secret: &str) -> FastToken {
        FastToken {
            mechanism: FAST_MECHANISM.into(),
            secret: secret.into(),
            expires_ms: i64::MAX,
            count: 0,
        }
    }

    #[test]
    fn without_a_vault_the_token_is_in_the_owner_only_store_and_counted_before_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let c = client(&dir);
        let e = engine(&c);
        keep_token(c.shared(), Some(&token("secret-token:1"))).unwrap();
        let plan = login_plan(c.shared(), &e, true, true).unwrap();
        let t = plan.token.unwrap();
        assert_eq!((t.secret.as_str(), t.count), ("secret-token:1", 1));
        assert_eq!(
            login_plan(c.shared(), &e, true, true)
                .unwrap()
                .token
                .unwrap()
                .count,
            2
        );
        // SASL1 or FAST off: no token goes out (and none is counted).
        assert!(login_plan(c.shared(), &e, false, true)
            .unwrap()
            .token
            .is_none());
        forget_token(c.shared()).unwrap();
        assert!(login_plan(c.shared(), &e, true, true)
            .unwrap()
            .token
            .is_none());
    }

    #[test]
    fn with_a_vault_the_secret_is_only_in_the_vault() {
        let dir = tempfile::tempdir().unwrap();
        let c = client(&dir);
        let e = engine(&c);
        let vault = std::sync::Arc::new(MemVault::default());
        c.set_secret_vault(vault.clone());
        keep_token(c.shared(), Some(&token("secret-token:1"))).unwrap();
        assert_eq!(
            vault.fast_secret().unwrap().as_deref(),
            Some("secret-token:1")
        );
        let in_db = c
            .shared()
            .store()
            .fast_token(c.account().id, 0)
            .unwrap()
            .unwrap();
        assert_eq!(in_db.secret, "", "no secret in the database");
        let raw = std::fs::read(dir.path().join("t.db")).unwrap();
        assert!(
            !raw.windows(14).any(|w| w == b"secret-token:1"),
            "not in the file"
        );
        let plan = login_plan(c.shared(), &e, true, true).unwrap();
        assert_eq!(plan.token.unwrap().secret, "secret-token:1");
        forget_token(c.shared()).unwrap();
        assert_eq!(vault.fast_secret().unwrap(), None);
        assert!(login_plan(c.shared(), &e, true, true)
            .unwrap()
            .token
            .is_none());
    }

    #[test]
    fn a_vault_that_refuses_the_token_keeps_it_nowhere_and_the_password_stays_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let c = client(&dir);
        let e = engine(&c);
        c.set_secret_vault(std::sync::Arc::new(MemVault {
            broken: true,
            ..MemVault::default()
        }));
        keep_token(c.shared(), Some(&token("secret-token:1"))).unwrap();
        assert!(c
            .shared()
            .store()
            .fast_token(c.account().id, 0)
            .unwrap()
            .is_none());
        assert!(login_plan(c.shared(), &e, true, true)
            .unwrap()
            .token
            .is_none());
    }
}
