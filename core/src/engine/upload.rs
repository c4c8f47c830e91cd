//! XEP-0363 HTTP File Upload, the session's part: find the server's upload service (disco), ask
//! it for a slot for each file waiting in the outbox, and check the slot before anything is sent
//! to it. The PUT itself is the transfer worker's (`crate::transfer`); the message goes out only
//! once the store says the file is uploaded.

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::{
    data_forms::DataForm,
    disco::{DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult},
    http_upload::{SlotRequest, SlotResult},
    iq::Iq,
    ns,
    stanza_error::DefinedCondition,
};

use super::{new_id, Engine, PendingIq};
use crate::error::Result;
use crate::events::{ErrorKind, Event};
use crate::store::Store;

/// The upload service this server offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UploadService {
    pub jid: Jid,
    /// The largest file it takes, if it says.
    pub max_size: Option<u64>,
}

/// What the engine knows of the upload service on this connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Discovery {
    /// Not asked yet.
    #[default]
    Unknown,
    /// Asking: this many disco#info answers still to come.
    Asking(usize),
    /// Found.
    Found(UploadService),
    /// The server has none.
    None,
}

/// Why a slot URL is refused, or `None` when it may be used: HTTPS (plain HTTP only to loopback,
/// and only when the test-only `allow_http_files` says so), on the account's domain (or one of
/// its subdomains, or the upload service's), no user info.
pub fn check_slot_url(url: &str, own: &BareJid, service: &Jid, allow_http: bool) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("the upload service gave an unusable URL ({e})")),
    };
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let loopback = host == "localhost"
        || host == "127.0.0.1"
        || host == "[::1]"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http && loopback => {}
        other => {
            return Some(format!(
                "the upload service gave a {other}: URL; only HTTPS is used for files"
            ))
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("the upload service gave a URL with credentials in it".into());
    }
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    let ours = own.domain().as_str().to_ascii_lowercase();
    let svc = service.domain().as_str().to_ascii_lowercase();
    if !(under(&ours) || under(&svc)) {
        return Some(format!(
            "the upload service gave a URL on {host}, which is neither {ours} nor {svc}"
        ));
    }
    None
}

/// Why an incoming file's URL will not be fetched, or `None`: HTTPS only (plain HTTP to loopback
/// only with the test-only `allow_http`), no credentials in it.
pub fn check_download_url(url: &str, allow_http: bool) -> Option<String> {
    let u = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("the link is not a URL ({e})")),
    };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => {}
        "http" if allow_http && loopback => {}
        other => {
            return Some(format!(
                "the link is {other}:, and files are fetched over HTTPS only"
            ))
        }
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Some("the link has credentials in it".into());
    }
    None
}

impl Engine {
    /// A new session: look for the upload service among the server's items.
    pub(super) fn discover_upload(&mut self) {
        self.upload = Discovery::Asking(0);
        let mut iq = Iq::from_get(
            new_id("items"),
            DiscoItemsQuery {
                node: None,
                rsm: None,
            },
        );
        iq = iq.with_to(Jid::from(BareJid::from_parts(None, self.own.domain())));
        self.send_iq(iq, PendingIq::DiscoItems);
    }

    pub(super) fn on_disco_items(&mut self, iq: Iq) -> Result<()> {
        let items = match iq {
            Iq::Result {
                payload: Some(p), ..
            } => DiscoItemsResult::try_from(p).ok(),
            _ => None,
        };
        let mut asked = 0;
        // The domain itself may offer it too (some servers do).
        let domain = Jid::from(BareJid::from_parts(None, self.own.domain()));
        let jids = std::iter::once(domain)
            .chain(
                items
                    .into_iter()
                    .flat_map(|r| r.items.into_iter().map(|i| i.jid)),
            )
            .take(32);
        for jid in jids {
            let q =
                Iq::from_get(new_id("info"), DiscoInfoQuery { node: None }).with_to(jid.clone());
            self.send_iq(q, PendingIq::DiscoInfo(jid));
            asked += 1;
        }
        self.upload = Discovery::Asking(asked);
        Ok(())
    }

