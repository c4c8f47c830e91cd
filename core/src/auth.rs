//! The SASL2 exchange (XEP-0388) with Bind2 (XEP-0386), inline stream resumption (XEP-0198 in
//! SASL2) and FAST tokens (XEP-0484), as a state machine without I/O: [`Sasl2::start`] builds the
//! `<authenticate/>` from what the server offered, [`Sasl2::handle`] takes each answer and says
//! what to send next or how the login ended. The driver (`connection/login.rs`) only moves these
//! elements; every decision (which mechanism, what is asked inline, whether an answer is in
//! order, whether the server proved itself) is made here and tested in memory.
//!
//! Rules it keeps:
//! - SCRAM only for a password (`-PLUS` with `tls-exporter` when TLS 1.3 gives one), never PLAIN.
//! - FAST only as `HT-SHA-256-EXPR`: the token is bound to this TLS channel, so a token stolen
//!   from one connection cannot be replayed on another, and the server's answer is checked (a
//!   server that cannot prove it knows the token is refused).
//! - A token is asked for with the password, and replaced whenever the server rotates it.
//! - Inline resumption is asked only with a resumable stream; a `<resumed/>` never asked for, a
//!   second `<success/>`, or an answer after the end is out of order and ends the login.

use ::sasl::client::mechanisms::Scram;
use ::sasl::client::Mechanism;
use ::sasl::common::scram::{Sha1, Sha256};
use ::sasl::common::ChannelBinding;
use hmac::{Hmac, Mac};
use sha2::Sha256 as Sha256Hash;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::sasl as xsasl;
use tokio_xmpp::parsers::{bind2, fast, ns, sasl2, sm};

/// The one FAST mechanism Tether uses: HMAC-SHA-256 bound to the TLS 1.3 exporter.
pub const FAST_MECHANISM: &str = "HT-SHA-256-EXPR";

/// The Bind2 tag: the server makes the resource `Tether~<hash of the client id>`.
pub const BIND_TAG: &str = "Tether";

/// A FAST token as the server issued it. Secret: kept like the password, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct FastToken {
    /// The mechanism it is for.
    pub mechanism: String,
    /// The token itself.
    pub secret: String,
    /// When the server stops accepting it (milliseconds since the epoch).
    pub expires_ms: i64,
    /// The replay counter sent with each use (XEP-0484 §3.3), increased before every use.
    pub count: u32,
}

impl std::fmt::Debug for FastToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastToken")
            .field("mechanism", &self.mechanism)
            .field("secret", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .field("count", &self.count)
            .finish()
    }
}

/// Where a front end keeps the FAST token's secret when it keeps the password outside the
/// database (the desktop app's OS keyring). Without one, the secret is in the owner-only store
/// beside the password. The token's expiry and replay count stay in the store either way.
pub trait SecretVault: Send + Sync {
    /// The FAST token's secret, if the vault has one.
    fn fast_secret(&self) -> Result<Option<String>, String>;
    /// Keeps (`Some`) or forgets (`None`) the FAST token's secret.
    fn set_fast_secret(&self, secret: Option<&str>) -> Result<(), String>;
}

/// What the client brings to a SASL2 login.
pub struct Sasl2Request {
    /// The account's local part.
    pub username: String,
    /// The password (used when there is no usable token, and to ask for one).
    pub password: String,
    /// A FAST token from an earlier login, if any.
    pub token: Option<FastToken>,
    /// The TLS 1.3 exporter (`EXPORTER-Channel-Binding`), when the channel has one.
    pub exporter: Option<Vec<u8>>,
    /// This installation's stable id (the SASL2 user agent; FAST tokens are tied to it).
    pub client_id: uuid::Uuid,
    /// The stream to resume inline, when the engine holds a resumable one.
    pub resume: Option<sm::Resume>,
}

/// How the server answered, as the driver read it.
#[derive(Debug)]
pub enum Sasl2Answer {
    /// `<challenge/>`.
    Challenge(sasl2::Challenge),
    /// `<success/>`.
    Success(sasl2::Success),
    /// `<failure/>`.
    Failure(sasl2::Failure),
    /// `<continue/>` (extra tasks, such as a second factor).
    Continue(sasl2::Continue),
}

