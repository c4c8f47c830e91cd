//! Handlers for what the server sends during a session: messages (chat, receipts, markers, carbons,
//! group chat, errors), presence (contacts, subscription requests, rooms) and iq (roster, answers).
//!
//! Every handler commits what the stanza carries and counts it in the inbound `h` in the same
//! transaction (or, when a stanza needs several writes, counts it with the last one, so a crash in
//! between makes the server send it again rather than lose it).

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    carbons,
    delay::Delay,
    displayed_markers,
    iq::Iq,
    message::{Id, Message, MessageType},
    muc::user::{MucUser, Status},
    ns,
    presence::{self, Presence},
    receipts,
    roster::{Ask, Roster},
    stanza::Stanza,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
    stanza_id::{OriginId, StanzaId},
};

use super::{Engine, PendingIq};
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType};

/// XEP-0045 owner namespace (not in xmpp-parsers 0.23).
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
use crate::delivery::{Direction, State};
use crate::error::Result;
use crate::events::{ErrorKind, Event, ReceivedEvent, SocialEvent};
use crate::store::{Contact, InboundMessage, StateChange, Store};

/// What a message stanza says, besides its addressing.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub id: Option<String>,
    pub origin_id: Option<String>,
    /// A stanza-id stamped by the trusted entity (our server, or the room).
    pub stanza_id: Option<String>,
    pub delay_ms: Option<i64>,
    pub body: Option<String>,
    pub wants_receipt: bool,
    pub receipt_for: Option<String>,
    pub displayed: Option<String>,
    pub carbon_sent: Option<Message>,
    pub carbon_received: Option<Message>,
    pub mam_result: Option<Element>,
    pub muc_user: bool,
}

/// Splits a message into what Tether uses. A stanza-id counts only when `trusted_by` stamped it.
pub(crate) fn parse(mut m: Message, trusted_by: &BareJid) -> Parsed {
    let mut p = Parsed {
        id: m.id.take().map(|Id(id)| id),
        body: m
            .bodies
            .get("")
            .or_else(|| m.bodies.values().next())
            .cloned(),
        ..Parsed::default()
    };
    for el in std::mem::take(&mut m.payloads) {
        if el.is("origin-id", ns::SID) {
            p.origin_id = OriginId::try_from(el).ok().map(|o| o.id);
        } else if el.is("stanza-id", ns::SID) {
            if let Ok(sid) = StanzaId::try_from(el) {
                if sid.by == *trusted_by {
                    p.stanza_id = Some(sid.id);
                }
            }
        } else if el.is("delay", ns::DELAY) {
            p.delay_ms = Delay::try_from(el)
                .ok()
                .map(|d| d.stamp.0.timestamp_millis());
        } else if el.is("request", ns::RECEIPTS) {
            p.wants_receipt = true;
        } else if el.is("received", ns::RECEIPTS) {
            p.receipt_for = receipts::Received::try_from(el).ok().map(|r| r.id);
        } else if el.is("displayed", ns::DISPLAYED_MARKERS) {
            p.displayed = displayed_markers::Displayed::try_from(el)
                .ok()
                .map(|d| d.id.0);
        } else if el.is("sent", ns::CARBONS) {
            p.carbon_sent = carbons::Sent::try_from(el)
                .ok()
                .map(|s| s.forwarded.message);
        } else if el.is("received", ns::CARBONS) {
            p.carbon_received = carbons::Received::try_from(el)
                .ok()
                .map(|r| r.forwarded.message);
        } else if el.is("result", ns::MAM) {
            p.mam_result = Some(el);
        } else if el.is("x", ns::MUC_USER) {
            p.muc_user = true;
        }
    }
    p
}

fn describe_error(e: &StanzaError) -> String {
    let condition = format!("{:?}", e.defined_condition);
    match e.texts.values().next() {
        Some(text) => format!("{condition}: {text}"),
        None => condition,
    }
}

/// Where a chat message came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// Directly to us: answer receipts.
    Live,
    /// A carbon of a message another device of ours received.
    Carbon,
}

