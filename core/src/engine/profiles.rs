//! Profiles, the session's part: avatars (XEP-0084 through PEP, XEP-0153 through the vCard),
//! nicknames (XEP-0172) and vCards (XEP-0292 through PEP, XEP-0054 on request).
//!
//! - **Theirs**: our capabilities ask for the avatar, nickname and vCard4 nodes' notifications
//!   (`+notify`), so the server sends each contact's current ones when we come online and every
//!   change after. A notification is taken from our own account or a contact on our roster only
//!   (a stranger's is dropped with a security event). An announced avatar is fetched unless its
//!   bytes are here already or it is larger than [`AVATAR_MAX_BYTES`]; the bytes are stored only
//!   if they are an image whose SHA-1 is the announced id ([`crate::profile::check_avatar`]). A
//!   contact with no PEP avatar whose presence names a vCard photo (XEP-0153) has its vCard
//!   fetched, with its nickname and full name. A name with control characters is refused.
//! - **Ours**: the user's change is committed first ([`Store::wish_profile`]); the nickname is
//!   published, the avatar's data then its metadata, and the change is kept until the server
//!   confirms it, so a change made offline, or cut off by a lost link, is told on the next
//!   session.

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    avatar::{Data, Info, Metadata},
    hashes::Sha1HexAttribute,
    iq::Iq,
    nick::Nick,
    ns,
    pubsub::{
        event::Item as EventItem,
        pubsub::{Item, Items, Publish},
        ItemId, NodeName, PubSub,
    },
    vcard::{VCard, VCardQuery},
    vcard_update::VCardUpdate,
};

use super::{new_id, Engine, PendingIq};
use crate::error::{Error, Result};
use crate::events::{ErrorKind, Event, SocialEvent};
use crate::profile::{check_avatar, check_name, Refusal, AVATAR_MAX_BYTES, OWN_AVATAR_MAX_BYTES};
use crate::store::{AvatarSource, AvatarUpdate, NameField, ProfileWish, Store};

/// XEP-0292's PEP node.
pub const VCARD4_NODE: &str = "urn:xmpp:vcard4";
/// The vCard 4 (RFC 6351 XML) namespace.
pub const VCARD4_NS: &str = "urn:ietf:params:xml:ns:vcard-4.0";

/// An avatar's bytes asked of a contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvatarAsked {
    /// Whose.
    pub jid: BareJid,
    /// The announced SHA-1 (lowercase hex).
    pub sha1: String,
    /// The announced type.
    pub mime: String,
}

/// One step of telling the server the user's own profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publishing {
    /// The nickname (`None`: removed).
    Nick(Option<String>),
    /// The avatar's data node, first.
    AvatarData(String),
    /// The avatar's metadata node (`None`: no avatar), once the data is there.
    AvatarMetadata(Option<String>),
}

impl Engine {
    /// Whether a profile notification from `jid` is one to take: our own account or a roster
    /// contact.
    fn profile_peer(&self, store: &Store, jid: &BareJid) -> Result<bool> {
        Ok(*jid == self.own || store.contact(self.account, jid.as_str())?.is_some())
    }

