//! A test push app server (XEP-0357's "App Server"): an XMPP component (XEP-0114, tokio-xmpp's
//! `Component`) on the test Prosody that records every notification the server publishes to it
//! and answers each with a result, as a real app server does before it wakes the phone.
//!
//! Like [`RawClient`](crate::raw::RawClient), it runs on a thread of its own with a
//! single-threaded Tokio runtime behind a blocking API.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::parsers::data_forms::DataForm;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Component, Stanza};

/// One notification the server published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Who published it (the user's server).
    pub from: String,
    /// The node (the device).
    pub node: String,
    /// The `secret` publish option, if any.
    pub secret: Option<String>,
    /// The summary form's fields (`message-count`, `last-message-sender`, ...).
    pub fields: Vec<(String, String)>,
}

/// A running app server. Dropping it stops it.
pub struct AppServer {
    seen: Arc<Mutex<Vec<Publish>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl AppServer {
    /// Connects as the component `jid` with `secret` to the component port at `addr`, and
    /// serves until dropped.
    pub fn start(addr: SocketAddr, jid: &str, secret: &str) -> io::Result<AppServer> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (jid, secret, seen2) = (jid.to_owned(), secret.to_owned(), seen.clone());
        let thread = thread::Builder::new()
            .name("push-app-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    // Long read timeouts: the component's stream ends at its first soft timeout.
                    let timeouts = Timeouts {
                        read_timeout: Duration::from_secs(3600),
                        response_timeout: Duration::from_secs(60),
                    };
                    let mut component = match Component::new_plaintext(
                        &jid,
                        &secret,
                        DnsConfig::addr(&addr.to_string()),
                        timeouts,
                    )
                    .await
                    {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(io::Error::other(format!(
                                "the app server could not connect: {e}"
                            ))));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        let stanza = tokio::select! {
                            s = component.next() => s,
                            _ = &mut stop_rx => return,
                        };
                        let Some(stanza) = stanza else {
                            eprintln!("push-app-server: the server closed the stream");
                            return;
                        };
                        if let Stanza::Iq(Iq::Set {
                            from,
                            to,
                            id,
                            payload,
                        }) = stanza
                        {
                            if let Some(p) = parse_publish(from.as_ref(), &payload) {
                                seen2.lock().unwrap().push(p);
                            }
                            let answer = Iq::Result {
                                from: to,
                                to: from,
                                id,
                                payload: None,
                            };
                            if let Err(e) = component.send(Stanza::Iq(answer)).await {
                                eprintln!("push-app-server: cannot answer: {e}");
                                return;
                            }
                        }
                    }
                });
            })?;
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(AppServer {
                seen,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the app server did not connect in 30 s")),
        }
    }

    /// Every notification so far.
    pub fn publishes(&self) -> Vec<Publish> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` notifications came (at most `timeout`); returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Publish> {
        let start = Instant::now();
        loop {
            let seen = self.publishes();
            if seen.len() >= n || start.elapsed() > timeout {
                return seen;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pubsub publish of a push notification, as XEP-0357 §7 has it.
fn parse_publish(
    from: Option<&tokio_xmpp::jid::Jid>,
    payload: &tokio_xmpp::minidom::Element,
) -> Option<Publish> {
    if !payload.is("pubsub", ns::PUBSUB) {
        return None;
    }
    let publish = payload.get_child("publish", ns::PUBSUB)?;
    let node = publish.attr("node")?.to_owned();
    let form = |el: Option<&tokio_xmpp::minidom::Element>| {
        el.and_then(|x| x.get_child("x", ns::DATA_FORMS))
            .and_then(|x| DataForm::try_from(x.clone()).ok())
    };
    let secret = form(payload.get_child("publish-options", ns::PUBSUB)).and_then(|f| {
        f.fields
            .into_iter()
            .find(|f| f.var.as_deref() == Some("secret"))
            .and_then(|f| f.values.into_iter().next())
    });
    let notification = publish
        .get_child("item", ns::PUBSUB)
        .and_then(|i| i.get_child("notification", ns::PUSH));
    let fields = form(notification)
        .map(|f| {
            f.fields
                .into_iter()
                .filter_map(|f| Some((f.var?, f.values.into_iter().next().unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default();
    Some(Publish {
        from: from.map(|f| f.to_string()).unwrap_or_default(),
        node,
        secret,
        fields,
    })
}
