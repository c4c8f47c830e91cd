//! Service discovery (XEP-0030) and entity capabilities (XEP-0115), the session's part.
//!
//! - **Ours**: [`FEATURES`] is the one list of what Tether supports; a disco#info query (with no
//!   node, or with our caps node) is answered with it, and every presence we send carries its
//!   hash ([`our_caps`]). Answers are bounded ([`DiscoBudget`]): a flood of queries gets a
//!   security event and no answers, not a stream of replies.
//! - **Theirs**: a peer resource's presence names its hash; a hash not yet verified here is asked
//!   for once (disco#info on its node), the answer's hash is computed and compared, and only a
//!   match is kept (`store/caps.rs`). A mismatch, a duplicated feature or identity, or an answer
//!   from another JID is a security event and keeps nothing. The verified features then decide
//!   what the peer is sent: chat states (XEP-0085) and displayed markers (XEP-0333).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    caps::{compute_disco, hash_caps, Caps},
    disco::{DiscoInfoQuery, DiscoInfoResult, Identity},
    hashes::{Algo, Hash},
    iq::Iq,
    ns,
    stanza::Stanza,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::{new_id, Engine, PendingIq};
use crate::config::Device;
use crate::error::Result;
use crate::events::{ErrorKind, Event};
use crate::store::Store;

/// Our caps node: the URI that names the software (XEP-0115 §4).
pub const NODE: &str = "https://tether.chat";

/// Everything Tether supports that a peer may look for, in one place. The disco#info answer and
/// the caps hash are made from it; adding a protocol feature means adding it here.
pub const FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::CAPS,
    ns::PING,
    ns::RECEIPTS,
    ns::CHATSTATES,
    ns::MESSAGE_CORRECT,
    ns::REACTIONS,
    ns::SID,
    ns::OOB,
    ns::MUC,
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:reply:0",
    "urn:xmpp:message-retract:1",
    // XEP-0402 via PEP: the server sends us our bookmarks' changes.
    "urn:xmpp:bookmarks:1+notify",
    // Profiles through PEP: contacts' avatars (XEP-0084), nicknames (XEP-0172), vCards
    // (XEP-0292).
    "urn:xmpp:avatar:metadata+notify",
    "http://jabber.org/protocol/nick+notify",
    "urn:xmpp:vcard4+notify",
];

/// How long a disco budget window lasts.
pub const DISCO_WINDOW: Duration = Duration::from_secs(10);
/// The most disco#info queries one sender gets answered in a window.
pub const DISCO_PER_SENDER: u32 = 5;
/// The most disco#info queries answered in a window, all senders together.
pub const DISCO_TOTAL: u32 = 50;
/// The most capability hashes asked for at once on one connection.
pub const CAPS_IN_FLIGHT: usize = 16;
/// The most hashes remembered as refused on one connection (not asked for again).
const REFUSED_MAX: usize = 1024;

/// Our disco#info answer (the same for every asker: nothing private is in it).
pub fn our_info(device: Device, node: Option<String>) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity {
            category: "client".into(),
            type_: device.identity_type().into(),
            lang: None,
            name: Some("Tether".into()),
        }],
        features: FEATURES.iter().map(|f| (*f).to_owned()).collect(),
        extensions: vec![],
    }
}

/// The caps element every presence we send carries (SHA-1, as XEP-0115 requires).
pub fn our_caps(device: Device) -> Caps {
    let hash = hash_caps(&compute_disco(&our_info(device, None)), Algo::Sha_1)
        .expect("SHA-1 is a known algorithm");
    Caps::new(NODE, hash)
}

/// Our caps node with its hash (`node#ver`), as peers ask for it.
fn our_node(device: Device) -> String {
    let caps = our_caps(device);
    format!("{}#{}", caps.node, ver_text(&caps))
}

fn ver_text(caps: &Caps) -> String {
    Hash {
        algo: caps.hash.clone(),
        hash: caps.ver.clone(),
    }
    .to_base64()
}

/// What a hash announced by a peer resource is asked for with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CapsAsked {
    /// Who was asked (the full JID).
    pub jid: Jid,
    /// The algorithm, as named.
    pub algo: String,
    /// The hash, base64.
    pub ver: String,
}

/// The bounds of one connection: queries answered per window, hashes asked and refused.
#[derive(Debug, Default)]
pub(super) struct DiscoBudget {
    window: Option<Instant>,
    total: u32,
    per_sender: HashMap<String, u32>,
    /// Senders already told of in this window (one security event each).
    warned: HashSet<String>,
    /// Hashes on their way (algo, ver).
    asking: HashSet<(String, String)>,
    /// Hashes that failed verification on this connection.
    refused: HashSet<(String, String)>,
}

