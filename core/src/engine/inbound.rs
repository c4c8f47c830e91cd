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

use super::{describe_error, xeps, Engine, PendingIq};
use crate::store::Action;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType};
use tokio_xmpp::parsers::{chatstates::ChatState, message_correct::Replace, reactions::Reactions};

/// XEP-0045 owner namespace (not in xmpp-parsers 0.23).
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
use crate::delivery::{Direction, State};
use crate::error::Result;
use crate::events::{ErrorKind, Event, ReceivedEvent, SocialEvent, UpdatedEvent};
use crate::store::{Contact, InboundMessage, Refusal, StateChange, Store, Stored};

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
    /// XEP-0308: the id of the message this one corrects.
    pub replace: Option<String>,
    /// XEP-0424: the id of the message this one retracts.
    pub retract: Option<String>,
    /// XEP-0444: the id reacted to and the emoji, or why they are unusable.
    pub reactions: Option<std::result::Result<(String, Vec<String>), String>>,
    /// XEP-0461: the id of the message this one answers.
    pub reply: Option<String>,
    /// XEP-0428: which parts of the body are fallback.
    pub fallbacks: Vec<xeps::Fallback>,
    /// XEP-0085: the sender's chat state.
    pub chat_state: Option<ChatState>,
    /// XEP-0066: the URL of a file.
    pub oob_url: Option<String>,
    /// XEP-0446: what the file is.
    pub file_meta: Option<xeps::FileMeta>,
    /// XEP-0249: a direct invitation to a room (its bare JID, checked), with the inviter's
    /// reason; `Err` for one naming something that is not a room's bare JID.
    pub invite: Option<std::result::Result<(String, Option<String>), String>>,
}

/// What a message stores: its text and what it does to another message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    pub body: String,
    pub action: Option<Action>,
    pub target: Option<String>,
    pub reactions: Vec<String>,
    pub file: Option<crate::store::InboundFile>,
    /// A direct invitation's room (XEP-0249).
    pub invite: Option<String>,
}

impl Content {
    fn text(body: String) -> Content {
        Content {
            body,
            action: None,
            target: None,
            reactions: Vec::new(),
            file: None,
            invite: None,
        }
    }
}

/// The file a message links to: XEP-0066's URL with XEP-0446's metadata; the name made safe
/// (from the metadata, else the URL's last segment).
fn inbound_file(p: &Parsed) -> Option<crate::store::InboundFile> {
    let url = p.oob_url.clone()?;
    let meta = p.file_meta.clone().unwrap_or_default();
    let from_url = url
        .rsplit('/')
        .next()
        .map(|s| s.split(['?', '#']).next().unwrap_or_default().to_owned());
    let name = crate::store::blobs::safe_name(&meta.name.or(from_url).unwrap_or_default());
    Some(crate::store::InboundFile {
        url,
        name,
        size: meta.size,
        media_type: meta.media_type,
        sha256: meta.sha256,
        refused: None,
    })
}

