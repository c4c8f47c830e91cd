//! One live session: resume or bind + enable, then the loop that writes the outboxes, answers the
//! server, stores what arrives, and settles acks. Each step commits to the store before acting:
//! a row is marked written (with its SM seq, and the SM state) before its bytes go out, and an
//! inbound stanza is counted in `h` in the same transaction that commits what it carries.
//! Stanza handlers live in `inbound.rs`, the archive catch-up in `mam.rs`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    bind::{BindQuery, BindResponse},
    carbons, csi,
    iq::Iq,
    message::{Id, Lang, Message, MessageType},
    muc::{muc::History, Muc},
    ns,
    presence::{self, Presence},
    receipts,
    roster::Roster,
    sm::{self, Nonza},
    stanza::Stanza,
    stanza_id::OriginId,
    stream_error::{ReceivedStreamError, StreamError},
    stream_features::StreamFeatures,
};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, StreamElementError, XmppStream, XmppStreamElement,
};

use super::login::{Io, LoggedIn, ReadBudget};
use super::mam::MamSync;
use super::{settle, Backoff, Fate, SessionEnd, Tag, UNCONFIRMED};
use crate::client::Shared;
use crate::delivery::State;
use crate::error::{Error, Result};
use crate::events::{ConnState, Event};
use crate::sm::{SmError, StreamManager};
use crate::store::{ControlItem, ControlKind, ControlMove, Move, OutboxItem, Store};

const BIND_ID: &str = "tether-bind";
/// How many queued rows one store round-trip takes.
const OUTBOX_BATCH: usize = 64;

/// What the stream gave us. (Boxing the element would cost an allocation per stanza.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Incoming {
    Element(XmppStreamElement),
    Invalid(StreamElementError),
    SoftTimeout,
}

/// The two durable outboxes a session writes.
#[derive(Clone, Copy)]
enum Outbox {
    Messages,
    Control,
}

/// An iq we sent and whose answer we handle.
#[derive(Debug)]
pub(super) enum PendingIq {
    Roster,
    Carbons,
    Mam,
}

pub(super) struct Session<'a> {
    pub(super) shared: &'a Shared,
    pub(super) sm: &'a mut StreamManager<Tag>,
    unmanaged: &'a mut Vec<i64>,
    stream: XmppStream<Io>,
    features: StreamFeatures,
    pub(super) own: BareJid,
    pub(super) account: i64,
    /// Elements fed but not flushed.
    dirty: bool,
    pub(super) pending_iqs: HashMap<String, PendingIq>,
    pub(super) mam: MamSync,
    /// What we last told the server about CSI on this session (`None`: nothing, i.e. active).
    csi_inactive: Option<bool>,
    /// Untracked stanzas a synchronous handler wants written (e.g. a room configuration).
    pub(super) pending_writes: Vec<Stanza>,
    /// Bytes read since the last complete element (the stanza size cap).
    budget: ReadBudget,
    /// Events of the group commit in progress, announced once it commits (`None`: no group).
    held: Option<Vec<Event>>,
}

/// The most elements one group commit takes (then it commits, and the next starts).
const GROUP_MAX: usize = 256;

/// What [`Session::handle_stored`] did with an element. (Moved, not boxed: as with [`Incoming`],
/// boxing would cost an allocation per element.)
#[allow(clippy::large_enum_variant)]
enum Stored {
    /// Handled.
    Done,
    /// An `<a/>` broke the protocol: to act on once the group has ended.
    Violation(SmError),
    /// Not an element that only writes to the store: for [`Session::handle`].
    Other(Incoming),
}

/// What one group commit ([`Session::group`]) did.
struct Grouped {
    /// Its outcome, with an `<a/>` that broke the protocol, to act on now that the group is over.
    outcome: Result<Option<SmError>>,
    /// The element read after the group, if one was (it needs the stream).
    after: Option<Result<Incoming>>,
}

/// Whether handling `incoming` only writes to the store (never to the stream): such elements can
/// share a group commit.
fn stores_only(incoming: &Incoming) -> bool {
    matches!(
        incoming,
        Incoming::Element(
            XmppStreamElement::Stanza(Stanza::Message(_) | Stanza::Presence(_))
                | XmppStreamElement::SM(Nonza::Ack(_))
        ) | Incoming::Invalid(_)
    )
}

/// Rolls back a group commit that a panic left open, so other threads are not kept waiting.
struct OpenGroup<'s>(Option<&'s Shared>);

impl Drop for OpenGroup<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.rollback_group();
        }
    }
}

