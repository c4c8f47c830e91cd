//! The SASL2 state machine against a scripted server: a real SCRAM server (the `sasl` crate's),
//! a FAST token checked as Prosody's `mod_sasl2_fast` checks it, and every bad answer the issue
//! names (malformed or out-of-order success, a rejected token, a refused inline resume).

use super::*;
use sasl::common::scram::ScramProvider;
use sasl::common::{Identity, Password};
use sasl::secret;
use sasl::server::mechanisms::Scram as ServerScram;
use sasl::server::{Mechanism as _, Provider, ProviderError, Response};
use tokio_xmpp::parsers::sm::StreamId;

const USER: &str = "alice";
const PASSWORD: &str = "pencil";
const SALT: [u8; 8] = [35, 71, 92, 105, 212, 219, 114, 93];
const EXPORTER: &[u8] = &[7u8; 32];

struct Users;

impl Provider<secret::Pbkdf2Sha256> for Users {
    fn provide(&self, identity: &Identity) -> Result<secret::Pbkdf2Sha256, ProviderError> {
        if identity != &Identity::Username(USER.into()) {
            return Err(ProviderError::AuthenticationFailed);
        }
        let digest =
            sasl::common::scram::Sha256::derive(&Password::Plain(PASSWORD.into()), &SALT, 4096)
                .map_err(ProviderError::DeriveError)?;
        Ok(secret::Pbkdf2Sha256 {
            salt: SALT.to_vec(),
            iterations: 4096,
            digest,
        })
    }
}
sasl::impl_validator_using_provider!(Users, secret::Pbkdf2Sha256);

fn offer(xml: &str) -> sasl2::Authentication {
    let el: Element = xml.parse().expect("offer parses");
    sasl2::Authentication::try_from(el).expect("an authentication offer")
}

/// What Prosody 13.0.1 with mod_sasl2, _bind2, _sm and _fast offers on TLS 1.3.
fn prosody_offer() -> sasl2::Authentication {
    offer(
        "<authentication xmlns='urn:xmpp:sasl:2'>\
           <mechanism>SCRAM-SHA-1</mechanism><mechanism>SCRAM-SHA-256</mechanism>\
           <mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-1-PLUS</mechanism>\
           <inline>\
             <bind xmlns='urn:xmpp:bind:0'><inline>\
               <feature var='urn:xmpp:carbons:2'/><feature var='urn:xmpp:csi:0'/>\
               <feature var='urn:xmpp:sm:3'/></inline></bind>\
             <sm xmlns='urn:xmpp:sm:3'/>\
             <fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism>\
               <mechanism>HT-SHA-256-EXPR</mechanism></fast>\
           </inline>\
         </authentication>",
    )
}

fn request(token: Option<FastToken>, resume: Option<(u32, &str)>) -> Sasl2Request {
    Sasl2Request {
        username: USER.into(),
        password: PASSWORD.into(),
        token,
        exporter: Some(EXPORTER.to_vec()),
        client_id: uuid::Uuid::from_u128(42),
        resume: resume.map(|(h, id)| sm::Resume {
            h,
            previd: StreamId(id.into()),
        }),
    }
}

fn token(secret: &str) -> FastToken {
    FastToken {
        mechanism: FAST_MECHANISM.into(),
        secret: secret.into(),
        expires_ms: 4_000_000_000_000,
        count: 3,
    }
}

fn success(additional: Option<Vec<u8>>, payloads: &[&str]) -> Sasl2Answer {
    Sasl2Answer::Success(sasl2::Success {
        additional_data: additional,
        authorization_identifier: "alice@localhost/Tether~abc".parse().unwrap(),
        payloads: payloads.iter().map(|p| p.parse().unwrap()).collect(),
    })
}

fn failure(cond: &str) -> Sasl2Answer {
    let el: Element = format!(
        "<failure xmlns='urn:xmpp:sasl:2'><{cond} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>"
    )
    .parse()
    .unwrap();
    Sasl2Answer::Failure(sasl2::Failure::try_from(el).unwrap())
}

const BOUND_WITH_SM: &str = "<bound xmlns='urn:xmpp:bind:0'>\
     <enabled xmlns='urn:xmpp:sm:3' id='new-stream' resume='1' max='600'/>\
     <enabled xmlns='urn:xmpp:carbons:2'/></bound>";

