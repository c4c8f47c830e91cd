//! Payloads that xmpp-parsers 0.23 does not have, declared with its own XML derive (`xso`), so
//! that nothing here builds or parses XML by hand: XEP-0424 retraction, XEP-0461 replies,
//! XEP-0428 fallback indication, the XEP-0334 `<store/>` hint and XEP-0249 direct invitations.

use xso::{AsXml, FromXml};

/// XEP-0424 (v0.4+) namespace.
pub const RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0461 namespace.
pub const REPLY: &str = "urn:xmpp:reply:0";
/// XEP-0428 namespace.
pub const FALLBACK: &str = "urn:xmpp:fallback:0";
/// XEP-0334 namespace.
pub const HINTS: &str = "urn:xmpp:hints";

/// `<retract id='...'/>`: the sender takes back the message with this id (the room's stanza-id in
/// group chat).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = RETRACT, name = "retract")]
pub struct Retract {
    /// The retracted message's id.
    #[xml(attribute)]
    pub id: String,
}

/// `<reply to='...' id='...'/>`: this message answers the message with this id.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = REPLY, name = "reply")]
pub struct Reply {
    /// The author of the message replied to (a full JID in group chat), if given.
    #[xml(attribute(default))]
    pub to: Option<String>,
    /// The id of the message replied to.
    #[xml(attribute)]
    pub id: String,
}

/// `<fallback for='...'>`: which part of the body only stands in for a feature the receiver may
/// not support (a quote for a reply, a notice for a retraction).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = FALLBACK, name = "fallback")]
pub struct Fallback {
    /// The namespace of the feature the fallback stands in for.
    #[xml(attribute(name = "for"))]
    pub for_: String,
    /// The ranges of the body that are fallback; none means the whole body.
    #[xml(child(n = ..))]
    pub bodies: Vec<FallbackBody>,
}

/// One range of the body, in Unicode code points, `start` inclusive, `end` exclusive.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = FALLBACK, name = "body")]
pub struct FallbackBody {
    /// First code point of the range.
    #[xml(attribute(default))]
    pub start: Option<usize>,
    /// One past the last code point.
    #[xml(attribute(default))]
    pub end: Option<usize>,
}

/// `<store/>`: archive this message although it has no body (reactions, retractions).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = HINTS, name = "store")]
pub struct StoreHint;

/// XEP-0249 namespace.
pub const DIRECT_INVITE: &str = "jabber:x:conference";

/// `<x xmlns='jabber:x:conference' jid='room@...' reason='...'/>`: an invitation to a room.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = DIRECT_INVITE, name = "x")]
pub struct DirectInvite {
    /// The room's bare JID.
    #[xml(attribute)]
    pub jid: String,
    /// Why, in the inviter's words.
    #[xml(attribute(default))]
    pub reason: Option<String>,
    /// The room's password, if it has one.
    #[xml(attribute(default))]
    pub password: Option<String>,
}

/// XEP-0446 namespace.
pub const FILE_METADATA: &str = "urn:xmpp:file:metadata:0";

/// What XEP-0446 says of a file (each part optional, as senders vary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// The file's name.
    pub name: Option<String>,
    /// Bytes.
    pub size: Option<u64>,
    /// MIME type.
    pub media_type: Option<String>,
    /// SHA-256, lowercase hex.
    pub sha256: Option<String>,
}

/// Reads `<file-metadata/>` (minidom's tree; the hash through xmpp-parsers' `Hash`).
pub fn parse_file_metadata(el: &tokio_xmpp::minidom::Element) -> FileMeta {
    use tokio_xmpp::parsers::hashes::{Algo, Hash};
    let text = |name: &str| {
        el.get_child(name, FILE_METADATA)
            .map(|c| c.text())
            .filter(|t| !t.is_empty())
    };
    let sha256 = el
        .children()
        .filter(|c| c.is("hash", tokio_xmpp::parsers::ns::HASHES))
        .filter_map(|c| Hash::try_from(c.clone()).ok())
        .find(|h| h.algo == Algo::Sha_256 && h.hash.len() == 32)
        .map(|h| h.to_hex());
    FileMeta {
        name: text("name"),
        size: text("size").and_then(|s| s.trim().parse().ok()),
        media_type: text("media-type"),
        sha256,
    }
}

