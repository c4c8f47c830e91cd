//! One live session: resume or bind + enable, then the loop that writes the outbox, answers the
//! server, stores what arrives, and settles acks. Each step commits to the store before acting:
//! a message row is marked `sent` (with its SM seq, and the SM state) before its bytes are written,
//! and an inbound stanza is counted in `h` in the same transaction that commits what it carries.

use std::time::Instant;

use futures::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::{
    bind::{BindQuery, BindResponse},
    delay::Delay,
    iq::Iq,
    message::{Id, Lang, Message, MessageType},
    ns,
    presence::Presence,
    sm::{self, Nonza},
    stanza::Stanza,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
    stanza_id::{OriginId, StanzaId},
    stream_error::{ReceivedStreamError, StreamError},
    stream_features::StreamFeatures,
};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, StreamElementError, XmppStream, XmppStreamElement,
};

use super::login::{Io, LoggedIn};
use super::{Backoff, SessionEnd, UNCONFIRMED};
use crate::client::Shared;
use crate::delivery::State;
use crate::error::{Error, Result};
use crate::events::{ConnState, Event};
use crate::sm::{SmError, SmSnapshot, StreamManager};
use crate::store::{InboundMessage, Move, OutboxItem};

const BIND_ID: &str = "tether-bind";
/// How many queued messages one store round-trip takes.
const OUTBOX_BATCH: usize = 64;

/// What the stream gave us. (Boxing the element would cost an allocation per stanza.)
#[allow(clippy::large_enum_variant)]
enum Incoming {
    Element(XmppStreamElement),
    Invalid(StreamElementError),
    SoftTimeout,
}

struct Session<'a> {
    shared: &'a Shared,
    sm: &'a mut StreamManager<i64>,
    unmanaged: &'a mut Vec<i64>,
    stream: XmppStream<Io>,
    features: StreamFeatures,
    own: BareJid,
    account: i64,
    /// Elements fed but not flushed.
    dirty: bool,
}

