//! XEP-0410 MUC self-ping: a room can drop us while our stream lives (the room's server lost
//! us during a network loss, restarted, or kicked us without a word), and nothing tells us.
//! So each joined room is asked, by pinging our own occupant JID, after a resumption, after the
//! network changed or the app came back, and with a keepalive probe once
//! [`SELF_PING_EVERY`] has passed (never a wake-up of its own). A room that says we are not in
//! it is joined again, and once it confirms, what was posted meanwhile is caught up from its
//! archive (Conversations#2197: a member silently dropped while others kept posting).

use std::time::Duration;

use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::{iq::Iq, ping::Ping, stanza_error::DefinedCondition};

use super::{new_id, Engine, PendingIq};
use crate::error::Result;
use crate::events::{ErrorKind, Event, SocialEvent};
use crate::store::Store;

/// How often an idle session asks its rooms (piggybacked on a keepalive probe).
pub const SELF_PING_EVERY: Duration = Duration::from_secs(15 * 60);

/// A self-ping on its way: the room, and the occupant JID asked (only it may answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SelfPing {
    pub room: String,
    pub occupant: Jid,
}

impl Engine {
    /// Whether the rooms are due to be asked with the next keepalive probe.
    pub(super) fn self_ping_due(&self) -> bool {
        self.link()
            .self_pinged
            .is_none_or(|t| self.now >= t + SELF_PING_EVERY)
    }

    /// Pings our own occupant JID in every room this session is in (one at a time per room).
    pub(super) fn self_ping(&mut self, store: &mut Store) -> Result<()> {
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        self.link_mut().self_pinged = Some(self.now);
        for room in store.joined_rooms(self.account)? {
            if self.asking(|what| matches!(what, PendingIq::SelfPing(p) if p.room == room.jid)) {
                continue;
            }
            let occupant: Jid = match format!("{}/{}", room.jid, room.nick).parse() {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(room = room.jid, "cannot name our occupant JID: {e}");
                    continue;
                }
            };
            tracing::debug!(%occupant, "self-ping");
            let iq = Iq::from_get(new_id("self-ping"), Ping).with_to(occupant.clone());
            self.send_iq(
                iq,
                PendingIq::SelfPing(SelfPing {
                    room: room.jid,
                    occupant,
                }),
            );
        }
        Ok(())
    }

    /// A room answered a self-ping (XEP-0410 §3.2): a result, or an error saying we are in it
    /// but the ping did not reach a client that answers (`service-unavailable`,
    /// `feature-not-implemented`, `item-not-found`), leaves things as they are; the room's server
    /// unreachable is asked again later; any other error means the room dropped us: rejoin. An
    /// answer from anyone but the occupant asked is a forgery and changes nothing.
    pub(super) fn on_self_ping(
        &mut self,
        store: &mut Store,
        asked: SelfPing,
        iq: Iq,
    ) -> Result<()> {
        let from = match &iq {
            Iq::Result { from, .. } | Iq::Error { from, .. } => from.clone(),
            _ => None,
        };
        // The room answers for the occupant (its bare JID) or the occupant itself.
        let genuine = from
            .as_ref()
            .is_some_and(|f| *f == asked.occupant || f.to_string() == asked.room);
        if !genuine {
            self.emit(Event::error(
                ErrorKind::Security,
                format!(
                    "a self-ping for {} answered by {} (only the room may answer it)",
                    asked.room,
                    from.map(|f| f.to_string())
                        .unwrap_or_else(|| "nobody".into())
                ),
            ));
            return Ok(());
        }
        let Iq::Error { error, .. } = iq else {
            return Ok(());
        };
        match error.defined_condition {
            DefinedCondition::ServiceUnavailable
            | DefinedCondition::FeatureNotImplemented
            | DefinedCondition::ItemNotFound => Ok(()),
            DefinedCondition::RemoteServerNotFound | DefinedCondition::RemoteServerTimeout => {
                tracing::info!(
                    room = asked.room,
                    "the room's server is unreachable; asked again later"
                );
                Ok(())
            }
            _ => {
                let reason = super::describe_error(&error);
                if store.room_lost(self.account, &asked.room)? {
                    tracing::warn!(room = asked.room, reason, "the room dropped us; rejoining");
                    self.emit(Event::Social(SocialEvent::RoomRejoining {
                        room: asked.room,
                        reason,
                    }));
                }
                Ok(())
            }
        }
    }
}