    pub(super) fn on_disco_info(&mut self, store: &mut Store, jid: Jid, iq: Iq) -> Result<()> {
        let info = match iq {
            Iq::Result {
                payload: Some(p), ..
            } => DiscoInfoResult::try_from(p).ok(),
            _ => None,
        };
        if let Some(info) = info.filter(|i| i.features.contains(ns::HTTP_UPLOAD)) {
            if !matches!(self.upload, Discovery::Found(_)) {
                let max_size = info
                    .extensions
                    .iter()
                    .find(|f| form_type(f) == Some(ns::HTTP_UPLOAD))
                    .and_then(|f| {
                        f.fields
                            .iter()
                            .find(|x| x.var.as_deref() == Some("max-file-size"))
                    })
                    .and_then(|f| f.values.first())
                    .and_then(|v| v.parse().ok());
                tracing::info!(%jid, ?max_size, "upload service found");
                self.upload = Discovery::Found(UploadService { jid, max_size });
                return self.request_slots(store);
            }
        }
        if let Discovery::Asking(n) = self.upload {
            let left = n.saturating_sub(1);
            self.upload = if left == 0 {
                Discovery::None
            } else {
                Discovery::Asking(left)
            };
            if left == 0 {
                return self.request_slots(store);
            }
        }
        Ok(())
    }

    /// Asks for a slot for each file waiting for one (once per connection each), or fails them
    /// when the server takes no files or not one this large (nothing is sent: the user decides).
    /// Runs on every outbox pump: one indexed query, and nothing more when no file waits. The
    /// upload service is looked for when the first file waits for it.
    pub(super) fn request_slots(&mut self, store: &mut Store) -> Result<()> {
        let waiting = store.needing_slot(self.account)?;
        if waiting.is_empty() {
            return Ok(());
        }
        let service = match &self.upload {
            Discovery::Found(s) => s.clone(),
            Discovery::Unknown => {
                self.discover_upload();
                return Ok(());
            }
            Discovery::None => {
                for f in waiting {
                    let changes = store.upload_failed(
                        f.key,
                        "this server offers no file upload (XEP-0363): the file was not sent",
                        true,
                    )?;
                    self.emit_changes(&changes);
                }
                return Ok(());
            }
            Discovery::Asking(_) => return Ok(()),
        };
        for f in waiting {
            if self.slots_asked.contains(&f.key) {
                continue;
            }
            if let Some(max) = service.max_size.filter(|m| f.size > *m) {
                let why = format!(
                    "the file is {} bytes and the server accepts at most {max}: nothing was sent",
                    f.size
                );
                let changes = store.upload_failed(f.key, &why, true)?;
                self.emit_changes(&changes);
                continue;
            }
            self.slots_asked.insert(f.key);
            let req = SlotRequest {
                filename: f.name.clone(),
                size: f.size,
                content_type: Some(f.media_type.clone()),
            };
            let iq = Iq::from_get(new_id("slot"), req).with_to(service.jid.clone());
            self.send_iq(iq, PendingIq::Slot(f.key));
        }
        Ok(())
    }