    /// A PEP notification of a profile node (avatar metadata, nickname, vCard4) from `from`
    /// (`None`: our own account); any other node is not ours and is left alone.
    pub(super) fn on_profile_event(
        &mut self,
        store: &mut Store,
        from: Option<&Jid>,
        node: &str,
        published: Vec<EventItem>,
    ) -> Result<()> {
        if node != ns::AVATAR_METADATA && node != ns::NICK && node != VCARD4_NODE {
            return Ok(());
        }
        let jid = from.map_or_else(|| self.own.clone(), Jid::to_bare);
        // A blocked contact's profile is not shown, as nothing of theirs is.
        if jid != self.own && self.blocked(store, &Jid::from(jid.clone()))? {
            return Ok(());
        }
        if !self.profile_peer(store, &jid)? {
            self.emit(Event::error(
                ErrorKind::Security,
                format!("dropped a profile notification ({node}) from {jid}, who is not a contact"),
            ));
            return Ok(());
        }
        // The newest item is the current one.
        let Some(payload) = published.into_iter().last().and_then(|i| i.payload) else {
            return Ok(());
        };
        match node {
            ns::AVATAR_METADATA => self.on_avatar_metadata(store, jid, payload)?,
            ns::NICK => {
                let nick = Nick::try_from(payload).map(|n| n.0);
                match nick {
                    Ok(nick) => self.take_name(store, &jid, NameField::Nick, &nick)?,
                    Err(_) => tracing::warn!(%jid, "a malformed nickname notification"),
                }
            }
            _ => {
                if payload.is("vcard", VCARD4_NS) {
                    let text = |name: &str| {
                        payload
                            .get_child(name, VCARD4_NS)
                            .and_then(|e| e.get_child("text", VCARD4_NS))
                            .map(|t| t.text())
                    };
                    if let Some(nick) = text("nickname") {
                        self.take_name(store, &jid, NameField::VcardNick, &nick)?;
                    }
                    if let Some(name) = text("fn") {
                        self.take_name(store, &jid, NameField::FullName, &name)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A name from `jid`'s profile: checked, stored, announced; refused with a security event.
    fn take_name(
        &mut self,
        store: &mut Store,
        jid: &BareJid,
        field: NameField,
        text: &str,
    ) -> Result<()> {
        let what = match field {
            NameField::Nick | NameField::VcardNick => "nickname",
            NameField::FullName => "full name",
        };
        match check_name(text, what) {
            Ok(value) => {
                if store.set_profile_name(self.account, jid.as_str(), field, value.as_deref())? {
                    self.emit_profile(jid);
                }
            }
            Err(refusal) => self.refuse_profile(jid, &refusal),
        }
        Ok(())
    }

    fn refuse_profile(&mut self, jid: &BareJid, refusal: &Refusal) {
        let kind = match refusal {
            Refusal::TooLarge { .. } => ErrorKind::Protocol,
            _ => ErrorKind::Security,
        };
        self.emit(Event::error(
            kind,
            format!("refused the profile of {jid}: {refusal}; nothing of it was stored"),
        ));
    }

    /// Sets `jid`'s avatar (see [`Store::set_profile_avatar`]) and announces it if it changed.
    fn set_avatar(
        &mut self,
        store: &mut Store,
        jid: &BareJid,
        update: AvatarUpdate<'_>,
        source: AvatarSource,
    ) -> Result<()> {
        if store.set_profile_avatar(self.account, jid.as_str(), update, source)? {
            self.emit_profile(jid);
        }
        Ok(())
    }

    fn emit_profile(&mut self, jid: &BareJid) {
        self.emit(Event::Social(SocialEvent::Profile {
            jid: jid.to_string(),
        }));
    }

    /// XEP-0084 metadata: the avatar is none, one already here, or fetched (within the cap).
    fn on_avatar_metadata(
        &mut self,
        store: &mut Store,
        jid: BareJid,
        payload: Element,
    ) -> Result<()> {
        let Ok(metadata) = Metadata::try_from(payload) else {
            tracing::warn!(%jid, "malformed avatar metadata");
            return Ok(());
        };
        // A PNG is always offered (XEP-0084 §4.2.1); another type is taken if it is the only one.
        // Avatars hosted elsewhere (a `url`) are not fetched: only PEP-hosted data is.
        let infos: Vec<&Info> = metadata.infos.iter().filter(|i| i.url.is_none()).collect();
        let info = infos
            .iter()
            .find(|i| i.type_ == "image/png")
            .or_else(|| infos.first());
        let Some(info) = info else {
            self.avatar_wanted.remove(&jid);
            self.set_avatar(store, &jid, AvatarUpdate::None, AvatarSource::Pep)?;
            return Ok(());
        };
        let sha1 = info.id.to_hex();
        if info.bytes as usize > AVATAR_MAX_BYTES {
            self.avatar_wanted.remove(&jid);
            self.refuse_profile(
                &jid,
                &Refusal::TooLarge {
                    size: info.bytes as usize,
                    max: AVATAR_MAX_BYTES,
                },
            );
            return Ok(());
        }
        if store.has_avatar(&sha1)? {
            self.avatar_wanted.remove(&jid);
            self.set_avatar(store, &jid, AvatarUpdate::Known(&sha1), AvatarSource::Pep)?;
            return Ok(());
        }
        let asked = AvatarAsked {
            jid: jid.clone(),
            sha1,
            mime: info.type_.clone(),
        };
        self.avatar_wanted.insert(jid.clone(), asked.clone());
        // One fetch per contact at a time: a newer announcement is fetched after it.
        if self.asking(|what| matches!(what, PendingIq::Avatar(a) if a.jid == jid)) {
            return Ok(());
        }
        self.fetch_avatar(asked);
        Ok(())
    }

    fn fetch_avatar(&mut self, asked: AvatarAsked) {
        let jid = asked.jid.clone();
        let sha1 = asked.sha1.clone();
        let mut items = Items::new(ns::AVATAR_DATA);
        items.items.push(Item {
            id: Some(ItemId(sha1)),
            publisher: None,
            payload: None,
        });
        let iq = Iq::from_get(new_id("avatar"), PubSub::Items(items)).with_to(Jid::from(jid));
        self.send_iq(iq, PendingIq::Avatar(asked));
    }

    /// The avatar's bytes came (or did not): stored if they are what was announced.
    pub(super) fn on_avatar_data(
        &mut self,
        store: &mut Store,
        asked: AvatarAsked,
        iq: Iq,
    ) -> Result<()> {
        // Announced anew meanwhile: this answer is stale, the newest is fetched instead.
        match self.avatar_wanted.get(&asked.jid) {
            Some(newest) if *newest != asked => {
                let newest = newest.clone();
                if store.has_avatar(&newest.sha1)? {
                    self.avatar_wanted.remove(&asked.jid);
                    self.set_avatar(
                        store,
                        &newest.jid,
                        AvatarUpdate::Known(&newest.sha1),
                        AvatarSource::Pep,
                    )?;
                } else {
                    self.fetch_avatar(newest);
                }
                return Ok(());
            }
            Some(_) => {
                self.avatar_wanted.remove(&asked.jid);
            }
            // Removed, or one already here, announced meanwhile.
            None => return Ok(()),
        }
        let payload = match iq {
            Iq::Result {
                payload: Some(p), ..
            } => p,
            Iq::Result { payload: None, .. } => {
                tracing::warn!(jid = %asked.jid, "an empty answer for an avatar");
                return Ok(());
            }
            Iq::Error { error, .. } => {
                tracing::warn!(
                    jid = %asked.jid,
                    "the avatar announced could not be fetched: {}",
                    super::describe_error(&error)
                );
                return Ok(());
            }
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        let data = match PubSub::try_from(payload) {
            Ok(PubSub::Items(items)) => items
                .items
                .into_iter()
                .find(|i| {
                    i.id.as_ref()
                        .is_some_and(|id| id.0.eq_ignore_ascii_case(&asked.sha1))
                })
                .and_then(|i| i.payload)
                .and_then(|p| Data::try_from(p).ok()),
            _ => None,
        };
        let Some(data) = data else {
            self.emit(Event::error(
                ErrorKind::Protocol,
                format!(
                    "{} answered the avatar request with no avatar data; nothing was stored",
                    asked.jid
                ),
            ));
            return Ok(());
        };
        match check_avatar(data.data, Some(&asked.sha1), Some(&asked.mime)) {
            Ok(avatar) => {
                self.set_avatar(
                    store,
                    &asked.jid,
                    AvatarUpdate::Bytes(&avatar),
                    AvatarSource::Pep,
                )?;
            }
            Err(refusal) => self.refuse_profile(&asked.jid, &refusal),
        }
        Ok(())
    }

    /// A contact's presence (XEP-0153): the vCard's photo hash. Fetched when it is new and the
    /// contact has no PEP avatar (that one is preferred).
    pub(super) fn on_vcard_update(
        &mut self,
        store: &mut Store,
        jid: &BareJid,
        update: &Element,
    ) -> Result<()> {
        let Ok(update) = VCardUpdate::try_from(update.clone()) else {
            return Ok(());
        };
        // No <photo/> at all: the client is not ready to say (XEP-0153 §4.2).
        let Some(photo) = update.photo else {
            return Ok(());
        };
        if !self.profile_peer(store, jid)?
            || self.blocked(store, &Jid::from(jid.clone()))?
            || store.avatar_source(self.account, jid.as_str())? == Some(AvatarSource::Pep)
        {
            return Ok(());
        }
        let Some(hash) = photo.data else {
            self.set_avatar(store, jid, AvatarUpdate::None, AvatarSource::Vcard)?;
            return Ok(());
        };
        let sha1: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        if store.has_avatar(&sha1)? {
            self.set_avatar(store, jid, AvatarUpdate::Known(&sha1), AvatarSource::Vcard)?;
            return Ok(());
        }
        if self.asking(|what| matches!(what, PendingIq::VCard(j, _) if j == jid)) {
            return Ok(());
        }
        let iq = Iq::from_get(new_id("vcard"), VCardQuery).with_to(Jid::from(jid.clone()));
        self.send_iq(iq, PendingIq::VCard(jid.clone(), sha1));
        Ok(())
    }

    /// A vCard (XEP-0054): its photo, if it is the announced one, and its names.
    pub(super) fn on_vcard(
        &mut self,
        store: &mut Store,
        jid: BareJid,
        sha1: String,
        iq: Iq,
    ) -> Result<()> {
        let vcard = match iq {
            Iq::Result {
                payload: Some(p), ..
            } => match VCard::try_from(p) {
                Ok(v) => v,
                Err(_) => {
                    self.emit(Event::error(
                        ErrorKind::Protocol,
                        format!("the vCard of {jid} is malformed; nothing of it was stored"),
                    ));
                    return Ok(());
                }
            },
            Iq::Result { payload: None, .. } => return Ok(()),
            Iq::Error { error, .. } => {
                tracing::warn!(%jid, "no vCard: {}", super::describe_error(&error));
                return Ok(());
            }
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        for p in &vcard.payloads {
            if p.is("NICKNAME", ns::VCARD) {
                self.take_name(store, &jid, NameField::VcardNick, &p.text())?;
            } else if p.is("FN", ns::VCARD) {
                self.take_name(store, &jid, NameField::FullName, &p.text())?;
            }
        }
        let Some(photo) = vcard.photo else {
            return Ok(());
        };
        match check_avatar(photo.binval.data, Some(&sha1), None) {
            Ok(avatar) => {
                self.set_avatar(
                    store,
                    &jid,
                    AvatarUpdate::Bytes(&avatar),
                    AvatarSource::Vcard,
                )?;
            }
            Err(refusal) => self.refuse_profile(&jid, &refusal),
        }
        Ok(())
    }

    /// Tells the server the user's profile changes not told yet (one request of a kind at a
    /// time).
    pub(super) fn profile_sync(&mut self, store: &mut Store) -> Result<()> {
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        for wish in store.profile_wishes(self.account)? {
            match wish {
                ProfileWish::Nick(nick) => {
                    if self.asking(|w| matches!(w, PendingIq::Publish(Publishing::Nick(_)))) {
                        continue;
                    }
                    let item = Item {
                        id: Some(ItemId("current".into())),
                        publisher: None,
                        payload: Some(Nick(nick.clone().unwrap_or_default()).into()),
                    };
                    self.publish(ns::NICK, item, Publishing::Nick(nick));
                }
                ProfileWish::Avatar(sha1) => {
                    if self.asking(|w| {
                        matches!(
                            w,
                            PendingIq::Publish(
                                Publishing::AvatarData(_) | Publishing::AvatarMetadata(_)
                            )
                        )
                    }) {
                        continue;
                    }
                    match sha1 {
                        Some(sha1) => {
                            let Some(avatar) = self.own_avatar(store, &sha1)? else {
                                continue;
                            };
                            let item = Item {
                                id: Some(ItemId(sha1.clone())),
                                publisher: None,
                                payload: Some(Data { data: avatar.data }.into()),
                            };
                            self.publish(ns::AVATAR_DATA, item, Publishing::AvatarData(sha1));
                        }
                        None => self.publish_avatar_metadata(store, None)?,
                    }
                }
            }
        }
        Ok(())
    }

    fn publish(&mut self, node: &str, item: Item, step: Publishing) {
        let pubsub = PubSub::Publish {
            publish: Publish {
                node: NodeName(node.to_owned()),
                items: vec![item],
            },
            publish_options: None,
        };
        let iq = Iq::from_set(new_id("profile"), pubsub);
        self.send_iq(iq, PendingIq::Publish(step));
    }

    /// The user's avatar to publish, from the store and checked again. One that is gone or
    /// damaged cannot be published: that is said, and the change dropped (told again, it would
    /// fail the same way on every session).
    fn own_avatar(
        &mut self,
        store: &mut Store,
        sha1: &str,
    ) -> Result<Option<crate::profile::Avatar>> {
        let checked = match store.avatar(sha1)? {
            // One stored by an older Tether whose limit was larger would not fit the server.
            Some((_, data)) if data.len() > OWN_AVATAR_MAX_BYTES => Err(Refusal::TooLarge {
                size: data.len(),
                max: OWN_AVATAR_MAX_BYTES,
            }
            .to_string()),
            Some((_, data)) => check_avatar(data, Some(sha1), None).map_err(|r| r.to_string()),
            None => Err("it is no longer in the store".to_owned()),
        };
        match checked {
            Ok(avatar) => Ok(Some(avatar)),
            Err(why) => {
                store.profile_told(self.account, &ProfileWish::Avatar(Some(sha1.to_owned())))?;
                self.emit(Event::error(
                    ErrorKind::Database,
                    format!("the avatar picked ({sha1}) cannot be published: {why}; pick it again"),
                ));
                Ok(None)
            }
        }
    }

    fn publish_avatar_metadata(&mut self, store: &mut Store, sha1: Option<String>) -> Result<()> {
        let mut infos = Vec::new();
        let mut id = "current".to_owned();
        if let Some(sha1) = &sha1 {
            let Some(avatar) = self.own_avatar(store, sha1)? else {
                return Ok(());
            };
            let hex: Sha1HexAttribute = sha1
                .parse()
                .map_err(|_| Error::Internal(format!("not a SHA-1: {sha1}")))?;
            infos.push(Info {
                bytes: avatar.data.len() as u32,
                width: avatar.size.map(|s| s.0),
                height: avatar.size.map(|s| s.1),
                id: hex,
                type_: avatar.mime.to_owned(),
                url: None,
            });
            id = sha1.clone();
        }
        let item = Item {
            id: Some(ItemId(id)),
            publisher: None,
            payload: Some(Metadata { infos }.into()),
        };
        self.publish(ns::AVATAR_METADATA, item, Publishing::AvatarMetadata(sha1));
        Ok(())
    }

    /// The server answered a step: the next one goes, or the change is told; a refusal is
    /// reported, and the change told again on the next session.
    pub(super) fn on_publish_answer(
        &mut self,
        store: &mut Store,
        step: Publishing,
        iq: Iq,
    ) -> Result<()> {
        match iq {
            Iq::Result { .. } => match step {
                Publishing::Nick(nick) => {
                    store.profile_told(self.account, &ProfileWish::Nick(nick))?;
                    self.profile_sync(store)?;
                }
                Publishing::AvatarData(sha1) => {
                    // Still the avatar the user wants? Else the next wish is told instead.
                    let current = store
                        .profile_wishes(self.account)?
                        .contains(&ProfileWish::Avatar(Some(sha1.clone())));
                    if current {
                        self.publish_avatar_metadata(store, Some(sha1))?;
                    } else {
                        self.profile_sync(store)?;
                    }
                }
                Publishing::AvatarMetadata(sha1) => {
                    store.profile_told(self.account, &ProfileWish::Avatar(sha1))?;
                    self.profile_sync(store)?;
                }
            },
            Iq::Error { error, .. } => {
                let what = match step {
                    Publishing::Nick(_) => "nickname",
                    Publishing::AvatarData(_) | Publishing::AvatarMetadata(_) => "avatar",
                };
                self.emit(Event::error(
                    ErrorKind::Protocol,
                    format!(
                        "the server refused our {what} ({}); it is kept and published again on the next session",
                        super::describe_error(&error)
                    ),
                ));
            }
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        }
        Ok(())
    }
}
