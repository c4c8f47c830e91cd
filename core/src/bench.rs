//! For the benchmark harness only (feature `bench`; not a stable API): the core's own login, so
//! that the harness's raw baseline client (pre-serialized stanzas, no store) runs over exactly
//! the transport Tether uses: TCP, STARTTLS with the same rustls configuration, SCRAM.

use std::time::Duration;

pub use crate::connection::login::{Io, LoggedIn, Wire};
use crate::error::Result;
use crate::store::Account;

/// Connects and authenticates `account` as [`crate::Client::run`] does, and returns the stream
/// after the post-authentication restart (ready for bind): SASL1, as the baseline binds itself.
pub async fn login(account: &Account, password: &str) -> Result<LoggedIn> {
    let tls = if account.insecure_plaintext {
        None
    } else {
        Some(crate::connection::tls_config(account.ca_file.as_deref())?)
    };
    let timeouts = tokio_xmpp::xmlstream::Timeouts {
        read_timeout: Duration::from_secs(60),
        response_timeout: Duration::from_secs(60),
    };
    let plan = crate::connection::login::LoginPlan::default();
    match crate::connection::login::login(
        account,
        password,
        tls.as_ref(),
        timeouts,
        crate::client::MAX_STANZA_BYTES,
        &plan,
    )
    .await?
    {
        crate::connection::login::Attempt::In(l) => Ok(*l),
        _ => Err(crate::Error::Internal("SASL2 was not asked for".into())),
    }
}

/// The stanza the core writes for an outgoing one-to-one chat message (id and origin-id, a
/// receipt request, markable), so the raw baseline puts the same bytes on the wire.
pub fn chat_stanza(to: &str, id: &str, body: &str) -> Result<tokio_xmpp::Stanza> {
    crate::engine::outgoing_message(&crate::store::OutboxItem {
        key: 0,
        id: id.to_owned(),
        origin_id: Some(id.to_owned()),
        peer: to.to_owned(),
        body: body.to_owned(),
        kind: "chat".to_owned(),
        ..Default::default()
    })
}