/// The same without the `-PLUS` mechanisms: the `sasl` crate's SCRAM server binds only
/// `tls-unique`, so the full exchanges below run with the `y` flag (the client could bind, the
/// server does not offer it); `-PLUS` with `tls-exporter` is checked against Prosody end to end.
fn unbound_offer() -> sasl2::Authentication {
    let mut o = prosody_offer();
    o.mechanisms.retain(|m| !m.ends_with("-PLUS"));
    o
}

/// Runs SCRAM to the server's final message and returns the server's signature.
fn scram_through(auth: &sasl2::Authenticate, login: &mut Sasl2) -> Vec<u8> {
    let mut server =
        ServerScram::<sasl::common::scram::Sha256, _>::new(Users, ChannelBinding::Unsupported);
    let first = server
        .respond(auth.initial_response.as_deref().unwrap())
        .expect("client-first accepted");
    let Response::Proceed(challenge) = first else {
        panic!("a challenge")
    };
    let Step::Respond(resp) = login
        .handle(Sasl2Answer::Challenge(sasl2::Challenge {
            sasl_data: challenge,
        }))
        .unwrap()
    else {
        panic!("a response")
    };
    match server.respond(&resp.sasl_data).expect("the proof verifies") {
        Response::Success(_, signature) => signature,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_password_login_binds_the_channel_asks_for_a_token_and_resumes_inline() {
    let (mut login, auth) =
        Sasl2::start(&unbound_offer(), request(None, Some((5, "old")))).unwrap();
    assert_eq!(auth.mechanism, "SCRAM-SHA-256");
    assert!(auth.initial_response.as_ref().unwrap().starts_with(b"y,"));
    // Where the server offers -PLUS, the channel is bound with tls-exporter.
    let (_, plus) = Sasl2::start(&prosody_offer(), request(None, None)).unwrap();
    assert_eq!(plus.mechanism, "SCRAM-SHA-256-PLUS");
    assert!(plus
        .initial_response
        .as_ref()
        .unwrap()
        .starts_with(b"p=tls-exporter,"));
    let names: Vec<_> = auth.payloads.iter().map(|p| p.name().to_string()).collect();
    assert_eq!(names, ["request-token", "resume", "bind"]);
    let resume = sm::Resume::try_from(auth.payloads[1].clone()).unwrap();
    assert_eq!((resume.h, resume.previd.0.as_str()), (5, "old"));
    let bind = bind2::BindQuery::try_from(auth.payloads[2].clone()).unwrap();
    assert_eq!(bind.tag.as_deref(), Some(BIND_TAG));
    assert!(bind.payloads.iter().any(|p| p.is("enable", ns::SM)));
    assert!(bind.payloads.iter().any(|p| p.is("enable", ns::CARBONS)));

    let signature = scram_through(&auth, &mut login);
    let Step::Done(outcome) = login
        .handle(success(
            Some(signature),
            &[
                "<resumed xmlns='urn:xmpp:sm:3' h='9' previd='old'/>",
                "<token xmlns='urn:xmpp:fast:0' token='secret-token:fast-1' expiry='2027-01-01T00:00:00Z'/>",
            ],
        ))
        .unwrap()
    else {
        panic!("done")
    };
    assert_eq!(
        outcome.inline,
        Inline::Resumed(sm::Resumed {
            h: 9,
            previd: StreamId("old".into())
        })
    );
    let t = outcome.token.expect("the token asked for");
    assert_eq!(
        (t.mechanism.as_str(), t.secret.as_str()),
        (FAST_MECHANISM, "secret-token:fast-1")
    );
    assert!(!outcome.used_fast);
    // A second answer after the end is out of order.
    assert!(matches!(
        login.handle(failure("not-authorized")),
        Err(AuthError::OutOfOrder(_))
    ));
}

#[test]
fn a_fast_login_proves_the_token_on_this_channel_and_checks_the_servers_answer() {
    let (mut login, auth) = Sasl2::start(
        &prosody_offer(),
        request(Some(token("secret-token:fast-1")), None),
    )
    .unwrap();
    assert_eq!(auth.mechanism, FAST_MECHANISM);
    assert!(login.uses_fast());
    // What mod_sasl2_fast checks: username NUL HMAC(token, "Initiator" || exporter).
    let initial = auth.initial_response.clone().unwrap();
    let (user, proof) = initial.split_at(USER.len());
    assert_eq!(user, USER.as_bytes());
    assert_eq!(proof[0], 0);
    let mut mac = Hmac::<Sha256Hash>::new_from_slice(b"secret-token:fast-1").unwrap();
    mac.update(b"Initiator");
    mac.update(EXPORTER);
    assert!(
        mac.verify_slice(&proof[1..]).is_ok(),
        "the proof is the token's HMAC"
    );
    let fast = fast::FastResponse::try_from(auth.payloads[0].clone()).unwrap();
    assert_eq!(fast.count, 3);
    assert!(!auth
        .payloads
        .iter()
        .any(|p| p.is("request-token", ns::FAST)));

    let mut mac = Hmac::<Sha256Hash>::new_from_slice(b"secret-token:fast-1").unwrap();
    mac.update(b"Responder");
    mac.update(EXPORTER);
    let answer = mac.finalize().into_bytes().to_vec();
    let Step::Done(outcome) = login
        .handle(success(
            Some(answer),
            &[
                BOUND_WITH_SM,
                "<token xmlns='urn:xmpp:fast:0' token='secret-token:fast-2' expiry='2027-01-01T00:00:00Z'/>",
            ],
        ))
        .unwrap()
    else {
        panic!("done")
    };
    assert!(outcome.used_fast);
    assert_eq!(
        outcome.token.unwrap().secret,
        "secret-token:fast-2",
        "rotated"
    );
    let Inline::Bound {
        resume_failed,
        sm,
        carbons,
    } = outcome.inline
    else {
        panic!("bound")
    };
    assert_eq!(resume_failed, None, "no resume was asked");
    assert_eq!(sm.unwrap().id.unwrap().0, "new-stream");
    assert!(carbons);
}

#[test]
fn a_server_that_cannot_prove_the_token_is_refused() {
    let (mut login, _) = Sasl2::start(
        &prosody_offer(),
        request(Some(token("secret-token:fast-1")), None),
    )
    .unwrap();
    let err = login
        .handle(success(Some(vec![1, 2, 3]), &[BOUND_WITH_SM]))
        .unwrap_err();
    assert!(matches!(err, AuthError::ServerProof(_)), "{err}");
    let (mut login, _) = Sasl2::start(
        &prosody_offer(),
        request(Some(token("secret-token:fast-1")), None),
    )
    .unwrap();
    let err = login.handle(success(None, &[BOUND_WITH_SM])).unwrap_err();
    assert!(matches!(err, AuthError::ServerProof(_)), "{err}");
}

#[test]
fn a_rejected_token_says_so_apart_from_a_rejected_password() {
    let (mut login, _) = Sasl2::start(
        &prosody_offer(),
        request(Some(token("secret-token:old")), None),
    )
    .unwrap();
    let err = login.handle(failure("credentials-expired")).unwrap_err();
    assert_eq!(err, AuthError::FastRejected("credentials-expired".into()));
    let (mut login, _) = Sasl2::start(&prosody_offer(), request(None, None)).unwrap();
    let err = login.handle(failure("not-authorized")).unwrap_err();
    assert_eq!(err, AuthError::Rejected("not-authorized".into()));
}

#[test]
fn a_token_is_not_used_or_asked_for_without_a_channel_binding() {
    let mut req = request(Some(token("secret-token:fast-1")), None);
    req.exporter = None;
    let (login, auth) = Sasl2::start(&prosody_offer(), req).unwrap();
    assert!(!login.uses_fast());
    assert_eq!(auth.mechanism, "SCRAM-SHA-256");
    assert!(auth.initial_response.as_ref().unwrap().starts_with(b"n,"));
    assert!(!auth.payloads.iter().any(|p| p.ns() == ns::FAST));
}

#[test]
fn a_success_before_the_scram_exchange_ended_is_out_of_order() {
    let (mut login, _) = Sasl2::start(&prosody_offer(), request(None, None)).unwrap();
    let err = login
        .handle(success(Some(b"v=AAAA".to_vec()), &[BOUND_WITH_SM]))
        .unwrap_err();
    assert!(matches!(err, AuthError::OutOfOrder(_)), "{err}");
}

#[test]
fn a_wrong_scram_signature_is_refused() {
    let (mut login, auth) = Sasl2::start(&unbound_offer(), request(None, None)).unwrap();
    let mut signature = scram_through(&auth, &mut login);
    let last = signature.len() - 2;
    signature[last] ^= 1;
    let err = login
        .handle(success(Some(signature), &[BOUND_WITH_SM]))
        .unwrap_err();
    assert!(matches!(err, AuthError::ServerProof(_)), "{err}");
}

#[test]
fn malformed_and_unasked_outcomes_are_refused() {
    // Neither resumed nor bound although a bind was asked.
    let (mut login, auth) = Sasl2::start(&unbound_offer(), request(None, None)).unwrap();
    let sig = scram_through(&auth, &mut login);
    let err = login.handle(success(Some(sig), &[])).unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "{err}");
    // A resumed stream never asked for.
    let (mut login, auth) = Sasl2::start(&unbound_offer(), request(None, None)).unwrap();
    let sig = scram_through(&auth, &mut login);
    let err = login
        .handle(success(
            Some(sig),
            &["<resumed xmlns='urn:xmpp:sm:3' h='1' previd='x'/>"],
        ))
        .unwrap_err();
    assert!(matches!(err, AuthError::OutOfOrder(_)), "{err}");
    // Both resumed and bound.
    let (mut login, auth) = Sasl2::start(&unbound_offer(), request(None, Some((1, "x")))).unwrap();
    let sig = scram_through(&auth, &mut login);
    let err = login
        .handle(success(
            Some(sig),
            &[
                "<resumed xmlns='urn:xmpp:sm:3' h='1' previd='x'/>",
                BOUND_WITH_SM,
            ],
        ))
        .unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "{err}");
    // A bad h on the resume's failure.
    let (mut login, auth) = Sasl2::start(&unbound_offer(), request(None, Some((1, "x")))).unwrap();
    let sig = scram_through(&auth, &mut login);
    let err = login
        .handle(success(
            Some(sig),
            &["<failed xmlns='urn:xmpp:sm:3' h='-4'/>", BOUND_WITH_SM],
        ))
        .unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "{err}");
}

