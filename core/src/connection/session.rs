//! One connection's I/O: reads the socket, hands what it held to the session engine, writes what
//! the engine releases, announces its events, and sleeps until its next deadline. No protocol
//! decision is made here (they are all in [`crate::engine`]).

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_xmpp::parsers::csi;
use tokio_xmpp::xmlstream::{FallibleStreamElement, ReadError, XmppStreamElement};

use super::login::{LoggedIn, ReadBudget, Wire, WireStream};
use super::Backoff;
use crate::engine::{Engine, Features, Incoming, SessionEnd, Transmit};
use crate::error::{Error, Result};
use crate::shared::Shared;

/// The most elements one engine call takes (then it commits, and the next starts).
const GROUP_MAX: usize = 256;

/// The socket of one connection.
struct Link {
    stream: WireStream,
    /// Bytes read since the last complete element (the stanza size cap).
    budget: ReadBudget,
}

impl Link {
    /// The next element, skipping tokio-xmpp's soft timeouts (the engine keeps its own
    /// keepalive deadlines).
    async fn read(&mut self) -> Result<Incoming> {
        loop {
            match self.stream.next().await {
                Some(Ok(Wire::Xmpp(FallibleStreamElement::Ok(el)))) => {
                    self.budget.reset();
                    return Ok(Incoming::Element(el));
                }
                Some(Ok(Wire::Xmpp(FallibleStreamElement::Err(e)))) => {
                    self.budget.reset();
                    return Ok(Incoming::Invalid(e));
                }
                Some(Ok(Wire::Features(f))) => {
                    self.budget.reset();
                    return Ok(Incoming::Features(Features::from(&f)));
                }
                Some(Ok(other)) => {
                    return Err(Error::Protocol(format!(
                        "a SASL2 element after the login ended: {other:?}"
                    )))
                }
                Some(Err(ReadError::SoftTimeout)) => continue,
                Some(Err(ReadError::HardError(e))) => return Err(Error::Network(e.to_string())),
                Some(Err(ReadError::ParseError(e))) => {
                    return Err(Error::Protocol(format!(
                        "malformed XML from the server: {e}"
                    )))
                }
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    return Err(Error::Network("the server closed the stream".into()))
                }
            }
        }
    }

    /// The first element, then every further one the socket already holds (at most
    /// [`GROUP_MAX`]); a read error after the first is returned with them.
    async fn read_burst(&mut self) -> Result<(Vec<Incoming>, Option<Error>)> {
        let mut burst = vec![self.read().await?];
        while burst.len() < GROUP_MAX {
            match self.read().now_or_never() {
                Some(Ok(incoming)) => burst.push(incoming),
                Some(Err(e)) => return Ok((burst, Some(e))),
                None => break,
            }
        }
        Ok((burst, None))
    }

    /// Writes what the engine released, flushes once, then announces its events.
    async fn drain(&mut self, engine: &mut Engine, shared: &Shared) -> Result<()> {
        let write_err = |e: std::io::Error| Error::Network(format!("write failed: {e}"));
        let mut dirty = false;
        let mut close = false;
        while let Some(t) = engine.poll_transmit() {
            match t {
                Transmit::Element(el) => self.stream.feed(&el).await.map_err(write_err)?,
                Transmit::Csi { inactive: true } => {
                    self.stream.feed(&csi::Inactive).await.map_err(write_err)?
                }
                Transmit::Csi { inactive: false } => {
                    self.stream.feed(&csi::Active).await.map_err(write_err)?
                }
                Transmit::Close => close = true,
            }
            dirty = true;
        }
        if dirty {
            SinkExt::<&XmppStreamElement>::flush(&mut self.stream)
                .await
                .map_err(write_err)?;
        }
        if close {
            if let Err(e) = self.stream.shutdown().await {
                tracing::debug!("closing the stream: {e}");
            }
        }
        while let Some(event) = engine.poll_event() {
            shared.emit(event);
        }
        Ok(())
    }
}

