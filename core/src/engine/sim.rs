//! A simulated XMPP server and a [`Pair`] of it with a real engine over a real SQLite file, for
//! the in-memory session tests (quinn-proto's `Pair`, with simulated time). No socket, no
//! clock, no server process: the test decides what reaches whom, and when.
//!
//! The server side implements what the engine meets on a real server: XEP-0198 (counting what it
//! receives, answering `<r/>`, keeping what it sent unacked and re-sending it on `<resume/>`,
//! refusing a resumption it cannot honour), bind, roster, carbons, ping, CSI, and an archive
//! (XEP-0313) paged with RSM. It never de-duplicates: it records every message it is given, so a
//! test can count exact deliveries.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    bind::BindResponse,
    delay::Delay,
    forwarding::Forwarded,
    iq::Iq,
    mam,
    message::{Id, Lang, Message, MessageType},
    ns,
    rsm::SetResult,
    sm::{self, Nonza},
    stanza::Stanza,
    stanza_id::{OriginId, StanzaId},
};
use tokio_xmpp::xmlstream::{StreamElementError, XmppStreamElement};

use super::{Engine, Features, Incoming, SessionEnd, Transmit};
use crate::config::ClientConfig;
use crate::events::Event;
use crate::store::{Account, MessageFilter, MessageRow, NewAccount, Store, StoreOptions};
use crate::Direction;

/// How the server answers `<resume/>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ResumeAnswer {
    /// Resume if it still has the session.
    Honour,
    /// `<failed h/>` (with the h it has) although it has the session: it lost it.
    FailWithH,
    /// `<failed/>` without h, with a `<text/>` child as Prosody sends it (which xmpp-parsers
    /// 0.23 cannot parse).
    FailWithoutH,
    /// `<resumed/>` naming another stream.
    WrongStream,
}

/// The server's stream-management state of the client's session.
#[derive(Debug)]
struct SmSession {
    id: String,
    /// Stanzas received from the client, mod 2^32.
    h_in: u32,
    /// Stanzas sent to the client, mod 2^32.
    out: u32,
    /// Sent and not acked by the client: (seq, element).
    unacked: VecDeque<(u32, Stanza)>,
}

/// The simulated server.
pub(super) struct Server {
    /// The account's bare JID.
    pub own: BareJid,
    /// Offer XEP-0198.
    pub sm_offered: bool,
    /// Offer CSI.
    pub csi_offered: bool,
    /// Answer `<r/>` (off: nothing the client sends is acked until it is turned on again).
    pub answer_requests: bool,
    /// How `<resume/>` is answered.
    pub resume: ResumeAnswer,
    /// `<resume/>` nonzas received (a SASL2 login resumes inline instead).
    pub resume_nonzas: usize,
    /// Bind iqs received (Bind2 binds inline instead).
    pub bind_iqs: usize,
    session: Option<SmSession>,
    /// SM on for the current connection.
    enabled: bool,
    /// Every message the client wrote, in order, never de-duplicated.
    pub delivered: Vec<Message>,
    /// What it has queued for the client on this connection.
    to_client: VecDeque<Incoming>,
    /// The last h the client reported (`<a/>` or `<resume/>`) on the current session.
    pub client_h: Option<u32>,
    /// For each stanza sent to the client: its session, its seq and the chat message's body, if
    /// it was one.
    sent_log: Vec<(String, u32, Option<String>)>,
    /// Every iq the client wrote.
    pub iqs: Vec<Iq>,
    /// Every presence the client sent.
    pub presences: Vec<tokio_xmpp::parsers::presence::Presence>,
    /// Elements the engine may still take on this connection (`None`: no limit).
    pub rx_budget: Option<usize>,
    /// The account's archive: (archive id, message), oldest first.
    pub archive: Vec<(String, Message)>,
    /// The most results per archive page.
    pub page_max: usize,
    /// Archive the client's own chat messages as they arrive (as Prosody's mod_mam does).
    pub archives_outgoing: bool,
    /// Answer archive queries (off: `service-unavailable`, a server without an archive).
    pub mam_offered: bool,
    /// Never answer archive queries (a stuck archive).
    pub drop_all_mam: bool,
    /// The CSI state the client last announced.
    pub csi_inactive: Option<bool>,
    /// The client closed its stream.
    pub closed: bool,
    /// Counter for stream ids.
    /// SM sessions started (each `<enable/>`, inline or not).
    pub streams: u32,
    /// `<r/>` received.
    pub requests: u32,
    /// Pings received.
    pub pings: u32,
    /// Stream errors the client wrote.
    pub stream_errors: Vec<tokio_xmpp::parsers::stream_error::StreamError>,
    /// An upload service `upload.localhost` with this size limit (`None`: no service).
    pub upload_max: Option<u64>,
    /// The PUT and GET URL of every slot it grants (`{n}` is the slot's number).
    pub slot_url: String,
    /// Refuse slot requests with this condition.
    pub slot_error: Option<tokio_xmpp::parsers::stanza_error::DefinedCondition>,
    /// Slot requests received: (file name, size).
    pub slot_requests: Vec<(String, u64)>,
    /// Refuse push requests (XEP-0357) with this condition.
    pub push_error: Option<tokio_xmpp::parsers::stanza_error::DefinedCondition>,
    /// Leave push requests unanswered.
    pub push_silent: bool,
    /// Push requests the client sent: `(enable?, service, node, secret)`.
    pub push_requests: Vec<(bool, String, Option<String>, Option<String>)>,
    /// The account's blocklist (XEP-0191), as the server keeps it.
    pub blocklist: Vec<String>,
    /// Refuse block and unblock requests with this condition.
    pub block_error: Option<tokio_xmpp::parsers::stanza_error::DefinedCondition>,
    /// Block (`true`) and unblock requests the client sent, with their items.
    pub block_requests: Vec<(bool, Vec<String>)>,
    /// Answer pings to a room occupant (XEP-0410 self-pings) as the room would for a member
    /// (off: the test answers them).
    pub answer_self_pings: bool,
    /// Pings the client sent to room occupants.
    pub self_pings: u32,
    /// The account's bookmarks (XEP-0402): (room, autojoin, nick).
    pub bookmarks: Vec<(String, bool, Option<String>)>,
    /// Bookmark publishes (`true`) and retracts the client sent, by room.
    pub bookmark_requests: Vec<(bool, String)>,
    /// What a disco#info query to the account's bare JID lists (by default, that the server
    /// keeps XEP-0402 and XEP-0048 bookmarks in step).
    pub account_features: Vec<String>,
    /// The account's XEP-0048 bookmarks in private storage (XEP-0049).
    pub private_bookmarks: tokio_xmpp::parsers::bookmarks::Storage,
    /// Private storage writes the client sent.
    pub private_writes: usize,
    /// Refuse private storage requests with this condition (a server without XEP-0049).
    pub private_error: Option<tokio_xmpp::parsers::stanza_error::DefinedCondition>,
    /// Items on other users' PEP nodes, as `(owner, node, item id, payload)` (what an items
    /// request to them gets).
    pub peer_items: Vec<(String, String, String, Element)>,
    /// Other users' vCards (XEP-0054), by bare JID.
    pub vcards: Vec<(String, Element)>,
    /// Items the client published to a PEP node other than the bookmarks': `(node, id, payload)`.
    pub published: Vec<(String, String, Element)>,
    /// Refuse publishes to PEP nodes other than the bookmarks' with this condition.
    pub publish_error: Option<tokio_xmpp::parsers::stanza_error::DefinedCondition>,
    /// Leave publishes to PEP nodes other than the bookmarks' unanswered.
    pub publish_silent: bool,
    /// Items requests the client sent to other users: `(to, node)`.
    pub items_requests: Vec<(String, String)>,
}

