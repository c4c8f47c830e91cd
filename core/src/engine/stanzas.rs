//! The stanzas Tether writes for its outbox rows: a message (id and origin-id kept across
//! resends, a receipt request and a markable flag for one-to-one chat) and the control rows
//! (receipts, displayed markers, presence answers, room joins and leaves).

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    message::{Id, Lang, Message, MessageType},
    muc::{muc::History, Muc},
    presence::{self, Presence},
    receipts,
    stanza::Stanza,
    stanza_id::OriginId,
};

use super::xeps;
use crate::error::{Error, Result};
use crate::store::{Action, ControlItem, ControlKind, OutboxItem};
use tokio_xmpp::parsers::{
    chatstates::ChatState,
    message_correct::Replace,
    reactions::{Reaction, Reactions},
};

/// The stanza for an outgoing message row: id and origin-id (kept across resends), a receipt
/// request and a markable flag for one-to-one chat.
pub fn outgoing_message(item: &OutboxItem) -> Result<Stanza> {
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
    if let Some(room) = &item.invite {
        m.payloads.push(
            xeps::DirectInvite {
                jid: room.clone(),
                reason: item.payload.clone(),
                password: None,
            }
            .into(),
        );
    }
    m.payloads.push(
        OriginId {
            id: item.origin_id.clone().unwrap_or_else(|| item.id.clone()),
        }
        .into(),
    );
    let target = || {
        item.target
            .clone()
            .ok_or_else(|| Error::Usage(format!("message {} names no target", item.id)))
    };
    // What a receiver without the feature sees instead (XEP-0428).
    let mut fallback_for = None;
    match item.action {
        None => {
            let mut body = item.body.clone();
            if let Some(reply_id) = &item.target {
                let quote = item.payload.clone().unwrap_or_default();
                let end = quote.chars().count();
                body = format!("{quote}{body}");
                m.payloads.push(
                    xeps::Reply {
                        to: item.reply_to_jid.clone(),
                        id: reply_id.clone(),
                    }
                    .into(),
                );
                if end > 0 {
                    m.payloads.push(
                        xeps::Fallback {
                            for_: xeps::REPLY.to_owned(),
                            bodies: vec![xeps::FallbackBody {
                                start: Some(0),
                                end: Some(end),
                            }],
                        }
                        .into(),
                    );
                }
            }
            m.bodies.insert(Lang::new(), body);
        }
        Some(Action::Correct) => {
            m.bodies.insert(Lang::new(), item.body.clone());
            m.payloads.push(Replace { id: Id(target()?) }.into());
        }
        Some(Action::Retract) => {
            m.bodies.insert(
                Lang::new(),
                "This person attempted to retract a previous message, but it's unsupported by your client."
                    .to_owned(),
            );
            m.payloads.push(xeps::Retract { id: target()? }.into());
            fallback_for = Some(xeps::RETRACT);
            m.payloads.push(xeps::StoreHint.into());
        }
        Some(Action::React) => {
            let emoji: Vec<String> = item
                .payload
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| Error::Internal(format!("stored reactions unreadable: {e}")))?
                .unwrap_or_default();
            m.payloads.push(
                Reactions {
                    id: target()?,
                    reactions: emoji.into_iter().map(|emoji| Reaction { emoji }).collect(),
                }
                .into(),
            );
            m.payloads.push(xeps::StoreHint.into());
        }
    }
    if let Some(f) = &item.file {
        // XEP-0066 for every client, XEP-0446 for those that check what they fetch.
        m.payloads.push(
            tokio_xmpp::parsers::oob::Oob {
                url: f.url.clone(),
                desc: None,
            }
            .into(),
        );
        m.payloads.push(xeps::file_metadata(&xeps::FileMeta {
            name: Some(f.name.clone()),
            size: Some(f.size),
            media_type: Some(f.media_type.clone()),
            sha256: Some(f.sha256.clone()),
        }));
    }
    if let Some(feature) = fallback_for {
        m.payloads.push(
            xeps::Fallback {
                for_: feature.to_owned(),
                bodies: vec![],
            }
            .into(),
        );
    }
    if !groupchat {
        m.payloads.push(ChatState::Active.into());
        // A receipt answers a message the user reads: text, a reply, a correction.
        if matches!(item.action, None | Some(Action::Correct)) {
            m.payloads.push(receipts::Request.into());
        }
        if item.action.is_none() {
            m.payloads
                .push(tokio_xmpp::parsers::displayed_markers::Markable.into());
        }
    }
    Ok(Stanza::Message(m))
}

/// A standalone chat state for `peer` (never stored or archived: `<no-store/>`).
pub(super) fn chat_state(peer: &str, state: crate::chat_state::ChatState) -> Result<Stanza> {
    use crate::chat_state::ChatState as S;
    let to: BareJid = peer
        .parse()
        .map_err(|e| Error::Usage(format!("bad chat-state recipient {peer:?}: {e}")))?;
    let mut m = Message::chat(Some(Jid::from(to)));
    m.id = Some(Id(format!("cs-{}", uuid::Uuid::new_v4().simple())));
    m.payloads.push(
        match state {
            S::Active => ChatState::Active,
            S::Composing => ChatState::Composing,
            S::Paused => ChatState::Paused,
            S::Inactive => ChatState::Inactive,
            S::Gone => ChatState::Gone,
        }
        .into(),
    );
    m.payloads.push(xeps::NoStore.into());
    Ok(Stanza::Message(m))
}

/// The stanza for a control row.
pub(super) fn control_stanza(item: &ControlItem) -> Result<Stanza> {
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