/// Builds `<file-metadata/>` for a file we send.
pub fn file_metadata(meta: &FileMeta) -> tokio_xmpp::minidom::Element {
    use tokio_xmpp::minidom::Element;
    use tokio_xmpp::parsers::hashes::{Algo, Hash};
    let mut b = Element::builder("file-metadata", FILE_METADATA);
    if let Some(t) = &meta.media_type {
        b = b.append(Element::builder("media-type", FILE_METADATA).append(t.as_str()));
    }
    if let Some(n) = &meta.name {
        b = b.append(Element::builder("name", FILE_METADATA).append(n.as_str()));
    }
    if let Some(s) = meta.size {
        b = b.append(Element::builder("size", FILE_METADATA).append(s.to_string()));
    }
    if let Some(h) = meta
        .sha256
        .as_deref()
        .and_then(|h| Hash::from_hex(Algo::Sha_256, h).ok())
    {
        b = b.append(Element::from(h));
    }
    b.build()
}

/// `<no-store/>`: do not archive or store this message offline (chat states).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = HINTS, name = "no-store")]
pub struct NoStore;

/// The body without the ranges that `fallbacks` mark as fallback for `feature`. A range that does
/// not fit the body (a hostile or broken sender) makes the whole body count as text: nothing the
/// sender wrote is dropped on a bad range.
pub fn strip_fallback(body: &str, fallbacks: &[Fallback], feature: &str) -> String {
    let chars: Vec<char> = body.chars().collect();
    let mut drop = vec![false; chars.len()];
    for f in fallbacks.iter().filter(|f| f.for_ == feature) {
        if f.bodies.is_empty() {
            return String::new();
        }
        for b in &f.bodies {
            let (start, end) = (b.start.unwrap_or(0), b.end.unwrap_or(chars.len()));
            if start > end || end > chars.len() {
                return body.to_owned();
            }
            drop[start..end].iter_mut().for_each(|d| *d = true);
        }
    }
    chars
        .iter()
        .zip(drop)
        .filter(|(_, d)| !d)
        .map(|(c, _)| *c)
        .collect()
}

/// The quote a reply carries for clients without XEP-0461: each line of `quoted` behind `> `.
pub fn quote_fallback(quoted: &str) -> String {
    let mut out = String::new();
    for line in quoted.lines() {
        out.push_str("> ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::minidom::Element;

    fn fallback(xml: &str) -> Fallback {
        let el: Element = xml.parse().unwrap();
        Fallback::try_from(el).unwrap()
    }

    #[test]
    fn a_reply_quote_is_cut_out_by_code_points() {
        let f = fallback(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
             <body start='0' end='5'/></fallback>",
        );
        assert_eq!(strip_fallback("> hé\nyes", &[f], REPLY), "yes");
    }

    #[test]
    fn a_range_outside_the_body_keeps_the_whole_body() {
        let f = fallback(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
             <body start='0' end='600'/></fallback>",
        );
        assert_eq!(
            strip_fallback("short", std::slice::from_ref(&f), REPLY),
            "short"
        );
        let back = fallback(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
             <body start='4' end='2'/></fallback>",
        );
        assert_eq!(strip_fallback("short", &[back], REPLY), "short");
    }

    #[test]
    fn a_fallback_without_ranges_is_the_whole_body_and_other_features_are_kept() {
        let f =
            fallback("<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>");
        assert_eq!(
            strip_fallback("retracted", std::slice::from_ref(&f), RETRACT),
            ""
        );
        assert_eq!(strip_fallback("retracted", &[f], REPLY), "retracted");
    }

    #[test]
    fn the_payloads_round_trip() {
        let r = Reply {
            to: Some("bob@localhost".into()),
            id: "m1".into(),
        };
        let el = Element::from(r.clone());
        assert!(el.is("reply", REPLY));
        assert_eq!(Reply::try_from(el).unwrap(), r);
        let x = Retract { id: "m2".into() };
        assert_eq!(Retract::try_from(Element::from(x.clone())).unwrap(), x);
        assert!(Element::from(StoreHint).is("store", HINTS));
        assert_eq!(quote_fallback("a\nb"), "> a\n> b\n");
        let meta = FileMeta {
            name: Some("cat.png".into()),
            size: Some(5),
            media_type: Some("image/png".into()),
            sha256: Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into()),
        };
        assert_eq!(parse_file_metadata(&file_metadata(&meta)), meta);
    }
}
