//! XEP-0402 bookmarks, the session's part: rooms that follow the user. On every new session the
//! server's list is fetched and applied (autojoin bookmarks joined, our rooms missing from it
//! left, a wish of ours not yet told kept); a room joined here is published once it let us in,
//! one left here retracted, until the server confirms it; the node's notifications (`+notify` in our capabilities) from
//! our own account are applied at once, and from anyone else refused as a forgery.
//!
//! **XEP-0048 compatibility** (XEP-0402 §3.1): the account is asked for its features first. A
//! server that announces `urn:xmpp:bookmarks:1#compat` keeps XEP-0402 and the older private
//! storage (XEP-0049) in step, and XEP-0402 is used. One that does not would leave the user's
//! older clients (those that only know XEP-0048) blind to our rooms, and theirs to us, so the
//! bookmarks are kept in private storage instead, as Conversations and Gajim do: read at login,
//! and written whole (read again first, to lose as little as possible of another client's
//! write meanwhile; the storage has no finer operation) with every other entry kept as it was.
//! Private storage has no notifications: another device's change is seen at the next login. A
//! server with neither the compat feature nor private storage gets XEP-0402.

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    bookmarks::{Conference as LegacyConference, Storage},
    bookmarks2::Conference,
    data_forms::{DataForm, DataFormType, Field},
    disco::{DiscoInfoQuery, DiscoInfoResult},
    iq::Iq,
    ns,
    private::Query as PrivateQuery,
    pubsub::{
        event::{Event as PubSubEvent, Payload},
        pubsub::{Item, Items, Publish, PublishOptions, Retract},
        ItemId, NodeName, PubSub,
    },
    stanza_error::DefinedCondition,
};

use super::{new_id, Engine, PendingIq};
use crate::error::{Error, Result};
use crate::events::{ErrorKind, Event, SocialEvent};
use crate::store::{Bookmark, BookmarkWant, Store};

/// XEP-0060's publish-options form type.
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Which bookmarks store a session uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Not known yet: the account's features are asked.
    #[default]
    Unknown,
    /// XEP-0402 (PEP), the server keeping XEP-0048 in step.
    Pep,
    /// XEP-0048 in private storage (XEP-0049): the server does not keep the two in step.
    Legacy,
}

impl Engine {
    /// A new session: the account's features say which store to use; then the server's
    /// bookmarks are fetched, and the wishes not yet told go out.
    pub(super) fn bookmarks_start(&mut self, _store: &mut Store) -> Result<()> {
        self.bookmark_mode = Mode::Unknown;
        self.ask_account_info();
        Ok(())
    }

    fn ask_account_info(&mut self) {
        let iq = Iq::from_get(new_id("account-info"), DiscoInfoQuery { node: None })
            .with_to(Jid::from(self.own.clone()));
        self.send_iq(iq, PendingIq::AccountInfo);
    }