impl Engine {
    /// A message stanza, of any kind. It never writes to the stream (receipts go through the control
    /// outbox), so it also serves while the stream is closing.
    pub(super) fn on_message(&mut self, store: &mut Store, m: Message) -> Result<()> {
        if m.type_ == MessageType::Error {
            return self.on_error_message(store, m);
        }
        let from = m.from.clone();
        let type_ = m.type_.clone();
        let own = self.own.clone();
        if type_ == MessageType::Groupchat {
            return self.on_groupchat(store, m);
        }
        let parsed = parse(m, &own);
        if parsed.carbon_sent.is_some() || parsed.carbon_received.is_some() {
            return self.on_carbon(store, from, parsed);
        }
        if let Some(result) = parsed.mam_result {
            return self.on_mam_result(store, from, result);
        }
        let Some(from) = from else {
            // From our own server, with no sender: nothing to store.
            return self.count_inbound();
        };
        self.on_chat(store, from, type_, parsed, Via::Live)
    }

    fn on_error_message(&mut self, store: &mut Store, m: Message) -> Result<()> {
        let reason = m
            .payloads
            .iter()
            .find(|p| p.is("error", ns::DEFAULT_NS))
            .and_then(|p| StanzaError::try_from(p.clone()).ok())
            .map(|e| describe_error(&e))
            .unwrap_or_else(|| "the server returned an error".to_owned());
        let key = match &m.id {
            Some(Id(id)) => store.outgoing_key(self.account, id)?,
            None => None,
        };
        let moves: Vec<_> = key
            .into_iter()
            .map(|k| crate::store::Move::failed(k, reason.as_str()))
            .collect();
        let account = self.account;
        let changes =
            self.commit_counted(store, |store, snap| store.apply(account, &moves, snap))?;
        self.emit_changes(&changes);
        Ok(())
    }

    /// A one-to-one chat message (live, or unwrapped from a received carbon).
    fn on_chat(
        &mut self,
        store: &mut Store,
        from: Jid,
        type_: MessageType,
        p: Parsed,
        via: Via,
    ) -> Result<()> {
        let peer = from.to_bare().to_string();
        {
            let mut changes = Vec::new();
            if let Some(id) = &p.receipt_for {
                changes.extend(store.confirm(self.account, &peer, id, State::Delivered, None)?);
            }
            if let Some(id) = &p.displayed {
                changes.extend(store.confirm(self.account, &peer, id, State::Displayed, None)?);
            }
            self.emit_changes(&changes);
        }
        let chat_like = matches!(type_, MessageType::Chat | MessageType::Normal);
        let (Some(body), true) = (p.body.clone(), chat_like) else {
            return self.count_inbound();
        };
        let msg = InboundMessage {
            direction: Direction::In,
            kind: "chat",
            from_nick: None,
            receipt_to: (via == Via::Live && p.wants_receipt && p.id.is_some())
                .then(|| from.to_string()),
            id: p.id,
            origin_id: p.origin_id,
            stanza_id: p.stanza_id,
            peer,
            body,
            server_ts: p.delay_ms,
        };
        self.commit_message(store, &msg)
    }

    /// Stores a message learnt from the network with the inbound count, and announces it.
    pub(super) fn commit_message(&mut self, store: &mut Store, msg: &InboundMessage) -> Result<()> {
        let account = self.account;
        let change =
            self.commit_counted(store, |store, snap| store.store_inbound(account, msg, snap))?;
        match change {
            Some(c) => self.emit_received(&c, msg),
            None => tracing::debug!(peer = msg.peer, id = ?msg.id, "duplicate message dropped"),
        }
        Ok(())
    }

    pub(super) fn emit_received(&mut self, c: &StateChange, msg: &InboundMessage) {
        let groupchat = msg.kind == "groupchat";
        self.emit(Event::Received(ReceivedEvent {
            event: "message:received",
            id: c.id.clone(),
            from: c.peer.clone(),
            body: msg.body.clone(),
            direction: msg.direction,
            room: groupchat.then(|| c.peer.clone()),
            nick: msg.from_nick.clone(),
        }));
    }

