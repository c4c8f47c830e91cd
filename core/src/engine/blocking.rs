//! XEP-0191 blocking, the session's part: the server's list fetched on every new session, the
//! user's wishes (kept in the store, `store/blocking.rs`) told until confirmed, the pushes of our
//! other devices applied, and what a blocked sender sends dropped before it is stored.

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    blocking::{Block, BlocklistRequest, BlocklistResult, Unblock},
    iq::Iq,
    ns,
    stanza::Stanza,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::{new_id, Engine, PendingIq};
use crate::error::{Error, Result};
use crate::events::{ErrorKind, Event, SocialEvent};
use crate::store::{BlockWant, Store};

/// A block or unblock on its way: what it asked, so its answer settles exactly that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BlockAsked {
    pub want: BlockWant,
    pub jids: Vec<String>,
}

/// Whether an iq payload is a blocklist push.
pub(super) fn is_push(payload: &Element) -> bool {
    payload.is("block", ns::BLOCKING) || payload.is("unblock", ns::BLOCKING)
}

impl Engine {
    /// A new session: what the server refused is told again, the server's list is fetched, and
    /// the wishes not yet told go out (before our presence, so before offline messages).
    pub(super) fn blocking_start(&mut self, store: &mut Store) -> Result<()> {
        store.block_retry(self.account)?;
        let iq = Iq::from_get(new_id("blocklist"), BlocklistRequest);
        self.send_iq(iq, PendingIq::Blocklist);
        self.blocking_sync(store)
    }

    /// Tells the server the user's wishes not told yet: one `<block/>` or one `<unblock/>` at a
    /// time, the next after its answer. An `<unblock/>` always names its entries (an empty one
    /// would unblock everyone).
    pub(super) fn blocking_sync(&mut self, store: &mut Store) -> Result<()> {
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        if self.asking(|what| matches!(what, PendingIq::Block(_))) {
            return Ok(());
        }
        let (block, unblock) = store.block_pending(self.account)?;
        let (want, jids) = if !block.is_empty() {
            (BlockWant::Block, block)
        } else if !unblock.is_empty() {
            (BlockWant::Unblock, unblock)
        } else {
            return Ok(());
        };
        let mut items = Vec::with_capacity(jids.len());
        let mut bad = Vec::new();
        for j in &jids {
            match j.parse::<Jid>() {
                Ok(jid) => items.push(jid),
                Err(e) => bad.push((j.clone(), e.to_string())),
            }
        }
        // Refused on the way in (Client::block); a row from elsewhere says so.
        for (jid, why) in bad {
            let why = format!("{jid:?} is not a JID: {why}");
            store.block_answered(
                self.account,
                want,
                std::slice::from_ref(&jid),
                Err(why.clone()),
            )?;
            self.emit(Event::error(ErrorKind::Usage, why));
        }
        if items.is_empty() {
            return Ok(());
        }
        let told: Vec<String> = items.iter().map(|j| j.to_string()).collect();
        let iq = match want {
            BlockWant::Block => Iq::from_set(new_id("block"), Block { items }),
            BlockWant::Unblock => Iq::from_set(new_id("unblock"), Unblock { items }),
        };
        self.send_iq(iq, PendingIq::Block(BlockAsked { want, jids: told }));
        Ok(())
    }

