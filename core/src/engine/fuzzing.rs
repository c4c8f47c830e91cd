//! Entry points for the fuzz targets in `core/fuzz`, built only with `--cfg fuzzing` (which
//! `cargo fuzz` sets): the inbound parsing the session applies to every stanza, without a session.

use tokio_xmpp::parsers::{jid::BareJid, mam, message::Message, minidom::Element};

/// Parses `xml` as one stanza from the server and splits it as the session would: body, ids,
/// receipts, markers, carbons and the message inside, archive results and the message inside.
/// Must never panic, whatever the input. A stanza-id is only kept when our own server stamped it.
pub fn inbound_stanza(xml: &str) {
    let Ok(el) = xml.parse::<Element>() else {
        return;
    };
    let Ok(m) = Message::try_from(el) else {
        return;
    };
    let own: BareJid = "alice@localhost".parse().expect("a valid JID");
    let p = super::parse(m, &own);
    let inner = [p.carbon_sent, p.carbon_received].into_iter().flatten();
    let archived = p
        .mam_result
        .and_then(|r| mam::Result_::try_from(r).ok())
        .map(|r| r.forwarded.message);
    for m in inner.chain(archived) {
        let _ = super::parse(m, &own);
    }
}

#[cfg(test)]
mod tests {
    /// Replays the fuzz seeds and every input a fuzz run ever crashed on
    /// (`core/fuzz/regressions/inbound/`): each is a regression test.
    #[test]
    fn fuzz_seeds_and_regressions_parse_without_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for dir in ["seeds/inbound", "regressions/inbound"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries {
                let bytes = std::fs::read(e.unwrap().path()).unwrap();
                super::inbound_stanza(&String::from_utf8_lossy(&bytes));
                n += 1;
            }
        }
        assert!(n >= 4, "the seeds are missing ({n} inputs)");
    }
}