    pub(super) fn on_slot(&mut self, store: &mut Store, key: i64, iq: Iq) -> Result<()> {
        self.slots_asked.remove(&key);
        let Discovery::Found(service) = self.upload.clone() else {
            return Ok(());
        };
        match iq {
            Iq::Result {
                payload: Some(p), ..
            } => {
                let slot = match SlotResult::try_from(p) {
                    Ok(s) => s,
                    Err(e) => {
                        let why = format!("the upload service's answer is malformed: {e}");
                        self.emit(Event::error(ErrorKind::Protocol, why.clone()));
                        let changes = store.upload_failed(key, &why, false)?;
                        self.emit_changes(&changes);
                        return Ok(());
                    }
                };
                let allow = self.config.allow_http_files;
                let bad = check_slot_url(&slot.put.url, &self.own, &service.jid, allow)
                    .or_else(|| check_slot_url(&slot.get.url, &self.own, &service.jid, allow));
                if let Some(why) = bad {
                    self.emit(Event::error(ErrorKind::Security, why.clone()));
                    let changes = store.upload_failed(key, &why, true)?;
                    self.emit_changes(&changes);
                    return Ok(());
                }
                let headers: Vec<(String, String)> = slot
                    .put
                    .headers
                    .iter()
                    .filter(|h| !h.value.contains(['\r', '\n']))
                    .map(|h| (h.name.as_str().to_owned(), h.value.clone()))
                    .collect();
                store.set_slot(key, &slot.put.url, &headers, &slot.get.url)?;
                self.emit(Event::transfer("file:slot", key, 0, None, None));
                Ok(())
            }
            Iq::Error { error, .. } => {
                let final_ = matches!(
                    error.defined_condition,
                    DefinedCondition::NotAcceptable
                        | DefinedCondition::ResourceConstraint
                        | DefinedCondition::Forbidden
                        | DefinedCondition::NotAllowed
                        | DefinedCondition::PolicyViolation
                );
                let text = error
                    .texts
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| format!("{:?}", error.defined_condition));
                let why = format!("the server refused the upload: {text}");
                let changes = store.upload_failed(key, &why, final_)?;
                self.emit_changes(&changes);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A slot request got no answer in time: asked again later (three times at most).
    pub(super) fn on_slot_timeout(&mut self, store: &mut Store, key: i64) -> Result<()> {
        self.slots_asked.remove(&key);
        let changes = store.upload_failed(key, "the upload service did not answer", false)?;
        self.emit_changes(&changes);
        Ok(())
    }
}

fn form_type(f: &DataForm) -> Option<&str> {
    f.form_type()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> BareJid {
        "alice@example.org".parse().unwrap()
    }
    fn svc() -> Jid {
        "upload.example.org".parse().unwrap()
    }

    #[test]
    fn only_https_links_are_fetched() {
        assert_eq!(
            check_download_url("https://example.org/f/x.png", false),
            None
        );
        assert!(check_download_url("http://example.org/f", false).is_some());
        assert!(
            check_download_url("http://example.org/f", true).is_some(),
            "not loopback"
        );
        assert_eq!(check_download_url("http://127.0.0.1:5280/f", true), None);
        assert!(check_download_url("file:///etc/passwd", true).is_some());
        assert!(check_download_url("https://a:b@example.org/", false).is_some());
    }

    #[test]
    fn a_slot_url_must_be_https_on_our_domain() {
        let ok = |u: &str, http: bool| check_slot_url(u, &own(), &svc(), http);
        assert_eq!(ok("https://upload.example.org/f/abc/x.png", false), None);
        assert_eq!(ok("https://example.org/f/abc", false), None);
        assert!(ok("http://upload.example.org/f", false)
            .unwrap()
            .contains("http:"));
        assert!(ok("https://evil.test/f", false)
            .unwrap()
            .contains("evil.test"));
        assert!(ok("https://example.org.evil.test/f", false).is_some());
        assert!(ok("https://u:p@example.org/f", false)
            .unwrap()
            .contains("credentials"));
        assert!(ok("ftp://example.org/f", true).is_some());
        assert!(ok("not a url", false).is_some());
        // Test-only plain HTTP, to loopback only.
        let local: BareJid = "alice@localhost".parse().unwrap();
        let lsvc: Jid = "upload.localhost".parse().unwrap();
        assert_eq!(
            check_slot_url("http://localhost:5280/f", &local, &lsvc, true),
            None
        );
        assert!(check_slot_url("http://localhost:5280/f", &local, &lsvc, false).is_some());
    }
}