/// Runs one session on a logged-in stream. `Ok(Lost)` asks the driver to reconnect; `Err` is final.
pub(crate) async fn run(
    shared: &Shared,
    sm: &mut StreamManager<i64>,
    unmanaged: &mut Vec<i64>,
    logged_in: LoggedIn,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<SessionEnd> {
    let own: BareJid = shared
        .account
        .jid
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID: {e}")))?;
    let mut s = Session {
        shared,
        sm,
        unmanaged,
        stream: logged_in.stream,
        features: logged_in.features,
        own,
        account: shared.account.id,
        dirty: false,
    };
    let outcome = async {
        let resumed = s.establish().await?;
        backoff.reset();
        shared.emit(Event::connection(
            ConnState::Online,
            Some(resumed),
            None,
            None,
        ));
        s.live(shutdown).await
    }
    .await;
    match outcome {
        Ok(end) => Ok(end),
        Err(e) if e.is_retryable() => Ok(SessionEnd::Lost(e)),
        Err(e) => Err(e),
    }
}

impl Session<'_> {
    // ----------------------------------------------------------------------------------- plumbing

    async fn read(&mut self) -> Result<Incoming> {
        match self.stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(el))) => Ok(Incoming::Element(el)),
            Some(Ok(FallibleStreamElement::Err(e))) => Ok(Incoming::Invalid(e)),
            Some(Err(ReadError::SoftTimeout)) => Ok(Incoming::SoftTimeout),
            Some(Err(ReadError::HardError(e))) => Err(Error::Network(e.to_string())),
            Some(Err(ReadError::ParseError(e))) => Err(Error::Protocol(format!(
                "malformed XML from the server: {e}"
            ))),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                Err(Error::Network("the server closed the stream".into()))
            }
        }
    }

    async fn feed(&mut self, el: XmppStreamElement) -> Result<()> {
        self.dirty = true;
        self.stream
            .feed(&el)
            .await
            .map_err(|e| Error::Network(format!("write failed: {e}")))
    }

    async fn flush(&mut self) -> Result<()> {
        if self.dirty {
            SinkExt::<&XmppStreamElement>::flush(&mut self.stream)
                .await
                .map_err(|e| Error::Network(format!("write failed: {e}")))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Writes a stanza that carries no message row (presence, iq), counting it first.
    async fn write_untracked(&mut self, stanza: Stanza) -> Result<()> {
        if self.sm.on_sent(None, Instant::now()).is_some() {
            self.shared
                .store()
                .save_sm(self.account, self.sm.snapshot())?;
        }
        self.feed(XmppStreamElement::Stanza(stanza)).await
    }

    /// Counts an inbound stanza that carries nothing to store.
    fn count_inbound(&mut self) -> Result<()> {
        if self.sm.is_enabled() {
            self.sm.on_inbound_handled();
            self.shared
                .store()
                .save_sm(self.account, self.sm.snapshot())?;
        }
        Ok(())
    }

    fn apply(&mut self, moves: &[Move], snap: Option<&SmSnapshot>) -> Result<()> {
        let changes = self.shared.store().apply(self.account, moves, snap)?;
        self.shared.emit_changes(&changes);
        Ok(())
    }

    fn moves(keys: impl IntoIterator<Item = i64>, to: State, error: Option<&str>) -> Vec<Move> {
        keys.into_iter()
            .map(|key| Move {
                key,
                to,
                error: error.map(str::to_owned),
                seq: None,
            })
            .collect()
    }

    // ------------------------------------------------------------------------------ negotiation

    /// Resumes the stored stream if possible, else binds and enables a new one. Returns whether the
    /// stream was resumed.
    async fn establish(&mut self) -> Result<bool> {
        let sm_offered = self.features.stream_management.is_some();
        if self.sm.can_resume() {
            if sm_offered {
                if self.resume().await? {
                    return Ok(true);
                }
            } else {
                // The server no longer offers SM: nothing unacked can be settled.
                let keys = self.sm.take_unsettled();
                let snap = self.sm.snapshot().clone();
                self.apply(
                    &Self::moves(keys, State::Failed, Some(UNCONFIRMED)),
                    Some(&snap),
                )?;
            }
        }
        self.bind().await?;
        if sm_offered {
            let enable = self.sm.start_enable();
            self.feed(XmppStreamElement::SM(Nonza::Enable(enable)))
                .await?;
            self.flush().await?;
            loop {
                match self.read().await? {
                    Incoming::Element(XmppStreamElement::SM(Nonza::Enabled(e))) => {
                        self.sm.on_enabled(&e)?;
                        break;
                    }
                    Incoming::Element(XmppStreamElement::SM(Nonza::Failed(f))) => {
                        tracing::warn!(?f, "the server refused stream management");
                        self.sm.on_enable_failed();
                        break;
                    }
                    Incoming::SoftTimeout => continue,
                    other => self.unexpected_during_negotiation(other)?,
                }
            }
            self.shared
                .store()
                .save_sm(self.account, self.sm.snapshot())?;
        }
        self.write_untracked(Stanza::Presence(Presence::available()))
            .await?;
        self.flush().await?;
        Ok(false)
    }

    /// Sends `<resume/>`. On `<resumed/>` settles acks and re-sends the rest (returns true); on
    /// `<failed/>` settles acks and fails the rest, never resending them silently (returns false).
    async fn resume(&mut self) -> Result<bool> {
        let resume = self.sm.start_resume().expect("can_resume checked");
        self.feed(XmppStreamElement::SM(Nonza::Resume(resume)))
            .await?;
        self.flush().await?;
        loop {
            match self.read().await? {
                Incoming::Element(XmppStreamElement::SM(Nonza::Resumed(r))) => {
                    return match self.sm.on_resumed(&r) {
                        Ok(settlement) => {
                            self.resend_after_resume(settlement.acked, settlement.rest)
                                .await?;
                            Ok(true)
                        }
                        Err(e) => Err(self.protocol_violation(e).await),
                    };
                }
                Incoming::Element(XmppStreamElement::SM(Nonza::Failed(f))) => {
                    tracing::info!(h = ?f.h, "the server could not resume the session");
                    let s = self.sm.on_resume_failed(f.h);
                    let mut moves = Self::moves(s.acked, State::Acked, None);
                    moves.extend(Self::moves(
                        s.rest,
                        State::Failed,
                        Some("the server lost the session before confirming this message (resumption failed)"),
                    ));
                    let snap = self.sm.snapshot().clone();
                    self.apply(&moves, Some(&snap))?;
                    return Ok(false);
                }
                Incoming::SoftTimeout => continue,
                other => self.unexpected_during_negotiation(other)?,
            }
        }
    }

    async fn resend_after_resume(&mut self, acked: Vec<i64>, rest: Vec<i64>) -> Result<()> {
        let items = self.shared.store().outbox_items(&rest)?;
        let now = Instant::now();
        let mut moves = Self::moves(acked, State::Acked, None);
        for item in &items {
            moves.push(Move {
                key: item.key,
                to: State::Retrying,
                error: None,
                seq: self.sm.on_sent(Some(item.key), now),
            });
        }
        let snap = self.sm.snapshot().clone();
        self.apply(&moves, Some(&snap))?;
        for item in &items {
            match outgoing_message(item) {
                Ok(m) => {
                    self.feed(XmppStreamElement::Stanza(Stanza::Message(m)))
                        .await?
                }
                // Cannot happen for rows send() validated; the SM counted it, so the server's h
                // will fall one short and the message stays unacked until the user decides.
                Err(e) => tracing::error!(id = item.id, "cannot re-send: {e}"),
            }
        }
        self.flush().await
    }

    async fn bind(&mut self) -> Result<()> {
        let resource = self.shared.account.resource.clone();
        let iq = Iq::from_set(BIND_ID, BindQuery::new(Some(resource)));
        self.feed(XmppStreamElement::Stanza(Stanza::Iq(iq))).await?;
        self.flush().await?;
        loop {
            match self.read().await? {
                Incoming::Element(XmppStreamElement::Stanza(Stanza::Iq(Iq::Result {
                    id,
                    payload: Some(payload),
                    ..
                }))) if id == BIND_ID => {
                    let bound = BindResponse::try_from(payload)
                        .map_err(|e| Error::Protocol(format!("bad bind response: {e}")))?;
                    tracing::info!(jid = %Jid::from(bound), "bound");
                    return Ok(());
                }
                Incoming::Element(XmppStreamElement::Stanza(Stanza::Iq(Iq::Error {
                    id,
                    error,
                    ..
                }))) if id == BIND_ID => {
                    return Err(Error::Protocol(format!(
                        "the server refused to bind a resource: {:?}",
                        error.defined_condition
                    )))
                }
                Incoming::SoftTimeout => continue,
                other => self.unexpected_during_negotiation(other)?,
            }
        }
    }

    fn unexpected_during_negotiation(&mut self, what: Incoming) -> Result<()> {
        match what {
            Incoming::Element(XmppStreamElement::StreamError(e)) => Err(Error::Protocol(format!(
                "stream error from the server: {e}"
            ))),
            Incoming::Element(other) => {
                tracing::warn!(?other, "unexpected element during negotiation; ignored");
                Ok(())
            }
            Incoming::Invalid(e) => {
                tracing::warn!("invalid element during negotiation: {e}");
                Ok(())
            }
            Incoming::SoftTimeout => Ok(()),
        }
    }

    /// The server broke the SM protocol (a bad h, a resumed stream we did not ask for): tell it,
    /// fail what it never confirmed, and drop the SM state. Returns the error that ends the session.
    async fn protocol_violation(&mut self, e: SmError) -> Error {
        tracing::warn!("{e}");
        if let SmError::HandledCountTooHigh { h, send_count } = e {
            let err: StreamError = sm::HandledCountTooHigh { h, send_count }.into();
            // Best effort: the stream is being torn down either way.
            if let Err(we) = self
                .feed(XmppStreamElement::StreamError(ReceivedStreamError(err)))
                .await
            {
                tracing::debug!("could not send the stream error: {we}");
            }
            if let Err(we) = self.stream.shutdown().await {
                tracing::debug!("could not close the stream: {we}");
            }
        }
        let keys = self.sm.take_unsettled();
        let snap = self.sm.snapshot().clone();
        let reason = format!("{UNCONFIRMED} ({e})");
        if let Err(store_err) = self.apply(
            &Self::moves(keys, State::Failed, Some(&reason)),
            Some(&snap),
        ) {
            return store_err;
        }
        Error::Protocol(e.to_string())
    }

    // ------------------------------------------------------------------------------- live loop

    async fn live(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<SessionEnd> {
        let shared = self.shared;
        let mut poll = tokio::time::interval(shared.config.outbox_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            self.pump().await?;
            if shared
                .exit_when_idle
                .load(std::sync::atomic::Ordering::SeqCst)
                && self.sm.in_flight() == 0
                && shared.store().pending_count(self.account)? == 0
            {
                return self.close().await;
            }
            let deadline = self.sm.poll_timeout();
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
            tokio::select! {
                _ = shutdown.changed() => return self.stop().await,
                incoming = self.read() => { let incoming = incoming?; self.handle(incoming).await? }
                _ = shared.outbox.notified() => {}
                _ = tokio::time::sleep_until(deadline.map(Into::into).unwrap_or(far)), if deadline.is_some() => {}
                _ = poll.tick() => {}
            }
        }
    }

    /// Writes what the outbox holds (as far as flow control allows), asks for an ack when the
    /// policy says so, and flushes.
    async fn pump(&mut self) -> Result<()> {
        loop {
            let room = if self.sm.is_enabled() {
                (self
                    .shared
                    .config
                    .sm
                    .max_in_flight
                    .saturating_sub(self.sm.in_flight())) as usize
            } else {
                OUTBOX_BATCH
            };
            if room == 0 {
                break;
            }
            let items = self
                .shared
                .store()
                .queued(self.account, room.min(OUTBOX_BATCH))?;
            if items.is_empty() {
                break;
            }
            let now = Instant::now();
            let mut moves = Vec::with_capacity(items.len());
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                match outgoing_message(item) {
                    Ok(m) => {
                        moves.push(Move {
                            key: item.key,
                            to: State::Sent,
                            error: None,
                            seq: self.sm.on_sent(Some(item.key), now),
                        });
                        out.push(m);
                    }
                    Err(e) => moves.push(Move {
                        key: item.key,
                        to: State::Failed,
                        error: Some(e.to_string()),
                        seq: None,
                    }),
                }
            }
            if !self.sm.is_enabled() {
                self.unmanaged
                    .extend(moves.iter().filter(|m| m.to == State::Sent).map(|m| m.key));
            }
            let snap = self.sm.is_enabled().then(|| self.sm.snapshot().clone());
            self.apply(&moves, snap.as_ref())?;
            for m in out {
                self.feed(XmppStreamElement::Stanza(Stanza::Message(m)))
                    .await?;
            }
        }
        if self.sm.poll_request(Instant::now()) {
            self.feed(XmppStreamElement::SM(Nonza::Req(sm::R))).await?;
        }
        self.flush().await
    }

    async fn handle(&mut self, incoming: Incoming) -> Result<()> {
        match incoming {
            Incoming::Element(XmppStreamElement::Stanza(Stanza::Message(m))) => self.on_message(m),
            Incoming::Element(XmppStreamElement::Stanza(Stanza::Iq(iq))) => self.on_iq(iq).await,
            Incoming::Element(XmppStreamElement::Stanza(Stanza::Presence(_))) => {
                self.count_inbound()
            }
            Incoming::Element(XmppStreamElement::SM(Nonza::Req(_))) => {
                let a = self.sm.answer_request();
                self.feed(XmppStreamElement::SM(Nonza::Ack(a))).await
            }
            Incoming::Element(XmppStreamElement::SM(Nonza::Ack(a))) => match self.sm.on_ack(a.h) {
                Ok(keys) => {
                    let snap = self.sm.snapshot().clone();
                    self.apply(&Self::moves(keys, State::Acked, None), Some(&snap))
                }
                Err(e) => Err(self.protocol_violation(e).await),
            },
            Incoming::Element(XmppStreamElement::StreamError(e)) => {
                Err(Error::Network(format!("stream error from the server: {e}")))
            }
            Incoming::Element(other) => {
                tracing::warn!(?other, "unexpected element; ignored");
                self.shared.emit(Event::error(
                    "protocol",
                    format!("unexpected element from the server: {other:?}"),
                ));
                Ok(())
            }
            Incoming::Invalid(e) => {
                // A stanza we cannot parse was still received: count it so our h matches the
                // server's, and say so (it carries nothing we could store).
                if matches!(e, StreamElementError::InvalidStanza { .. }) {
                    self.count_inbound()?;
                }
                self.shared.emit(Event::error(
                    "stanza",
                    format!("dropped a malformed element: {e}"),
                ));
                Ok(())
            }
            Incoming::SoftTimeout => {
                // Silence: prove the link is alive (the read times out hard if nothing answers).
                if self.sm.is_enabled() {
                    self.feed(XmppStreamElement::SM(Nonza::Req(sm::R))).await
                } else {
                    let ping = Iq::from_get(
                        format!("ping-{}", uuid::Uuid::new_v4().simple()),
                        tokio_xmpp::parsers::ping::Ping,
                    );
                    self.write_untracked(Stanza::Iq(ping)).await
                }
            }
        }
    }

    fn on_message(&mut self, mut m: Message) -> Result<()> {
        if m.type_ == MessageType::Error {
            let reason = m
                .payloads
                .iter()
                .find(|p| p.is("error", ns::DEFAULT_NS))
                .and_then(|p| StanzaError::try_from(p.clone()).ok())
                .map(|e| describe_error(&e))
                .unwrap_or_else(|| "the server returned an error".to_owned());
            self.sm.on_inbound_handled();
            let key = match &m.id {
                Some(Id(id)) => self.shared.store().outgoing_key(self.account, id)?,
                None => None,
            };
            let snap = self.sm.is_enabled().then(|| self.sm.snapshot().clone());
            return self.apply(
                &Self::moves(key, State::Failed, Some(&reason)),
                snap.as_ref(),
            );
        }
        let body = m
            .bodies
            .get("")
            .or_else(|| m.bodies.values().next())
            .cloned();
        let from = m.from.as_ref().map(|j| j.to_bare());
        let (Some(body), Some(peer), MessageType::Chat | MessageType::Normal) =
            (body, from, m.type_.clone())
        else {
            // Chat states, receipts, carbons, group chat...: handled in later issues.
            return self.count_inbound();
        };
        let mut origin_id = None;
        let mut stanza_id = None;
        let mut server_ts = None;
        for p in std::mem::take(&mut m.payloads) {
            if p.is("origin-id", ns::SID) {
                origin_id = OriginId::try_from(p).ok().map(|o| o.id);
            } else if p.is("stanza-id", ns::SID) {
                // Trust a stanza-id only when our own server stamped it.
                if let Ok(sid) = StanzaId::try_from(p) {
                    if sid.by == self.own {
                        stanza_id = Some(sid.id);
                    }
                }
            } else if p.is("delay", ns::DELAY) {
                server_ts = Delay::try_from(p)
                    .ok()
                    .map(|d| d.stamp.0.timestamp_millis());
            }
        }
        let msg = InboundMessage {
            id: m.id.map(|i| i.0),
            origin_id,
            stanza_id,
            peer: peer.to_string(),
            body,
            server_ts,
        };
        self.sm.on_inbound_handled();
        let snap = self.sm.snapshot().clone();
        let change = self
            .shared
            .store()
            .store_inbound(self.account, &msg, &snap)?;
        match change {
            Some(c) => self.shared.emit_changes(&[c]),
            None => tracing::info!(peer = msg.peer, id = ?msg.id, "duplicate message dropped"),
        }
        Ok(())
    }

    async fn on_iq(&mut self, iq: Iq) -> Result<()> {
        self.count_inbound()?;
        let reply = match iq {
            Iq::Get {
                from, id, payload, ..
            } if payload.is("ping", ns::PING) => Iq::Result {
                from: None,
                to: from,
                id,
                payload: None,
            },
            Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => Iq::Error {
                from: None,
                to: from,
                id,
                payload: None,
                error: StanzaError::new(
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                    "en",
                    "not supported by this client",
                ),
            },
            Iq::Result { .. } | Iq::Error { .. } => return Ok(()),
        };
        self.write_untracked(Stanza::Iq(reply)).await
    }

    // ---------------------------------------------------------------------------------- endings

    /// Shutdown asked: close cleanly if nothing is in flight (the session ends for good), else just
    /// drop the link and keep the SM state so the next start resumes the stream.
    async fn stop(&mut self) -> Result<SessionEnd> {
        if self.sm.in_flight() == 0 {
            return self.close().await;
        }
        tracing::info!(
            in_flight = self.sm.in_flight(),
            "stopping with unacked stanzas: keeping the stream resumable"
        );
        if let Err(e) = self.flush().await {
            tracing::debug!("final flush failed: {e}");
        }
        Ok(SessionEnd::Done)
    }

    /// Ends the session cleanly: final ack, stream footer, wait briefly for the server's footer
    /// (storing any message that arrives meanwhile), then forget the stream.
    async fn close(&mut self) -> Result<SessionEnd> {
        if self.sm.is_enabled() {
            let a = self.sm.answer_request();
            self.feed(XmppStreamElement::SM(Nonza::Ack(a))).await?;
        }
        self.flush().await?;
        if let Err(e) = self.stream.shutdown().await {
            tracing::debug!("closing the stream: {e}");
        }
        let drain = async {
            while let Ok(incoming) = self.read().await {
                if let Incoming::Element(XmppStreamElement::Stanza(Stanza::Message(m))) = incoming {
                    self.on_message(m)?;
                }
            }
            Ok::<_, Error>(())
        };
        if tokio::time::timeout(std::time::Duration::from_secs(2), drain)
            .await
            .is_err()
        {
            tracing::debug!("the server did not close its side in time");
        }
        let leftover = self.sm.take_unsettled();
        let snap = self.sm.snapshot().clone();
        self.apply(
            &Self::moves(leftover, State::Failed, Some(UNCONFIRMED)),
            Some(&snap),
        )?;
        Ok(SessionEnd::Done)
    }
}

fn outgoing_message(item: &OutboxItem) -> Result<Message> {
    let to: BareJid = item
        .peer
        .parse()
        .map_err(|e| Error::Usage(format!("bad recipient {:?}: {e}", item.peer)))?;
    let mut m = Message::chat(Some(Jid::from(to)));
    m.id = Some(Id(item.id.clone()));
    m.bodies.insert(Lang::new(), item.body.clone());
    m.payloads.push(
        OriginId {
            id: item.origin_id.clone().unwrap_or_else(|| item.id.clone()),
        }
        .into(),
    );
    Ok(m)
}

fn describe_error(e: &StanzaError) -> String {
    let condition = format!("{:?}", e.defined_condition);
    match e.texts.values().next() {
        Some(text) => format!("{condition}: {text}"),
        None => condition,
    }
}
