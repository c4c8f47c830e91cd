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

use crate::error::{Error, Result};
use crate::store::{ControlItem, ControlKind, OutboxItem};

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