impl DiscoBudget {
    /// A hash whose query timed out: no longer on its way.
    pub(super) fn forget(&mut self, key: &(String, String)) {
        self.asking.remove(key);
    }

    /// Whether a query from `sender` may be answered at `now` (and counts it).
    fn admit(&mut self, sender: &str, now: Instant) -> bool {
        if self.window.is_none_or(|start| now >= start + DISCO_WINDOW) {
            self.window = Some(now);
            self.total = 0;
            self.per_sender.clear();
            self.warned.clear();
        }
        let mine = self.per_sender.entry(sender.to_owned()).or_default();
        if *mine >= DISCO_PER_SENDER || self.total >= DISCO_TOTAL {
            return false;
        }
        *mine += 1;
        self.total += 1;
        true
    }
}

impl Engine {
    /// A disco#info query to us: our identity and features, or an error for a node we do not
    /// have; nothing at all beyond the budget (one security event per sender and window).
    pub(super) fn on_disco_query(&mut self, from: Option<Jid>, id: String, payload: Element) {
        let sender = from
            .as_ref()
            .map(|f| f.to_bare().to_string())
            .unwrap_or_default();
        let now = self.now;
        if !self.link_mut().disco.admit(&sender, now) {
            if self.link_mut().disco.warned.insert(sender.clone()) {
                self.emit(Event::error(
                    ErrorKind::Security,
                    format!(
                        "{sender:?} asked what this client supports more than {DISCO_PER_SENDER} \
                         times in {} s (or everyone together more than {DISCO_TOTAL}): \
                         not answered",
                        DISCO_WINDOW.as_secs()
                    ),
                ));
            }
            return;
        }
        let device = self.config.device;
        let reply = match DiscoInfoQuery::try_from(payload) {
            Ok(q) if q.node.is_none() || q.node.as_deref() == Some(our_node(device).as_str()) => {
                Iq::Result {
                    from: None,
                    to: from,
                    id,
                    payload: Some(our_info(device, q.node).into()),
                }
            }
            Ok(q) => error_reply(
                from,
                id,
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                &format!("no node {:?} here", q.node.unwrap_or_default()),
            ),
            Err(e) => error_reply(
                from,
                id,
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                &format!("malformed disco#info query: {e}"),
            ),
        };
        self.write_untracked(Stanza::Iq(reply));
    }

    /// A peer resource's presence: remember the hash it announced (or that it announced none),
    /// ask for a hash not verified yet, and tell the chat-state policy what the peer supports.
    pub(super) fn on_peer_presence(
        &mut self,
        store: &mut Store,
        from: &Jid,
        available: bool,
        caps: Option<&Element>,
    ) -> Result<()> {
        let full = from.to_string();
        let caps = caps.and_then(|c| Caps::try_from(c.clone()).ok());
        let Some(caps) = caps.filter(|_| available && from.resource().is_some()) else {
            store.remove_peer_caps(self.account, &full)?;
            return self.tell_chat_states(store, from);
        };
        let algo = String::from(caps.hash.clone());
        let ver = ver_text(&caps);
        store.set_peer_caps(self.account, &full, &algo, &ver)?;
        if store.caps_features(&algo, &ver)?.is_some() {
            return self.tell_chat_states(store, from);
        }
        let key = (algo.clone(), ver.clone());
        let budget = &mut self.link_mut().disco;
        if matches!(caps.hash, Algo::Unknown(_))
            || budget.refused.contains(&key)
            || budget.asking.contains(&key)
            || budget.asking.len() >= CAPS_IN_FLIGHT
        {
            return Ok(());
        }
        budget.asking.insert(key);
        let node = format!("{}#{ver}", caps.node);
        let mut iq = Iq::from_get(
            new_id("caps"),
            DiscoInfoQuery {
                node: Some(node.clone()),
            },
        );
        if let Iq::Get { to, .. } = &mut iq {
            *to = Some(from.clone());
        }
        self.send_iq(
            iq,
            PendingIq::Caps(CapsAsked {
                jid: from.clone(),
                algo,
                ver,
            }),
        );
        Ok(())
    }

