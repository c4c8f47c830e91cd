//! Account creation, sans-IO: in-band registration (XEP-0077) and invitations (XEP-0401 links,
//! the XEP-0445/`urn:xmpp:pars:0` pre-authentication token), decided here and moved by
//! [`crate::connection::register`] over a TLS stream before any authentication.
//!
//! The exchange: with an invitation, `<preauth token='...'/>` first (the server checks the
//! token: a refused one is [`RegistrationError::Invitation`]); then a `get` of the
//! registration fields (a server that answers with an error does not offer registration); then a
//! `set` with the username and password. Each refusal the server can give has its own error, so
//! the user is told what to change: a taken name, a refused password or name (with the server's
//! words, e.g. its password policy), sign-up closed or by invitation only.

use tokio_xmpp::parsers::ibr::{FieldsQuery, LegacyQuery};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, StanzaError};
use xso::{AsXml, FromXml};

/// XEP-0401's pre-authenticated registration namespace (Prosody's `mod_invites_register`).
pub const PARS: &str = "urn:xmpp:pars:0";

/// `<preauth token='...'/>`: the invitation's token, sent before registering.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = PARS, name = "preauth")]
pub struct Preauth {
    /// The token from the invitation link.
    #[xml(attribute)]
    pub token: String,
}

impl tokio_xmpp::parsers::iq::IqSetPayload for Preauth {}

/// An invitation link (XEP-0401): `xmpp:example.org?register;preauth=TOKEN` to create an
/// account on `example.org`, or `xmpp:juliet@example.org?roster;preauth=TOKEN;ibr=y`, a
/// contact's invitation that also lets the invited create an account on her server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The server the account is to be created on.
    pub domain: String,
    /// The pre-authentication token.
    pub token: String,
    /// Who invited, for a contact invitation.
    pub inviter: Option<String>,
}

impl Invite {
    /// Parses an invitation link; anything else is refused with what is wrong with it.
    pub fn parse(link: &str) -> Result<Invite, String> {
        let url =
            url::Url::parse(link.trim()).map_err(|e| format!("not an invitation link: {e}"))?;
        if url.scheme() != "xmpp" {
            return Err(format!(
                "not an invitation link: it starts with {}: instead of xmpp:",
                url.scheme()
            ));
        }
        let jid: tokio_xmpp::jid::BareJid = url
            .path()
            .parse()
            .map_err(|e| format!("the invitation names no server: {e}"))?;
        let query = url.query().unwrap_or_default();
        let mut parts = query.split(';');
        let action = parts.next().unwrap_or_default();
        let (mut token, mut ibr) = (None, false);
        for part in parts {
            match part.split_once('=') {
                Some(("preauth", t)) if !t.is_empty() => token = Some(t.to_owned()),
                Some(("ibr", "y")) => ibr = true,
                _ => {}
            }
        }
        let token = token.ok_or("the invitation link has no token (preauth=...)")?;
        match (action, jid.node()) {
            ("register", _) => Ok(Invite {
                domain: jid.domain().to_string(),
                token,
                inviter: None,
            }),
            ("roster", Some(_)) if ibr => Ok(Invite {
                domain: jid.domain().to_string(),
                token,
                inviter: Some(jid.to_string()),
            }),
            ("roster", Some(_)) => Err(format!(
                "this is {jid}'s invitation to chat, not to create an account: sign in with an account you have"
            )),
            _ => Err(format!("not an invitation to create an account (?{action})")),
        }
    }
}

/// Why an account could not be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The name is taken.
    #[error("{0} is taken: choose another name")]
    Taken(String),
    /// The server refused this account, in its own words: a password its policy refuses, a
    /// name it does not take, or sign-up by invitation only (Prosody says each of these with
    /// the same condition, `not-acceptable`, and its words tell them apart).
    #[error("the server refused to create this account: {0}")]
    Refused(String),
    /// The server does not offer account creation at all.
    #[error("this server does not allow creating an account here: {0}")]
    Closed(String),
    /// The invitation was refused (expired, used up, or unknown).
    #[error("the invitation is not valid any more (expired or already used): {0}")]
    Invitation(String),
    /// The invitation is for another server than the account's.
    #[error("this invitation is for {invite}, not for {account}")]
    WrongHost {
        /// The invitation's server.
        invite: String,
        /// The account's server.
        account: String,
    },
    /// The server answered something this exchange does not allow.
    #[error("the server's answer to the registration made no sense: {0}")]
    Protocol(String),
}

