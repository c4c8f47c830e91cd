//! A push wake-up's result ([`crate::Client::wake`]): what it brought, fit for a notification.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::MessageRow;

/// How a wake-up ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeOutcome {
    /// Everything the server held is stored and acked, everything queued sent; the stream is
    /// kept for the next process.
    Done,
    /// The deadline came first: what is committed stays (and is acked), the rest is for the
    /// next run.
    Deadline,
    /// Another process (the app) drives the stream: nothing was done.
    Yielded,
    /// No session could be had before the deadline (`error` says why): nothing new.
    Offline,
}

/// New messages from one conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WakeConversation {
    /// The contact's or room's bare JID.
    pub peer: String,
    /// How many new messages.
    pub count: u64,
    /// Who wrote them (the contact, or the room nicks), each once, in order.
    pub senders: Vec<String>,
    /// Their texts, oldest first, when the app asked for them (empty otherwise).
    pub bodies: Vec<String>,
}

/// What [`crate::Client::wake`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WakeSummary {
    /// How it ended.
    pub outcome: WakeOutcome,
    /// New messages in all.
    pub new_messages: u64,
    /// Per conversation, in the order their first new message arrived.
    pub conversations: Vec<WakeConversation>,
    /// Why, for [`WakeOutcome::Offline`] (or an error that ended the run early).
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
}

/// Groups `rows` (the messages a wake brought) per conversation.
pub(crate) fn conversations(rows: &[MessageRow], bodies: bool) -> Vec<WakeConversation> {
    let mut order: Vec<String> = Vec::new();
    let mut by_peer: BTreeMap<String, WakeConversation> = BTreeMap::new();
    for row in rows {
        let c = by_peer.entry(row.peer.clone()).or_insert_with(|| {
            order.push(row.peer.clone());
            WakeConversation {
                peer: row.peer.clone(),
                count: 0,
                senders: Vec::new(),
                bodies: Vec::new(),
            }
        });
        c.count += 1;
        let sender = match (&row.kind[..], &row.from_nick) {
            ("groupchat", Some(nick)) => nick.clone(),
            _ => row.peer.clone(),
        };
        if !c.senders.contains(&sender) {
            c.senders.push(sender);
        }
        if bodies {
            c.bodies.push(row.body.clone());
        }
    }
    order
        .into_iter()
        .filter_map(|p| by_peer.remove(&p))
        .collect()
}