/// What to do after an answer.
#[derive(Debug)]
pub enum Step {
    /// Send this `<response/>` and wait for the next answer.
    Respond(sasl2::Response),
    /// Authenticated.
    Done(Box<Sasl2Outcome>),
}

/// What a successful SASL2 login settled inline.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    /// The stream was resumed (no bind: the old session continues).
    Resumed(sm::Resumed),
    /// A new session was bound by Bind2.
    Bound {
        /// When a resume was asked: it failed, with the server's `h` if it gave one.
        resume_failed: Option<Option<u32>>,
        /// Stream management enabled inline (`None`: not asked, or refused).
        sm: Option<sm::Enabled>,
        /// Carbons enabled inline.
        carbons: bool,
    },
    /// Neither: Bind2 was not offered, so the engine binds (and resumes) as after SASL1, on the
    /// stream features the server sends after `<success/>`.
    Nothing,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Sasl2Outcome {
    /// The identity the server assigned (the full JID when a resource was bound).
    pub jid: Jid,
    /// What was settled inline.
    pub inline: Inline,
    /// A new FAST token to keep (asked for, or rotated by the server).
    pub token: Option<FastToken>,
    /// Whether the login used the FAST token (rather than the password).
    pub used_fast: bool,
}

/// Why a SASL2 login did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No SCRAM mechanism is offered over SASL2.
    #[error("the server offers no SCRAM mechanism over SASL2 (offered: {0:?}); Tether never sends a password in plain")]
    NoScram(Vec<String>),
    /// The server refused the FAST token: forget it and log in with the password.
    #[error("the server refused the FAST token ({0})")]
    FastRejected(String),
    /// The server refused the password.
    #[error("the server said {0} (wrong JID or password?)")]
    Rejected(String),
    /// An answer that does not parse, or a success that does not say what it settled.
    #[error("malformed SASL2 answer from the server: {0}")]
    Malformed(String),
    /// An answer at a point where it cannot come.
    #[error("SASL2 answer out of order: {0}")]
    OutOfOrder(String),
    /// The server did not prove it knows the password or token (its SCRAM signature or FAST
    /// answer is wrong): it may not be the server it claims to be.
    #[error("the server failed to prove its identity: {0}")]
    ServerProof(String),
    /// The server asks for tasks (a second factor) Tether cannot do.
    #[error("the server asks for extra login steps Tether does not support: {0:?}")]
    Continue(Vec<String>),
}

