//! The I/O shell: login, resume-or-bind, the live session loop, and the reconnect policy. It feeds
//! the sans-IO [`crate::sm::StreamManager`] and writes every change to the store before acting on it.

mod backoff;
mod login;
mod session;

pub use backoff::Backoff;
pub use login::tls_config;

use std::sync::Arc;

use crate::client::Shared;
use crate::delivery::State;
use crate::error::{Error, Result};
use crate::events::{ConnState, Event};
use crate::sm::StreamManager;
use crate::store::Move;

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The user asked to stop, or `--until-idle` found nothing pending.
    Done,
    /// The link broke or the server misbehaved: reconnect.
    Lost(Error),
}

/// Failure text for messages whose fate the server never confirmed.
pub(crate) const UNCONFIRMED: &str =
    "the connection was lost before the server confirmed this message and the session could not be resumed";

/// Runs the account until shutdown, a final error, or idle (see [`crate::Client::run`]).
pub(crate) async fn drive(shared: Arc<Shared>) -> Result<()> {
    let account_id = shared.account.id;
    let mut sm = restore_sm(&shared)?;
    let tls = if shared.account.insecure_plaintext {
        tracing::warn!("insecure plaintext connection requested: for loopback tests only");
        None
    } else {
        Some(tls_config(shared.account.ca_file.as_deref())?)
    };
    let mut backoff = Backoff::new(shared.config.reconnect_min, shared.config.reconnect_max);
    let mut shutdown = shared.shutdown.subscribe();
    // Keys of messages written to a stream without SM (nothing will ever ack them).
    let mut unmanaged: Vec<i64> = Vec::new();
    let timeouts = tokio_xmpp::xmlstream::Timeouts {
        read_timeout: shared.config.keepalive,
        response_timeout: shared.config.dead_after,
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        shared.emit(Event::connection(ConnState::Connecting, None, None, None));
        let attempt = tokio::select! {
            r = login::login(&shared.account, tls.as_ref(), timeouts) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        let reason = match attempt {
            Ok(logged_in) => {
                match session::run(
                    &shared,
                    &mut sm,
                    &mut unmanaged,
                    logged_in,
                    &mut shutdown,
                    &mut backoff,
                )
                .await
                {
                    Ok(SessionEnd::Done) => return Ok(()),
                    Ok(SessionEnd::Lost(e)) => e,
                    Err(e) => {
                        shared.emit(Event::error(e.kind(), e.to_string()));
                        return Err(e);
                    }
                }
            }
            Err(e) if !e.is_retryable() => {
                shared.emit(Event::error(e.kind(), e.to_string()));
                return Err(e);
            }
            Err(e) => e,
        };
        // The link is gone: settle what was in flight.
        let resumable = sm.can_resume();
        let keys = sm.on_disconnect();
        let (to, error) = if resumable {
            (State::Hibernated, None)
        } else {
            (State::Failed, Some(UNCONFIRMED))
        };
        let mut moves: Vec<Move> = keys
            .into_iter()
            .map(|key| Move {
                key,
                to,
                error: error.map(str::to_owned),
                seq: None,
            })
            .collect();
        // Messages written without SM have no ack to wait for: their fate is unknown.
        moves.extend(std::mem::take(&mut unmanaged).into_iter().map(|key| Move {
            key,
            to: State::Failed,
            error: Some(UNCONFIRMED.to_owned()),
            seq: None,
        }));
        let changes = shared
            .store()
            .apply(account_id, &moves, Some(sm.snapshot()))?;
        shared.emit_changes(&changes);

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

/// Rebuilds the SM engine from the store after a (re)start, and settles what cannot be resumed:
/// messages in flight without a usable seq, or with no resumable stream, become `failed` (the user
/// decides); the rest become `hibernated` until the resumption attempt.
fn restore_sm(shared: &Shared) -> Result<StreamManager<i64>> {
    let account = shared.account.id;
    let mut store = shared.store();
    let snap = store.load_sm(account)?;
    let in_flight = store.in_flight(account)?;
    let mut unmanaged = Vec::new();
    let mut managed = Vec::new();
    for (seq, key) in in_flight {
        match seq {
            Some(seq) => managed.push((seq, key)),
            None => unmanaged.push(key),
        }
    }
    let (mut sm, invalid) = StreamManager::restore(shared.config.sm.clone(), snap, managed);
    let mut failed: Vec<i64> = unmanaged.into_iter().chain(invalid).collect();
    let hibernate = if sm.can_resume() {
        sm.on_disconnect()
    } else {
        failed.extend(sm.take_unsettled());
        Vec::new()
    };
    let mut moves: Vec<Move> = failed
        .into_iter()
        .map(|key| Move {
            key,
            to: State::Failed,
            error: Some(UNCONFIRMED.to_owned()),
            seq: None,
        })
        .collect();
    moves.extend(hibernate.into_iter().map(|key| Move {
        key,
        to: State::Hibernated,
        error: None,
        seq: None,
    }));
    let changes = store.apply(account, &moves, Some(sm.snapshot()))?;
    drop(store);
    shared.emit_changes(&changes);
    Ok(sm)
}

impl From<crate::sm::SmError> for Error {
    fn from(e: crate::sm::SmError) -> Self {
        Error::Protocol(e.to_string())
    }
}