    /// XEP-0280: accepted only when the OUTER from is our own bare JID (CVE-2017-5589 and kin).
    fn on_carbon(&mut self, store: &mut Store, from: Option<Jid>, p: Parsed) -> Result<()> {
        let own = self.own.clone();
        if from.as_ref() != Some(&Jid::from(own.clone())) {
            tracing::warn!(?from, "forged carbon dropped");
            self.emit(Event::error(
                ErrorKind::Security,
                format!(
                    "dropped a carbon copy from {} (only our own account may send carbons)",
                    from.map(|j| j.to_string())
                        .unwrap_or_else(|| "nobody".into())
                ),
            ));
            return self.count_inbound();
        }
        if let Some(inner) = p.carbon_received {
            let (Some(sender), type_) = (inner.from.clone(), inner.type_.clone()) else {
                return self.count_inbound();
            };
            let parsed = parse(inner, &own);
            return self.on_chat(store, sender, type_, parsed, Via::Carbon);
        }
        let inner = p.carbon_sent.expect("carbon_sent or carbon_received");
        let (Some(to), MessageType::Chat | MessageType::Normal) =
            (inner.to.clone(), inner.type_.clone())
        else {
            return self.count_inbound();
        };
        let parsed = parse(inner, &own);
        let Some(body) = parsed.body else {
            return self.count_inbound();
        };
        let msg = InboundMessage {
            direction: Direction::Out,
            kind: "chat",
            from_nick: None,
            receipt_to: None,
            id: parsed.id,
            origin_id: parsed.origin_id,
            stanza_id: parsed.stanza_id,
            peer: to.to_bare().to_string(),
            body,
            server_ts: parsed.delay_ms,
        };
        self.commit_message(store, &msg)
    }

    /// XEP-0045 group chat: our own echo becomes `reflected` (never a second row); others' messages
    /// are stored once.
    fn on_groupchat(&mut self, store: &mut Store, m: Message) -> Result<()> {
        let Some(Ok(from)) = m.from.clone().map(Jid::try_into_full) else {
            return self.count_inbound();
        };
        let room = from.to_bare();
        let nick = from.resource().to_string();
        let Some(our_nick) = store.room_nick(self.account, room.as_str())? else {
            tracing::debug!(%room, "group chat from a room we are not in; ignored");
            return self.count_inbound();
        };
        let p = parse(m, &room);
        let Some(body) = p.body else {
            return self.count_inbound();
        };
        let ours = nick == our_nick;
        if ours {
            if let Some(key) = p.origin_id.as_ref().or(p.id.as_ref()) {
                let mine = store.has_outgoing(self.account, room.as_str(), key)?;
                if mine {
                    let account = self.account;
                    let change = self.commit_counted(store, |store, snap| {
                        store.reflect(account, room.as_str(), key, p.stanza_id.as_deref(), snap)
                    })?;
                    self.emit_changes(change.as_slice());
                    return Ok(());
                }
                // Ours from another device (or the room's history): stored below, deduplicated.
            }
        }
        let direction = if ours { Direction::Out } else { Direction::In };
        let msg = room_message(
            &room,
            direction,
            Some(nick),
            p.id,
            p.origin_id,
            p.stanza_id,
            body,
            p.delay_ms,
        );
        self.commit_message(store, &msg)
    }

