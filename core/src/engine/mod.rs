//! The session engine: every protocol decision of an XMPP session, sans-IO (quinn-proto style).
//!
//! [`Engine`] never touches a socket or a clock. The I/O driver (`crate::connection`) feeds it what
//! happened and drains what to do:
//!
//! - **in**: [`Engine::handle_connected`] (a logged-in stream and its features),
//!   [`Engine::handle_incoming`] (the parsed elements the socket held), [`Engine::handle_outbox`]
//!   (the outboxes may hold rows), [`Engine::handle_timeout`] (a deadline passed),
//!   [`Engine::handle_stop`], [`Engine::handle_link_lost`], and the app's wishes
//!   ([`Engine::set_inactive`], [`Engine::set_exit_when_idle`]). Each call is given the store and
//!   the time.
//! - **out**, drained after every call in this order: [`Engine::poll_transmit`] until `None` (then
//!   the driver flushes), [`Engine::poll_event`] until `None`, [`Engine::poll_end`], and last
//!   [`Engine::poll_timeout`].
//!
//! **Each step is one store transaction** (a group commit, [`Store::begin_group`]): a call is one
//! step, except [`Engine::handle_incoming`], which makes each run of elements that only write to
//! the store one step and every other element (an iq, an `<r/>`) a step of its own after it.
//! Whatever a step wrote, the SM state it moved included, commits before the next step starts.
//! What the step queued to write and to announce is released only after that commit; if the
//! commit (or any write of the step) fails, the transaction is rolled back, and so are the SM
//! engine, the catch-up state and everything the step queued. Two invariants follow from that order and are
//! unit-tested (`engine/tests.rs`):
//!
//! - nothing is written to the stream before the row it carries is committed, with its seq;
//! - no `<a/>` (and no `<resume/>`) ever covers an inbound stanza the store does not hold.

mod blocking;
mod bookmarks;
pub mod caps;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod inbound;
mod mam;
mod profiles;
mod push;
pub mod self_ping;
mod stanzas;
pub mod upload;
pub mod xeps;

#[cfg(test)]
mod blocking_tests;
#[cfg(test)]
mod bookmarks_tests;
#[cfg(test)]
mod caps_tests;
#[cfg(test)]
mod fast_tests;
#[cfg(test)]
mod files_tests;
#[cfg(test)]
mod mobile_tests;
#[cfg(test)]
mod profiles_tests;
#[cfg(test)]
mod references_tests;
#[cfg(test)]
mod self_ping_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

#[cfg(any(fuzzing, test))]
pub(crate) use inbound::parse;
pub use stanzas::outgoing_message;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::{
    bind::{BindQuery, BindResponse},
    carbons,
    iq::Iq,
    ns,
    presence::Presence,
    roster::Roster,
    sm::{self, Nonza},
    stanza::Stanza,
    stream_error::{ReceivedStreamError, StreamError},
    stream_features::StreamFeatures,
};
use tokio_xmpp::xmlstream::{StreamElementError, XmppStreamElement};

use crate::chat_state::{ChatState, ChatStates};
use crate::config::ClientConfig;
use crate::delivery::State;
use crate::error::{Error, Result};
use crate::events::{ConnState, ErrorKind, Event};
use crate::sm::{SmError, SmSnapshot, StreamManager};
use crate::store::{ControlMove, Move, Store};

use mam::MamSync;

/// What an SM-tracked stanza is in the store: a message row or a control row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// `messages.seq_local`.
    Msg(i64),
    /// `control.seq_local`.
    Ctl(i64),
}

/// Failure text for messages whose fate the server never confirmed.
pub const UNCONFIRMED: &str =
    "the connection was lost before the server confirmed this message and the session could not be resumed";

/// Failure text after `<failed/>` in answer to `<resume/>`.
const RESUME_FAILED: &str =
    "the server lost the session before confirming this message (resumption failed)";

/// How a group of tags is settled.
#[derive(Clone, Copy, Debug)]
pub enum Fate<'a> {
    /// Covered by the server's h: messages acked, control rows deleted.
    Acked,
    /// Waiting for resumption: messages hibernated, control rows kept.
    Hibernated,
    /// The stream is gone for good: messages are looked for in the account's archive
    /// (`checking`: `acked` if it holds them, else `failed` with this reason, and the user
    /// decides), control rows re-queued.
    Lost(&'a str),
}

/// The store moves that settle `tags`: the one definition of what a stream's outcome does to the
/// rows it carried.
pub fn settle(tags: &[Tag], fate: Fate<'_>) -> (Vec<Move>, Vec<ControlMove>) {
    let mut moves = Vec::new();
    let mut control = Vec::new();
    for tag in tags {
        match (*tag, fate) {
            (Tag::Msg(key), Fate::Acked) => moves.push(Move::to(key, State::Acked)),
            (Tag::Msg(key), Fate::Hibernated) => moves.push(Move::to(key, State::Hibernated)),
            (Tag::Msg(key), Fate::Lost(why)) => moves.push(Move {
                error: Some(why.to_owned()),
                ..Move::to(key, State::Checking)
            }),
            (Tag::Ctl(key), Fate::Acked) => control.push(ControlMove::Done { key }),
            (Tag::Ctl(_), Fate::Hibernated) => {}
            (Tag::Ctl(key), Fate::Lost(_)) => control.push(ControlMove::Pending { key }),
        }
    }
    (moves, control)
}

/// What the parser gave the driver: an element, or one that failed to parse.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Incoming {
    /// A complete, parsed element.
    Element(XmppStreamElement),
    /// Stream features on the live stream (SASL2 sends them after `<success/>`, with no
    /// restart): what they add (roster versioning, CSI) is learnt.
    Features(Features),
    /// An element that failed to parse (still received, so still counted when it is a stanza).
    Invalid(StreamElementError),
}

/// Something to write to the stream.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Transmit {
    /// An element (stanza or nonza).
    Element(XmppStreamElement),
    /// XEP-0352: tell the server we are inactive (or active again).
    Csi {
        /// `<inactive/>` rather than `<active/>`.
        inactive: bool,
    },
    /// Close our side of the stream (the stream footer).
    Close,
}

/// Why a connection ended, as the engine decided.
#[derive(Debug)]
pub enum SessionEnd {
    /// The user asked to stop, or `--until-idle` found nothing pending: do not reconnect.
    Done,
    /// The link broke or the server misbehaved: settle with [`Engine::handle_link_lost`] and
    /// reconnect.
    Lost(Error),
}

/// What the server offered on the logged-in stream.
#[derive(Clone, Debug, Default)]
pub struct Features {
    /// XEP-0198.
    pub sm: bool,
    /// XEP-0352.
    pub csi: bool,
    /// Roster versioning (RFC 6121 2.6).
    pub roster_ver: bool,
    /// What a SASL2 login already settled (resumed, or bound with SM and carbons): the engine
    /// then sends no `<resume/>`, bind or `<enable/>` of its own.
    pub inline: Option<crate::auth::Inline>,
}

impl From<&StreamFeatures> for Features {
    fn from(f: &StreamFeatures) -> Self {
        Features {
            sm: f.stream_management.is_some(),
            csi: f.others.iter().any(|e| e.is("csi", ns::CSI)),
            roster_ver: f
                .others
                .iter()
                .any(|e| e.is("ver", "urn:xmpp:features:rosterver")),
            inline: None,
        }
    }
}