enum Method {
    Scram(Box<dyn Mechanism + Send>),
    Fast {
        /// The answer the server must give (HMAC of "Responder" and the channel binding).
        expected: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Done,
}

/// One SASL2 login in progress.
pub struct Sasl2 {
    method: Method,
    state: State,
    resume_asked: bool,
    bind_asked: bool,
    carbons_asked: bool,
    token_mechanism: Option<String>,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256Hash>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The condition of a `<failure/>` (the first child in the SASL namespace), for messages.
fn condition(f: &sasl2::Failure) -> String {
    let cond = f
        .payloads
        .iter()
        .find(|e| e.ns() == ns::SASL)
        .map(|e| e.name().to_string())
        .unwrap_or_else(|| "not-authorized".into());
    match &f.text {
        Some(t) => format!("{cond}: {t}"),
        None => cond,
    }
}

impl Sasl2 {
    /// Chooses how to authenticate and builds the `<authenticate/>`.
    pub fn start(
        offer: &sasl2::Authentication,
        req: Sasl2Request,
    ) -> Result<(Sasl2, sasl2::Authenticate), AuthError> {
        let inline = offer.inline.as_ref();
        let fast_offer = inline.and_then(|i| {
            i.payloads
                .iter()
                .find(|e| e.is("fast", ns::FAST))
                .and_then(|e| fast::FastQuery::try_from(e.clone()).ok())
        });
        let fast_ok = |mech: &str| {
            fast_offer
                .as_ref()
                .is_some_and(|f| f.mechanisms.iter().any(|m| m.0 == mech))
        };
        let mut payloads: Vec<Element> = Vec::new();

        let (mechanism, initial, method) = match (&req.token, &req.exporter) {
            (Some(token), Some(cb))
                if token.mechanism == FAST_MECHANISM && fast_ok(FAST_MECHANISM) =>
            {
                let proof = hmac(token.secret.as_bytes(), &[b"Initiator", cb]);
                let mut initial = req.username.as_bytes().to_vec();
                initial.push(0);
                initial.extend(&proof);
                payloads.push(
                    fast::FastResponse {
                        count: token.count,
                        invalidate: false,
                    }
                    .into(),
                );
                let expected = hmac(token.secret.as_bytes(), &[b"Responder", cb]);
                (token.mechanism.clone(), initial, Method::Fast { expected })
            }
            _ => {
                let (name, mech) = choose_scram(
                    &offer.mechanisms,
                    &req.username,
                    &req.password,
                    req.exporter.as_deref(),
                )?;
                (name, Vec::new(), Method::Scram(mech))
            }
        };
        let mut method = method;
        let initial = match &mut method {
            Method::Scram(m) => m.initial(),
            Method::Fast { .. } => initial,
        };
        // A token is asked for whenever the password is used and the channel can bind one.
        let token_mechanism = (matches!(method, Method::Scram(_))
            && req.exporter.is_some()
            && fast_ok(FAST_MECHANISM))
        .then(|| FAST_MECHANISM.to_string());
        if let Some(m) = &token_mechanism {
            payloads.push(
                fast::RequestToken {
                    mechanism: m.clone(),
                }
                .into(),
            );
        }

        let sm_offered = inline.is_some_and(|i| i.sm.is_some());
        let resume_asked = sm_offered && req.resume.is_some();
        if resume_asked {
            payloads.push(req.resume.clone().expect("checked").into());
        }
        let bind = inline.and_then(|i| i.bind2.as_ref());
        let mut carbons_asked = false;
        if let Some(bind) = bind {
            let has = |var: &str| bind.inline_features.iter().any(|f| f == var);
            let mut asks: Vec<Element> = Vec::new();
            if has(ns::SM) && sm_offered {
                asks.push(sm::Enable::new().with_resume().into());
            }
            if has(ns::CARBONS) {
                asks.push(tokio_xmpp::parsers::carbons::Enable.into());
                carbons_asked = true;
            }
            payloads.push(
                bind2::BindQuery {
                    tag: Some(BIND_TAG.into()),
                    payloads: asks,
                }
                .into(),
            );
        }
        let auth = sasl2::Authenticate {
            mechanism,
            initial_response: Some(initial),
            user_agent: sasl2::UserAgent {
                id: req.client_id,
                software: Some("Tether".into()),
                device: None,
            },
            payloads,
        };
        Ok((
            Sasl2 {
                method,
                state: State::Waiting,
                resume_asked,
                bind_asked: bind.is_some(),
                carbons_asked,
                token_mechanism,
            },
            auth,
        ))
    }

    /// Whether this login uses a FAST token.
    pub fn uses_fast(&self) -> bool {
        matches!(self.method, Method::Fast { .. })
    }

    /// Takes the server's next answer.
    pub fn handle(&mut self, answer: Sasl2Answer) -> Result<Step, AuthError> {
        if self.state == State::Done {
            return Err(AuthError::OutOfOrder(format!(
                "{} after the login ended",
                answer_name(&answer)
            )));
        }
        match answer {
            Sasl2Answer::Challenge(c) => match &mut self.method {
                Method::Scram(m) => {
                    let data = m.response(&c.sasl_data).map_err(|e| {
                        self.state = State::Done;
                        AuthError::Malformed(format!("bad SCRAM challenge: {e:?}"))
                    })?;
                    Ok(Step::Respond(sasl2::Response { sasl_data: data }))
                }
                Method::Fast { .. } => {
                    self.state = State::Done;
                    Err(AuthError::OutOfOrder(
                        "a challenge to a FAST token (it has none)".into(),
                    ))
                }
            },
            Sasl2Answer::Failure(f) => {
                self.state = State::Done;
                Err(match self.method {
                    Method::Fast { .. } => AuthError::FastRejected(condition(&f)),
                    Method::Scram(_) => AuthError::Rejected(condition(&f)),
                })
            }
            Sasl2Answer::Continue(c) => {
                self.state = State::Done;
                Err(AuthError::Continue(c.tasks))
            }
            Sasl2Answer::Success(s) => {
                self.state = State::Done;
                self.success(s).map(|o| Step::Done(Box::new(o)))
            }
        }
    }