impl Server {
    /// A server with SM, CSI and an empty archive.
    pub fn new() -> Server {
        Server {
            own: "alice@localhost".parse().unwrap(),
            sm_offered: true,
            csi_offered: true,
            answer_requests: true,
            resume: ResumeAnswer::Honour,
            session: None,
            enabled: false,
            delivered: Vec::new(),
            to_client: VecDeque::new(),
            client_h: None,
            sent_log: Vec::new(),
            iqs: Vec::new(),
            presences: Vec::new(),
            rx_budget: None,
            archive: Vec::new(),
            page_max: 100,
            archives_outgoing: true,
            mam_offered: true,
            drop_all_mam: false,
            csi_inactive: None,
            closed: false,
            streams: 0,
            requests: 0,
            pings: 0,
            stream_errors: Vec::new(),
            upload_max: Some(10 << 20),
            slot_url: "https://localhost:5281/share/{n}/file".into(),
            slot_error: None,
            slot_requests: Vec::new(),
            push_error: None,
            push_silent: false,
            push_requests: Vec::new(),
            blocklist: Vec::new(),
            block_error: None,
            block_requests: Vec::new(),
            answer_self_pings: false,
            self_pings: 0,
            bookmarks: Vec::new(),
            bookmark_requests: Vec::new(),
            account_features: vec![
                "http://jabber.org/protocol/pubsub#publish".into(),
                ns::BOOKMARKS2_COMPAT.into(),
            ],
            private_bookmarks: Default::default(),
            private_writes: 0,
            private_error: None,
            peer_items: Vec::new(),
            vcards: Vec::new(),
            published: Vec::new(),
            publish_error: None,
            publish_silent: false,
            items_requests: Vec::new(),
            resume_nonzas: 0,
            bind_iqs: 0,
        }
    }

    /// The features of a new connection.
    pub fn features(&self) -> Features {
        Features {
            sm: self.sm_offered,
            csi: self.csi_offered,
            roster_ver: false,
            inline: None,
        }
    }

    /// A new SM session (answers `<enable/>`, inline or not).
    fn new_session(&mut self) -> sm::Enabled {
        self.streams += 1;
        let id = format!("stream-{}", self.streams);
        self.session = Some(SmSession {
            id: id.clone(),
            h_in: 0,
            out: 0,
            unacked: VecDeque::new(),
        });
        self.enabled = true;
        sm::Enabled {
            id: Some(sm::StreamId(id)),
            location: None,
            max: Some(300),
            resume: true,
        }
    }

    /// Resumes the session it holds (the client's `h` settles what it acked): the answer
    /// (naming another stream when [`ResumeAnswer::WrongStream`]), and what it sends again.
    fn resume_session(&mut self, h: u32) -> (sm::Resumed, Vec<Stanza>) {
        self.settle_acks(h);
        let s = self.session.as_ref().expect("a session to resume");
        let previd = if self.resume == ResumeAnswer::WrongStream {
            "another-stream".to_owned()
        } else {
            s.id.clone()
        };
        let resumed = sm::Resumed {
            h: s.h_in,
            previd: sm::StreamId(previd),
        };
        let again = s.unacked.iter().map(|(_, st)| copy(st)).collect();
        self.enabled = true;
        (resumed, again)
    }

    /// Queues stanzas for the client as they are (already counted in the session).
    fn queue_stanzas(&mut self, stanzas: Vec<Stanza>) {
        for st in stanzas {
            self.to_client
                .push_back(Incoming::Element(XmppStreamElement::Stanza(st)));
        }
    }

    /// A SASL2 login with Bind2 and inline SM, as Prosody's mod_sasl2_sm answers it: the stream
    /// resumed when it can be (then what it holds unacked comes again after the success), else
    /// `<failed/>` (with h when `resume` says so) and a new session bound with SM enabled.
    pub fn sasl2_login(&mut self, resume: Option<sm::Resume>) -> crate::auth::Inline {
        use crate::auth::Inline;
        if let Some(r) = &resume {
            let known = self.session.as_ref().is_some_and(|s| s.id == r.previd.0);
            if known
                && matches!(
                    self.resume,
                    ResumeAnswer::Honour | ResumeAnswer::WrongStream
                )
            {
                let (resumed, again) = self.resume_session(r.h);
                self.queue_stanzas(again);
                return Inline::Resumed(resumed);
            }
        }
        let failed_h = match (&resume, &self.resume) {
            (Some(_), ResumeAnswer::FailWithH) => self.session.as_ref().map(|s| s.h_in),
            _ => None,
        };
        let enabled = self.sm_offered.then(|| self.new_session());
        Inline::Bound {
            resume_failed: resume.map(|_| failed_h),
            sm: enabled,
            carbons: true,
        }
    }