    /// The answer to a hash we asked for: kept only if the hash computed from it matches.
    pub(super) fn on_caps_answer(
        &mut self,
        store: &mut Store,
        asked: CapsAsked,
        iq: Iq,
    ) -> Result<()> {
        let key = (asked.algo.clone(), asked.ver.clone());
        self.link_mut().disco.asking.remove(&key);
        let (from, payload) = match iq {
            Iq::Result {
                from,
                payload: Some(p),
                ..
            } => (from, p),
            Iq::Result { .. } => return self.caps_refused(key, &asked.jid, "an empty answer"),
            Iq::Error { error, .. } => {
                tracing::debug!(jid = %asked.jid, "no capabilities: {error:?}");
                self.link_mut().disco.refused.insert(key);
                return Ok(());
            }
            Iq::Get { .. } | Iq::Set { .. } => return Ok(()),
        };
        if from.as_ref() != Some(&asked.jid) {
            let why = format!("an answer from {from:?} instead");
            return self.caps_refused(key, &asked.jid, &why);
        }
        if let Some(dup) = duplicated_feature(&payload) {
            return self.caps_refused(key, &asked.jid, &format!("a duplicated {dup}"));
        }
        let mut info = match DiscoInfoResult::try_from(payload) {
            Ok(i) => i,
            Err(e) => {
                return self.caps_refused(key, &asked.jid, &format!("a malformed answer: {e}"))
            }
        };
        if let Some(dup) = duplicated_identity(&info) {
            return self.caps_refused(key, &asked.jid, &format!("a duplicated {dup}"));
        }
        // XEP-0115 §5.1 sorts each form's fields by var; compute_disco keeps document order.
        for form in &mut info.extensions {
            form.fields.sort_by(|a, b| a.var.cmp(&b.var));
        }
        let algo: Algo = match asked.algo.parse() {
            Ok(a) => a,
            Err(_) => return Ok(()),
        };
        let matches =
            hash_caps(&compute_disco(&info), algo).is_ok_and(|h| h.to_base64() == asked.ver);
        if !matches {
            return self.caps_refused(key, &asked.jid, "features that do not match its hash");
        }
        let identities: Vec<_> = info
            .identities
            .iter()
            .map(|i| (i.category.clone(), i.type_.clone(), i.name.clone()))
            .collect();
        store.add_caps(&asked.algo, &asked.ver, &identities, &info.features)?;
        tracing::debug!(jid = %asked.jid, features = info.features.len(), "capabilities verified");
        self.tell_chat_states(store, &asked.jid)
    }

    /// A hash that failed: a security event, nothing kept, not asked again on this connection.
    fn caps_refused(&mut self, key: (String, String), jid: &Jid, why: &str) -> Result<()> {
        let budget = &mut self.link_mut().disco;
        if budget.refused.len() >= REFUSED_MAX {
            budget.refused.clear();
        }
        budget.refused.insert(key.clone());
        self.emit(Event::error(
            ErrorKind::Security,
            format!(
                "{jid} announced capabilities {}:{} and gave {why}: not kept",
                key.0, key.1
            ),
        ));
        Ok(())
    }

    /// The chat-state policy learns what the peer's verified capabilities say.
    fn tell_chat_states(&mut self, store: &Store, peer: &Jid) -> Result<()> {
        let bare = peer.to_bare().to_string();
        let features = store.peer_features(self.account, &bare)?;
        self.chat
            .on_advertised(&bare, features.is_some_and(|f| f.contains(ns::CHATSTATES)));
        Ok(())
    }
}

/// The first feature an answer names twice (XEP-0115 §5.4 refuses such an answer; the parsed
/// answer keeps features in a set, so this looks at the element).
fn duplicated_feature(query: &Element) -> Option<String> {
    let mut features = BTreeSet::new();
    query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .map(|c| c.attr("var").unwrap_or_default())
        .find(|var| !features.insert(*var))
        .map(|var| format!("feature {var:?}"))
}

/// The first identity an answer names twice (same category, type, language and name).
fn duplicated_identity(info: &DiscoInfoResult) -> Option<String> {
    let mut seen = HashSet::new();
    info.identities
        .iter()
        .find(|i| !seen.insert(*i))
        .map(|i| format!("identity {}/{}", i.category, i.type_))
}

fn error_reply(
    to: Option<Jid>,
    id: String,
    kind: ErrorType,
    condition: DefinedCondition,
    text: &str,
) -> Iq {
    Iq::Error {
        from: None,
        to,
        id,
        payload: None,
        error: StanzaError::new(kind, condition, "en", text),
    }
}
