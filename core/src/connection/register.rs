//! Account creation's I/O: a TLS stream to the server, not authenticated, carrying the
//! exchange [`crate::register::Registration`] decides (XEP-0077, with an XEP-0401 invitation's
//! token first when there is one).

use std::time::Duration;

use futures::SinkExt;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::xmlstream::{FallibleStreamElement, Timeouts, XmppStreamElement};
use tokio_xmpp::Stanza;

use super::login::{connect_unauthenticated, next_element, Wire};
use crate::error::{Error, Result};
use crate::register::{Invite, Next, Registration};
use crate::store::{Account, NewAccount};

/// How long the server has for each answer.
const ANSWER: Duration = Duration::from_secs(30);

/// Creates the account `new` on its server (its JID's user part is the name asked for), with
/// `invite`'s token when given. Nothing is stored: the caller adds the account once this
/// returns `Ok`. The server's refusals are [`crate::register::RegistrationError`]s, as
/// [`Error::Usage`] with what to change.
pub async fn register(new: &NewAccount, invite: Option<&Invite>) -> Result<()> {
    let new = crate::connection::checked_account(new)?;
    let jid: tokio_xmpp::jid::BareJid = new
        .jid
        .parse()
        .map_err(|e| Error::Usage(format!("bad JID {:?}: {e}", new.jid)))?;
    let username = jid.node().map(|n| n.to_string()).unwrap_or_default();
    if new.password.is_empty() {
        return Err(Error::Usage("the password is empty".into()));
    }
    let (mut registration, first) =
        Registration::start(&username, &new.password, jid.domain().as_str(), invite)?;
    let account = Account {
        id: 0,
        jid: new.jid.clone(),
        password: String::new(),
        server: new.server.clone(),
        ca_file: new.ca_file.clone(),
        insecure_plaintext: new.insecure_plaintext,
        direct_tls: new.direct_tls,
        resource: String::new(),
        enabled: true,
    };
    let tls = if new.insecure_plaintext {
        None
    } else {
        Some(super::tls_config(new.ca_file.as_deref())?)
    };
    let timeouts = Timeouts {
        read_timeout: ANSWER,
        response_timeout: ANSWER,
    };
    let (_, mut stream) = connect_unauthenticated(
        &account,
        tls.as_ref(),
        timeouts,
        crate::config::MAX_STANZA_BYTES,
    )
    .await?;
    let send = |iq: Iq| XmppStreamElement::Stanza(Stanza::Iq(iq));
    stream.send(&send(first)).await.map_err(io)?;
    loop {
        let answer =
            match tokio::time::timeout(ANSWER, next_element(&mut stream, "registration")).await {
                Ok(answer) => answer?,
                Err(_) => {
                    return Err(Error::Network(format!(
                        "the server did not answer the registration within {} s",
                        ANSWER.as_secs()
                    )))
                }
            };
        let iq = match answer {
            Wire::Xmpp(FallibleStreamElement::Ok(XmppStreamElement::Stanza(Stanza::Iq(iq)))) => iq,
            Wire::Xmpp(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e))) => {
                return Err(Error::Protocol(format!(
                    "the server ended the stream during registration: {e:?}"
                )))
            }
            // Anything else before an account exists (a message, a nonza) is not for us.
            other => {
                tracing::debug!("ignored during registration: {other:?}");
                continue;
            }
        };
        match registration.handle(iq)? {
            Next::Send(iq) => stream.send(&send(*iq)).await.map_err(io)?,
            Next::Done => break,
        }
    }
    if let Err(e) = SinkExt::<&XmppStreamElement>::close(&mut stream).await {
        tracing::debug!("closing the registration stream: {e}");
    }
    Ok(())
}

fn io(e: std::io::Error) -> Error {
    Error::Network(format!("during registration: {e}")).caused_by(e)
}