/// An iq we sent and whose answer we handle.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PendingIq {
    Bind,
    Roster,
    Carbons,
    Mam,
    /// The keepalive probe without SM.
    Ping,
    /// The server's items (looking for its upload service).
    DiscoItems,
    /// One item's features.
    DiscoInfo(tokio_xmpp::jid::Jid),
    /// An upload slot for message `key`.
    Slot(i64),
    /// A push enable or disable (XEP-0357).
    Push(push::PushAsked),
    /// What a peer's capabilities hash stands for (XEP-0115).
    Caps(caps::CapsAsked),
    /// The server's blocklist (XEP-0191).
    Blocklist,
    /// A block or unblock (XEP-0191).
    Block(blocking::BlockAsked),
    /// A room asked whether we are still in it (XEP-0410).
    SelfPing(self_ping::SelfPing),
    /// The server's bookmarks (XEP-0402).
    Bookmarks,
    /// A room's bookmark published or retracted (XEP-0402).
    Bookmark(String, crate::store::BookmarkWant),
    /// Our account's features (which bookmarks store to use).
    AccountInfo,
    /// The XEP-0048 bookmarks in private storage (XEP-0049), to apply (and then write our
    /// wishes into).
    LegacyBookmarks,
    /// The XEP-0048 bookmarks written, with the wishes they told.
    LegacyWrite(Vec<(String, crate::store::BookmarkWant)>),
    /// A contact's avatar data (XEP-0084).
    Avatar(profiles::AvatarAsked),
    /// A contact's vCard (XEP-0054), for the photo with this SHA-1 (XEP-0153).
    VCard(BareJid, String),
    /// A step of publishing the user's own profile.
    Publish(profiles::Publishing),
}

/// How long the server has to answer an iq we track.
pub const IQ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop waits for the server to confirm what is unacked before it gives up on a clean
/// close (and keeps the stream resumable instead).
pub const STOP_CONFIRM: Duration = Duration::from_secs(1);
/// How long a clean close waits for the server's footer (storing what arrives meanwhile).
pub const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// How many queued rows one outbox batch takes.
pub const OUTBOX_BATCH: usize = 64;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `<resume/>` sent.
    Resuming,
    /// The bind iq sent.
    Binding,
    /// `<enable/>` sent.
    Enabling,
    /// Negotiated.
    Live,
    /// A stop waits for the server's last acks (until the deadline).
    Stopping(Instant),
    /// A suspend waits for the server's answer to its `<r/>` (until the deadline): everything
    /// the server sent before it is then stored, acked, and the link dropped with the stream
    /// kept for resumption.
    Suspending(Instant),
    /// Our footer is sent; waiting for the server's (until the deadline).
    Closing(Instant),
}

/// The state of one connection (dropped with it).
#[derive(Debug)]
struct Link {
    phase: Phase,
    features: Features,
    resumed: bool,
    pending_iqs: HashMap<String, (PendingIq, Instant)>,
    /// What we last told the server about CSI on this connection (`None`: nothing, i.e. active).
    csi_told: Option<bool>,
    /// When the last element arrived.
    last_rx: Instant,
    /// When the keepalive probe went out, if one is unanswered.
    probe_sent: Option<Instant>,
    /// How long that probe has (`dead_after`, or `quick_probe` after a network change).
    probe_timeout: Duration,
    /// The wall-clock time the connection was made (given by the driver: the engine reads no
    /// clock), for the first archive sync's start.
    wall: std::time::SystemTime,
    /// Disco queries answered and capability hashes asked on this connection.
    disco: caps::DiscoBudget,
    /// When the rooms were last self-pinged on this connection (XEP-0410).
    self_pinged: Option<Instant>,
}

/// What a failed call takes back.
struct Checkpoint {
    sm: StreamManager<Tag>,
    mam: MamSync,
    unmanaged: usize,
    transmits: usize,
    events: usize,
    phase: Option<Phase>,
    pending_iqs: Option<HashMap<String, (PendingIq, Instant)>>,
}

/// The session engine of one account (see the module docs). It lives as long as the client runs,
/// across connections: the SM engine, the keys written without SM and the archive catch-up carry
/// over from one connection to the next.
pub struct Engine {
    config: ClientConfig,
    account: i64,
    own: BareJid,
    resource: String,
    sm: StreamManager<Tag>,
    /// The SM state as last committed (written again only when it changed).
    saved: SmSnapshot,
    /// Keys of messages written to a stream without SM (nothing will ever ack them).
    unmanaged: Vec<i64>,
    mam: MamSync,
    link: Option<Link>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    end: Option<SessionEnd>,
    inactive: bool,
    exit_when_idle: bool,
    /// End idle connections by suspending (ack, keep the stream resumable) instead of closing.
    suspend_when_idle: bool,
    /// Suspend at this time whatever is pending (a wake's deadline).
    suspend_at: Option<Instant>,
    /// XEP-0085: what to tell each contact about our typing (never stored, never resent).
    chat: ChatStates,
    /// XEP-0363: the upload service, as far as known on this connection.
    upload: upload::Discovery,
    /// Which bookmarks store this session uses (XEP-0402, or XEP-0048 where the server does
    /// not announce that it keeps the two in step).
    bookmark_mode: bookmarks::Mode,
    /// The avatar each contact announced last, while one of theirs is being fetched (one fetch
    /// per contact at a time; the newest announcement wins).
    avatar_wanted: HashMap<BareJid, profiles::AvatarAsked>,
    /// Files whose slot request is on its way.
    slots_asked: std::collections::HashSet<i64>,
    /// The time of the call being handled.
    now: Instant,
    /// Whether the last outbox call filled a whole batch (another may be waiting).
    outbox_more: bool,
    /// Whether this server offered roster versioning on an earlier session of this process.
    roster_ver_seen: bool,
    /// Carbons were enabled inline by Bind2 on this link.
    carbons_inline: bool,
}

impl Engine {
    /// The engine after a (re)start: the SM engine rebuilt from the store, with what cannot be
    /// resumed settled (messages in flight without a usable seq, or with no resumable stream,
    /// become `failed`, the user decides; the rest `hibernated` until the resumption attempt;
    /// control rows that cannot be resumed are queued again), and the archive catch-up where a
    /// killed process left it. One transaction.
    pub fn restore(
        config: ClientConfig,
        account: &crate::store::Account,
        store: &mut Store,
        now: Instant,
    ) -> Result<Engine> {
        let own: BareJid = account
            .jid
            .parse()
            .map_err(|e| Error::Usage(format!("bad JID {:?}: {e}", account.jid)))?;
        let snap = store.load_sm(account.id)?;
        let mam = MamSync::load(store, account.id)?;
        let mut engine = Engine {
            sm: StreamManager::new(config.sm.clone()),
            config,
            account: account.id,
            own,
            resource: account.resource.clone(),
            saved: snap.clone(),
            unmanaged: Vec::new(),
            mam,
            link: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            end: None,
            inactive: false,
            exit_when_idle: false,
            suspend_when_idle: false,
            suspend_at: None,
            chat: ChatStates::default(),
            upload: upload::Discovery::default(),
            bookmark_mode: bookmarks::Mode::Unknown,
            avatar_wanted: HashMap::new(),
            slots_asked: std::collections::HashSet::new(),
            now,
            outbox_more: false,
            roster_ver_seen: false,
            carbons_inline: false,
        };
        engine.step(store, now, |e, store| {
            let mut unnumbered = Vec::new();
            let mut numbered = Vec::new();
            let messages = store
                .in_flight(e.account)?
                .into_iter()
                .map(|(s, k)| (s, Tag::Msg(k)));
            let control = store
                .control_in_flight(e.account)?
                .into_iter()
                .map(|(s, k)| (s, Tag::Ctl(k)));
            for (seq, tag) in messages.chain(control) {
                match seq {
                    Some(seq) => numbered.push((seq, tag)),
                    None => unnumbered.push(tag),
                }
            }
            let (mut sm, invalid) = StreamManager::restore(e.config.sm.clone(), snap, numbered);
            let mut lost: Vec<Tag> = unnumbered.into_iter().chain(invalid).collect();
            let hibernate = if sm.can_resume() {
                sm.on_disconnect()
            } else {
                lost.extend(sm.take_unsettled());
                Vec::new()
            };
            e.sm = sm;
            e.settle(store, &lost, Fate::Lost(UNCONFIRMED))?;
            e.settle(store, &hibernate, Fate::Hibernated)
        })?;
        Ok(engine)
    }

