//! The I/O shell: login, resume-or-bind, the live session loop, and the reconnect policy. It feeds
//! the sans-IO [`crate::sm::StreamManager`] and writes every change to the store before acting on it.

mod backoff;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod inbound;
pub(crate) mod login;
mod mam;
pub(crate) mod session;

pub use backoff::Backoff;
pub use login::tls_config;

use std::sync::Arc;

use crate::client::Shared;
use crate::delivery::State;
use crate::error::{Error, Result};
use crate::events::{ConnState, Event};
use crate::sm::StreamManager;
use crate::store::{ControlMove, Move};

/// What an SM-tracked stanza is in the store: a message row or a control row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// `messages.seq_local`.
    Msg(i64),
    /// `control.seq_local`.
    Ctl(i64),
}

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

/// How a group of tags is settled.
#[derive(Clone, Copy)]
pub(crate) enum Fate<'a> {
    /// Covered by the server's h: messages acked, control rows deleted.
    Acked,
    /// Waiting for resumption: messages hibernated, control rows kept.
    Hibernated,
    /// The stream is gone for good: messages failed (the user decides), control rows re-queued.
    Lost(&'a str),
}

/// The store moves that settle `tags`.
pub(crate) fn settle(tags: &[Tag], fate: Fate<'_>) -> (Vec<Move>, Vec<ControlMove>) {
    let mut moves = Vec::new();
    let mut control = Vec::new();
    for tag in tags {
        match (*tag, fate) {
            (Tag::Msg(key), Fate::Acked) => moves.push(Move::to(key, State::Acked)),
            (Tag::Msg(key), Fate::Hibernated) => moves.push(Move::to(key, State::Hibernated)),
            (Tag::Msg(key), Fate::Lost(why)) => moves.push(Move::failed(key, why)),
            (Tag::Ctl(key), Fate::Acked) => control.push(ControlMove::Done { key }),
            (Tag::Ctl(_), Fate::Hibernated) => {}
            (Tag::Ctl(key), Fate::Lost(_)) => control.push(ControlMove::Pending { key }),
        }
    }
    (moves, control)
}

/// Runs the account until shutdown, a final error, or idle (see [`crate::Client::run`]).
pub(crate) async fn drive(shared: Arc<Shared>) -> Result<()> {
    let account_id = shared.account.id;
    // No session on a store that has not passed its integrity check: it would ack into it.
    let integrity = shared.integrity.clone();
    let verdict = tokio::task::spawn_blocking(move || integrity.wait())
        .await
        .map_err(|e| Error::Usage(format!("the integrity check panicked: {e}")))?;
    if let Err(e) = verdict {
        shared.emit(Event::error(e.kind(), e.to_string()));
        return Err(e);
    }
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
        let Some(password) = shared.password() else {
            let e = Error::Auth(
                "no password: it is neither in the database nor given by the app (is the keyring locked?)"
                    .into(),
            );
            shared.emit(Event::error(e.kind(), e.to_string()));
            return Err(e);
        };
        shared.emit(Event::connection(ConnState::Connecting, None, None, None));
        let attempt = tokio::select! {
            r = login::login(
                &shared.account,
                &password,
                tls.as_ref(),
                timeouts,
                shared.config.max_stanza_bytes,
            ) => r,
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
        let tags = sm.on_disconnect();
        let fate = if resumable {
            Fate::Hibernated
        } else {
            Fate::Lost(UNCONFIRMED)
        };
        let (mut moves, control) = settle(&tags, fate);
        // Messages written without SM have no ack to wait for: their fate is unknown.
        let lost: Vec<Tag> = std::mem::take(&mut unmanaged)
            .into_iter()
            .map(Tag::Msg)
            .collect();
        moves.extend(settle(&lost, Fate::Lost(UNCONFIRMED)).0);
        if let Error::Store(e) = &reason {
            shared.emit(Event::error(reason.kind(), e.to_string()));
        }
        match shared
            .store()
            .apply_all(account_id, &moves, &control, Some(sm.snapshot()))
        {
            Ok(changes) => shared.emit_changes(&changes),
            // The store is full or locked: the rows keep their last committed state (the next
            // session or start settles them again from the SM state), and we retry.
            Err(e) if e.is_transient() => {
                tracing::warn!("could not record the disconnect: {e}");
                shared.emit(Event::error(
                    "database",
                    format!("could not record the disconnect (retrying): {e}"),
                ));
            }
            Err(e) => return Err(e.into()),
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

/// Rebuilds the SM engine from the store after a (re)start, and settles what cannot be resumed:
/// messages in flight without a usable seq, or with no resumable stream, become `failed` (the user
/// decides); the rest become `hibernated` until the resumption attempt. Control rows that cannot be
/// resumed are queued again.
fn restore_sm(shared: &Shared) -> Result<StreamManager<Tag>> {
    let account = shared.account.id;
    let mut store = shared.store();
    let snap = store.load_sm(account)?;
    let mut unnumbered = Vec::new();
    let mut numbered = Vec::new();
    let messages = store
        .in_flight(account)?
        .into_iter()
        .map(|(s, k)| (s, Tag::Msg(k)));
    let control = store
        .control_in_flight(account)?
        .into_iter()
        .map(|(s, k)| (s, Tag::Ctl(k)));
    for (seq, tag) in messages.chain(control) {
        match seq {
            Some(seq) => numbered.push((seq, tag)),
            None => unnumbered.push(tag),
        }
    }
    let (mut sm, invalid) = StreamManager::restore(shared.config.sm.clone(), snap, numbered);
    let mut lost: Vec<Tag> = unnumbered.into_iter().chain(invalid).collect();
    let hibernate = if sm.can_resume() {
        sm.on_disconnect()
    } else {
        lost.extend(sm.take_unsettled());
        Vec::new()
    };
    let (mut moves, mut ctl) = settle(&lost, Fate::Lost(UNCONFIRMED));
    let (m2, c2) = settle(&hibernate, Fate::Hibernated);
    moves.extend(m2);
    ctl.extend(c2);
    let changes = store.apply_all(account, &moves, &ctl, Some(sm.snapshot()))?;
    drop(store);
    shared.emit_changes(&changes);
    Ok(sm)
}

impl From<crate::sm::SmError> for Error {
    fn from(e: crate::sm::SmError) -> Self {
        Error::Protocol(e.to_string())
    }
}