    /// Our account's features: XEP-0402 if the server keeps XEP-0048 in step, else XEP-0048.
    pub(super) fn on_account_info(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        let compat = match iq {
            Iq::Result {
                payload: Some(p), ..
            } => DiscoInfoResult::try_from(p)
                .map(|info| info.features.contains(ns::BOOKMARKS2_COMPAT))
                .unwrap_or(false),
            Iq::Result { payload: None, .. } => false,
            Iq::Error { error, .. } => {
                tracing::warn!(
                    "the server refused to say its account features ({}); using XEP-0402",
                    super::describe_error(&error)
                );
                true
            }
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        if compat {
            self.bookmark_mode = Mode::Pep;
        } else {
            tracing::info!("the server does not keep XEP-0402 and XEP-0048 in step: XEP-0048");
            self.bookmark_mode = Mode::Legacy;
        }
        self.bookmarks_fetch(store)
    }

    /// Fetches the server's bookmarks from the store this session uses, then tells the wishes.
    pub(super) fn bookmarks_fetch(&mut self, store: &mut Store) -> Result<()> {
        match self.bookmark_mode {
            Mode::Unknown => Ok(()),
            Mode::Pep => {
                let iq = Iq::from_get(
                    new_id("bookmarks"),
                    PubSub::Items(Items::new(ns::BOOKMARKS2)),
                );
                self.send_iq(iq, PendingIq::Bookmarks);
                self.bookmarks_sync(store)
            }
            // The wishes are written once the list is here.
            Mode::Legacy => {
                self.ask_legacy();
                Ok(())
            }
        }
    }

    fn ask_legacy(&mut self) {
        let iq = Iq::from_get(
            new_id("private-bookmarks"),
            PrivateQuery {
                storage: Storage::new(),
            },
        );
        self.send_iq(iq, PendingIq::LegacyBookmarks);
    }

    /// The XEP-0048 list: applied like XEP-0402's, then the wishes that can be told are written
    /// into it (the whole storage, every other entry as it was).
    pub(super) fn on_legacy_bookmarks(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        let storage = match iq {
            Iq::Result {
                payload: Some(p), ..
            } => match PrivateQuery::try_from(p) {
                Ok(q) => q.storage,
                Err(_) => {
                    self.emit(Event::error(
                        ErrorKind::Protocol,
                        "the server's bookmarks (XEP-0048) are malformed; the rooms are left as they are",
                    ));
                    return Ok(());
                }
            },
            Iq::Result { payload: None, .. } => Storage::new(),
            Iq::Error { error, .. } => {
                // No private storage: there is no older store to stay in step with, so XEP-0402
                // it is (if the server has that either, its own answer says so).
                tracing::info!(
                    "no private storage on this server ({}): XEP-0402",
                    super::describe_error(&error)
                );
                self.bookmark_mode = Mode::Pep;
                return self.bookmarks_fetch(store);
            }
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        let bookmarks: Vec<Bookmark> = storage
            .conferences
            .iter()
            .map(|c| Bookmark {
                room: c.jid.to_string(),
                autojoin: c.autojoin,
                nick: c.nick.as_ref().map(|n| n.to_string()),
            })
            .collect();
        let nick = self.default_nick();
        let (joined, left) = store.bookmarks_synced(self.account, &bookmarks, &nick)?;
        self.announce_bookmarks(joined, left);
        self.legacy_write(store, storage)
    }

    /// Writes the wishes that can be told into `storage` (as just read) and sends it whole.
    fn legacy_write(&mut self, store: &mut Store, mut storage: Storage) -> Result<()> {
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        let mut told = Vec::new();
        for (room, want, nick) in self.tellable_wishes(store)? {
            let Ok(jid) = room.parse::<tokio_xmpp::jid::BareJid>() else {
                continue;
            };
            match want {
                BookmarkWant::Publish => {
                    let nick = nick.as_deref().and_then(|n| n.parse().ok());
                    match storage.conferences.iter_mut().find(|c| c.jid == jid) {
                        // Another client's name and password for it are kept.
                        Some(c) => {
                            c.autojoin = true;
                            c.nick = nick;
                        }
                        None => storage.conferences.push(LegacyConference {
                            autojoin: true,
                            jid,
                            name: None,
                            nick,
                            password: None,
                        }),
                    }
                }
                BookmarkWant::Retract => storage.conferences.retain(|c| c.jid != jid),
            }
            told.push((room, want));
        }
        if told.is_empty() {
            return Ok(());
        }
        let iq = Iq::from_set(new_id("private-bookmarks"), PrivateQuery { storage });
        self.send_iq(iq, PendingIq::LegacyWrite(told));
        Ok(())
    }

    /// The server answered the XEP-0048 write: the wishes in it are told; a refusal is
    /// reported and the wishes told again on the next session.
    pub(super) fn on_legacy_write(
        &mut self,
        store: &mut Store,
        told: Vec<(String, BookmarkWant)>,
        iq: Iq,
    ) -> Result<()> {
        match &iq {
            Iq::Result { .. } => {
                for (room, want) in told {
                    store.bookmark_told(self.account, &room, want)?;
                }
                // A wish made meanwhile goes in the next write.
                self.bookmarks_sync(store)
            }
            Iq::Error { error, .. } => {
                self.emit(Event::error(
                    ErrorKind::Protocol,
                    format!(
                        "the server refused our bookmarks (XEP-0048: {}); asked again on the next session",
                        super::describe_error(error)
                    ),
                ));
                Ok(())
            }
            _ => Err(Error::Internal("an iq answer that is not one".into())),
        }
    }

    /// The wishes that can be told now: every retraction, and a publish only once the room has
    /// let us in this session (another device joining at once then finds it unlocked, and a
    /// room that refused us is not advertised).
    fn tellable_wishes(
        &self,
        store: &Store,
    ) -> Result<Vec<(String, BookmarkWant, Option<String>)>> {
        let joined: Vec<String> = store
            .joined_rooms(self.account)?
            .into_iter()
            .map(|r| r.jid)
            .collect();
        let mut wishes = store.bookmark_wishes(self.account)?;
        wishes.retain(|(room, want, _)| *want == BookmarkWant::Retract || joined.contains(room));
        Ok(wishes)
    }

    /// Publishes or retracts each room whose bookmark is still to be told (one request per room
    /// at a time). A room is published only once the room has let us in this session: another
    /// device joining at once then finds it unlocked (a room being created is locked until its
    /// creator configures it), and a room that refused us is not advertised.
    pub(super) fn bookmarks_sync(&mut self, store: &mut Store) -> Result<()> {
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        match self.bookmark_mode {
            Mode::Pep => {}
            Mode::Unknown => {
                // Asked at the session's start; an answer lost with a link is asked again.
                if !self.asking(|w| matches!(w, PendingIq::AccountInfo)) {
                    self.ask_account_info();
                }
                return Ok(());
            }
            Mode::Legacy => {
                let tellable = !self.tellable_wishes(store)?.is_empty();
                let busy = self.asking(|w| {
                    matches!(w, PendingIq::LegacyBookmarks | PendingIq::LegacyWrite(_))
                });
                if tellable && !busy {
                    // Read again first: the storage is written whole.
                    self.ask_legacy();
                }
                return Ok(());
            }
        }
        for (room, want, nick) in self.tellable_wishes(store)? {
            if self.asking(|what| matches!(what, PendingIq::Bookmark(r, _) if *r == room)) {
                continue;
            }
            let node = NodeName(ns::BOOKMARKS2.to_owned());
            let payload = match want {
                BookmarkWant::Publish => {
                    let conference = Conference {
                        autojoin: true,
                        nick: nick.as_deref().and_then(|n| n.parse().ok()),
                        ..Conference::new()
                    };
                    let item = Item {
                        id: Some(ItemId(room.clone())),
                        publisher: None,
                        payload: Some(conference.into()),
                    };
                    let options = DataForm::new(
                        DataFormType::Submit,
                        PUBLISH_OPTIONS,
                        vec![
                            Field::text_single("pubsub#persist_items", "true"),
                            Field::text_single("pubsub#max_items", "max"),
                            Field::text_single("pubsub#send_last_published_item", "never"),
                            Field::text_single("pubsub#access_model", "whitelist"),
                            // Our other devices hear of a room left here.
                            Field::text_single("pubsub#notify_retract", "true"),
                        ],
                    );
                    PubSub::Publish {
                        publish: Publish {
                            node,
                            items: vec![item],
                        },
                        publish_options: Some(PublishOptions {
                            form: Some(options),
                        }),
                    }
                }
                BookmarkWant::Retract => PubSub::Retract(Retract {
                    node,
                    notify: true,
                    items: vec![Item {
                        id: Some(ItemId(room.clone())),
                        publisher: None,
                        payload: None,
                    }],
                }),
            };
            let iq = Iq::from_set(new_id("bookmark"), payload);
            self.send_iq(iq, PendingIq::Bookmark(room, want));
        }
        Ok(())
    }

    /// The server's list: applied (see [`Store::bookmarks_synced`]). A server without the node
    /// yet has none; one without PEP leaves the rooms as they are.
    pub(super) fn on_bookmarks(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        let items = match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } => match PubSub::try_from(payload) {
                Ok(PubSub::Items(items)) => items.items,
                Ok(_) | Err(_) => {
                    self.emit(Event::error(
                        ErrorKind::Protocol,
                        "the server's bookmarks are malformed; the rooms are left as they are",
                    ));
                    return Ok(());
                }
            },
            Iq::Result { payload: None, .. } => Vec::new(),
            Iq::Error { error, .. }
                if error.defined_condition == DefinedCondition::ItemNotFound =>
            {
                Vec::new()
            }
            Iq::Error { error, .. } => {
                tracing::warn!(
                    "no bookmarks on this server: {}",
                    super::describe_error(&error)
                );
                return Ok(());
            }
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        let bookmarks: Vec<Bookmark> = items
            .into_iter()
            .filter_map(|i| bookmark(i.id, i.payload))
            .collect();
        let nick = self.default_nick();
        let (joined, left) = store.bookmarks_synced(self.account, &bookmarks, &nick)?;
        self.announce_bookmarks(joined, left);
        Ok(())
    }

    /// The server answered a publish or retract: the wish is told (an unknown item retracted
    /// counts as done); a refusal is reported and told again on the next session.
    pub(super) fn on_bookmark_answer(
        &mut self,
        store: &mut Store,
        room: String,
        want: BookmarkWant,
        iq: Iq,
    ) -> Result<()> {
        match &iq {
            Iq::Result { .. } => store.bookmark_told(self.account, &room, want)?,
            Iq::Error { error, .. }
                if want == BookmarkWant::Retract
                    && error.defined_condition == DefinedCondition::ItemNotFound =>
            {
                store.bookmark_told(self.account, &room, want)?
            }
            Iq::Error { error, .. } => self.emit(Event::error(
                ErrorKind::Protocol,
                format!(
                    "the server refused the bookmark of {room} ({}); asked again on the next session",
                    super::describe_error(error)
                ),
            )),
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        }
        Ok(())
    }

    /// A PEP notification: of the bookmarks node, which must come from our own account (anyone
    /// else's is a forgery: reported, nothing joined or left), or of a profile's node.
    pub(super) fn on_pubsub_event(
        &mut self,
        store: &mut Store,
        from: Option<Jid>,
        event: Element,
    ) -> Result<()> {
        let Ok(PubSubEvent {
            payload:
                Payload::Items {
                    node,
                    published,
                    retracted,
                },
        }) = PubSubEvent::try_from(event)
        else {
            return Ok(());
        };
        if node.0 != ns::BOOKMARKS2 {
            self.on_profile_event(store, from.as_ref(), &node.0, published)?;
            return Ok(());
        }
        let own = from.as_ref().is_none_or(|f| {
            f.node() == self.own.node() && f.domain() == self.own.domain() && f.resource().is_none()
        });
        if !own {
            self.emit(Event::error(
                ErrorKind::Security,
                format!(
                    "dropped a bookmarks notification from {} (only our own account may change our rooms)",
                    from.map(|f| f.to_string()).unwrap_or_default()
                ),
            ));
            return Ok(());
        }
        let published: Vec<Bookmark> = published
            .into_iter()
            .filter_map(|i| bookmark(i.id, i.payload))
            .collect();
        let retracted: Vec<String> = retracted.into_iter().map(|id| id.0).collect();
        let nick = self.default_nick();
        let (joined, left) = store.bookmarks_pushed(self.account, &published, &retracted, &nick)?;
        self.announce_bookmarks(joined, left);
        Ok(())
    }

    /// The nick a bookmark without one is joined with: our account's local part.
    fn default_nick(&self) -> String {
        self.own
            .node()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "tether".into())
    }

    fn announce_bookmarks(&mut self, joined: Vec<String>, left: Vec<String>) {
        for room in joined {
            self.emit(Event::Social(SocialEvent::RoomBookmark {
                room,
                joined: true,
            }));
        }
        for room in left {
            self.emit(Event::Social(SocialEvent::RoomBookmark {
                room,
                joined: false,
            }));
        }
    }
}

/// A bookmark from an item: its id must be a room's bare JID and its payload a `<conference/>`;
/// anything else is skipped (logged).
fn bookmark(id: Option<ItemId>, payload: Option<Element>) -> Option<Bookmark> {
    let room = id?.0;
    let Ok(jid) = room.parse::<tokio_xmpp::jid::BareJid>() else {
        tracing::warn!(room, "a bookmark whose id is not a room's JID");
        return None;
    };
    let conference = match payload.map(Conference::try_from) {
        Some(Ok(c)) => c,
        _ => {
            tracing::warn!(room, "a bookmark without a usable <conference/>");
            return None;
        }
    };
    Some(Bookmark {
        room: jid.to_string(),
        autojoin: conference.autojoin,
        nick: conference.nick.map(|n| n.to_string()),
    })
}