    /// Bodies delivered (every copy), in order.
    pub fn bodies(&self) -> Vec<String> {
        self.delivered
            .iter()
            .filter_map(|m| m.bodies.get("").cloned())
            .collect()
    }

    /// The stream of this connection is gone. What was queued for the client is lost on the
    /// wire (it stays unacked and comes again on resumption). With `keep_session` false the
    /// server forgets the session too (it timed out, or the server restarted).
    pub fn cut(&mut self, keep_session: bool) {
        self.to_client.clear();
        self.enabled = false;
        self.rx_budget = None;
        if !keep_session {
            self.session = None;
            self.client_h = None;
        }
    }

    /// How many stanzas the session holds that the client has not acked.
    pub fn unacked(&self) -> usize {
        self.session.as_ref().map_or(0, |s| s.unacked.len())
    }

    /// Whether the server still holds a session (live or hibernated).
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Sets what the server has received of the current session (as after a very long stream).
    pub fn set_inbound_count(&mut self, h: u32) {
        self.session.as_mut().expect("a session").h_in = h;
    }

    /// Takes everything queued for the client.
    pub fn take_to_client(&mut self) -> Vec<Incoming> {
        self.to_client.drain(..).collect()
    }

    /// Takes what the engine may get next (at most the budget left).
    fn next_burst(&mut self, most: usize) -> Vec<Incoming> {
        let n = self
            .rx_budget
            .map_or(most, |b| b.min(most))
            .min(self.to_client.len());
        if let Some(b) = self.rx_budget.as_mut() {
            *b -= n;
        }
        self.to_client.drain(..n).collect()
    }

    /// Whether the engine may get something now.
    fn has_for_client(&self) -> bool {
        !self.to_client.is_empty() && self.rx_budget != Some(0)
    }

    /// Forgets the archive query of the session (it never arrived: the client's count of it is
    /// taken out of h too) and every answer to it.
    pub fn drop_mam_answers(&mut self) {
        let is_answer = |st: &Stanza| match st {
            Stanza::Message(m) => m.payloads.iter().any(|p| p.is("result", ns::MAM)),
            Stanza::Iq(Iq::Result {
                payload: Some(p), ..
            }) => p.is("fin", ns::MAM),
            _ => false,
        };
        if let Some(s) = self.session.as_mut() {
            s.unacked.retain(|(_, st)| !is_answer(st));
            s.h_in = s.h_in.wrapping_sub(1);
        }
        self.to_client.retain(
            |i| !matches!(i, Incoming::Element(XmppStreamElement::Stanza(st)) if is_answer(st)),
        );
    }

    /// Every chat message this session sent whose seq the client's last h covers is among the
    /// client's stored `bodies`: no `<a/>` or `<resume/>` covered what it had not committed.
    pub fn assert_acked_are_stored(&self, bodies: &[String]) {
        let (Some(h), Some(s)) = (self.client_h, self.session.as_ref()) else {
            return;
        };
        for (stream, seq, body) in &self.sent_log {
            let covered = *stream == s.id && h.wrapping_sub(*seq) < u32::MAX / 2;
            if let (true, Some(body)) = (covered, body) {
                assert!(
                    bodies.contains(body),
                    "the client acked {body:?} (seq {seq}, h {h}) without storing it"
                );
            }
        }
    }

    /// Iq sets the client addressed to `to`.
    pub fn iq_sets_to(&self, to: &str) -> usize {
        self.iqs
            .iter()
            .filter(|iq| matches!(iq, Iq::Set { to: Some(t), .. } if t.to_string() == to))
            .count()
    }

    /// The client's results for the iq `id`.
    pub fn iq_results_for(&self, id: &str) -> usize {
        self.iqs
            .iter()
            .filter(|iq| matches!(iq, Iq::Result { id: i, .. } if i == id))
            .count()
    }

    /// Sends a stanza to the client (counted and kept until acked when SM is on).
    pub fn send(&mut self, stanza: Stanza) {
        let body = match &stanza {
            Stanza::Message(m) => m.bodies.get("").cloned(),
            _ => None,
        };
        if self.enabled {
            let s = self.session.as_mut().expect("enabled has a session");
            s.out = s.out.wrapping_add(1);
            s.unacked.push_back((s.out, copy(&stanza)));
            self.sent_log.push((s.id.clone(), s.out, body));
        }
        self.to_client
            .push_back(Incoming::Element(XmppStreamElement::Stanza(stanza)));
    }

    /// A chat message arrives while the session is hibernated (the link is cut, the session
    /// kept): the server queues it for resumption (and would push).
    pub fn send_chat_hibernated(&mut self, from: &str, id: &str, body: &str) {
        assert!(!self.enabled, "the session is live");
        self.enabled = true;
        self.send_chat(from, id, body);
        self.enabled = false;
        // Not on the wire: only the resumption brings it.
        self.to_client.clear();
    }

    /// Sends a chat message from `from` with `id` and `body` (and a stanza-id of our own).
    pub fn send_chat(&mut self, from: &str, id: &str, body: &str) {
        let mut m = Message::chat(Some(Jid::from(self.own.clone())));
        m.from = Some(from.parse().unwrap());
        m.id = Some(Id(id.into()));
        m.bodies.insert(Lang::new(), body.into());
        m.payloads.push(
            StanzaId {
                id: format!("sid-{id}"),
                by: Jid::from(self.own.clone()),
            }
            .into(),
        );
        self.send(Stanza::Message(m));
    }

    /// Answers the client's iq `id` with an error.
    fn refuse(
        &mut self,
        id: String,
        kind: tokio_xmpp::parsers::stanza_error::ErrorType,
        cond: tokio_xmpp::parsers::stanza_error::DefinedCondition,
        text: &str,
    ) {
        let error = tokio_xmpp::parsers::stanza_error::StanzaError::new(kind, cond, "en", text);
        self.send(Stanza::Iq(Iq::Error {
            from: None,
            to: None,
            id,
            error,
            payload: None,
        }));
    }