#[test]
fn a_refused_inline_resume_binds_a_new_session_with_the_servers_h() {
    let (mut login, auth) =
        Sasl2::start(&unbound_offer(), request(None, Some((4, "gone")))).unwrap();
    let sig = scram_through(&auth, &mut login);
    let Step::Done(outcome) = login
        .handle(success(
            Some(sig),
            &[
                "<failed xmlns='urn:xmpp:sm:3' h='2'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
                BOUND_WITH_SM,
            ],
        ))
        .unwrap()
    else {
        panic!("done")
    };
    let Inline::Bound {
        resume_failed, sm, ..
    } = outcome.inline
    else {
        panic!("bound")
    };
    assert_eq!(resume_failed, Some(Some(2)));
    assert!(sm.is_some());
    assert_eq!(outcome.jid.to_string(), "alice@localhost/Tether~abc");
}

#[test]
fn a_server_without_scram_or_with_extra_steps_is_refused() {
    let plain_only = offer(
        "<authentication xmlns='urn:xmpp:sasl:2'><mechanism>PLAIN</mechanism></authentication>",
    );
    assert!(matches!(
        Sasl2::start(&plain_only, request(None, None)),
        Err(AuthError::NoScram(_))
    ));
    let (mut login, _) = Sasl2::start(&prosody_offer(), request(None, None)).unwrap();
    let el: Element = "<continue xmlns='urn:xmpp:sasl:2'><additional-data>AA==</additional-data>\
        <tasks><task>HOTP-EXAMPLE</task></tasks></continue>"
        .parse()
        .unwrap();
    let err = login
        .handle(Sasl2Answer::Continue(
            sasl2::Continue::try_from(el).unwrap(),
        ))
        .unwrap_err();
    assert_eq!(err, AuthError::Continue(vec!["HOTP-EXAMPLE".into()]));
}