    pub(super) fn on_presence(&mut self, store: &mut Store, p: Presence) -> Result<()> {
        let Some(from) = p.from.clone() else {
            return self.count_inbound();
        };
        let bare = from.to_bare();
        match p.type_ {
            presence::Type::Subscribe if bare != self.own => {
                // Someone we asked ourselves (or already follow) asks back: that is the mutual
                // subscription the user wanted, so accept without asking again.
                let wanted = store
                    .contact(self.account, bare.as_str())?
                    .is_some_and(|c| c.ask || c.subscription == "to" || c.subscription == "both");
                if wanted {
                    store.enqueue_control(
                        self.account,
                        crate::store::ControlKind::Presence,
                        bare.as_str(),
                        None,
                        Some("subscribed"),
                    )?;
                } else {
                    let new = store.add_subscription_request(self.account, bare.as_str())?;
                    if new {
                        self.emit(Event::Social(SocialEvent::SubscriptionRequest {
                            from: bare.to_string(),
                        }));
                    }
                }
            }
            presence::Type::None | presence::Type::Unavailable => {
                let available = p.type_ == presence::Type::None;
                let muc = p
                    .payloads
                    .iter()
                    .find(|e| e.is("x", ns::MUC_USER))
                    .and_then(|e| MucUser::try_from(e.clone()).ok());
                if let Some(muc) = muc {
                    if muc.status.contains(&Status::RoomHasBeenCreated) {
                        // We created the room: accept the default configuration (an "instant
                        // room", XEP-0045 10.1.2) so that it unlocks for others.
                        let form = DataForm::new(
                            DataFormType::Submit,
                            "http://jabber.org/protocol/muc#roomconfig",
                            vec![],
                        );
                        let query = Element::builder("query", MUC_OWNER)
                            .append(Element::from(form))
                            .build();
                        let iq = Iq::Set {
                            from: None,
                            to: Some(Jid::from(bare.clone())),
                            id: format!("room-config-{}", uuid::Uuid::new_v4().simple()),
                            payload: query,
                        };
                        self.write_untracked(Stanza::Iq(iq));
                    }
                    if muc.status.contains(&Status::SelfPresence) && available {
                        let nick = from.resource().map(|r| r.to_string()).unwrap_or_default();
                        store.room_joined(self.account, bare.as_str())?;
                        self.emit(Event::Social(SocialEvent::RoomJoined {
                            room: bare.to_string(),
                            nick,
                        }));
                    }
                } else if bare != self.own {
                    store.set_presence(
                        self.account,
                        bare.as_str(),
                        if available {
                            "available"
                        } else {
                            "unavailable"
                        },
                    )?;
                    self.emit(Event::Social(SocialEvent::Presence {
                        from: from.to_string(),
                        available,
                    }));
                }
            }
            presence::Type::Error => {
                let reason = p
                    .payloads
                    .iter()
                    .find(|e| e.is("error", ns::DEFAULT_NS))
                    .and_then(|e| StanzaError::try_from(e.clone()).ok())
                    .map(|e| describe_error(&e))
                    .unwrap_or_default();
                self.emit(Event::error(
                    ErrorKind::Presence,
                    format!("presence error from {from}: {reason}"),
                ));
                // A room refused our join: what waits for it cannot be sent; the user decides.
                let room = bare.as_str();
                if store.room_nick(self.account, room)?.is_some() {
                    let why = format!("the room refused to let us in: {reason}");
                    let account = self.account;
                    let changes = self.commit_counted(store, |store, snap| {
                        store.room_refused(account, room, &why, snap)
                    })?;
                    self.emit_changes(&changes);
                    return Ok(());
                }
            }
            _ => {}
        }
        self.count_inbound()
    }

    /// An iq, counted once it is handled (its answer, if any, is in the same call).
    pub(super) fn on_iq(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        self.handle_iq(store, iq)?;
        self.count_inbound()
    }