    /// Answers the client's iq `id` with a result.
    fn answer(&mut self, id: String, payload: Option<Element>) {
        self.send(Stanza::Iq(Iq::Result {
            from: None,
            to: None,
            id,
            payload,
        }));
    }

    /// Queues a raw element for the client, outside SM counting (a nonza, or a malformed one).
    pub fn push_raw(&mut self, incoming: Incoming) {
        self.to_client.push_back(incoming);
    }

    fn nonza(&mut self, n: Nonza) {
        self.to_client
            .push_back(Incoming::Element(XmppStreamElement::SM(n)));
    }

    fn settle_acks(&mut self, h: u32) {
        self.client_h = Some(h);
        if let Some(s) = self.session.as_mut() {
            while s
                .unacked
                .front()
                .is_some_and(|(seq, _)| h.wrapping_sub(*seq) < u32::MAX / 2)
            {
                s.unacked.pop_front();
            }
        }
    }

    /// Takes what the client wrote.
    pub fn receive(&mut self, t: Transmit) {
        match t {
            Transmit::Close => self.closed = true,
            Transmit::Csi { inactive } => self.csi_inactive = Some(inactive),
            Transmit::Element(XmppStreamElement::Stanza(stanza)) => {
                if self.enabled {
                    let s = self.session.as_mut().expect("enabled has a session");
                    s.h_in = s.h_in.wrapping_add(1);
                }
                self.on_stanza(stanza);
            }
            Transmit::Element(XmppStreamElement::SM(n)) => self.on_sm(n),
            Transmit::Element(XmppStreamElement::StreamError(e)) => self.stream_errors.push(e.0),
            Transmit::Element(other) => panic!("the client wrote {other:?}"),
        }
    }

    fn on_sm(&mut self, n: Nonza) {
        match n {
            Nonza::Enable(_) => {
                let enabled = self.new_session();
                self.nonza(Nonza::Enabled(enabled));
            }
            Nonza::Resume(r) => {
                self.resume_nonzas += 1;
                let known = self.session.as_ref().is_some_and(|s| s.id == r.previd.0);
                match (&self.resume, known) {
                    (ResumeAnswer::Honour, true) | (ResumeAnswer::WrongStream, true) => {
                        let (resumed, again) = self.resume_session(r.h);
                        self.nonza(Nonza::Resumed(resumed));
                        self.queue_stanzas(again);
                    }
                    (ResumeAnswer::FailWithH, true) => {
                        let h = self.session.as_ref().map(|s| s.h_in);
                        self.session = None;
                        self.nonza(Nonza::Failed(sm::Failed {
                            h,
                            error: Some(
                                tokio_xmpp::parsers::stanza_error::DefinedCondition::ItemNotFound,
                            ),
                        }));
                    }
                    _ => {
                        self.session = None;
                        // As Prosody sends it: no h, a condition and a text; xmpp-parsers 0.23
                        // refuses the text child, so the driver hands over a parse error.
                        self.to_client.push_back(Incoming::Invalid(
                            StreamElementError::InvalidNonza {
                                qname: (rxml_ns(ns::SM), "failed".try_into().expect("an NCName")),
                                error: xso::error::Error::Other("unknown child in failed element"),
                            },
                        ));
                    }
                }
            }
            Nonza::Req(_) => {
                self.requests += 1;
                if self.answer_requests {
                    let h = self.session.as_ref().map_or(0, |s| s.h_in);
                    self.nonza(Nonza::Ack(sm::A::new(h)));
                }
            }
            Nonza::Ack(a) => self.settle_acks(a.h),
            other => panic!("unexpected nonza from the client: {other:?}"),
        }
    }