/// What `p` stores: `None` when it carries neither text nor an action (a receipt, a chat state),
/// `Err` when its action is unusable (reported, nothing stored). A retraction wins over a
/// reaction, a reaction over a correction, a correction over a reply; fallback text for a
/// feature Tether understands is cut out of the body (a reply's quote is shown from our own copy
/// of the message it answers, never from what the sender put in).
pub(crate) fn content(p: &Parsed) -> Option<std::result::Result<Content, String>> {
    if let Some(target) = &p.retract {
        return Some(Ok(Content {
            action: Some(Action::Retract),
            target: Some(target.clone()),
            ..Content::text(String::new())
        }));
    }
    if let Some(r) = &p.reactions {
        return Some(r.clone().and_then(|(target, emoji)| {
            let emoji = crate::store::check_reactions(&emoji)?;
            Ok(Content {
                action: Some(Action::React),
                target: Some(target),
                reactions: emoji,
                ..Content::text(String::new())
            })
        }));
    }
    // A direct invitation (XEP-0249): the room to join, and the inviter's words (or the
    // fallback body) as its text.
    if let Some(invite) = &p.invite {
        return Some(invite.clone().map(|(room, reason)| {
            Content {
                invite: Some(room.clone()),
                ..Content::text(
                    reason
                        .or_else(|| p.body.clone())
                        .filter(|t| !t.trim().is_empty())
                        .unwrap_or_else(|| format!("an invitation to {room}")),
                )
            }
        }));
    }
    // A file link without a body still shows as the link (XEP-0066).
    let body = p.body.as_deref().or(p.oob_url.as_deref())?;
    let body = xeps::strip_fallback(body, &p.fallbacks, xeps::REPLY);
    if let Some(target) = &p.replace {
        if body.trim().is_empty() {
            return Some(Err(format!("a correction of {target} without text")));
        }
        return Some(Ok(Content {
            action: Some(Action::Correct),
            target: Some(target.clone()),
            ..Content::text(body)
        }));
    }
    Some(Ok(Content {
        target: p.reply.clone(),
        file: inbound_file(p),
        ..Content::text(body)
    }))
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
        if el.is("x", xeps::DIRECT_INVITE) {
            p.invite = Some(
                xeps::DirectInvite::try_from(el)
                    .map_err(|e| format!("a malformed invitation: {e}"))
                    .and_then(|i| {
                        let room: tokio_xmpp::jid::BareJid = i.jid.parse().map_err(|e| {
                            format!("an invitation to {:?}, not a room: {e}", i.jid)
                        })?;
                        if room.node().is_none() {
                            return Err(format!("an invitation to {room}, not a room"));
                        }
                        Ok((room.to_string(), i.reason))
                    }),
            );
        } else if el.is("origin-id", ns::SID) {
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
        } else if el.is("replace", ns::MESSAGE_CORRECT) {
            p.replace = Replace::try_from(el).ok().map(|r| r.id.0);
        } else if el.is("retract", xeps::RETRACT) {
            p.retract = xeps::Retract::try_from(el).ok().map(|r| r.id);
        } else if el.is("reactions", ns::REACTIONS) {
            p.reactions = Some(
                Reactions::try_from(el)
                    .map(|r| (r.id, r.reactions.into_iter().map(|r| r.emoji).collect()))
                    .map_err(|e| format!("malformed reactions: {e}")),
            );
        } else if el.is("reply", xeps::REPLY) {
            p.reply = xeps::Reply::try_from(el).ok().map(|r| r.id);
        } else if el.is("fallback", xeps::FALLBACK) {
            p.fallbacks.extend(xeps::Fallback::try_from(el).ok());
        } else if el.ns() == ns::CHATSTATES {
            p.chat_state = ChatState::try_from(el).ok();
        } else if el.is("x", ns::OOB) {
            p.oob_url = tokio_xmpp::parsers::oob::Oob::try_from(el)
                .ok()
                .map(|o| o.url.trim().to_owned());
        } else if el.is("file-metadata", xeps::FILE_METADATA) {
            p.file_meta = Some(xeps::parse_file_metadata(&el));
        }
    }
    p
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
        // A PEP notification (XEP-0163): our bookmarks changed on another device.
        if let Some(event) = m.payloads.iter().find(|p| p.is("event", ns::PUBSUB_EVENT)) {
            let event = event.clone();
            self.on_pubsub_event(store, from, event)?;
            return self.count_inbound();
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
        if self.blocked(store, &from)? {
            return self.count_inbound();
        }
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
        if let (Via::Live, true, Some(state)) = (via, chat_like, &p.chat_state) {
            self.on_chat_state(from.to_bare(), state.clone());
        }
        let Some(c) = chat_like.then(|| self.usable(&peer, &p)).flatten() else {
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
            body: c.body,
            server_ts: p.delay_ms,
            action: c.action,
            target: c.target,
            reactions: c.reactions,
            file: c.file,
            invite: c.invite,
        };
        self.commit_message(store, &msg)
    }

    /// What a message stores, or `None` (nothing to store, or an unusable action: reported).
    pub(super) fn usable(&mut self, peer: &str, p: &Parsed) -> Option<Content> {
        match content(p)? {
            Ok(mut c) => {
                if let Some(f) = c.file.as_mut() {
                    f.refused =
                        super::upload::check_download_url(&f.url, self.config.allow_http_files);
                    if let Some(why) = &f.refused {
                        self.emit(Event::error(
                            ErrorKind::Security,
                            format!("a file from {peer} will not be fetched: {why}"),
                        ));
                    }
                }
                Some(c)
            }
            Err(why) => {
                self.emit(Event::error(
                    ErrorKind::Protocol,
                    format!("ignored a message from {peer}: {why}"),
                ));
                None
            }
        }
    }

    /// Stores a message learnt from the network with the inbound count, and announces it.
    pub(super) fn commit_message(&mut self, store: &mut Store, msg: &InboundMessage) -> Result<()> {
        let account = self.account;
        let stored = self.commit_counted(store, |store, snap| {
            store.store_inbound_full(account, msg, snap)
        })?;
        self.announce_stored(&stored, msg);
        Ok(())
    }

    /// The events of a stored inbound message: received (a message of its own), updated (the
    /// messages it or those waiting for it changed), and what was refused. Returns whether a new
    /// row was stored.
    pub(super) fn announce_stored(&mut self, stored: &Stored, msg: &InboundMessage) -> bool {
        match &stored.change {
            Some(c) if msg.action.is_none() => self.emit_received(c, msg),
            Some(_) => {}
            None if stored.refused.is_empty() => {
                tracing::debug!(peer = msg.peer, id = ?msg.id, "duplicate message dropped")
            }
            None => {}
        }
        for u in &stored.updated {
            self.emit(Event::Updated(UpdatedEvent {
                event: "message:updated",
                id: u.id.clone(),
                peer: u.peer.clone(),
                action: u.action,
            }));
        }
        for r in &stored.refused {
            match r {
                Refusal::Forged(why) => {
                    tracing::warn!(why, "forged correction or retraction");
                    self.emit(Event::error(ErrorKind::Security, why.clone()))
                }
                Refusal::Invalid(why) => self.emit(Event::error(ErrorKind::Protocol, why.clone())),
            }
        }
        stored.change.is_some()
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
        let peer = to.to_bare().to_string();
        let Some(c) = self.usable(&peer, &parsed) else {
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
            peer,
            body: c.body,
            server_ts: parsed.delay_ms,
            action: c.action,
            target: c.target,
            reactions: c.reactions,
            file: c.file,
            invite: c.invite,
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
        let Some(c) = self.usable(room.as_str(), &p) else {
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
            c,
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
            // A blocked sender's request is not shown (the server drops it too, once told).
            presence::Type::Subscribe if bare != self.own && self.blocked(store, &from)? => {}
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
                    // Who is in the room (kept only for a room of ours), told to the front ends
                    // as the presence it is.
                    if let Some(nick) = from.resource() {
                        let present = available.then(|| {
                            let item = muc.items.first();
                            crate::store::Occupant {
                                nick: nick.to_string(),
                                jid: item
                                    .and_then(|i| i.jid.as_ref())
                                    .map(|j| j.to_bare().to_string()),
                                role: item.map_or("none".into(), |i| xml_text(&i.role)),
                                affiliation: item
                                    .map_or("none".into(), |i| xml_text(&i.affiliation)),
                            }
                        });
                        if store.set_occupant(
                            self.account,
                            bare.as_str(),
                            nick.as_str(),
                            present.as_ref(),
                        )? {
                            self.emit(Event::Social(SocialEvent::Presence {
                                from: from.to_string(),
                                available,
                            }));
                        }
                    }
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
                        let rejoined = store.room_joined(self.account, bare.as_str())?;
                        self.emit(Event::Social(SocialEvent::RoomJoined {
                            room: bare.to_string(),
                            nick,
                        }));
                        if rejoined {
                            // The room had dropped us: what was posted meanwhile is in its
                            // archive.
                            self.catch_up_room(store, bare.as_str())?;
                        }
                        // A room joined here is bookmarked now that it let us in.
                        self.bookmarks_sync(store)?;
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
                    let caps = p.payloads.iter().find(|e| e.is("c", ns::CAPS));
                    self.on_peer_presence(store, &from, available, caps)?;
                    if let Some(update) = p.payloads.iter().find(|e| e.is("x", ns::VCARD_UPDATE)) {
                        self.on_vcard_update(store, &bare, update)?;
                    }
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
                Some(PendingIq::DiscoItems) => self.on_disco_items(iq),
                Some(PendingIq::DiscoInfo(jid)) => self.on_disco_info(store, jid, iq),
                Some(PendingIq::Slot(key)) => self.on_slot(store, key, iq),
                Some(PendingIq::Push(asked)) => self.on_push_answer(store, asked, iq),
                Some(PendingIq::Caps(asked)) => self.on_caps_answer(store, asked, iq),
                Some(PendingIq::Blocklist) => self.on_blocklist(store, iq),
                Some(PendingIq::Block(asked)) => self.on_block_answer(store, asked, iq),
                Some(PendingIq::SelfPing(asked)) => self.on_self_ping(store, asked, iq),
                Some(PendingIq::Bookmarks) => self.on_bookmarks(store, iq),
                Some(PendingIq::Bookmark(room, want)) => {
                    self.on_bookmark_answer(store, room, want, iq)
                }
                Some(PendingIq::AccountInfo) => self.on_account_info(store, iq),
                Some(PendingIq::LegacyBookmarks) => self.on_legacy_bookmarks(store, iq),
                Some(PendingIq::LegacyWrite(told)) => self.on_legacy_write(store, told, iq),
                Some(PendingIq::Avatar(asked)) => self.on_avatar_data(store, asked, iq),
                Some(PendingIq::VCard(jid, sha1)) => self.on_vcard(store, jid, sha1, iq),
                Some(PendingIq::Publish(step)) => self.on_publish_answer(store, step, iq),
                None => Ok(()),
            },
            Iq::Set {
                from, id, payload, ..
            } if super::blocking::is_push(&payload) => {
                self.on_blocklist_push(store, from, id, payload)
            }
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
            } if payload.is("query", ns::DISCO_INFO) => {
                self.on_disco_query(from, id, payload);
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
                nick: None,
                avatar: None,
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
    c: Content,
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
        body: c.body,
        server_ts,
        action: c.action,
        target: c.target,
        reactions: c.reactions,
        file: c.file,
        invite: c.invite,
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

/// An attribute value's text as the XML has it (a role, an affiliation).
fn xml_text(v: &impl xso::AsXmlText) -> String {
    v.as_xml_text().map(|t| t.into_owned()).unwrap_or_default()
}