    fn handle_iq(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        match iq {
            Iq::Result { ref id, .. } | Iq::Error { ref id, .. } => match self.take_pending(id) {
                Some(PendingIq::Bind) => self.on_bound(store, iq),
                Some(PendingIq::Ping) => Ok(()),
                Some(PendingIq::Roster) => self.on_roster_answer(store, iq),
                Some(PendingIq::Carbons) => {
                    if let Iq::Error { error, .. } = iq {
                        tracing::warn!("the server refused carbons: {}", describe_error(&error));
                    }
                    Ok(())
                }
                Some(PendingIq::Mam) => self.on_mam_answer(store, iq),
                None => Ok(()),
            },
            Iq::Set {
                from, id, payload, ..
            } if payload.is("query", ns::ROSTER) => {
                // A roster push is only legitimate from our own account (or the server for it).
                let legit = from.as_ref().is_none_or(|f| f.to_bare() == self.own);
                let parsed = legit.then(|| Roster::try_from(payload));
                let reply = if let Some(Ok(roster)) = parsed {
                    self.apply_roster(store, roster, false)?;
                    Iq::Result {
                        from: None,
                        to: from,
                        id,
                        payload: None,
                    }
                } else if let Some(Err(e)) = parsed {
                    self.emit(Event::error(
                        ErrorKind::Protocol,
                        format!("malformed roster push: {e}"),
                    ));
                    Iq::Error {
                        from: None,
                        to: from,
                        id,
                        payload: None,
                        error: StanzaError::new(
                            ErrorType::Modify,
                            DefinedCondition::BadRequest,
                            "en",
                            "malformed roster push",
                        ),
                    }
                } else {
                    self.emit(Event::error(
                        ErrorKind::Security,
                        format!("dropped a roster push from {from:?}"),
                    ));
                    Iq::Error {
                        from: None,
                        to: from,
                        id,
                        payload: None,
                        error: StanzaError::new(
                            ErrorType::Cancel,
                            DefinedCondition::Forbidden,
                            "en",
                            "roster pushes come from the account itself",
                        ),
                    }
                };
                self.write_untracked(Stanza::Iq(reply));
                Ok(())
            }
            Iq::Get {
                from, id, payload, ..
            } if payload.is("ping", ns::PING) => {
                let reply = Iq::Result {
                    from: None,
                    to: from,
                    id,
                    payload: None,
                };
                self.write_untracked(Stanza::Iq(reply));
                Ok(())
            }
            Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => {
                let reply = Iq::Error {
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
                };
                self.write_untracked(Stanza::Iq(reply));
                Ok(())
            }
        }
    }

    fn on_roster_answer(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } => match Roster::try_from(payload) {
                Ok(roster) => self.apply_roster(store, roster, true),
                Err(e) => {
                    self.emit(Event::error(
                        ErrorKind::Protocol,
                        format!("bad roster: {e}"),
                    ));
                    Ok(())
                }
            },
            // An empty result: our stored version is current.
            Iq::Result { payload: None, .. } => Ok(()),
            Iq::Error { error, .. } => {
                self.emit(Event::error(
                    ErrorKind::Roster,
                    format!("roster fetch failed: {}", describe_error(&error)),
                ));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn apply_roster(&mut self, store: &mut Store, roster: Roster, replace: bool) -> Result<()> {
        let items: Vec<Contact> = roster
            .items
            .iter()
            .map(|i| Contact {
                jid: i.jid.to_string(),
                name: i.name.clone(),
                subscription: subscription_name(&i.subscription).to_owned(),
                ask: i.ask == Ask::Subscribe,
                presence: "unavailable".into(),
            })
            .collect();
        store.update_roster(self.account, &items, roster.ver.as_deref(), replace)?;
        for c in items {
            self.emit(Event::Social(SocialEvent::Roster {
                jid: c.jid,
                subscription: c.subscription,
            }));
        }
        Ok(())
    }
}

/// A group-chat message row.
#[allow(clippy::too_many_arguments)]
pub(super) fn room_message(
    room: &BareJid,
    direction: Direction,
    nick: Option<String>,
    id: Option<String>,
    origin_id: Option<String>,
    stanza_id: Option<String>,
    body: String,
    server_ts: Option<i64>,
) -> InboundMessage {
    InboundMessage {
        direction,
        kind: "groupchat",
        from_nick: nick,
        receipt_to: None,
        id,
        origin_id,
        stanza_id,
        peer: room.to_string(),
        body,
        server_ts,
    }
}

fn subscription_name(s: &tokio_xmpp::parsers::roster::Subscription) -> &'static str {
    use tokio_xmpp::parsers::roster::Subscription;
    match s {
        Subscription::None => "none",
        Subscription::From => "from",
        Subscription::To => "to",
        Subscription::Both => "both",
        Subscription::Remove => "remove",
    }
}