    fn on_stanza(&mut self, stanza: Stanza) {
        if let Stanza::Iq(iq) = &stanza {
            self.iqs.push(iq.clone());
        }
        match stanza {
            Stanza::Message(m) => {
                let chat = matches!(m.type_, MessageType::Chat | MessageType::Normal);
                // As Prosody's mod_mam: a message with a body, or one hinted `<store/>`.
                let worth = !m.bodies.is_empty()
                    || m.payloads.iter().any(|p| p.is("store", super::xeps::HINTS));
                if self.archives_outgoing && chat && worth {
                    let mut archived = m.clone();
                    archived.from = Some(format!("{}/tether", self.own).parse().unwrap());
                    let aid = format!("own-{}", self.archive.len());
                    self.archive.push((aid, archived));
                }
                self.delivered.push(m);
            }
            Stanza::Presence(p) => self.presences.push(p),
            Stanza::Iq(Iq::Get {
                id,
                to: Some(to),
                payload,
                ..
            }) if payload.is("ping", ns::PING)
                && to.node().is_some()
                && to.resource().is_some()
                && to.to_bare() != self.own =>
            {
                self.self_pings += 1;
                if self.answer_self_pings {
                    self.send(Stanza::Iq(Iq::Result {
                        from: Some(to),
                        to: None,
                        id,
                        payload: None,
                    }));
                }
            }
            // An iq to another user (or a room, or an occupant) goes there: the test answers it
            // (their vCards and PEP items excepted: `vcards` and `peer_items` answer those).
            Stanza::Iq(
                Iq::Get {
                    to: Some(to),
                    payload,
                    ..
                }
                | Iq::Set {
                    to: Some(to),
                    payload,
                    ..
                },
            ) if to.node().is_some()
                && to.to_bare() != self.own
                && !payload.is("vCard", ns::VCARD)
                && !payload.is("pubsub", ns::PUBSUB) => {}
            Stanza::Iq(Iq::Set { id, payload, .. }) if payload.is("bind", ns::BIND) => {
                self.bind_iqs += 1;
                let jid: Jid = format!("{}/tether", self.own).parse().unwrap();
                let bound = BindResponse {
                    jid: jid.try_into_full().unwrap(),
                };
                self.answer(id, Some(bound.into()));
            }
            Stanza::Iq(Iq::Set { payload, .. })
                if payload.is("query", ns::MAM) && self.drop_all_mam => {}
            Stanza::Iq(Iq::Set { id, payload, .. })
                if payload.is("query", ns::MAM) && !self.mam_offered =>
            {
                let error = tokio_xmpp::parsers::stanza_error::StanzaError::new(
                    tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                    tokio_xmpp::parsers::stanza_error::DefinedCondition::ServiceUnavailable,
                    "en",
                    "no archive here",
                );
                self.send(Stanza::Iq(Iq::Error {
                    from: None,
                    to: None,
                    id,
                    error,
                    payload: None,
                }));
            }
            Stanza::Iq(Iq::Set { id, payload, .. }) if payload.is("query", ns::MAM) => {
                let query = mam::Query::try_from(payload).expect("a valid archive query");
                self.answer_mam(id, query);
            }
            Stanza::Iq(Iq::Get { id, payload, .. }) if payload.is("query", ns::DISCO_ITEMS) => {
                use tokio_xmpp::parsers::disco::{DiscoItemsResult, Item};
                let items = self
                    .upload_max
                    .map(|_| Item {
                        jid: "upload.localhost".parse().unwrap(),
                        node: None,
                        name: None,
                    })
                    .into_iter()
                    .collect();
                let r = DiscoItemsResult {
                    node: None,
                    items,
                    rsm: None,
                };
                self.answer(id, Some(r.into()));
            }
            Stanza::Iq(Iq::Get {
                id, payload, to, ..
            }) if payload.is("query", ns::DISCO_INFO)
                && !to.as_ref().is_some_and(|t| t.node().is_some()) =>
            {
                use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field};
                use tokio_xmpp::parsers::disco::{DiscoInfoResult, Identity};
                let upload = to
                    .as_ref()
                    .is_some_and(|t| t.as_str() == "upload.localhost");
                let mut r = DiscoInfoResult {
                    node: None,
                    identities: vec![Identity::new("server", "im", "en", "sim")],
                    features: Default::default(),
                    extensions: vec![],
                };
                if let (true, Some(max)) = (upload, self.upload_max) {
                    r.features.insert(ns::HTTP_UPLOAD.to_owned());
                    r.extensions.push(DataForm::new(
                        DataFormType::Result_,
                        ns::HTTP_UPLOAD,
                        vec![Field::text_single("max-file-size", &max.to_string())],
                    ));
                }
                self.send(Stanza::Iq(Iq::Result {
                    from: to,
                    to: None,
                    id,
                    payload: Some(r.into()),
                }));
            }
            Stanza::Iq(Iq::Get { id, payload, .. }) if payload.is("request", ns::HTTP_UPLOAD) => {
                use tokio_xmpp::parsers::http_upload::{Get, Put, SlotRequest, SlotResult};
                let req = SlotRequest::try_from(payload).expect("a valid slot request");
                self.slot_requests.push((req.filename, req.size));
                if let Some(cond) = self.slot_error.clone() {
                    self.refuse(
                        id,
                        tokio_xmpp::parsers::stanza_error::ErrorType::Modify,
                        cond,
                        "File too large. The maximum file size is 10 bytes",
                    );
                    return;
                }
                let url = self
                    .slot_url
                    .replace("{n}", &self.slot_requests.len().to_string());
                let r = SlotResult {
                    put: Put {
                        url: url.clone(),
                        headers: vec![],
                    },
                    get: Get { url },
                };
                self.answer(id, Some(r.into()));
            }
            Stanza::Iq(Iq::Get { id, payload, .. }) if payload.is("ping", ns::PING) => {
                self.pings += 1;
                self.send(Stanza::Iq(Iq::empty_result(
                    Jid::from(self.own.clone()),
                    id,
                )));
            }
            Stanza::Iq(Iq::Set { id, payload, .. })
                if payload.is("enable", ns::PUSH) || payload.is("disable", ns::PUSH) =>
            {
                use tokio_xmpp::parsers::push::{Disable, Enable};
                let request = if payload.is("enable", ns::PUSH) {
                    let e = Enable::try_from(payload).expect("a valid push enable");
                    let secret = e.form.and_then(|f| {
                        f.fields
                            .into_iter()
                            .find(|f| f.var.as_deref() == Some("secret"))
                            .and_then(|f| f.values.into_iter().next())
                    });
                    (true, e.jid.to_string(), e.node, secret)
                } else {
                    let d = Disable::try_from(payload).expect("a valid push disable");
                    (false, d.jid.to_string(), d.node, None)
                };
                self.push_requests.push(request);
                if self.push_silent {
                    return;
                }
                match self.push_error.clone() {
                    Some(cond) => self.refuse(
                        id,
                        tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                        cond,
                        "push is not allowed here",
                    ),
                    None => self.answer(id, None),
                }
            }
            Stanza::Iq(Iq::Get {
                id, payload, to, ..
            }) if payload.is("query", ns::DISCO_INFO)
                && to.as_ref().is_some_and(|t| t.to_bare() == self.own) =>
            {
                use tokio_xmpp::parsers::disco::{DiscoInfoResult, Identity};
                let r = DiscoInfoResult {
                    node: None,
                    identities: vec![Identity::new("account", "registered", "en", "alice")],
                    features: self.account_features.iter().cloned().collect(),
                    extensions: vec![],
                };
                self.answer(id, Some(r.into()));
            }
            Stanza::Iq(Iq::Get { id, payload, .. } | Iq::Set { id, payload, .. })
                if payload.is("query", ns::PRIVATE) && self.private_error.is_some() =>
            {
                let cond = self.private_error.clone().expect("checked");
                self.refuse(
                    id,
                    tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                    cond,
                    "no private storage",
                );
            }
            Stanza::Iq(Iq::Get { id, payload, .. }) if payload.is("query", ns::PRIVATE) => {
                let q = tokio_xmpp::parsers::private::Query {
                    storage: self.private_bookmarks.clone(),
                };
                self.answer(id, Some(q.into()));
            }
            Stanza::Iq(Iq::Set { id, payload, .. }) if payload.is("query", ns::PRIVATE) => {
                let q = tokio_xmpp::parsers::private::Query::try_from(payload)
                    .expect("a valid private storage write");
                self.private_bookmarks = q.storage;
                self.private_writes += 1;
                self.answer(id, None);
            }
            Stanza::Iq(Iq::Get {
                id, payload, to, ..
            }) if payload.is("vCard", ns::VCARD) => {
                let to = to.map(|t| t.to_bare().to_string()).unwrap_or_default();
                match self.vcards.iter().find(|(j, _)| *j == to) {
                    Some((_, vcard)) => self.answer(id, Some(vcard.clone())),
                    None => self.refuse(
                        id,
                        tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                        tokio_xmpp::parsers::stanza_error::DefinedCondition::ItemNotFound,
                        "no vCard",
                    ),
                }
            }
            Stanza::Iq(
                Iq::Get {
                    id, payload, to, ..
                }
                | Iq::Set {
                    id, payload, to, ..
                },
            ) if payload.is("pubsub", ns::PUBSUB)
                && !payload
                    .children()
                    .any(|c| c.attr("node") == Some(ns::BOOKMARKS2)) =>
            {
                use tokio_xmpp::parsers::pubsub::{pubsub::Item, pubsub::Items, ItemId, PubSub};
                match PubSub::try_from(payload).expect("a valid pubsub request") {
                    PubSub::Items(q) => {
                        let owner = to.map(|t| t.to_bare().to_string()).unwrap_or_default();
                        self.items_requests.push((owner.clone(), q.node.0.clone()));
                        let wanted: Vec<String> = q
                            .items
                            .iter()
                            .filter_map(|i| i.id.as_ref().map(|i| i.0.clone()))
                            .collect();
                        let mut items = Items::new(&q.node.0);
                        for (o, node, item, payload) in &self.peer_items {
                            if *o == owner
                                && *node == q.node.0
                                && (wanted.is_empty() || wanted.contains(item))
                            {
                                items.items.push(Item {
                                    id: Some(ItemId(item.clone())),
                                    publisher: None,
                                    payload: Some(payload.clone()),
                                });
                            }
                        }
                        if items.items.is_empty() {
                            self.refuse(
                                id,
                                tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                                tokio_xmpp::parsers::stanza_error::DefinedCondition::ItemNotFound,
                                "no such item",
                            );
                        } else {
                            self.answer(id, Some(PubSub::Items(items).into()));
                        }
                    }
                    PubSub::Publish { publish, .. } => {
                        for item in publish.items {
                            self.published.push((
                                publish.node.0.clone(),
                                item.id.map(|i| i.0).unwrap_or_default(),
                                item.payload
                                    .unwrap_or_else(|| Element::builder("none", "x").build()),
                            ));
                        }
                        if self.publish_silent {
                            return;
                        }
                        match self.publish_error.clone() {
                            Some(cond) => self.refuse(
                                id,
                                tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                                cond,
                                "not allowed",
                            ),
                            None => self.answer(id, None),
                        }
                    }
                    _ => self.answer(id, None),
                }
            }
            Stanza::Iq(Iq::Get { id, payload, .. } | Iq::Set { id, payload, .. })
                if payload.is("pubsub", ns::PUBSUB) =>
            {
                use tokio_xmpp::parsers::bookmarks2::Conference;
                use tokio_xmpp::parsers::pubsub::{pubsub::Item, pubsub::Items, ItemId, PubSub};
                match PubSub::try_from(payload).expect("a valid pubsub request") {
                    PubSub::Items(q) if q.node.0 == ns::BOOKMARKS2 => {
                        let mut items = Items::new(ns::BOOKMARKS2);
                        for (room, autojoin, nick) in &self.bookmarks {
                            let c = Conference {
                                autojoin: *autojoin,
                                nick: nick.as_deref().map(|n| n.parse().unwrap()),
                                ..Conference::new()
                            };
                            items.items.push(Item {
                                id: Some(ItemId(room.clone())),
                                publisher: None,
                                payload: Some(c.into()),
                            });
                        }
                        self.answer(id, Some(PubSub::Items(items).into()));
                    }
                    PubSub::Publish { publish, .. } => {
                        for item in publish.items {
                            let room = item.id.unwrap().0;
                            let c = Conference::try_from(item.payload.unwrap()).unwrap();
                            self.bookmark_requests.push((true, room.clone()));
                            self.bookmarks.retain(|(r, _, _)| *r != room);
                            self.bookmarks
                                .push((room, c.autojoin, c.nick.map(|n| n.to_string())));
                        }
                        self.answer(id, None);
                    }
                    PubSub::Retract(r) => {
                        for item in r.items {
                            let room = item.id.unwrap().0;
                            self.bookmark_requests.push((false, room.clone()));
                            self.bookmarks.retain(|(x, _, _)| *x != room);
                        }
                        self.answer(id, None);
                    }
                    _ => self.answer(id, None),
                }
            }
            Stanza::Iq(Iq::Get { id, payload, .. }) if payload.is("blocklist", ns::BLOCKING) => {
                use tokio_xmpp::parsers::blocking::BlocklistResult;
                let items = self.blocklist.iter().map(|j| j.parse().unwrap()).collect();
                self.answer(id, Some(BlocklistResult { items }.into()));
            }
            Stanza::Iq(Iq::Set { id, payload, .. })
                if payload.is("block", ns::BLOCKING) || payload.is("unblock", ns::BLOCKING) =>
            {
                use tokio_xmpp::parsers::blocking::{Block, Unblock};
                let (block, items) = if payload.is("block", ns::BLOCKING) {
                    (true, Block::try_from(payload).expect("a valid block").items)
                } else {
                    (
                        false,
                        Unblock::try_from(payload).expect("a valid unblock").items,
                    )
                };
                let items: Vec<String> = items.iter().map(|j| j.to_string()).collect();
                self.block_requests.push((block, items.clone()));
                if let Some(cond) = self.block_error.clone() {
                    self.refuse(
                        id,
                        tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                        cond,
                        "blocking is not allowed here",
                    );
                    return;
                }
                if block {
                    for j in items {
                        if !self.blocklist.contains(&j) {
                            self.blocklist.push(j);
                        }
                    }
                } else if items.is_empty() {
                    // XEP-0191 §3.4: an empty unblock unblocks everyone.
                    self.blocklist.clear();
                } else {
                    self.blocklist.retain(|j| !items.contains(j));
                }
                self.answer(id, None);
            }
            Stanza::Iq(Iq::Get { id, .. } | Iq::Set { id, .. }) => {
                // Roster, carbons: an empty result will do.
                self.answer(id, None);
            }
            Stanza::Iq(_) => {}
        }
    }

    /// One page after the RSM `after` (all of the archive is "recent": the start filter is
    /// ignored), each result a message of its own, then the `<fin/>`.
    fn answer_mam(&mut self, id: String, q: mam::Query) {
        let (after, max) = q.set.map_or((None, None), |s| (s.after, s.max));
        let start = match &after {
            Some(after) => self
                .archive
                .iter()
                .position(|(aid, _)| aid == after)
                .map_or(self.archive.len(), |i| i + 1),
            None => 0,
        };
        let max = max.unwrap_or(self.page_max).min(self.page_max);
        let page: Vec<(String, Message)> =
            self.archive.iter().skip(start).take(max).cloned().collect();
        for (aid, inner) in &page {
            let result = mam::Result_ {
                id: aid.clone(),
                queryid: q.queryid.clone(),
                forwarded: Forwarded {
                    delay: Some(Delay {
                        from: None,
                        stamp: "2026-12-01T10:00:00Z".parse().unwrap(),
                        data: None,
                    }),
                    message: inner.clone(),
                },
            };
            let mut m = Message::normal(Some(Jid::from(self.own.clone())));
            m.payloads.push(result.into());
            self.send(Stanza::Message(m));
        }
        let complete = start + page.len() >= self.archive.len();
        let fin = mam::Fin {
            complete,
            set: SetResult {
                first: None,
                last: page.last().map(|(aid, _)| aid.clone()),
                count: None,
            },
        };
        self.answer(id, Some(fin.into()));
    }

    /// Puts `n` messages from `from` in the archive (ids `a-{i}`, bodies `archived {i}`).
    pub fn fill_archive(&mut self, from: &str, n: usize) {
        for i in 0..n {
            let mut m = Message::chat(Some(Jid::from(self.own.clone())));
            m.from = Some(format!("{from}/phone").parse().unwrap());
            m.id = Some(Id(format!("m-{i}")));
            m.bodies.insert(Lang::new(), format!("archived {i}"));
            m.payloads.push(
                OriginId {
                    id: format!("o-{i}"),
                }
                .into(),
            );
            self.archive.push((format!("a-{i}"), m));
        }
    }
}

