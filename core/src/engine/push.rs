//! XEP-0357 push notifications, the session's part: telling the server the app's wish (kept in
//! the store, `store/push.rs`) on every new session and whenever it changes, and recording its
//! answer. While a session is hibernated (the app killed or suspended) the server then publishes
//! a notification to the app server, which wakes the app ([`crate::Client::wake`]).

use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::{
    data_forms::{DataForm, DataFormType, Field},
    iq::Iq,
    push::{Disable, Enable},
    stanza_error::DefinedCondition,
};

use super::{new_id, Engine, PendingIq};
use crate::error::{Error, Result};
use crate::events::{ErrorKind, Event, SocialEvent};
use crate::store::{PushWant, Store};

/// XEP-0357's publish-options form type.
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// A push request on its way: what it asked, so its answer settles exactly that wish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PushAsked {
    pub want: PushWant,
    pub service: String,
    pub node: String,
}

impl Engine {
    /// Tells the server the stored wish, when there is one to tell: an `enable` on every new
    /// session (`new_session`) or when it is pending, a `disable` until confirmed. One request at
    /// a time; a wish changed meanwhile is told when the answer to the last one came.
    pub(super) fn push_sync(&mut self, store: &mut Store, new_session: bool) -> Result<()> {
        if !self.is_online() || self.closing() {
            return Ok(());
        }
        if self.asking(|what| matches!(what, PendingIq::Push(_))) {
            return Ok(());
        }
        let Some(settings) = store.push(self.account)? else {
            return Ok(());
        };
        let pending = settings.state == crate::store::PushState::Pending;
        let service: BareJid = match settings.service.parse() {
            Ok(j) => j,
            Err(e) => {
                // Refused on the way in (Client::enable_push); a row from elsewhere says so.
                let why = format!("the push service {:?} is not a JID: {e}", settings.service);
                store.push_answered(
                    self.account,
                    settings.want,
                    &settings.service,
                    &settings.node,
                    Err(why.clone()),
                )?;
                self.emit(Event::error(ErrorKind::Usage, why));
                return Ok(());
            }
        };
        let node = Some(settings.node.clone());
        let iq = match settings.want {
            PushWant::Enable if new_session || pending => {
                let form = settings.secret.as_deref().map(|secret| {
                    DataForm::new(
                        DataFormType::Submit,
                        PUBLISH_OPTIONS,
                        vec![Field::text_single("secret", secret)],
                    )
                });
                Iq::from_set(
                    new_id("push"),
                    Enable {
                        jid: service,
                        node,
                        form,
                    },
                )
            }
            PushWant::Disable => Iq::from_set(new_id("push"), Disable { jid: service, node }),
            PushWant::Enable => return Ok(()),
        };
        self.send_iq(
            iq,
            PendingIq::Push(PushAsked {
                want: settings.want,
                service: settings.service,
                node: settings.node,
            }),
        );
        Ok(())
    }

    /// The server answered a push request: recorded, announced (`push`), and the next wish told
    /// if it changed meanwhile.
    pub(super) fn on_push_answer(
        &mut self,
        store: &mut Store,
        asked: PushAsked,
        iq: Iq,
    ) -> Result<()> {
        let outcome = match &iq {
            Iq::Result { .. } => Ok(()),
            // A disable the server does not know is as good as done (it is idempotent).
            Iq::Error { error, .. }
                if asked.want == PushWant::Disable
                    && error.defined_condition == DefinedCondition::ItemNotFound =>
            {
                Ok(())
            }
            Iq::Error { error, .. } => Err(super::describe_error(error)),
            _ => return Err(Error::Internal("an iq answer that is not one".into())),
        };
        let current = store.push_answered(
            self.account,
            asked.want,
            &asked.service,
            &asked.node,
            outcome.clone(),
        )?;
        let state = match (asked.want, &outcome) {
            (PushWant::Enable, Ok(())) => "enabled",
            (PushWant::Disable, Ok(())) => "disabled",
            (_, Err(_)) => "refused",
        };
        if let Err(why) = &outcome {
            tracing::warn!(service = %asked.service, "the server refused push: {why}");
        }
        self.emit(Event::Social(SocialEvent::Push {
            state,
            service: asked.service,
            node: asked.node,
            error: outcome.err(),
        }));
        if !current {
            // The wish changed while this one was on its way: tell the new one.
            self.push_sync(store, false)?;
        }
        Ok(())
    }

    /// The server did not answer a push request: reported; told again on the next session.
    pub(super) fn on_push_timeout(&mut self, asked: PushAsked) {
        self.emit(Event::error(
            ErrorKind::Protocol,
            format!(
                "the server did not answer the push request for {} (tried again on the next session)",
                asked.service
            ),
        ));
    }
}