    fn success(&mut self, s: sasl2::Success) -> Result<Sasl2Outcome, AuthError> {
        let used_fast = self.uses_fast();
        match &mut self.method {
            Method::Scram(m) => {
                let data = s.additional_data.as_deref().ok_or_else(|| {
                    AuthError::ServerProof("a SCRAM success without the server's signature".into())
                })?;
                m.success(data).map_err(|e| match e {
                    ::sasl::client::MechanismError::InvalidState => AuthError::OutOfOrder(
                        "success before the SCRAM exchange was complete".into(),
                    ),
                    other => AuthError::ServerProof(format!("{other:?}")),
                })?;
            }
            Method::Fast { expected } => {
                if s.additional_data.as_deref() != Some(expected.as_slice()) {
                    return Err(AuthError::ServerProof(
                        "the FAST answer does not match the token".into(),
                    ));
                }
            }
        }
        let mut resumed = None;
        let mut resume_failed = None;
        let mut bound = None;
        let mut token = None;
        for el in s.payloads {
            if el.is("resumed", ns::SM) {
                if !self.resume_asked {
                    return Err(AuthError::OutOfOrder(
                        "a resumed stream never asked for".into(),
                    ));
                }
                let r = sm::Resumed::try_from(el)
                    .map_err(|e| AuthError::Malformed(format!("bad <resumed/>: {e}")))?;
                resumed = Some(r);
            } else if el.is("failed", ns::SM) {
                if !self.resume_asked {
                    return Err(AuthError::OutOfOrder(
                        "a failed resume never asked for".into(),
                    ));
                }
                resume_failed = Some(h_of(&el)?);
            } else if el.is("bound", ns::BIND2) {
                if !self.bind_asked {
                    return Err(AuthError::OutOfOrder("a bind never asked for".into()));
                }
                bound = Some(
                    bind2::Bound::try_from(el)
                        .map_err(|e| AuthError::Malformed(format!("bad <bound/>: {e}")))?,
                );
            } else if el.is("failed", ns::BIND2) {
                return Err(AuthError::Malformed(
                    "the server could not bind a resource".into(),
                ));
            } else if el.is("token", ns::FAST) {
                let t = fast::Token::try_from(el)
                    .map_err(|e| AuthError::Malformed(format!("bad FAST <token/>: {e}")))?;
                let mechanism = self
                    .token_mechanism
                    .clone()
                    .unwrap_or_else(|| FAST_MECHANISM.to_string());
                token = Some(FastToken {
                    mechanism,
                    secret: t.token,
                    expires_ms: t.expiry.0.timestamp_millis(),
                    count: 0,
                });
            } else {
                tracing::debug!(
                    name = el.name(),
                    ns = el.ns(),
                    "unknown SASL2 success payload"
                );
            }
        }
        let inline = match (resumed, bound) {
            (Some(_), Some(_)) => {
                return Err(AuthError::Malformed(
                    "both a resumed stream and a new session".into(),
                ))
            }
            (Some(r), None) => Inline::Resumed(r),
            (None, Some(b)) => {
                let mut sm_enabled = None;
                let mut carbons = false;
                for p in b.payloads {
                    if p.is("enabled", ns::SM) {
                        sm_enabled =
                            Some(sm::Enabled::try_from(p).map_err(|e| {
                                AuthError::Malformed(format!("bad <enabled/>: {e}"))
                            })?);
                    } else if p.is("enabled", ns::CARBONS) && self.carbons_asked {
                        carbons = true;
                    }
                }
                Inline::Bound {
                    resume_failed: self.resume_asked.then_some(resume_failed.flatten()),
                    sm: sm_enabled,
                    carbons,
                }
            }
            (None, None) if self.bind_asked => {
                return Err(AuthError::Malformed(
                    "a success that neither resumed the stream nor bound a session".into(),
                ))
            }
            (None, None) => Inline::Nothing,
        };
        Ok(Sasl2Outcome {
            jid: s.authorization_identifier,
            inline,
            token,
            used_fast,
        })
    }
}

fn answer_name(a: &Sasl2Answer) -> &'static str {
    match a {
        Sasl2Answer::Challenge(_) => "a challenge",
        Sasl2Answer::Success(_) => "a success",
        Sasl2Answer::Failure(_) => "a failure",
        Sasl2Answer::Continue(_) => "a continue",
    }
}

/// The `h` of an SM `<failed/>` (optional in XEP-0198; Prosody omits it for an unknown session).
fn h_of(el: &Element) -> Result<Option<u32>, AuthError> {
    el.attr("h")
        .map(|h| {
            h.parse::<u32>()
                .map_err(|_| AuthError::Malformed(format!("bad h {h:?} on <failed/>")))
        })
        .transpose()
}

/// The strongest SCRAM the server offers: SHA-256 before SHA-1, `-PLUS` when the channel has an
/// exporter (else the `y` flag says we could have bound it).
fn choose_scram(
    offered: &[String],
    username: &str,
    password: &str,
    exporter: Option<&[u8]>,
) -> Result<(String, Box<dyn Mechanism + Send>), AuthError> {
    let has = |m: &str| offered.iter().any(|o| o == m);
    let plus_offered = offered
        .iter()
        .any(|m| m.starts_with("SCRAM-") && m.ends_with("-PLUS"));
    let cb = match exporter {
        Some(e) if plus_offered => ChannelBinding::TlsExporter(e.to_vec()),
        Some(_) => ChannelBinding::Unsupported,
        None => ChannelBinding::None,
    };
    let plus = matches!(cb, ChannelBinding::TlsExporter(_));
    let pick = |hash: &str| {
        let name = if plus {
            format!("SCRAM-{hash}-PLUS")
        } else {
            format!("SCRAM-{hash}")
        };
        has(&name).then_some(name)
    };
    let scram_err = |_| AuthError::Malformed("cannot generate a SCRAM nonce".into());
    if let Some(name) = pick("SHA-256") {
        let m = Scram::<Sha256>::new(username, password, cb).map_err(scram_err)?;
        return Ok((name, Box::new(m)));
    }
    if let Some(name) = pick("SHA-1") {
        let m = Scram::<Sha1>::new(username, password, cb).map_err(scram_err)?;
        return Ok((name, Box::new(m)));
    }
    Err(AuthError::NoScram(offered.to_vec()))
}

/// RFC 6120 SASL, for servers without SASL2: the same SCRAM choice, one mechanism, and the
/// server's signature checked on success.
pub struct Sasl1 {
    mech: Box<dyn Mechanism + Send>,
    done: bool,
}

impl Sasl1 {
    /// Chooses the SCRAM mechanism and builds the `<auth/>`.
    pub fn start(
        offered: &[String],
        username: &str,
        password: &str,
        exporter: Option<&[u8]>,
    ) -> Result<(Sasl1, xsasl::Auth), AuthError> {
        let (name, mut mech) = choose_scram(offered, username, password, exporter)?;
        let mechanism = name
            .parse::<xsasl::Mechanism>()
            .map_err(|e| AuthError::Malformed(format!("mechanism {name}: {e}")))?;
        let data = mech.initial();
        Ok((Sasl1 { mech, done: false }, xsasl::Auth { mechanism, data }))
    }