/// A copy of a stanza (`Stanza` is not `Clone`; its variants are).
fn copy(s: &Stanza) -> Stanza {
    match s {
        Stanza::Iq(i) => Stanza::Iq(i.clone()),
        Stanza::Message(m) => Stanza::Message(m.clone()),
        Stanza::Presence(p) => Stanza::Presence(p.clone()),
    }
}

fn rxml_ns(s: &str) -> xso::exports::rxml::Namespace<'static> {
    xso::exports::rxml::Namespace::from(s.to_owned())
}

/// An engine over a real SQLite file and the simulated server, with simulated time.
pub(super) struct Pair {
    pub engine: Engine,
    pub store: Store,
    pub server: Server,
    pub now: Instant,
    /// Every event the engine announced.
    pub events: Vec<Event>,
    /// Every error a call returned (each ended the connection, as in the driver).
    pub errors: Vec<crate::Error>,
    /// Whether a connection is up.
    pub connected: bool,
    pub config: ClientConfig,
    account: Account,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Pair {
    /// A fresh account `alice@localhost` in a new database, not connected.
    pub fn new(server: Server) -> Pair {
        Pair::with_config(server, ClientConfig::default())
    }

    /// The same, with `config`.
    pub fn with_config(server: Server, config: ClientConfig) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut store = Store::open(&path, &StoreOptions::default()).unwrap();
        let account = store
            .add_account(&NewAccount {
                jid: "alice@localhost".into(),
                password: "pw".into(),
                server: None,
                ca_file: None,
                insecure_plaintext: false,
                direct_tls: false,
            })
            .unwrap();
        let now = Instant::now();
        let engine = Engine::restore(config.clone(), &account, &mut store, now).unwrap();
        let mut pair = Pair {
            engine,
            store,
            server,
            now,
            events: Vec::new(),
            errors: Vec::new(),
            connected: false,
            config,
            account,
            path,
            _dir: dir,
        };
        pair.drain(usize::MAX);
        pair
    }