/// Runs one session on a logged-in stream. `Ok(Lost)` asks the driver to reconnect; `Err` is final.
pub(crate) async fn run(
    shared: &Shared,
    sm: &mut StreamManager<Tag>,
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
        budget: logged_in.budget,
        own,
        account: shared.account.id,
        dirty: false,
        pending_iqs: HashMap::new(),
        mam: MamSync::default(),
        csi_inactive: None,
        pending_writes: Vec::new(),
        held: None,
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
        if !resumed {
            s.start_new_session().await?;
        }
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
            Some(Ok(FallibleStreamElement::Ok(el))) => {
                self.budget.reset();
                Ok(Incoming::Element(el))
            }
            Some(Ok(FallibleStreamElement::Err(e))) => {
                self.budget.reset();
                Ok(Incoming::Invalid(e))
            }
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

    pub(super) async fn feed<T: xso::AsXml>(&mut self, el: &T) -> Result<()> {
        self.dirty = true;
        self.stream
            .feed(el)
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

    /// Writes a stanza that no row tracks (presence, iq), counting it (and persisting the count)
    /// first.
    pub(super) async fn write_untracked(&mut self, stanza: Stanza) -> Result<()> {
        if self.sm.on_sent(None, Instant::now()).is_some() {
            self.shared
                .store()
                .save_sm(self.account, self.sm.snapshot())?;
        }
        self.feed(&XmppStreamElement::Stanza(stanza)).await
    }

    /// Sends an iq whose answer [`Self::on_iq_answer`] handles.
    pub(super) async fn send_iq(&mut self, iq: Iq, what: PendingIq) -> Result<()> {
        self.pending_iqs.insert(iq.id().to_owned(), what);
        self.write_untracked(Stanza::Iq(iq)).await
    }

    /// Counts an inbound stanza that carries nothing to store.
    pub(super) fn count_inbound(&mut self) -> Result<()> {
        if self.sm.is_enabled() {
            let account = self.account;
            self.commit_counted(|store, snap| match snap {
                Some(snap) => store.save_sm(account, snap),
                None => Ok(()),
            })?;
        }
        Ok(())
    }

    /// Counts an inbound stanza and commits what it carries (`commit` gets the snapshot with the
    /// new count, None without SM, to write in the same transaction). If the commit fails the
    /// count is taken back, so `h` never covers a stanza the store does not hold: the server
    /// keeps it, and the next session or the resumption delivers it again.
    pub(super) fn commit_counted<R>(
        &mut self,
        commit: impl FnOnce(&mut Store, Option<&crate::sm::SmSnapshot>) -> crate::store::Result<R>,
    ) -> Result<R> {
        self.sm.on_inbound_handled();
        // In a group commit the SM state is written once, as the group commits.
        let snap = (self.sm.is_enabled() && self.held.is_none()).then(|| self.sm.snapshot());
        let outcome = commit(&mut self.shared.store(), snap);
        if outcome.is_err() {
            self.sm.on_inbound_uncommitted();
        }
        Ok(outcome?)
    }

    /// Announces an event, or holds it until the group commit in progress commits (an app must
    /// not hear of a message the store may yet lose).
    pub(super) fn emit(&mut self, event: Event) {
        match &mut self.held {
            Some(held) => held.push(event),
            None => self.shared.emit(event),
        }
    }

    /// Announces the events of state changes (see [`Self::emit`]).
    pub(super) fn emit_changes(&mut self, changes: &[crate::store::StateChange]) {
        for c in changes {
            self.emit(Event::from_change(c));
        }
    }

    fn apply(&mut self, moves: &[Move], control: &[ControlMove]) -> Result<()> {
        let snap = self.sm.is_enabled().then(|| self.sm.snapshot().clone());
        let changes = self
            .shared
            .store()
            .apply_all(self.account, moves, control, snap.as_ref())?;
        self.emit_changes(&changes);
        Ok(())
    }

    fn apply_settlement(&mut self, tags: &[Tag], fate: Fate<'_>) -> Result<()> {
        let (moves, control) = settle(tags, fate);
        // The snapshot must be written even when the SM state was just dropped.
        let snap = self.sm.snapshot().clone();
        let changes = self
            .shared
            .store()
            .apply_all(self.account, &moves, &control, Some(&snap))?;
        self.emit_changes(&changes);
        Ok(())
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
                let tags = self.sm.take_unsettled();
                self.apply_settlement(&tags, Fate::Lost(UNCONFIRMED))?;
            }
        }
        self.bind().await?;
        if sm_offered {
            let enable = self.sm.start_enable();
            self.feed(&XmppStreamElement::SM(Nonza::Enable(enable)))
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
                    Incoming::Invalid(ref e) if is_sm_failed(e) => {
                        tracing::warn!("the server refused stream management");
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
        Ok(false)
    }

    /// What a new (not resumed) session needs: the roster, carbons, our presence, room joins, and
    /// the archive catch-up. Rows a lost stream had written go out again through the outboxes.
    async fn start_new_session(&mut self) -> Result<()> {
        let ver_supported = self
            .features
            .others
            .iter()
            .any(|e| e.is("ver", "urn:xmpp:features:rosterver"));
        let rooms = {
            let mut store = self.shared.store();
            store.reset_presence(self.account)?;
            store.rejoin_rooms(self.account)?
        };
        let ver = if ver_supported {
            Some(
                self.shared
                    .store()
                    .roster_ver(self.account)?
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        let roster = Iq::from_get(
            format!("roster-{}", uuid::Uuid::new_v4().simple()),
            Roster { ver, items: vec![] },
        );
        self.send_iq(roster, PendingIq::Roster).await?;
        let carbons = Iq::from_set(
            format!("carbons-{}", uuid::Uuid::new_v4().simple()),
            carbons::Enable,
        );
        self.send_iq(carbons, PendingIq::Carbons).await?;
        self.write_untracked(Stanza::Presence(Presence::available()))
            .await?;
        self.flush().await?;
        let archives = rooms.into_iter().map(|r| r.jid).collect();
        self.start_mam(archives).await
    }

    /// Sends `<resume/>`. On `<resumed/>` settles acks and re-sends the rest (returns true); on
    /// `<failed/>` settles acks and fails the rest, never resending messages silently (returns
    /// false).
    async fn resume(&mut self) -> Result<bool> {
        let resume = self.sm.start_resume().expect("can_resume checked");
        self.feed(&XmppStreamElement::SM(Nonza::Resume(resume)))
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
                    self.resume_failed(f.h)?;
                    return Ok(false);
                }
                // xmpp-parsers 0.23 requires h on <failed/> although XEP-0198 makes it optional
                // (Prosody omits it for an unknown or destroyed session): take it as failed, no h.
                Incoming::Invalid(ref e) if is_sm_failed(e) => {
                    tracing::info!("the server could not resume the session (no h)");
                    self.resume_failed(None)?;
                    return Ok(false);
                }
                Incoming::SoftTimeout => continue,
                other => self.unexpected_during_negotiation(other)?,
            }
        }
    }

    /// `<failed/>` in answer to `<resume/>`: what `h` covers is acked, the rest of the messages
    /// failed (the user decides), control rows queued again; the SM state is dropped.
    fn resume_failed(&mut self, h: Option<u32>) -> Result<()> {
        let s = self.sm.on_resume_failed(h);
        let (mut moves, mut control) = settle(&s.acked, Fate::Acked);
        let (m2, c2) = settle(
            &s.rest,
            Fate::Lost(
                "the server lost the session before confirming this message (resumption failed)",
            ),
        );
        moves.extend(m2);
        control.extend(c2);
        let snap = self.sm.snapshot().clone();
        let changes = self
            .shared
            .store()
            .apply_all(self.account, &moves, &control, Some(&snap))?;
        self.emit_changes(&changes);
        Ok(())
    }

    /// After `<resumed/>`: what `h` covers is settled, the rest is written again first, in order,
    /// each counted anew, in one transaction with the new seqs.
    async fn resend_after_resume(&mut self, acked: Vec<Tag>, rest: Vec<Tag>) -> Result<()> {
        let (mut moves, mut control) = settle(&acked, Fate::Acked);
        let mut msg_keys = Vec::new();
        let mut ctl_keys = Vec::new();
        for t in &rest {
            match t {
                Tag::Msg(k) => msg_keys.push(*k),
                Tag::Ctl(k) => ctl_keys.push(*k),
            }
        }
        let (mut messages, mut controls): (HashMap<i64, OutboxItem>, HashMap<i64, ControlItem>) = {
            let store = self.shared.store();
            (
                store
                    .resendable(&msg_keys)?
                    .into_iter()
                    .map(|m| (m.key, m))
                    .collect(),
                store
                    .control_items(&ctl_keys)?
                    .into_iter()
                    .map(|c| (c.key, c))
                    .collect(),
            )
        };
        let now = Instant::now();
        let mut out = Vec::new();
        // In the original order (rest is ordered by seq); rows that moved on meanwhile (a receipt
        // overtook the ack) are not re-sent.
        for t in &rest {
            let staged = match t {
                Tag::Msg(k) => messages.remove(k).map(|item| {
                    let (m, stanza) = self.stage_message(&item, State::Retrying, now);
                    moves.push(m);
                    stanza
                }),
                Tag::Ctl(k) => controls.remove(k).map(|item| {
                    let (c, stanza) = self.stage_control(&item, now);
                    control.push(c);
                    stanza
                }),
            };
            out.extend(staged.flatten());
        }
        self.apply(&moves, &control)?;
        self.write_batch(out).await
    }

    async fn bind(&mut self) -> Result<()> {
        let resource = self.shared.account.resource.clone();
        let iq = Iq::from_set(BIND_ID, BindQuery::new(Some(resource)));
        self.feed(&XmppStreamElement::Stanza(Stanza::Iq(iq)))
            .await?;
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
            // A message the server delivers before stream management is on (right after bind,
            // or before `<enabled/>`) is not counted, but it is ours to keep: the server will not
            // send it again. (It was ignored, and lost.)
            Incoming::Element(XmppStreamElement::Stanza(Stanza::Message(m))) => {
                tracing::info!("a message arrived during negotiation; storing it");
                self.on_message(m)
            }
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
                .feed(&XmppStreamElement::StreamError(ReceivedStreamError(err)))
                .await
            {
                tracing::debug!("could not send the stream error: {we}");
            }
            if let Err(we) = self.stream.shutdown().await {
                tracing::debug!("could not close the stream: {we}");
            }
        }
        let tags = self.sm.take_unsettled();
        let reason = format!("{UNCONFIRMED} ({e})");
        if let Err(store_err) = self.apply_settlement(&tags, Fate::Lost(&reason)) {
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
            if shared.exit_when_idle.load(Ordering::SeqCst)
                && self.sm.in_flight() == 0
                && !self.mam.busy()
                && shared.store().pending_count(self.account)? == 0
            {
                return self.close().await;
            }
            let deadline = self.sm.poll_timeout();
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
            tokio::select! {
                _ = shutdown.changed() => return self.stop().await,
                incoming = self.read() => { let incoming = incoming?; self.handle_burst(incoming).await? }
                _ = shared.outbox.notified() => {}
                _ = tokio::time::sleep_until(deadline.map(Into::into).unwrap_or(far)), if deadline.is_some() => {}
                _ = poll.tick() => {}
            }
        }
    }

    /// Writes what the outboxes hold (as far as flow control allows), tells the server our CSI
    /// state, asks for an ack when the policy says so, and flushes.
    async fn pump(&mut self) -> Result<()> {
        for stanza in std::mem::take(&mut self.pending_writes) {
            self.write_untracked(stanza).await?;
        }
        self.pump_outboxes().await?;
        let told = self.sync_csi().await?;
        if self.sm.poll_request(Instant::now()) {
            self.feed(&XmppStreamElement::SM(Nonza::Req(sm::R))).await?;
        }
        self.flush().await?;
        // Announced only once the bytes are on their way, so that whoever acts on the event
        // (a test, an app) knows the server can already see the new state.
        if let Some(inactive) = told {
            self.emit(Event::csi(inactive));
        }
        Ok(())
    }

    fn room(&self) -> usize {
        if self.sm.is_enabled() {
            (self
                .shared
                .config
                .sm
                .max_in_flight
                .saturating_sub(self.sm.in_flight())) as usize
        } else {
            OUTBOX_BATCH
        }
    }

    /// Writes both outboxes, batch by batch, as far as flow control allows: each batch is numbered,
    /// committed (rows marked written with their seqs, and the SM state) and only then written.
    async fn pump_outboxes(&mut self) -> Result<()> {
        for outbox in [Outbox::Messages, Outbox::Control] {
            while let Some(stanzas) = self.stage_outbox(outbox)? {
                self.write_batch(stanzas).await?;
            }
        }
        Ok(())
    }

    /// Numbers and commits one batch of an outbox (as far as flow control allows): its rows are
    /// marked written with their seqs, with the SM state, in one transaction (or in the group
    /// commit in progress). Returns the stanzas to write once that has committed; `None` when
    /// there is nothing to write. If the commit fails, the numbering is taken back: nothing was
    /// written.
    fn stage_outbox(&mut self, outbox: Outbox) -> Result<Option<Vec<Stanza>>> {
        let room = self.room().min(OUTBOX_BATCH);
        if room == 0 {
            return Ok(None);
        }
        let now = Instant::now();
        let before = (self.sm.snapshot().outbound_count, self.unmanaged.len());
        let (moves, control, stanzas) = match outbox {
            Outbox::Messages => {
                let items = self.shared.store().queued(self.account, room)?;
                let mut moves = Vec::with_capacity(items.len());
                let mut stanzas = Vec::with_capacity(items.len());
                for item in &items {
                    let (m, stanza) = self.stage_message(item, State::Sent, now);
                    moves.push(m);
                    stanzas.extend(stanza);
                }
                (moves, Vec::new(), stanzas)
            }
            Outbox::Control => {
                let items = self.shared.store().pending_control(self.account, room)?;
                let mut control = Vec::with_capacity(items.len());
                let mut stanzas = Vec::with_capacity(items.len());
                for item in &items {
                    let (c, stanza) = self.stage_control(item, now);
                    control.push(c);
                    stanzas.extend(stanza);
                }
                (Vec::new(), control, stanzas)
            }
        };
        if moves.is_empty() && control.is_empty() {
            return Ok(None);
        }
        if let Err(e) = self.apply(&moves, &control) {
            self.unstage(before);
            return Err(e);
        }
        Ok(Some(stanzas))
    }

    /// Takes back the numbering of stanzas that were staged but never written (their commit
    /// failed): `before` is the outbound count and the length of `unmanaged` before staging.
    fn unstage(&mut self, before: (crate::sm::Seq, usize)) {
        let staged = self.sm.snapshot().outbound_count.wrapping_sub(before.0);
        self.sm.on_unsent(staged);
        self.unmanaged.truncate(before.1);
    }

    /// Numbers a message row for writing: its move (to `to`, with its SM seq) and its stanza. A row
    /// that cannot become a stanza fails with the reason (the user decides).
    fn stage_message(
        &mut self,
        item: &OutboxItem,
        to: State,
        now: Instant,
    ) -> (Move, Option<Stanza>) {
        match outgoing_message(item) {
            Ok(stanza) => {
                let seq = self.sm.on_sent(Some(Tag::Msg(item.key)), now);
                if seq.is_none() {
                    // Written without SM: nothing will ever ack it.
                    self.unmanaged.push(item.key);
                }
                (
                    Move {
                        seq,
                        ..Move::to(item.key, to)
                    },
                    Some(stanza),
                )
            }
            Err(e) => (Move::failed(item.key, e.to_string()), None),
        }
    }

    /// Numbers a control row for writing. Without SM nothing will ack it, so written is as good as
    /// it gets (the row is done); an unusable row is dropped and reported.
    fn stage_control(&mut self, item: &ControlItem, now: Instant) -> (ControlMove, Option<Stanza>) {
        match control_stanza(item) {
            Ok(stanza) => {
                let seq = self.sm.on_sent(Some(Tag::Ctl(item.key)), now);
                let m = match seq {
                    Some(_) => ControlMove::Written { key: item.key, seq },
                    None => ControlMove::Done { key: item.key },
                };
                (m, Some(stanza))
            }
            Err(e) => {
                tracing::warn!(?item, "dropping an unusable control row: {e}");
                self.emit(Event::error("stanza", e.to_string()));
                (ControlMove::Done { key: item.key }, None)
            }
        }
    }

    /// Writes a batch, with an `<r/>` after every few stanzas when SM is on, so the server's acks
    /// come back while the rest of a long batch is still on its way, and flushes once at its end:
    /// one write (and a few TLS records) per batch instead of one per stanza.
    ///
    /// Where the TLS records end does not matter for correctness. (Flushing per stanza used to
    /// narrow a Prosody 13.0.1 bug, which feeds a resumed connection's bytes to the old
    /// connection's XML parser, so half a stanza left there by a cut makes the resumed stream fail
    /// as not-well-formed; but Prosody reads in chunks that end anywhere, so it never closed it.
    /// The session is then lost and the unconfirmed messages become `failed` for the user to
    /// resend, as for any lost session; ARCHITECTURE.md.)
    async fn write_batch(&mut self, stanzas: Vec<Stanza>) -> Result<()> {
        let every = self.sm.request_every() as usize;
        let sm_on = self.sm.is_enabled();
        let n = stanzas.len();
        for (i, stanza) in stanzas.into_iter().enumerate() {
            self.feed(&XmppStreamElement::Stanza(stanza)).await?;
            if sm_on && (i + 1) % every == 0 && i + 1 < n {
                self.feed(&XmppStreamElement::SM(Nonza::Req(sm::R))).await?;
            }
        }
        // Ask at the end of every batch: the ack then usually beats the recipient's receipt.
        if sm_on && n > 0 {
            self.feed(&XmppStreamElement::SM(Nonza::Req(sm::R))).await?;
            self.sm.on_request_sent();
        }
        self.flush().await
    }

    /// Sends CSI inactive/active when the wanted state differs from what the server was told.
    /// Returns the state it wrote (not yet flushed), if it wrote one.
    async fn sync_csi(&mut self) -> Result<Option<bool>> {
        let want = self.shared.inactive.load(Ordering::SeqCst);
        if self.csi_inactive.unwrap_or(false) == want {
            return Ok(None);
        }
        let supported = self.features.others.iter().any(|e| e.is("csi", ns::CSI));
        if !supported {
            tracing::debug!("the server does not offer CSI");
            self.csi_inactive = Some(want);
            return Ok(None);
        }
        if want {
            self.feed(&csi::Inactive).await?;
        } else {
            self.feed(&csi::Active).await?;
        }
        self.csi_inactive = Some(want);
        Ok(Some(want))
    }

    /// Handles what the server sent, committing bursts together: the element read and every
    /// further one the socket already holds that only writes to the store (messages, presence,
    /// acks; at most [`GROUP_MAX`]) share one transaction, so a burst costs one fsync instead of
    /// one per stanza. Their counts in `h` stand only once it commits (they are taken back if it
    /// fails, so no `<a/>` or `<resume/>` ever covers what the store does not hold) and their
    /// events are announced after it. The first element that needs the stream (an `<r/>` to
    /// answer, an iq) is handled after the commit, so every `<a/>` we write covers only what is
    /// committed.
    async fn handle_burst(&mut self, first: Incoming) -> Result<()> {
        if !stores_only(&first) {
            return self.handle(first).await;
        }
        let Grouped { outcome, after } = self.group(first);
        if let Some(e) = outcome? {
            return Err(self.protocol_violation(e).await);
        }

        match after {
            Some(next) => self.handle(next?).await,
            None => Ok(()),
        }
    }

    /// One group commit (see [`Self::handle_burst`]). Synchronous on purpose: other threads wait
    /// for the store while the group is open, and the session must not move to another thread
    /// meanwhile.
    fn group(&mut self, first: Incoming) -> Grouped {
        let shared = self.shared;
        if let Err(e) = shared.store().begin_group() {
            return Grouped {
                outcome: Err(e.into()),
                after: None,
            };
        }
        let mut open = OpenGroup(Some(shared));
        // What the engine knew before the group: if the group is not kept, neither is anything
        // it told the engine (inbound counts, acks settled in memory), so `h` never covers what
        // the store lacks and an ack is settled again by the next `<a/>` or `<resumed/>`.
        let before = self.sm.clone();
        self.held = Some(Vec::new());
        let mut next = first;
        let mut after = None;
        let mut taken = 1;
        let outcome = loop {
            match self.handle_stored(next) {
                Ok(Stored::Done) => {}
                Ok(Stored::Violation(e)) => break Ok(Some(e)),
                Ok(Stored::Other(incoming)) => {
                    after = Some(Ok(incoming));
                    break Ok(None);
                }
                // The failed handler may have left part of its writes in the group: the whole
                // group is rolled back below.
                Err(e) => break Err(e),
            }
            if taken == GROUP_MAX {
                break Ok(None);
            }
            match self.read().now_or_never() {
                Some(Ok(incoming)) if stores_only(&incoming) => {
                    next = incoming;
                    taken += 1;
                }
                Some(other) => {
                    after = Some(other);
                    break Ok(None);
                }
                None => break Ok(None),
            }
        };
        let held = self.held.take().unwrap_or_default();
        // Kept with the SM state that counts it, unless a handler failed.
        let committed = match outcome {
            Ok(_) => self.commit_group(),
            Err(_) => {
                shared.rollback_group();
                Err(Error::Store(crate::store::StoreError::Group(
                    "a handler of the group failed",
                )))
            }
        };
        open.0 = None;
        match &committed {
            Ok(()) => {
                for event in held {
                    shared.emit(event);
                }
            }
            Err(e) => {
                tracing::warn!("a group commit was not kept, nor what it counted: {e}");
                *self.sm = before;
            }
        }
        // The handler's error explains more than the rollback it caused.
        let outcome = match (outcome, committed) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(v), Ok(())) => Ok(v),
        };
        Grouped { outcome, after }
    }

    /// Commits the open group with the SM state (its counts included); rolls it back if that
    /// fails.
    fn commit_group(&mut self) -> Result<()> {
        let saved = if self.sm.is_enabled() {
            self.shared
                .store()
                .save_sm(self.account, self.sm.snapshot())
        } else {
            Ok(())
        };
        match saved {
            Ok(()) => self.shared.commit_group(),
            Err(e) => {
                self.shared.rollback_group();
                Err(e.into())
            }
        }
    }

    /// Handles an element that only writes to the store (see [`stores_only`]); hands any other
    /// back. Never writes to the stream and never yields.
    fn handle_stored(&mut self, incoming: Incoming) -> Result<Stored> {
        match incoming {
            Incoming::Element(XmppStreamElement::Stanza(Stanza::Message(m))) => {
                self.on_message(m)?
            }
            Incoming::Element(XmppStreamElement::Stanza(Stanza::Presence(p))) => {
                self.on_presence(p)?
            }
            Incoming::Element(XmppStreamElement::SM(Nonza::Ack(a))) => match self.sm.on_ack(a.h) {
                Ok(tags) => self.apply_settlement(&tags, Fate::Acked)?,
                Err(e) => return Ok(Stored::Violation(e)),
            },
            Incoming::Invalid(e) => {
                // A stanza we cannot parse was still received: count it so our h matches the
                // server's, and say so (it carries nothing we could store).
                if matches!(e, StreamElementError::InvalidStanza { .. }) {
                    self.count_inbound()?;
                }
                self.emit(Event::error(
                    "stanza",
                    format!("dropped a malformed element: {e}"),
                ));
            }
            other => return Ok(Stored::Other(other)),
        }
        Ok(Stored::Done)
    }

    async fn handle(&mut self, incoming: Incoming) -> Result<()> {
        let incoming = match self.handle_stored(incoming)? {
            Stored::Done => return Ok(()),
            Stored::Violation(e) => return Err(self.protocol_violation(e).await),
            Stored::Other(incoming) => incoming,
        };
        match incoming {
            Incoming::Element(XmppStreamElement::Stanza(Stanza::Iq(iq))) => self.on_iq(iq).await,
            Incoming::Element(XmppStreamElement::SM(Nonza::Req(_))) => {
                let a = self.sm.answer_request();
                self.feed(&XmppStreamElement::SM(Nonza::Ack(a))).await
            }
            Incoming::Element(XmppStreamElement::StreamError(e)) => {
                Err(Error::Network(format!("stream error from the server: {e}")))
            }
            Incoming::Element(other) => {
                tracing::warn!(?other, "unexpected element; ignored");
                self.emit(Event::error(
                    "protocol",
                    format!("unexpected element from the server: {other:?}"),
                ));
                Ok(())
            }
            Incoming::Invalid(_) => Ok(()), // handled by handle_stored
            Incoming::SoftTimeout => {
                // Silence: prove the link is alive (the read times out hard if nothing answers).
                if self.sm.is_enabled() {
                    self.feed(&XmppStreamElement::SM(Nonza::Req(sm::R))).await
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

    // ---------------------------------------------------------------------------------- endings

    /// Shutdown asked: close cleanly if nothing is in flight (the session ends for good), else just
    /// drop the link and keep the SM state so the next start resumes the stream.
    async fn stop(&mut self) -> Result<SessionEnd> {
        if self.sm.is_enabled() && self.sm.in_flight() > 0 {
            // Usually only a presence or a receipt is unconfirmed: ask once, and give the server
            // a moment to confirm, so that the session can end cleanly (others then see us go at
            // once, instead of after the server's resumption window).
            let confirmed = async {
                self.feed(&XmppStreamElement::SM(Nonza::Req(sm::R))).await?;
                self.flush().await?;
                self.sm.on_request_sent();
                while self.sm.in_flight() > 0 {
                    let incoming = self.read().await?;
                    self.handle(incoming).await?;
                }
                Ok::<_, Error>(())
            };
            match tokio::time::timeout(STOP_CONFIRM, confirmed).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!("the link failed while stopping: {e}");
                    return Ok(SessionEnd::Done);
                }
                Err(_) => tracing::debug!("the server did not confirm in time"),
            }
        }
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
            self.feed(&XmppStreamElement::SM(Nonza::Ack(a))).await?;
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
        match tokio::time::timeout(std::time::Duration::from_secs(2), drain).await {
            Ok(Ok(())) => {}
            // A message that arrived while closing could not be stored (it was not counted, so
            // the server keeps it): the user must hear of it.
            Ok(Err(e)) => return Err(e),
            Err(_) => tracing::debug!("the server did not close its side in time"),
        }
        let leftover = self.sm.take_unsettled();
        self.apply_settlement(&leftover, Fate::Lost(UNCONFIRMED))?;
        Ok(SessionEnd::Done)
    }
}

/// How long a stop waits for the server to confirm what is unacked before it gives up on a clean
/// close (and keeps the stream resumable instead).
const STOP_CONFIRM: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether an element that failed to parse is an SM `<failed/>` (see the resume loop).
fn is_sm_failed(e: &StreamElementError) -> bool {
    matches!(e, StreamElementError::InvalidNonza { qname, .. }
        if qname.0.as_str() == ns::SM && qname.1.as_str() == "failed")
}

/// The stanza for an outgoing message row: id and origin-id (kept across resends), a receipt
/// request and a markable flag for one-to-one chat.
pub(crate) fn outgoing_message(item: &OutboxItem) -> Result<Stanza> {
    let to: BareJid = item
        .peer
        .parse()
        .map_err(|e| Error::Usage(format!("bad recipient {:?}: {e}", item.peer)))?;
    let groupchat = item.kind == "groupchat";
    let mut m = if groupchat {
        Message::groupchat(Some(Jid::from(to)))
    } else {
        Message::chat(Some(Jid::from(to)))
    };
    m.id = Some(Id(item.id.clone()));
    m.bodies.insert(Lang::new(), item.body.clone());
    m.payloads.push(
        OriginId {
            id: item.origin_id.clone().unwrap_or_else(|| item.id.clone()),
        }
        .into(),
    );
    if !groupchat {
        m.payloads.push(receipts::Request.into());
        m.payloads
            .push(tokio_xmpp::parsers::displayed_markers::Markable.into());
    }
    Ok(Stanza::Message(m))
}

/// The stanza for a control row.
fn control_stanza(item: &ControlItem) -> Result<Stanza> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::Usage(format!("bad control target {:?}: {e}", item.target))
    };
    let id = || Some(Id(format!("tether-{}", uuid::Uuid::new_v4().simple())));
    Ok(match item.kind {
        ControlKind::Receipt | ControlKind::Displayed => {
            let to: Jid = item.target.parse().map_err(|e| bad(&e))?;
            let ref_id = item.ref_id.clone().unwrap_or_default();
            let mut m = Message::new_with_type(MessageType::Chat, Some(to));
            m.id = id();
            let payload: Element = if item.kind == ControlKind::Receipt {
                receipts::Received { id: ref_id }.into()
            } else {
                tokio_xmpp::parsers::displayed_markers::Displayed { id: Id(ref_id) }.into()
            };
            m.payloads.push(payload);
            Stanza::Message(m)
        }
        ControlKind::Presence => {
            let to: Jid = item.target.parse().map_err(|e| bad(&e))?;
            let type_ = match item.payload.as_deref() {
                Some("subscribe") => presence::Type::Subscribe,
                Some("subscribed") => presence::Type::Subscribed,
                Some("unsubscribed") => presence::Type::Unsubscribed,
                Some("unsubscribe") => presence::Type::Unsubscribe,
                other => return Err(Error::Usage(format!("bad presence type {other:?}"))),
            };
            Stanza::Presence(Presence::new(type_).with_to(to))
        }
        ControlKind::MucJoin | ControlKind::MucLeave => {
            let room: BareJid = item.target.parse().map_err(|e| bad(&e))?;
            let nick = item.payload.clone().unwrap_or_default();
            let occupant = room
                .with_resource_str(&nick)
                .map_err(|e| Error::Usage(format!("bad nick {nick:?}: {e}")))?;
            if item.kind == ControlKind::MucJoin {
                // History comes from the room's archive; the MUC history is a small fallback
                // (deduplicated against what we have).
                let muc = Muc::new().with_history(History::new().with_maxstanzas(20));
                Stanza::Presence(
                    Presence::available()
                        .with_to(Jid::from(occupant))
                        .with_payloads(vec![muc.into()]),
                )
            } else {
                Stanza::Presence(
                    Presence::new(presence::Type::Unavailable).with_to(Jid::from(occupant)),
                )
            }
        }
    })
}