impl From<RegistrationError> for crate::Error {
    fn from(e: RegistrationError) -> crate::Error {
        match e {
            RegistrationError::Protocol(_) => crate::Error::Protocol(e.to_string()),
            other => crate::Error::Usage(other.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Preauth,
    Fields,
    Submit,
    Done,
}

/// What to do next.
#[derive(Debug)]
pub enum Next {
    /// Send this iq and hand its answer to [`Registration::handle`].
    Send(Box<Iq>),
    /// The account exists.
    Done,
}

/// One registration: [`Registration::start`], then [`Registration::handle`] each answer.
#[derive(Debug)]
pub struct Registration {
    username: String,
    password: String,
    token: Option<String>,
    stage: Stage,
    /// The id the current request went with.
    id: String,
}

impl Registration {
    /// Begins registering `username` with `password`, with an invitation's token if there is
    /// one; returns the first request. An invitation for another server than `domain` is
    /// refused here, before anything is sent.
    pub fn start(
        username: &str,
        password: &str,
        domain: &str,
        invite: Option<&Invite>,
    ) -> Result<(Registration, Iq), RegistrationError> {
        if let Some(i) = invite {
            if !i.domain.eq_ignore_ascii_case(domain) {
                return Err(RegistrationError::WrongHost {
                    invite: i.domain.clone(),
                    account: domain.to_owned(),
                });
            }
        }
        let mut r = Registration {
            username: username.to_owned(),
            password: password.to_owned(),
            token: invite.map(|i| i.token.clone()),
            stage: Stage::Fields,
            id: String::new(),
        };
        let first = match r.token.clone() {
            Some(token) => {
                r.stage = Stage::Preauth;
                r.request(|id| Iq::from_set(id, Preauth { token }))
            }
            None => r.request(|id| Iq::from_get(id, FieldsQuery)),
        };
        Ok((r, first))
    }

    fn request(&mut self, make: impl FnOnce(String) -> Iq) -> Iq {
        self.id = format!("reg-{}", uuid::Uuid::new_v4().simple());
        make(self.id.clone())
    }

    /// Takes the server's answer to the last request.
    pub fn handle(&mut self, answer: Iq) -> Result<Next, RegistrationError> {
        let (id, error) = match &answer {
            Iq::Result { id, .. } => (id, None),
            Iq::Error { id, error, .. } => (id, Some(error)),
            Iq::Get { .. } | Iq::Set { .. } => {
                return Err(RegistrationError::Protocol(
                    "the server asked us something before we had an account".into(),
                ))
            }
        };
        if *id != self.id {
            return Err(RegistrationError::Protocol(format!(
                "an answer to a request we did not make ({id})"
            )));
        }
        match (self.stage, error) {
            (Stage::Preauth, None) => {
                self.stage = Stage::Fields;
                Ok(Next::Send(Box::new(
                    self.request(|id| Iq::from_get(id, FieldsQuery)),
                )))
            }
            (Stage::Preauth, Some(e)) => Err(RegistrationError::Invitation(text(e))),
            (Stage::Fields, None) => {
                self.stage = Stage::Submit;
                let query = LegacyQuery {
                    username: Some(self.username.clone()),
                    password: Some(self.password.clone()),
                    ..LegacyQuery::default()
                };
                Ok(Next::Send(Box::new(
                    self.request(|id| Iq::from_set(id, query)),
                )))
            }
            (Stage::Fields, Some(e)) => Err(RegistrationError::Closed(text(e))),
            (Stage::Submit, None) => {
                self.stage = Stage::Done;
                Ok(Next::Done)
            }
            (Stage::Submit, Some(e)) => Err(match e.defined_condition {
                DefinedCondition::Conflict => RegistrationError::Taken(self.username.clone()),
                DefinedCondition::NotAcceptable | DefinedCondition::BadRequest => {
                    RegistrationError::Refused(text(e))
                }
                DefinedCondition::NotAllowed
                | DefinedCondition::Forbidden
                | DefinedCondition::NotAuthorized
                | DefinedCondition::RegistrationRequired
                | DefinedCondition::ServiceUnavailable
                | DefinedCondition::PolicyViolation => RegistrationError::Closed(text(e)),
                _ => RegistrationError::Refused(text(e)),
            }),
            (Stage::Done, _) => Err(RegistrationError::Protocol(
                "an answer after the account was created".into(),
            )),
        }
    }
}

/// The server's words for an error, or its condition when it gave none. Control characters are
/// taken out: the text is shown to the user.
fn text(e: &StanzaError) -> String {
    let words = e
        .texts
        .values()
        .next()
        .cloned()
        .unwrap_or_else(|| format!("{:?}", e.defined_condition));
    words
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::parsers::stanza_error::ErrorType;

    fn id(iq: &Iq) -> String {
        match iq {
            Iq::Get { id, .. }
            | Iq::Set { id, .. }
            | Iq::Result { id, .. }
            | Iq::Error { id, .. } => id.clone(),
        }
    }

    fn ok(to: &Iq) -> Iq {
        Iq::Result {
            from: None,
            to: None,
            id: id(to),
            payload: None,
        }
    }

    fn refused(to: &Iq, condition: DefinedCondition, words: &str) -> Iq {
        Iq::from_error(
            id(to),
            StanzaError::new(ErrorType::Cancel, condition, "en", words),
        )
    }

    fn payload_name(iq: &Iq) -> String {
        match iq {
            Iq::Get { payload, .. } | Iq::Set { payload, .. } => {
                format!("{} {}", payload.ns(), payload.name())
            }
            _ => panic!("not a request: {iq:?}"),
        }
    }

    #[test]
    fn invitation_links_are_read_and_anything_else_refused_with_why() {
        assert_eq!(
            Invite::parse("xmpp:example.org?register;preauth=abc123").unwrap(),
            Invite {
                domain: "example.org".into(),
                token: "abc123".into(),
                inviter: None
            }
        );
        assert_eq!(
            Invite::parse(" xmpp:juliet@example.org?roster;preauth=t;ibr=y ").unwrap(),
            Invite {
                domain: "example.org".into(),
                token: "t".into(),
                inviter: Some("juliet@example.org".into())
            }
        );
        for (link, why) in [
            ("https://example.org/invite/abc", "xmpp:"),
            ("xmpp:example.org?register", "no token"),
            ("xmpp:example.org?register;preauth=", "no token"),
            (
                "xmpp:juliet@example.org?roster;preauth=t",
                "not to create an account",
            ),
            ("xmpp:example.org?message;preauth=t", "not an invitation"),
            ("not a link at all", "not an invitation link"),
        ] {
            let e = Invite::parse(link).unwrap_err();
            assert!(e.contains(why), "{link}: {e}");
        }
    }

    #[test]
    fn with_an_invitation_the_token_goes_first_then_the_fields_then_the_account() {
        let invite = Invite::parse("xmpp:localhost?register;preauth=tok").unwrap();
        let (mut r, first) =
            Registration::start("newbie", "pw", "localhost", Some(&invite)).unwrap();
        assert_eq!(payload_name(&first), "urn:xmpp:pars:0 preauth");
        let Next::Send(fields) = r.handle(ok(&first)).unwrap() else {
            panic!("done too early")
        };
        assert_eq!(payload_name(&fields), "jabber:iq:register query");
        let Next::Send(submit) = r.handle(ok(&fields)).unwrap() else {
            panic!("done too early")
        };
        let Iq::Set { payload, .. } = &*submit else {
            panic!("{submit:?}")
        };
        let q = LegacyQuery::try_from(payload.clone()).unwrap();
        assert_eq!(
            (q.username.as_deref(), q.password.as_deref()),
            (Some("newbie"), Some("pw"))
        );
        assert!(matches!(r.handle(ok(&submit)), Ok(Next::Done)));
        assert!(r.handle(ok(&submit)).is_err(), "nothing after done");
    }

    #[test]
    fn each_refusal_says_what_to_change_and_odd_answers_are_protocol_errors() {
        let start = || Registration::start("newbie", "pw", "localhost", None).unwrap();
        let to_submit = || {
            let (mut r, fields) = start();
            let Next::Send(submit) = r.handle(ok(&fields)).unwrap() else {
                panic!()
            };
            (r, submit)
        };
        let (mut r, submit) = to_submit();
        assert_eq!(
            r.handle(refused(&submit, DefinedCondition::Conflict, "exists"))
                .unwrap_err(),
            RegistrationError::Taken("newbie".into())
        );
        let (mut r, submit) = to_submit();
        let e = r
            .handle(refused(
                &submit,
                DefinedCondition::NotAcceptable,
                "The password is too short\u{7}",
            ))
            .unwrap_err();
        assert_eq!(
            e,
            RegistrationError::Refused("The password is too short".into())
        );
        let (mut r, submit) = to_submit();
        assert!(matches!(
            r.handle(refused(&submit, DefinedCondition::NotAllowed, "invitation only")),
            Err(RegistrationError::Closed(t)) if t == "invitation only"
        ));
        // No registration offered at all.
        let (mut r, fields) = start();
        assert!(matches!(
            r.handle(refused(&fields, DefinedCondition::ServiceUnavailable, "")),
            Err(RegistrationError::Closed(_))
        ));
        // A refused token.
        let invite = Invite::parse("xmpp:localhost?register;preauth=old").unwrap();
        let (mut r, pre) = Registration::start("newbie", "pw", "localhost", Some(&invite)).unwrap();
        assert!(matches!(
            r.handle(refused(
                &pre,
                DefinedCondition::Forbidden,
                "The invite token is invalid or expired"
            )),
            Err(RegistrationError::Invitation(_))
        ));
        // An invitation for another host never leaves the client.
        let other = Invite::parse("xmpp:elsewhere.example?register;preauth=t").unwrap();
        assert_eq!(
            Registration::start("newbie", "pw", "localhost", Some(&other)).unwrap_err(),
            RegistrationError::WrongHost {
                invite: "elsewhere.example".into(),
                account: "localhost".into()
            }
        );
        // An answer to something else, and a request from the server.
        let (mut r, _) = start();
        let stray = Iq::Result {
            from: None,
            to: None,
            id: "other".into(),
            payload: None,
        };
        assert!(matches!(
            r.handle(stray),
            Err(RegistrationError::Protocol(_))
        ));
        let (mut r, _) = start();
        assert!(matches!(
            r.handle(Iq::from_get("x", FieldsQuery)),
            Err(RegistrationError::Protocol(_))
        ));
    }
}