    /// The database file (for a second connection that checks what is committed).
    pub fn db_path(&self) -> &std::path::Path {
        &self.path
    }

    /// Connects and runs until nothing moves.
    pub fn connect(&mut self) {
        let features = self.server.features();
        self.server.closed = false;
        self.connected = true;
        let r = self.engine.handle_connected(
            &mut self.store,
            self.now,
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
            features,
        );
        self.after(r);
        self.run();
    }

    /// The `resumed` flag of every `online` event so far, in order.
    pub fn online_resumed(&self) -> Vec<bool> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Connection(c) if c.state == crate::events::ConnState::Online => c.resumed,
                _ => None,
            })
            .collect()
    }

    /// A new link logged in with SASL2: the engine's stream resumed (or a new session bound)
    /// inside the login, as [`Server::sasl2_login`] answers it.
    pub fn connect_sasl2(&mut self) {
        let resume = self.engine.inline_resume();
        self.server.closed = false;
        self.connected = true;
        let inline = self.server.sasl2_login(resume);
        let mut features = self.server.features();
        features.inline = Some(inline);
        let r = self.engine.handle_connected(
            &mut self.store,
            self.now,
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
            features,
        );
        self.after(r);
        self.run();
    }

    /// Releases the engine's transmits to the server (at most `limit`; the rest are lost on the
    /// wire) and collects its events. Returns how many reached the server.
    fn drain(&mut self, limit: usize) -> usize {
        let mut n = 0;
        while let Some(t) = self.engine.poll_transmit() {
            if self.connected && n < limit {
                self.server.receive(t);
                n += 1;
            }
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
        n
    }

    /// What the driver does with a call's outcome: drain it, and end the connection on an error
    /// or when the engine ends it.
    fn after(&mut self, r: crate::Result<()>) {
        self.drain(usize::MAX);
        if let Err(e) = r {
            self.errors.push(e);
            self.lose_link();
            return;
        }
        match self.engine.poll_end() {
            Some(SessionEnd::Lost(e)) => {
                self.errors.push(e);
                self.lose_link();
            }
            Some(SessionEnd::Done) => {
                self.connected = false;
                self.server.cut(true);
            }
            None => {}
        }
    }

    fn lose_link(&mut self) {
        self.connected = false;
        self.server.cut(true);
        let r = self.engine.handle_link_lost(&mut self.store, self.now);
        self.drain(usize::MAX);
        r.expect("the disconnect is recorded");
    }

    /// One round: what the server queued reaches the engine as one burst, then the outboxes.
    /// Returns whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        if self.connected && self.server.has_for_client() {
            let burst = self.server.next_burst(256);
            let r = self
                .engine
                .handle_incoming(&mut self.store, self.now, burst);
            self.after(r);
            moved = true;
        }
        if self.connected {
            loop {
                let r = self.engine.handle_outbox(&mut self.store, self.now);
                let before = self.server.delivered.len() + self.server.requests as usize;
                self.after(r);
                let sent = self.server.delivered.len() + self.server.requests as usize;
                moved |= sent != before || self.server.has_for_client();
                if !self.engine.outbox_may_have_more() || !self.connected {
                    break;
                }
            }
        }
        moved || (self.connected && self.server.has_for_client())
    }

    /// Connects, but lets the engine take only the first `n` elements the server sends on this
    /// connection (the rest stay on the wire).
    pub fn connect_partial(&mut self, n: usize) {
        self.server.rx_budget = Some(n);
        self.connect();
    }

    /// Lets the engine take only the first `n` elements the server has queued now.
    pub fn deliver_some(&mut self, n: usize) {
        if !self.connected || !self.server.has_for_client() {
            return;
        }
        let burst = self.server.next_burst(n.max(1));
        let r = self
            .engine
            .handle_incoming(&mut self.store, self.now, burst);
        self.after(r);
    }

    /// Handles a call's outcome as the driver would, then runs.
    pub fn run_after(&mut self, r: crate::Result<()>) {
        self.after(r);
        self.run();
    }

    /// The server closes its side after our footer.
    pub fn finish_close(&mut self) {
        let r = self.engine.handle_link_lost(&mut self.store, self.now);
        self.after(r);
        assert!(!self.connected, "the close ended the connection");
    }

    /// Steps until nothing moves (bounded).
    pub fn run(&mut self) {
        for _ in 0..1000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never settled");
    }

    /// Moves time on by `d`, handling every deadline on the way, then runs.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(t) = self.engine.poll_timeout().filter(|t| *t <= until) {
            self.now = t.max(self.now);
            let r = self.engine.handle_timeout(&mut self.store, self.now);
            self.after(r);
            self.run();
        }
        self.now = until;
        self.run();
    }

    /// Nothing happens but the engine's own deadlines for `d`: returns how many times it woke
    /// up for them (what an idle session costs the battery).
    pub fn idle(&mut self, d: Duration) -> u32 {
        let until = self.now + d;
        let mut wakeups = 0;
        while let Some(t) = self.engine.poll_timeout().filter(|t| *t <= until) {
            self.now = t.max(self.now);
            wakeups += 1;
            let now = self.now;
            let r = self.engine.handle_timeout(&mut self.store, now);
            self.run_after(r);
        }
        wakeups
    }

    /// The link dies silently for both (no byte more reaches either side).
    pub fn cut(&mut self, keep_session: bool) {
        if self.connected {
            self.lose_link();
        }
        self.server.cut(keep_session);
    }

    /// The client is killed: what it had queued to write is lost, the engine is gone; a new
    /// process opens the same file and restores.
    pub fn kill(&mut self) {
        self.connected = false;
        self.server.cut(true);
        let store = Store::open(
            &self.path,
            &StoreOptions {
                create: false,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        // The old engine and store are dropped with whatever they held in memory.
        self.store = store;
        self.engine = Engine::restore(
            self.config.clone(),
            &self.account,
            &mut self.store,
            self.now,
        )
        .unwrap();
        self.drain(usize::MAX);
    }

    /// The app changed a wish the server keeps (push, blocklist, bookmarks, profile): the engine
    /// is told, as the driver tells it, and the pair runs.
    pub fn wishes_changed(&mut self) {
        let now = self.now;
        self.engine
            .handle_wishes_changed(&mut self.store, now)
            .expect("the wishes told");
        self.run();
    }

    /// The app commits a message (as `Client::send` does).
    pub fn send(&mut self, to: &str, body: &str) -> String {
        let changes = self
            .store
            .enqueue_many(self.account.id, &[(to.to_owned(), body.to_owned())])
            .unwrap();
        changes[0].id.clone()
    }

    /// Every message row of the account.
    pub fn rows(&self) -> Vec<MessageRow> {
        self.store
            .messages(self.account.id, &MessageFilter::default())
            .unwrap()
    }

    /// Bodies of incoming rows.
    pub fn inbound_bodies(&self) -> Vec<String> {
        self.rows()
            .into_iter()
            .filter(|r| r.direction == Direction::In)
            .map(|r| r.body)
            .collect()
    }

    /// The state of outgoing message `id`.
    pub fn state(&self, id: &str) -> crate::State {
        self.store.message(self.account.id, id).unwrap().state
    }

    /// The account's id in the store.
    pub fn account_id(&self) -> i64 {
        self.account.id
    }

    /// Runs SQL on the store (fault injection: triggers).
    pub fn sql(&self, sql: &str) {
        self.store.execute_batch_for_tests(sql).unwrap();
    }

    /// The integer a query returns (fault-injection bookkeeping).
    pub fn count_sql(&self, sql: &str) -> i64 {
        self.store.query_i64_for_tests(sql).unwrap()
    }

    /// Events named `name`.
    pub fn events_named(&self, name: &str) -> usize {
        self.events
            .iter()
            .filter(|e| serde_json::to_value(e).unwrap()["event"] == name)
            .count()
    }

    /// Error events of `kind`.
    pub fn error_events(&self, kind: &str) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Error(err) if err.kind.as_str() == kind => Some(err.message.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A message element as a string (for assertions on what was written).
#[allow(dead_code)]
pub(super) fn xml(el: impl Into<Element>) -> String {
    String::from(&el.into())
}