    /// The server's list: merged into the store (its entries confirmed, confirmed entries it
    /// lacks removed, the user's untold wishes kept), each change announced.
    pub(super) fn on_blocklist(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        let items = match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } => match BlocklistResult::try_from(payload) {
                Ok(list) => list.items,
                Err(e) => {
                    self.emit(Event::error(
                        ErrorKind::Protocol,
                        format!("a malformed blocklist from the server: {e}"),
                    ));
                    return Ok(());
                }
            },
            Iq::Result { payload: None, .. } => Vec::new(),
            Iq::Error { error, .. } => {
                // Without the server's support, blocking stays local (and each wish is
                // refused with the server's reason when told).
                tracing::warn!(
                    "the server has no blocklist: {}",
                    super::describe_error(&error)
                );
                return Ok(());
            }
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        let jids: Vec<String> = items.iter().map(|j| j.to_string()).collect();
        let (blocked, unblocked) = store.blocklist_synced(self.account, &jids)?;
        self.announce_blocking(&blocked, "blocked", None);
        self.announce_blocking(&unblocked, "unblocked", None);
        Ok(())
    }

    /// The server answered a block or unblock: recorded, announced, and the next wish told.
    pub(super) fn on_block_answer(
        &mut self,
        store: &mut Store,
        asked: BlockAsked,
        iq: Iq,
    ) -> Result<()> {
        let outcome = match &iq {
            Iq::Result { .. } => Ok(()),
            Iq::Error { error, .. } => Err(super::describe_error(error)),
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        let settled =
            store.block_answered(self.account, asked.want, &asked.jids, outcome.clone())?;
        let state = match (asked.want, &outcome) {
            (BlockWant::Block, Ok(())) => "blocked",
            (BlockWant::Unblock, Ok(())) => "unblocked",
            (_, Err(_)) => "refused",
        };
        if let Err(why) = &outcome {
            tracing::warn!(jids = ?asked.jids, "the server refused a blocklist change: {why}");
        }
        self.announce_blocking(&settled, state, outcome.err());
        self.blocking_sync(store)
    }

    /// The server did not answer a block or unblock: reported; told again on the next session.
    pub(super) fn on_block_timeout(&mut self, asked: BlockAsked) {
        self.emit(Event::error(
            ErrorKind::Protocol,
            format!(
                "the server did not answer the blocklist change for {} (told again on the next session)",
                asked.jids.join(", ")
            ),
        ));
    }

    /// A blocklist push: applied and answered when it comes from our own account (another of
    /// our devices changed the list), refused as a forgery otherwise.
    pub(super) fn on_blocklist_push(
        &mut self,
        store: &mut Store,
        from: Option<Jid>,
        id: String,
        payload: Element,
    ) -> Result<()> {
        let legit = from.as_ref().is_none_or(|f| f.to_bare() == self.own);
        let error = |kind, condition, text: &str| Iq::Error {
            from: None,
            to: from.clone(),
            id: id.clone(),
            payload: None,
            error: StanzaError::new(kind, condition, "en", text),
        };
        let reply = if !legit {
            self.emit(Event::error(
                ErrorKind::Security,
                format!(
                    "dropped a blocklist push from {} (only our own account may change the blocklist)",
                    from.as_ref().map(|j| j.to_string()).unwrap_or_default()
                ),
            ));
            error(
                ErrorType::Cancel,
                DefinedCondition::Forbidden,
                "blocklist pushes come from the account itself",
            )
        } else {
            let parsed = if payload.is("block", ns::BLOCKING) {
                Block::try_from(payload).map(|b| (true, b.items))
            } else {
                Unblock::try_from(payload).map(|u| (false, u.items))
            };
            match parsed {
                Ok((block, items)) => {
                    let jids: Vec<String> = items.iter().map(|j| j.to_string()).collect();
                    let changed = store.blocklist_pushed(self.account, block, &jids)?;
                    let state = if block { "blocked" } else { "unblocked" };
                    self.announce_blocking(&changed, state, None);
                    Iq::Result {
                        from: None,
                        to: from.clone(),
                        id: id.clone(),
                        payload: None,
                    }
                }
                Err(e) => {
                    self.emit(Event::error(
                        ErrorKind::Protocol,
                        format!("malformed blocklist push: {e}"),
                    ));
                    error(
                        ErrorType::Modify,
                        DefinedCondition::BadRequest,
                        "malformed blocklist push",
                    )
                }
            }
        };
        self.write_untracked(Stanza::Iq(reply));
        Ok(())
    }

    /// Whether what `from` sends is to be dropped: the user blocked it (confirmed by the server
    /// or not yet). The caller counts the stanza as handled and stores nothing of it.
    pub(super) fn blocked(&self, store: &Store, from: &Jid) -> Result<bool> {
        let blocked = store.is_blocked(self.account, from)?;
        if blocked {
            tracing::debug!(%from, "dropped a stanza from a blocked sender");
        }
        Ok(blocked)
    }

    fn announce_blocking(&mut self, jids: &[String], state: &'static str, error: Option<String>) {
        for jid in jids {
            self.emit(Event::Social(SocialEvent::Blocking {
                jid: jid.clone(),
                state,
                error: error.clone(),
            }));
        }
    }
}