    // ------------------------------------------------------------------------------- outputs

    /// The next element to write. Drain until `None`, then flush.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to announce (after the transmits are flushed).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the connection is over, and how.
    pub fn poll_end(&mut self) -> Option<SessionEnd> {
        self.end.take()
    }

    /// The next deadline: call [`Self::handle_timeout`] then. `None`: no deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        let mut next = self.sm.poll_timeout();
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        match link.phase {
            Phase::Stopping(t) | Phase::Closing(t) | Phase::Suspending(t) => at(t),
            _ => {}
        }
        if let Some(t) = self.suspend_at {
            at(t);
        }
        for (_, deadline) in link.pending_iqs.values() {
            at(*deadline);
        }
        at(self.liveness_deadline(link));
        if let Some(t) = self.chat.poll_timeout() {
            at(t);
        }
        next
    }

    /// Whether the last [`Self::handle_outbox`] filled a batch: call it again after flushing.
    pub fn outbox_may_have_more(&self) -> bool {
        self.outbox_more
    }

    /// Whether a connection is negotiated (online).
    pub fn is_online(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| !matches!(l.phase, Phase::Resuming | Phase::Binding | Phase::Enabling))
    }

    /// Whether the connection is stopping or closing (a link error then just ends it).
    pub fn is_ending(&self) -> bool {
        self.closing()
    }

    /// The SM engine (for tests and the driver's idle checks).
    pub fn sm(&self) -> &StreamManager<Tag> {
        &self.sm
    }

    /// Whether an archive catch-up is unfinished.
    pub fn catching_up(&self) -> bool {
        self.mam.busy()
    }

    // ------------------------------------------------------------------------------- inputs

    /// The app's wanted CSI state (sent on the next call that has a live stream).
    pub fn set_inactive(&mut self, inactive: bool) {
        self.inactive = inactive;
    }

    /// End the connection cleanly once nothing is pending (`run --until-idle`).
    pub fn set_exit_when_idle(&mut self, yes: bool) {
        self.exit_when_idle = yes;
    }

    /// A wake-up's way to end (see [`crate::Client::wake`]): once nothing is pending, or at
    /// `deadline` whatever is, suspend instead of closing. The server's answer to an `<r/>` marks
    /// the end of what it held; everything before it is stored, an `<a/>` covers exactly what is
    /// committed, and the link is dropped with the stream kept, so the server hibernates it (and
    /// pushes again) and the next process resumes it. Nothing is half-acked: what did not commit
    /// is not covered, and the server sends it again on resumption.
    pub fn set_suspend_when_idle(&mut self, deadline: Option<Instant>) {
        self.suspend_when_idle = true;
        self.exit_when_idle = true;
        self.suspend_at = deadline;
    }

    /// Check the link now (the network changed, the app came back, a push arrived): an
    /// immediate probe that has only [`ClientConfig::quick_probe`] to be answered, so a link the
    /// change killed is found in seconds. Nothing when offline or a probe is already out.
    pub fn handle_probe(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        let Some(link) = self.link.as_ref() else {
            return Ok(());
        };
        if link.phase != Phase::Live || link.probe_sent.is_some() {
            tracing::debug!(phase = ?link.phase, probe_out = link.probe_sent.is_some(), "no probe now");
            return Ok(());
        }
        tracing::debug!("probing the link and the rooms at once");
        self.step(store, now, |e, store| {
            // The network changed or the app came back: the rooms may have dropped us.
            e.self_ping(store)?;
            e.probe(e.config.quick_probe);
            Ok(())
        })
    }

    /// The app changed a wish the server keeps (push, XEP-0357; the blocklist, XEP-0191): tell
    /// the server now if online (else on the next session).
    pub fn handle_wishes_changed(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        if !self.is_online() {
            return Ok(());
        }
        self.step(store, now, |e, store| {
            e.push_sync(store, false)?;
            e.blocking_sync(store)?;
            e.bookmarks_sync(store)?;
            e.profile_sync(store)
        })
    }

    /// A logged-in stream is ready: resume the stored stream if possible, else bind (then enable
    /// SM, then start a new session).
    pub fn handle_connected(
        &mut self,
        store: &mut Store,
        now: Instant,
        wall: std::time::SystemTime,
        features: Features,
    ) -> Result<()> {
        self.end = None;
        // Nothing meant for an earlier link goes out on this one.
        self.transmits.clear();
        self.link = Some(Link {
            phase: Phase::Binding,
            features,
            resumed: false,
            pending_iqs: HashMap::new(),
            csi_told: None,
            last_rx: now,
            probe_sent: None,
            probe_timeout: self.config.dead_after,
            wall,
            disco: caps::DiscoBudget::default(),
            self_pinged: None,
        });
        if self.link().features.roster_ver {
            self.roster_ver_seen = true;
        } else if self.roster_ver_seen {
            // SASL2 sends the post-login features later on the stream: what an earlier session
            // of this server offered is assumed until they come.
            self.link_mut().features.roster_ver = true;
        }
        if let Some(inline) = self.link_mut().features.inline.take() {
            let mut violation = None;
            let outcome = self.step(store, now, |e, store| {
                if let Err(v) = e.on_inline(store, inline)? {
                    violation = Some(v);
                }
                Ok(())
            });
            outcome?;
            if let Some(v) = violation {
                return self.protocol_violation(store, now, v);
            }
            return Ok(());
        }
        self.step(store, now, |e, store| {
            let sm_offered = e.link().features.sm;
            if e.sm.can_resume() {
                if sm_offered {
                    let resume = e.sm.start_resume().expect("can_resume checked");
                    e.transmit_sm(Nonza::Resume(resume));
                    e.link_mut().phase = Phase::Resuming;
                    return Ok(());
                }
                // The server no longer offers SM: nothing unacked can be settled.
                let tags = e.sm.take_unsettled();
                e.settle(store, &tags, Fate::Lost(UNCONFIRMED))?;
            }
            e.bind();
            Ok(())
        })
    }

    /// What the socket held, in order. The driver passes every element already read; each run of
    /// elements that only write to the store (messages, presence, acks, malformed stanzas) shares
    /// one transaction, so a burst costs one fsync instead of one or two per stanza, and every
    /// other element (an iq, an `<r/>`, a negotiation nonza) is a call of its own after the run
    /// before it has committed. A failure rolls back only its own transaction: what committed
    /// before it stands, and its events are announced.
    pub fn handle_incoming(
        &mut self,
        store: &mut Store,
        now: Instant,
        elements: Vec<Incoming>,
    ) -> Result<()> {
        if let Some(link) = self.link.as_mut() {
            link.last_rx = now;
            link.probe_sent = None;
        }
        let mut elements = elements.into_iter().peekable();
        while elements.peek().is_some() && self.end.is_none() && self.link.is_some() {
            let mut run = Vec::new();
            while let Some(el) = elements.next_if(stores_only) {
                run.push(el);
            }
            if run.is_empty() {
                run.extend(elements.next());
            }
            let mut violation = None;
            let outcome = self.step(store, now, |e, store| {
                for incoming in run {
                    if e.end.is_some() {
                        break;
                    }
                    if let Err(v) = e.handle_one(store, incoming)? {
                        violation = Some(v);
                        break;
                    }
                }
                Ok(())
            });
            outcome?;
            // A protocol violation is acted on once what came before it is committed.
            if let Some(v) = violation {
                return self.protocol_violation(store, now, v);
            }
        }
        Ok(())
    }

    /// The outboxes may hold rows: write what flow control allows (numbered, committed, then
    /// released), tell the server our CSI state, ask for an ack when the policy says so, and end
    /// the connection if `--until-idle` finds nothing pending.
    pub fn handle_outbox(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        self.outbox_more = false;
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        self.step(store, now, |e, store| {
            let room = e.room().min(OUTBOX_BATCH);
            let mut staged = 0;
            if room > 0 {
                staged = e.stage_messages(store, room)?;
                let room = e.room().min(OUTBOX_BATCH);
                if room > 0 {
                    staged += e.stage_control(store, room)?;
                }
            }
            e.outbox_more = staged >= OUTBOX_BATCH.min(e.config.sm.max_in_flight as usize);
            e.request_slots(store)?;
            e.sync_csi();
            if e.sm.poll_request(e.now) {
                e.transmit_sm(Nonza::Req(sm::R));
            }
            if staged == 0
                && e.exit_when_idle
                && e.sm.in_flight() == 0
                && !e.mam.busy()
                && store.pending_count(e.account)? == 0
                // A wake moves no file (the app does): they do not hold its suspend back.
                && (e.suspend_when_idle || store.transfers_pending(e.account)? == 0)
            {
                if e.suspend_when_idle {
                    e.suspend(now);
                } else {
                    e.close();
                }
            }
            Ok(())
        })
    }

    /// A deadline from [`Self::poll_timeout`] passed (or any time: nothing is done early).
    pub fn handle_timeout(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        let Some(link) = self.link.as_ref() else {
            return Ok(());
        };
        match link.phase {
            Phase::Stopping(t) if now >= t => {
                if self.sm.in_flight() == 0 {
                    return self.step(store, now, |e, _| {
                        e.close();
                        Ok(())
                    });
                }
                tracing::info!(
                    in_flight = self.sm.in_flight(),
                    "stopping with unacked stanzas: keeping the stream resumable"
                );
                self.link = None;
                self.end = Some(SessionEnd::Done);
                return Ok(());
            }
            Phase::Closing(t) if now >= t => {
                tracing::debug!("the server did not close its side in time");
                return self.finish_close(store, now);
            }
            Phase::Suspending(t) if now >= t => {
                tracing::debug!("the server did not answer the suspend's <r/> in time");
                return self.finish_suspend(store, now);
            }
            _ => {}
        }
        if self.suspend_at.is_some_and(|t| now >= t) {
            // The wake's deadline: what is committed stays, the rest is for the next run.
            return self.finish_suspend(store, now);
        }
        if now >= self.dead_deadline(link) {
            let silent = now.saturating_duration_since(link.last_rx);
            return Err(Error::Network(format!(
                "the server did not answer for {} s: the link is dead",
                silent.as_secs()
            )));
        }
        self.step(store, now, |e, store| {
            let expired: Vec<(String, PendingIq)> = e
                .link()
                .pending_iqs
                .iter()
                .filter(|(_, (_, t))| now >= *t)
                .map(|(id, (what, _))| (id.clone(), what.clone()))
                .collect();
            for (id, what) in expired {
                e.link_mut().pending_iqs.remove(&id);
                e.on_iq_timeout(store, what)?;
            }
            let link = e.link();
            if link.probe_sent.is_none()
                && link.phase == Phase::Live
                && now >= e.keepalive_deadline(link)
            {
                // The rooms are asked on the same wake-up, every SELF_PING_EVERY (before the
                // probe, whose `<r/>` then covers the pings too: no ack request of their own).
                if e.self_ping_due() {
                    e.self_ping(store)?;
                }
                // Silence: prove the link is alive (no answer by the dead deadline ends it).
                e.probe(e.config.dead_after);
            }
            if e.sm.poll_request(now) {
                e.transmit_sm(Nonza::Req(sm::R));
            }
            if e.is_online() {
                for (peer, state) in e.chat.on_timeout(now) {
                    e.write_chat_state(&peer, state);
                }
            }
            Ok(())
        })
    }

    /// The user's chat state in the conversation with `peer` (XEP-0085): sent now, later (rate
    /// limit) or never (the contact never showed support; not online), by the rules of
    /// [`crate::chat_state`]. Never stored, never sent again after a reconnect.
    pub fn handle_chat_state(
        &mut self,
        store: &mut Store,
        now: Instant,
        peer: &BareJid,
        state: ChatState,
    ) -> Result<()> {
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        let Some(state) = self.chat.want(peer.as_str(), state, now) else {
            return Ok(());
        };
        self.step(store, now, |e, _| {
            e.write_chat_state(peer.as_str(), state);
            Ok(())
        })
    }

    fn write_chat_state(&mut self, peer: &str, state: ChatState) {
        match stanzas::chat_state(peer, state) {
            Ok(stanza) => self.write_untracked(stanza),
            Err(e) => tracing::warn!(peer, "no chat state for a bad JID: {e}"),
        }
    }

    /// A contact's chat state arrived: it understands them; the front end is told.
    pub(super) fn on_chat_state(
        &mut self,
        from: BareJid,
        state: tokio_xmpp::parsers::chatstates::ChatState,
    ) {
        use tokio_xmpp::parsers::chatstates::ChatState as P;
        let state = match state {
            P::Active => ChatState::Active,
            P::Composing => ChatState::Composing,
            P::Paused => ChatState::Paused,
            P::Inactive => ChatState::Inactive,
            P::Gone => ChatState::Gone,
        };
        self.chat.on_received(from.as_str());
        self.emit(Event::Social(crate::events::SocialEvent::ChatState {
            from: from.to_string(),
            state,
        }));
    }

    /// The user asked to stop: close cleanly if nothing is in flight (the session ends for good);
    /// else ask the server once for an ack and wait [`STOP_CONFIRM`] for it, then drop the link
    /// and keep the SM state, so the next start resumes the stream.
    pub fn handle_stop(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        let Some(link) = self.link.as_ref() else {
            self.end = Some(SessionEnd::Done);
            return Ok(());
        };
        if matches!(link.phase, Phase::Stopping(_) | Phase::Closing(_)) {
            return Ok(());
        }
        if matches!(link.phase, Phase::Suspending(_)) {
            // A stop while suspending: suspend now (the stream is kept either way).
            return self.finish_suspend(store, now);
        }
        if !self.is_online() {
            // Mid-negotiation: nothing of this connection is worth a clean close.
            self.link = None;
            self.end = Some(SessionEnd::Done);
            return Ok(());
        }
        self.step(store, now, |e, _| {
            if e.sm.is_enabled() && e.sm.in_flight() > 0 {
                // Usually only a presence or a receipt is unconfirmed: ask once, and give the
                // server a moment, so that the session can end cleanly (others then see us go at
                // once, instead of after the server's resumption window).
                e.transmit_sm(Nonza::Req(sm::R));
                e.sm.on_request_sent();
                e.link_mut().phase = Phase::Stopping(now + STOP_CONFIRM);
            } else {
                e.close();
            }
            Ok(())
        })
    }

    /// The link is gone (`reason`): settle what was in flight (`hibernated` if the stream can be
    /// resumed, else `failed`; messages written without SM are `failed`: their fate is unknown).
    /// While stopping or closing the connection just ends.
    pub fn handle_link_lost(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        let phase = self.link.as_ref().map(|l| l.phase);
        match phase {
            Some(Phase::Closing(_)) => return self.finish_close(store, now),
            Some(Phase::Stopping(_) | Phase::Suspending(_)) => {
                self.link = None;
                self.end = Some(SessionEnd::Done);
                return Ok(());
            }
            _ => {}
        }
        self.link = None;
        // What the dead link did not take is never written to the next one.
        self.transmits.clear();
        self.chat.on_link_lost();
        self.step(store, now, |e, store| {
            let resumable = e.sm.can_resume();
            let tags = e.sm.on_disconnect();
            let fate = if resumable {
                Fate::Hibernated
            } else {
                Fate::Lost(UNCONFIRMED)
            };
            e.settle(store, &tags, fate)?;
            let lost: Vec<Tag> = std::mem::take(&mut e.unmanaged)
                .into_iter()
                .map(Tag::Msg)
                .collect();
            e.settle(store, &lost, Fate::Lost(UNCONFIRMED))
        })
    }

    // ------------------------------------------------------------------------------ the step

    /// Runs `f` as one transaction (see the module docs): commits what it wrote with the SM state
    /// if it moved; on any error rolls back the store and everything `f` changed or queued.
    fn step<R>(
        &mut self,
        store: &mut Store,
        now: Instant,
        f: impl FnOnce(&mut Self, &mut Store) -> Result<R>,
    ) -> Result<R> {
        self.now = now;
        store.begin_group()?;
        let checkpoint = Checkpoint {
            sm: self.sm.clone(),
            mam: self.mam.clone(),
            unmanaged: self.unmanaged.len(),
            transmits: self.transmits.len(),
            events: self.events.len(),
            phase: self.link.as_ref().map(|l| l.phase),
            pending_iqs: self.link.as_ref().map(|l| l.pending_iqs.clone()),
        };
        let outcome = f(self, store).and_then(|r| {
            if self.sm.snapshot() != &self.saved {
                store.save_sm(self.account, self.sm.snapshot())?;
            }
            self.mam.save_if_changed(store, self.account)?;
            Ok(r)
        });
        let committed = match outcome {
            Ok(r) => match store.commit_group() {
                Ok(true) => Ok(r),
                Ok(false) => Err(Error::Store(crate::store::StoreError::Group(
                    "SQLite rolled the transaction back",
                ))),
                Err(e) => Err(e.into()),
            },
            Err(e) => {
                store.rollback_group();
                Err(e)
            }
        };
        match committed {
            Ok(r) => {
                self.saved = self.sm.snapshot().clone();
                self.mam.committed();
                Ok(r)
            }
            Err(e) => {
                tracing::warn!("a step was not kept, nor what it counted: {e}");
                self.sm = checkpoint.sm;
                self.mam = checkpoint.mam;
                self.unmanaged.truncate(checkpoint.unmanaged);
                self.transmits.truncate(checkpoint.transmits);
                self.events.truncate(checkpoint.events);
                if let (Some(link), Some(phase), Some(iqs)) =
                    (self.link.as_mut(), checkpoint.phase, checkpoint.pending_iqs)
                {
                    link.phase = phase;
                    link.pending_iqs = iqs;
                }
                Err(e)
            }
        }
    }

    // ---------------------------------------------------------------------------- plumbing

    fn link(&self) -> &Link {
        self.link.as_ref().expect("a link is up")
    }

    fn link_mut(&mut self) -> &mut Link {
        self.link.as_mut().expect("a link is up")
    }

    fn closing(&self) -> bool {
        self.link.as_ref().is_some_and(|l| {
            matches!(
                l.phase,
                Phase::Stopping(_) | Phase::Closing(_) | Phase::Suspending(_)
            )
        })
    }

    /// Sends the keepalive probe (`<r/>` with SM, else a ping), which has `timeout` to be
    /// answered.
    fn probe(&mut self, timeout: Duration) {
        let now = self.now;
        let link = self.link_mut();
        link.probe_sent = Some(now);
        link.probe_timeout = timeout;
        if self.sm.is_enabled() {
            // It asks for everything written so far: no ack request of the policy's own.
            self.transmit_sm(Nonza::Req(sm::R));
            self.sm.on_request_sent();
        } else {
            let ping = Iq::from_get(new_id("ping"), tokio_xmpp::parsers::ping::Ping);
            self.send_iq(ping, PendingIq::Ping);
        }
    }

    /// When the link's silence next matters: the probe is due (live, none unanswered), or the
    /// link counts as dead.
    fn liveness_deadline(&self, link: &Link) -> Instant {
        if link.phase == Phase::Live && link.probe_sent.is_none() {
            self.keepalive_deadline(link)
        } else {
            self.dead_deadline(link)
        }
    }

    fn keepalive_deadline(&self, link: &Link) -> Instant {
        link.last_rx + self.config.keepalive
    }

    /// No answer to the probe by then, and the link is dead. During negotiation (no probe is
    /// sent) the same silence ends it.
    fn dead_deadline(&self, link: &Link) -> Instant {
        match link.probe_sent {
            Some(t) => t + link.probe_timeout,
            None => link.last_rx + self.config.keepalive + self.config.dead_after,
        }
    }

    /// Queues an element to write (released after the call's commit).
    fn transmit_el(&mut self, el: XmppStreamElement) {
        self.transmits.push_back(Transmit::Element(el));
    }

    /// Queues a stanza to write.
    fn transmit(&mut self, stanza: Stanza) {
        self.transmit_el(XmppStreamElement::Stanza(stanza));
    }

    /// Queues an SM nonza to write.
    fn transmit_sm(&mut self, nonza: Nonza) {
        self.transmit_el(XmppStreamElement::SM(nonza));
    }

    /// Queues an event (released after the call's commit and the transmits).
    fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    fn emit_changes(&mut self, changes: &[crate::store::StateChange]) {
        for c in changes {
            self.emit(Event::from_change(c));
        }
    }

    /// Writes a stanza that no row tracks (presence, iq), counting it.
    fn write_untracked(&mut self, stanza: Stanza) {
        self.sm.on_sent(None, self.now);
        self.transmit(stanza);
    }

    /// Whether an iq we track and `which` picks is still unanswered on this link (one request of
    /// a kind at a time: a wish changed meanwhile is told after the answer).
    fn asking(&self, which: impl Fn(&PendingIq) -> bool) -> bool {
        self.link()
            .pending_iqs
            .values()
            .any(|(what, _)| which(what))
    }

    /// Sends an iq whose answer (or its absence by [`IQ_TIMEOUT`]) we handle.
    fn send_iq(&mut self, iq: Iq, what: PendingIq) {
        let deadline = self.now + IQ_TIMEOUT;
        self.link_mut()
            .pending_iqs
            .insert(iq.id().to_owned(), (what, deadline));
        self.write_untracked(Stanza::Iq(iq));
    }

    /// Counts an inbound stanza that carries nothing to store (or whose writes are already in
    /// this call's transaction).
    fn count_inbound(&mut self) -> Result<()> {
        self.sm.on_inbound_handled();
        Ok(())
    }

    /// Counts an inbound stanza and writes what it carries, in this call's transaction (so the
    /// count and the row commit together, or neither does). `commit` gets no snapshot: the call
    /// writes the SM state once, as it commits.
    fn commit_counted<R>(
        &mut self,
        store: &mut Store,
        commit: impl FnOnce(&mut Store, Option<&SmSnapshot>) -> crate::store::Result<R>,
    ) -> Result<R> {
        self.sm.on_inbound_handled();
        Ok(commit(store, None)?)
    }

    /// Applies moves in this call's transaction and queues their events.
    fn apply(&mut self, store: &mut Store, moves: &[Move], control: &[ControlMove]) -> Result<()> {
        let changes = store.apply_all(self.account, moves, control, None)?;
        self.emit_changes(&changes);
        Ok(())
    }

    fn settle(&mut self, store: &mut Store, tags: &[Tag], fate: Fate<'_>) -> Result<()> {
        let (moves, control) = settle(tags, fate);
        self.apply(store, &moves, &control)
    }

    // ------------------------------------------------------------------------- negotiation

    fn bind(&mut self) {
        let iq = Iq::from_set(new_id("bind"), BindQuery::new(Some(self.resource.clone())));
        self.link_mut().phase = Phase::Binding;
        // Not counted: SM is not on yet.
        self.send_iq(iq, PendingIq::Bind);
    }

    fn on_bound(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } => {
                let bound = BindResponse::try_from(payload)
                    .map_err(|e| Error::Protocol(format!("bad bind response: {e}")))?;
                tracing::info!(jid = %tokio_xmpp::jid::Jid::from(bound), "bound");
            }
            Iq::Error { error, .. } => {
                return Err(Error::Protocol(format!(
                    "the server refused to bind a resource: {:?}",
                    error.defined_condition
                )))
            }
            other => {
                return Err(Error::Protocol(format!(
                    "bad bind response: {:?}",
                    other.id()
                )))
            }
        }
        if self.link().features.sm {
            let enable = self.sm.start_enable();
            self.transmit_sm(Nonza::Enable(enable));
            self.link_mut().phase = Phase::Enabling;
            Ok(())
        } else {
            self.online(store, false)
        }
    }

    /// Negotiation is over: announce it, and start a new session unless the stream was resumed.
    fn online(&mut self, store: &mut Store, resumed: bool) -> Result<()> {
        let link = self.link_mut();
        link.phase = Phase::Live;
        link.resumed = resumed;
        self.emit(Event::connection(
            ConnState::Online,
            Some(resumed),
            None,
            None,
        ));
        if resumed {
            // A resumed stream must prove itself, whatever the keepalive profile: one that
            // answers nothing (Prosody 13.0.1's silent resumption bug, ARCHITECTURE.md) is found
            // dead after `dead_after`, not after the mobile profile's 300 s of silence.
            // The rooms may have dropped us while the link was down.
            self.self_ping(store)?;
            if self.sm.is_enabled() {
                self.probe(self.config.dead_after);
            }
            self.continue_mam(store)
        } else {
            self.start_new_session(store)
        }
    }

    /// What a new (not resumed) session needs: the roster, carbons, our presence, room joins, and
    /// the archive catch-up. Rows a lost stream had written go out again through the outboxes.
    fn start_new_session(&mut self, store: &mut Store) -> Result<()> {
        store.reset_presence(self.account)?;
        let rooms = store.rejoin_rooms(self.account)?;
        let ver = if self.link().features.roster_ver {
            Some(store.roster_ver(self.account)?.unwrap_or_default())
        } else {
            None
        };
        let roster = Iq::from_get(new_id("roster"), Roster { ver, items: vec![] });
        self.send_iq(roster, PendingIq::Roster);
        // Bind2 may have enabled carbons already.
        if !std::mem::take(&mut self.carbons_inline) {
            let carbons = Iq::from_set(new_id("carbons"), carbons::Enable);
            self.send_iq(carbons, PendingIq::Carbons);
        }
        // Push is told on every new session: the server may have forgotten it (XEP-0357 §5).
        self.push_sync(store, true)?;
        // The blocklist, and the user's wishes not told yet, before our presence (so before
        // the server delivers what waited offline).
        self.blocking_start(store)?;
        // The rooms that follow the user (XEP-0402), before our presence too.
        self.bookmarks_start(store)?;
        // The user's own profile changes not told yet.
        self.profile_sync(store)?;
        store.clear_peer_caps(self.account)?;
        let presence = self.our_presence(Presence::available());
        self.write_untracked(Stanza::Presence(presence));
        let archives = rooms.into_iter().map(|r| r.jid).collect();
        self.start_mam(store, archives)
    }

    /// `<resumed/>`: what `h` covers is settled, the rest is written again first, in order, each
    /// counted anew, in this call's transaction with the new seqs.
    fn on_resumed(
        &mut self,
        store: &mut Store,
        r: sm::Resumed,
    ) -> Result<std::result::Result<(), SmError>> {
        let settlement = match self.sm.on_resumed(&r) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let (mut moves, mut control) = settle(&settlement.acked, Fate::Acked);
        let (mut msg_keys, mut ctl_keys) = (Vec::new(), Vec::new());
        for t in &settlement.rest {
            match t {
                Tag::Msg(k) => msg_keys.push(*k),
                Tag::Ctl(k) => ctl_keys.push(*k),
            }
        }
        let mut messages: HashMap<i64, _> = store
            .resendable(&msg_keys)?
            .into_iter()
            .map(|m| (m.key, m))
            .collect();
        let mut controls: HashMap<i64, _> = store
            .control_items(&ctl_keys)?
            .into_iter()
            .map(|c| (c.key, c))
            .collect();
        let mut out = Vec::new();
        // In the original order (rest is ordered by seq); rows that moved on meanwhile (a receipt
        // overtook the ack) are not re-sent.
        for t in &settlement.rest {
            let staged = match t {
                Tag::Msg(k) => messages.remove(k).map(|item| {
                    let (m, stanza) = self.stage_message(&item, State::Retrying);
                    moves.push(m);
                    stanza
                }),
                Tag::Ctl(k) => controls.remove(k).map(|item| {
                    let (c, stanza) = self.stage_control_item(&item);
                    control.push(c);
                    stanza
                }),
            };
            out.extend(staged.flatten());
        }
        self.apply(store, &moves, &control)?;
        self.write_batch(out);
        self.online(store, true)?;
        Ok(Ok(()))
    }

    /// `<failed/>` in answer to `<resume/>`: what `h` covers is acked, the rest of the messages
    /// failed (the user decides), control rows queued again; the SM state is dropped; then bind.
    fn on_resume_failed(&mut self, store: &mut Store, h: Option<u32>) -> Result<()> {
        tracing::info!(?h, "the server could not resume the session");
        let s = self.sm.on_resume_failed(h);
        self.settle(store, &s.acked, Fate::Acked)?;
        self.settle(store, &s.rest, Fate::Lost(RESUME_FAILED))?;
        // The catch-up of the lost stream cannot continue on it: the new session starts it again.
        self.bind();
        Ok(())
    }

    /// The stream to resume inline in a SASL2 login (XEP-0198 in XEP-0388), when there is one.
    pub fn inline_resume(&self) -> Option<sm::Resume> {
        self.sm.resume_request()
    }

    /// What a SASL2 login settled: the same settlement as `<resumed/>`, or as `<failed/>` then a
    /// bind and `<enabled/>`, without their round trips.
    fn on_inline(
        &mut self,
        store: &mut Store,
        inline: crate::auth::Inline,
    ) -> Result<std::result::Result<(), SmError>> {
        use crate::auth::Inline;
        match inline {
            Inline::Resumed(r) => {
                if self.sm.start_resume().is_none() {
                    return Ok(Err(SmError::Unexpected("resumed")));
                }
                self.link_mut().phase = Phase::Resuming;
                self.on_resumed(store, r)
            }
            Inline::Bound {
                resume_failed,
                sm: enabled,
                carbons,
            } => {
                if self.sm.can_resume() {
                    if self.sm.start_resume().is_some() {
                        tracing::info!(?resume_failed, "the server could not resume the session");
                    }
                    let s = self.sm.on_resume_failed(resume_failed.flatten());
                    self.settle(store, &s.acked, Fate::Acked)?;
                    self.settle(store, &s.rest, Fate::Lost(RESUME_FAILED))?;
                } else {
                    // Nothing resumable, but rows of an older stream may still be unsettled.
                    let tags = self.sm.take_unsettled();
                    self.settle(store, &tags, Fate::Lost(UNCONFIRMED))?;
                }
                self.carbons_inline = carbons;
                match enabled {
                    Some(en) => {
                        self.sm.start_enable();
                        self.sm.on_enabled(&en)?;
                    }
                    None if self.link().features.sm => {
                        tracing::warn!("the server did not enable stream management inline");
                    }
                    None => {}
                }
                self.online(store, false)?;
                Ok(Ok(()))
            }
            Inline::Nothing => Ok(Ok(())),
        }
    }

    /// The server broke the SM protocol (a bad h, a resumed stream we did not ask for): tell it,
    /// fail what it never confirmed, and drop the SM state. The connection ends.
    fn protocol_violation(&mut self, store: &mut Store, now: Instant, e: SmError) -> Result<()> {
        tracing::warn!("{e}");
        let reason = format!("{UNCONFIRMED} ({e})");
        let settled = self.step(store, now, |en, store| {
            if let SmError::HandledCountTooHigh { h, send_count } = e {
                let err: StreamError = sm::HandledCountTooHigh { h, send_count }.into();
                en.transmit_el(XmppStreamElement::StreamError(ReceivedStreamError(err)));
                en.transmits.push_back(Transmit::Close);
            }
            let tags = en.sm.take_unsettled();
            en.settle(store, &tags, Fate::Lost(&reason))
        });
        settled?;
        self.link = None;
        self.end = Some(SessionEnd::Lost(Error::Protocol(e.to_string())));
        Ok(())
    }

    // ---------------------------------------------------------------------------- incoming

    /// One element. `Ok(Err(v))`: the server broke the SM protocol (acted on after the commit).
    fn handle_one(
        &mut self,
        store: &mut Store,
        incoming: Incoming,
    ) -> Result<std::result::Result<(), SmError>> {
        let phase = match self.link.as_ref() {
            Some(l) => l.phase,
            None => return Ok(Ok(())),
        };
        let el = match incoming {
            Incoming::Element(el) => el,
            Incoming::Features(f) => {
                let link = self.link_mut();
                link.features.roster_ver |= f.roster_ver;
                link.features.csi |= f.csi;
                self.roster_ver_seen |= f.roster_ver;
                return Ok(Ok(()));
            }
            Incoming::Invalid(e) => {
                // xmpp-parsers 0.23 requires h on <failed/> although XEP-0198 makes it optional
                // (Prosody omits it for an unknown or destroyed session): failed, no h.
                if is_sm_failed(&e) {
                    return self.on_sm_failed(store, phase, None).map(Ok);
                }
                // A stanza we cannot parse was still received: count it so our h matches the
                // server's, and say so (it carries nothing we could store).
                if matches!(e, StreamElementError::InvalidStanza { .. }) {
                    self.count_inbound()?;
                }
                self.emit(Event::error(
                    ErrorKind::Stanza,
                    format!("dropped a malformed element: {e}"),
                ));
                return Ok(Ok(()));
            }
        };
        match el {
            XmppStreamElement::Stanza(Stanza::Message(m)) => {
                // Also while closing, and during negotiation: a message the server delivers
                // before stream management is on (right after bind, or before `<enabled/>`) is
                // not counted, but it is ours to keep (the server will not send it again).
                self.on_message(store, m)?;
            }
            _ if matches!(phase, Phase::Closing(_)) => {}
            XmppStreamElement::Stanza(Stanza::Presence(p)) => self.on_presence(store, p)?,
            XmppStreamElement::Stanza(Stanza::Iq(iq)) => self.on_iq(store, iq)?,
            XmppStreamElement::SM(Nonza::Ack(a)) => match self.sm.on_ack(a.h) {
                Ok(tags) => {
                    self.settle(store, &tags, Fate::Acked)?;
                    if matches!(phase, Phase::Stopping(_)) && self.sm.in_flight() == 0 {
                        self.close();
                    }
                    if matches!(phase, Phase::Suspending(_)) && self.sm.in_flight() == 0 {
                        // The server's answer to our <r/>: everything it held came before it.
                        self.suspend_now(store)?;
                    }
                }
                Err(e) => return Ok(Err(e)),
            },
            XmppStreamElement::SM(Nonza::Req(_)) => {
                // Answered with what this call has counted so far: the answer is released only
                // after the call commits, so it covers only committed stanzas.
                let a = self.sm.answer_request();
                self.transmit_sm(Nonza::Ack(a));
            }
            XmppStreamElement::SM(Nonza::Enabled(en)) if phase == Phase::Enabling => {
                self.sm.on_enabled(&en)?;
                self.online(store, false)?;
            }
            XmppStreamElement::SM(Nonza::Resumed(r)) if phase == Phase::Resuming => {
                return self.on_resumed(store, r);
            }
            XmppStreamElement::SM(Nonza::Resumed(_)) => {
                return Ok(Err(SmError::Unexpected("resumed")))
            }
            XmppStreamElement::SM(Nonza::Failed(f)) => {
                return self.on_sm_failed(store, phase, f.h).map(Ok)
            }
            XmppStreamElement::StreamError(e) => {
                return Err(Error::Network(format!("stream error from the server: {e}")))
            }
            other => {
                tracing::warn!(?other, "unexpected element; ignored");
                self.emit(Event::error(
                    ErrorKind::Protocol,
                    format!("unexpected element from the server: {other:?}"),
                ));
            }
        }
        Ok(Ok(()))
    }

    /// `<failed/>`: to `<resume/>` (settle, then bind), to `<enable/>` (go on without SM), or
    /// out of place (reported).
    fn on_sm_failed(&mut self, store: &mut Store, phase: Phase, h: Option<u32>) -> Result<()> {
        match phase {
            Phase::Resuming => self.on_resume_failed(store, h),
            Phase::Enabling => {
                tracing::warn!("the server refused stream management");
                self.sm.on_enable_failed();
                self.online(store, false)
            }
            _ => {
                self.emit(Event::error(
                    ErrorKind::Protocol,
                    "unexpected stream-management <failed/> from the server",
                ));
                Ok(())
            }
        }
    }

    /// An iq answer we were waiting for; `None` when we were not.
    fn take_pending(&mut self, id: &str) -> Option<PendingIq> {
        self.link_mut().pending_iqs.remove(id).map(|(what, _)| what)
    }

    fn on_iq_timeout(&mut self, store: &mut Store, what: PendingIq) -> Result<()> {
        match what {
            PendingIq::Bind => Err(Error::Network("the server did not answer the bind".into())),
            PendingIq::Roster => {
                self.emit(Event::error(
                    ErrorKind::Roster,
                    "the roster fetch timed out",
                ));
                Ok(())
            }
            PendingIq::Carbons => {
                tracing::warn!("the server did not answer the carbons request");
                Ok(())
            }
            PendingIq::Ping => Ok(()),
            PendingIq::Mam => self.on_mam_timeout(store),
            PendingIq::DiscoItems => {
                self.upload = upload::Discovery::None;
                self.request_slots(store)
            }
            PendingIq::DiscoInfo(_) => {
                if let upload::Discovery::Asking(n) = self.upload {
                    self.upload = if n <= 1 {
                        upload::Discovery::None
                    } else {
                        upload::Discovery::Asking(n - 1)
                    };
                }
                self.request_slots(store)
            }
            PendingIq::Slot(key) => self.on_slot_timeout(store, key),
            PendingIq::Push(asked) => {
                self.on_push_timeout(asked);
                Ok(())
            }
            PendingIq::Blocklist => {
                tracing::warn!("the server did not answer the blocklist request");
                Ok(())
            }
            PendingIq::Block(asked) => {
                self.on_block_timeout(asked);
                Ok(())
            }
            // No answer says nothing for sure (the link's own probe decides about the link);
            // the room is asked again next time.
            PendingIq::SelfPing(_) => Ok(()),
            // Fetched again, and what is not told yet told again, on the next session.
            PendingIq::AccountInfo => {
                // No answer: XEP-0402 as before (the server may well have it).
                tracing::warn!("the server did not say its account features; using XEP-0402");
                self.bookmark_mode = bookmarks::Mode::Pep;
                self.bookmarks_fetch(store)
            }
            PendingIq::Bookmarks
            | PendingIq::Bookmark(..)
            | PendingIq::LegacyBookmarks
            | PendingIq::LegacyWrite(_) => {
                tracing::warn!("the server did not answer a bookmarks request");
                Ok(())
            }
            // Asked again when the contact next announces it.
            PendingIq::Avatar(_) | PendingIq::VCard(..) => Ok(()),
            // Told again on the next session (the change is kept until confirmed).
            PendingIq::Publish(_) => {
                tracing::warn!("the server did not answer a profile publish");
                Ok(())
            }
            PendingIq::Caps(asked) => {
                // Asked again when the peer next announces it.
                let key = (asked.algo, asked.ver);
                self.link_mut().disco_forget(&key);
                Ok(())
            }
        }
    }

    // ------------------------------------------------------------------------------ outbox

    /// How many more stanzas flow control allows now (the one definition of it).
    fn room(&self) -> usize {
        if self.sm.is_enabled() {
            (self
                .config
                .sm
                .max_in_flight
                .saturating_sub(self.sm.in_flight())) as usize
        } else {
            OUTBOX_BATCH
        }
    }

    fn stage_messages(&mut self, store: &mut Store, room: usize) -> Result<usize> {
        let items = store.queued(self.account, room)?;
        let mut moves = Vec::with_capacity(items.len());
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let (m, stanza) = self.stage_message(item, State::Sent);
            moves.push(m);
            out.extend(stanza);
        }
        self.apply(store, &moves, &[])?;
        self.write_batch(out);
        Ok(items.len())
    }

    fn stage_control(&mut self, store: &mut Store, room: usize) -> Result<usize> {
        let items = store.pending_control(self.account, room)?;
        let mut control = Vec::with_capacity(items.len());
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let (c, stanza) = self.stage_control_item(item);
            control.push(c);
            out.extend(stanza);
        }
        self.apply(store, &[], &control)?;
        self.write_batch(out);
        Ok(items.len())
    }

    /// Numbers a message row for writing: its move (to `to`, with its SM seq) and its stanza. A row
    /// that cannot become a stanza fails with the reason (the user decides).
    fn stage_message(
        &mut self,
        item: &crate::store::OutboxItem,
        to: State,
    ) -> (Move, Option<Stanza>) {
        match outgoing_message(item) {
            Ok(stanza) => {
                if item.kind == "chat" {
                    self.chat.on_message_sent(&item.peer, self.now);
                }
                let seq = self.sm.on_sent(Some(Tag::Msg(item.key)), self.now);
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
    fn stage_control_item(
        &mut self,
        item: &crate::store::ControlItem,
    ) -> (ControlMove, Option<Stanza>) {
        match stanzas::control_stanza(item) {
            Ok(stanza) => {
                // A room join is a presence like any other: it carries our capabilities.
                let stanza = match stanza {
                    Stanza::Presence(p) if p.type_ == tokio_xmpp::parsers::presence::Type::None => {
                        Stanza::Presence(self.our_presence(p))
                    }
                    other => other,
                };
                let seq = self.sm.on_sent(Some(Tag::Ctl(item.key)), self.now);
                let m = match seq {
                    Some(_) => ControlMove::Written { key: item.key, seq },
                    None => ControlMove::Done { key: item.key },
                };
                (m, Some(stanza))
            }
            Err(e) => {
                tracing::warn!(?item, "dropping an unusable control row: {e}");
                self.emit(Event::error(ErrorKind::Stanza, e.to_string()));
                (ControlMove::Done { key: item.key }, None)
            }
        }
    }

    /// Queues a batch with an `<r/>` after every [`crate::sm::SmConfig::request_after`] stanzas
    /// when SM is on, so the server's acks come back while the rest of a long batch is on its
    /// way, and one at its end (the ack then usually beats the recipient's receipt). The ack
    /// request policy, with [`StreamManager::poll_request`] for a quiet tail.
    fn write_batch(&mut self, stanzas: Vec<Stanza>) {
        let every = self.sm.request_every() as usize;
        let sm_on = self.sm.is_enabled();
        let n = stanzas.len();
        for (i, stanza) in stanzas.into_iter().enumerate() {
            self.transmit(stanza);
            if sm_on && (i + 1) % every == 0 && i + 1 < n {
                self.transmit_sm(Nonza::Req(sm::R));
            }
        }
        if sm_on && n > 0 {
            self.transmit_sm(Nonza::Req(sm::R));
            self.sm.on_request_sent();
        }
    }

    /// Sends CSI inactive/active when the wanted state differs from what the server was told.
    fn sync_csi(&mut self) {
        let want = self.inactive;
        let link = self.link_mut();
        if link.csi_told.unwrap_or(false) == want {
            return;
        }
        link.csi_told = Some(want);
        if !link.features.csi {
            tracing::debug!("the server does not offer CSI");
            return;
        }
        self.transmits.push_back(Transmit::Csi { inactive: want });
        self.emit(Event::csi(want));
    }

    // ----------------------------------------------------------------------------- endings

    /// Ends the session cleanly: final ack, stream footer, then [`CLOSE_DRAIN`] for the server's
    /// footer (storing any message that arrives meanwhile).
    fn close(&mut self) {
        if self.sm.is_enabled() {
            let a = self.sm.answer_request();
            self.transmit_sm(Nonza::Ack(a));
        }
        self.transmits.push_back(Transmit::Close);
        self.link_mut().phase = Phase::Closing(self.now + CLOSE_DRAIN);
    }

    /// Starts a suspend: `<r/>`, then [`Phase::Suspending`] until the server answers (or
    /// [`STOP_CONFIRM`] passes). Without SM there is no stream to keep: the session closes.
    fn suspend(&mut self, now: Instant) {
        if !self.sm.is_enabled() {
            self.close();
            return;
        }
        self.transmit_sm(Nonza::Req(sm::R));
        self.sm.on_request_sent();
        let until = now + STOP_CONFIRM;
        let until = self.suspend_at.map_or(until, |t| t.min(until).max(now));
        self.link_mut().phase = Phase::Suspending(until);
    }

    /// Ends the connection keeping the stream: an `<a/>` for what is committed (this is called
    /// at a call's boundary, or inside the step that stored the last of it, whose `<a/>` is
    /// released only after its commit), then the link is dropped without a footer.
    fn suspend_now(&mut self, store: &mut Store) -> Result<()> {
        if self.sm.is_enabled() {
            let a = self.sm.answer_request();
            self.transmit_sm(Nonza::Ack(a));
        }
        let tags = self.sm.on_disconnect();
        self.settle(store, &tags, Fate::Hibernated)?;
        self.link = None;
        self.chat.on_link_lost();
        self.end = Some(SessionEnd::Done);
        Ok(())
    }

    /// [`Self::suspend_now`] as a step of its own (a deadline passed).
    fn finish_suspend(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        if !self.is_online() {
            // Mid-negotiation: nothing was stored on this connection that needs an ack.
            self.link = None;
            self.end = Some(SessionEnd::Done);
            return Ok(());
        }
        self.step(store, now, |e, store| e.suspend_now(store))
    }

    /// The server closed its side (or did not in time): forget the stream.
    fn finish_close(&mut self, store: &mut Store, now: Instant) -> Result<()> {
        self.step(store, now, |e, store| {
            let leftover = e.sm.take_unsettled();
            e.settle(store, &leftover, Fate::Lost(UNCONFIRMED))
        })?;
        self.link = None;
        self.end = Some(SessionEnd::Done);
        Ok(())
    }
}

/// Whether handling `incoming` only writes to the store: such elements share a transaction (see
/// [`Engine::handle_incoming`]).
fn stores_only(incoming: &Incoming) -> bool {
    match incoming {
        Incoming::Element(XmppStreamElement::Stanza(Stanza::Message(_) | Stanza::Presence(_)))
        | Incoming::Element(XmppStreamElement::SM(Nonza::Ack(_))) => true,
        Incoming::Invalid(e) => !is_sm_failed(e),
        Incoming::Element(_) | Incoming::Features(_) => false,
    }
}

/// Whether an element that failed to parse is an SM `<failed/>` (see [`Engine::handle_one`]).
fn is_sm_failed(e: &StreamElementError) -> bool {
    matches!(e, StreamElementError::InvalidNonza { qname, .. }
        if qname.0.as_str() == ns::SM && qname.1.as_str() == "failed")
}

/// A stanza error as the user reads it: its condition, and the server's text if it gave one.
fn describe_error(e: &tokio_xmpp::parsers::stanza_error::StanzaError) -> String {
    let condition = format!("{:?}", e.defined_condition);
    match e.texts.values().next() {
        Some(text) => format!("{condition}: {text}"),
        None => condition,
    }
}

/// A fresh stanza id with a readable prefix.
impl Engine {
    /// An available presence with our capabilities (XEP-0115: every presence we broadcast).
    fn our_presence(&self, presence: Presence) -> Presence {
        presence.with_payload(caps::our_caps(self.config.device))
    }
}

impl Link {
    fn disco_forget(&mut self, key: &(String, String)) {
        self.disco.forget(key);
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