    /// Takes the server's next SASL nonza: `Ok(Some(response))` to send, `Ok(None)` when
    /// authenticated.
    pub fn handle(&mut self, nonza: xsasl::Nonza) -> Result<Option<xsasl::Response>, AuthError> {
        if self.done {
            return Err(AuthError::OutOfOrder("a SASL answer after the end".into()));
        }
        match nonza {
            xsasl::Nonza::Challenge(c) => {
                let data = self.mech.response(&c.data).map_err(|e| {
                    self.done = true;
                    AuthError::Malformed(format!("bad SCRAM challenge: {e:?}"))
                })?;
                Ok(Some(xsasl::Response { data }))
            }
            xsasl::Nonza::Success(s) => {
                self.done = true;
                self.mech.success(&s.data).map_err(|e| match e {
                    ::sasl::client::MechanismError::InvalidState => AuthError::OutOfOrder(
                        "success before the SCRAM exchange was complete".into(),
                    ),
                    other => AuthError::ServerProof(format!("{other:?}")),
                })?;
                Ok(None)
            }
            xsasl::Nonza::Failure(f) => {
                self.done = true;
                Err(AuthError::Rejected(format!("{:?}", f.defined_condition)))
            }
            other => {
                self.done = true;
                Err(AuthError::OutOfOrder(format!("{other:?}")))
            }
        }
    }
}

#[cfg(test)]
mod tests;