/// Runs one connection on a logged-in stream until the engine ends it. `Ok(Lost)` asks the driver
/// to settle and reconnect; `Err` is final.
pub(crate) async fn run(
    shared: &Shared,
    engine: &mut Engine,
    logged_in: LoggedIn,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<SessionEnd> {
    let mut features = Features::from(&logged_in.features);
    features.inline = logged_in.sasl2.map(|done| done.inline);
    let mut link = Link {
        stream: logged_in.stream,
        budget: logged_in.budget,
    };
    match live(shared, engine, &mut link, features, shutdown, backoff).await {
        Ok(end) => Ok(end),
        Err(e) if e.is_retryable() => Ok(SessionEnd::Lost(e)),
        Err(e) => Err(e),
    }
}

async fn live(
    shared: &Shared,
    engine: &mut Engine,
    link: &mut Link,
    features: Features,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<SessionEnd> {
    // A fresh link needs no extra probe.
    shared.probe_now.store(false, Ordering::SeqCst);
    engine.handle_connected(
        &mut shared.store(),
        Instant::now(),
        SystemTime::now(),
        features,
    )?;
    // Another process's commits are looked for on a timer only where the profile wants it.
    let mut poll = shared.config.outbox_poll.map(|every| {
        let mut poll = tokio::time::interval(every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        poll
    });
    let mut was_online = false;
    let mut stopping = false;
    let mut last_version: Option<i64> = None;
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        link.drain(engine, shared).await?;
        if let Some(end) = engine.poll_end() {
            return Ok(end);
        }
        if engine.is_online() {
            if !was_online {
                backoff.reset();
                was_online = true;
                // A wish changed while there was no link (here or in another process) is told
                // now; a resumed stream starts no new session that would tell it.
                shared.wishes_changed.store(true, Ordering::SeqCst);
            }
            if shared.probe_now.swap(false, Ordering::SeqCst) {
                engine.handle_probe(&mut shared.store(), Instant::now())?;
            }
            if shared.wishes_changed.swap(false, Ordering::SeqCst) {
                engine.handle_wishes_changed(&mut shared.store(), Instant::now())?;
            }
            engine.set_inactive(shared.inactive.load(Ordering::SeqCst));
            engine.set_exit_when_idle(shared.exit_when_idle.load(Ordering::SeqCst));
            // Chat states the front end reported (stale ones are dropped, never sent late),
            // before the outbox: keystrokes typed before "send" go before the message.
            let states = std::mem::take(
                &mut *shared
                    .chat_states
                    .lock()
                    .map_err(|_| Error::Internal("chat-state lock poisoned".into()))?,
            );
            for (peer, state, at) in states {
                if at.elapsed() <= crate::shared::CHAT_STATE_TTL {
                    engine.handle_chat_state(&mut shared.store(), Instant::now(), &peer, state)?;
                }
            }
            // Batch by batch: each is committed, then written, while the next is staged.
            loop {
                engine.handle_outbox(&mut shared.store(), Instant::now())?;
                link.drain(engine, shared).await?;
                if !engine.outbox_may_have_more() {
                    break;
                }
            }
            link.drain(engine, shared).await?;
            if let Some(end) = engine.poll_end() {
                return Ok(end);
            }
        }
        let deadline = engine.poll_timeout();
        tokio::select! {
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                engine.handle_stop(&mut shared.store(), Instant::now())?;
            }
            read = link.read_burst() => {
                let (burst, after) = match read {
                    Ok(read) => read,
                    Err(e) => return lost(shared, engine, e),
                };
                engine.handle_incoming(&mut shared.store(), Instant::now(), burst)?;
                if let Some(e) = after {
                    link.drain(engine, shared).await?;
                    return lost(shared, engine, e);
                }
            }
            _ = shared.outbox.notified() => {}
            _ = tokio::time::sleep_until(deadline.map(Into::into).unwrap_or_else(far)), if deadline.is_some() => {
                shared.timer_wakeups.fetch_add(1, Ordering::Relaxed);
                engine.handle_timeout(&mut shared.store(), Instant::now())?;
            }
            _ = async { poll.as_mut().expect("polling").tick().await }, if poll.is_some() => {
                shared.timer_wakeups.fetch_add(1, Ordering::Relaxed);
                // Another process committed (the file's `data_version` moves only for other
                // connections' commits): a wish the server keeps may have changed too.
                let version = shared.store().data_version()?;
                if last_version.is_some_and(|v| v != version) {
                    shared.wishes_changed.store(true, Ordering::SeqCst);
                }
                last_version = Some(version);
            }
        }
        shared.wakeups.fetch_add(1, Ordering::Relaxed);
    }
}

/// The link failed: while stopping or closing the engine ends the connection itself; otherwise
/// the driver settles it and reconnects.
fn lost(shared: &Shared, engine: &mut Engine, e: Error) -> Result<SessionEnd> {
    if engine.is_ending() {
        tracing::debug!("the link ended while stopping: {e}");
        engine.handle_link_lost(&mut shared.store(), Instant::now())?;
        while let Some(event) = engine.poll_event() {
            shared.emit(event);
        }
        return Ok(engine.poll_end().unwrap_or(SessionEnd::Done));
    }
    Err(e)
}
