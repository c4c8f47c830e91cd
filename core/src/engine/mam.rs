//! XEP-0313 archive catch-up after every new (not resumed) session: the account's own archive, then
//! each room's, paged with RSM from the last archive id the store knows (the first sync of an archive
//! is capped by time). Results are accepted only from the queried archive with the query's id, and
//! deduplicated like live traffic (origin-id, then the archive's stanza-id).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    data_forms::{DataForm, DataFormType, Field},
    iq::Iq,
    mam::{Fin, Query, QueryId, Result_},
    message::MessageType,
    ns,
    rsm::SetQuery,
};

use super::inbound::{parse, room_message};
use super::{new_id, Engine, PendingIq, IQ_TIMEOUT};
use crate::delivery::{Direction, State};
use crate::error::Result;
use crate::events::{ErrorKind, Event, SocialEvent};
use crate::store::{InboundMessage, Move, Store};

/// Results per page.
const PAGE: usize = 100;

/// How often a page query that got no answer is asked again before the archive is skipped.
const RETRIES: u8 = 2;

/// The catch-up in progress. Persisted (in the same transaction as what moved it), so a process
/// killed mid-catch-up continues where it was: a resumed stream re-delivers the results of the
/// query it had running, and those are accepted under the persisted query id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MamSync {
    /// Archives still to query: "" is the account's own, else a room's bare JID.
    queue: VecDeque<String>,
    current: Option<Current>,
    /// Changed since it was last committed.
    #[serde(skip)]
    dirty: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Current {
    archive: String,
    queryid: String,
    /// The id of the page query's iq, whose answer moves the catch-up on.
    iq_id: String,
    /// New messages stored from this archive so far.
    stored: u64,
    /// Page queries that timed out on this archive.
    #[serde(default)]
    retries: u8,
}

impl MamSync {
    /// Whether a catch-up is running (`--until-idle` waits for it).
    pub(super) fn busy(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    /// The catch-up a previous run left (none if it finished).
    pub(super) fn load(store: &Store, account: i64) -> crate::store::Result<MamSync> {
        let state = store.load_mam_sync(account)?;
        Ok(
            match state.as_deref().map(serde_json::from_str::<MamSync>) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // Only a damaged row: start over (a new session queries every archive again
                    // from its last stored id, so nothing is skipped).
                    tracing::warn!("unreadable archive catch-up state, starting over: {e}");
                    MamSync::default()
                }
                None => MamSync::default(),
            },
        )
    }

    /// Writes the state if it changed (inside the call's transaction).
    pub(super) fn save_if_changed(
        &self,
        store: &mut Store,
        account: i64,
    ) -> crate::store::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let json = self
            .busy()
            .then(|| serde_json::to_string(self).expect("MamSync serializes"));
        store.save_mam_sync(account, json.as_deref())
    }

    /// The call that changed it committed.
    pub(super) fn committed(&mut self) {
        self.dirty = false;
    }
}

impl Engine {
    /// Starts the catch-up: our own archive, then the rooms'.
    pub(super) fn start_mam(&mut self, store: &mut Store, rooms: Vec<String>) -> Result<()> {
        self.mam.queue = std::iter::once(String::new()).chain(rooms).collect();
        self.mam.current = None;
        self.mam.dirty = true;
        self.next_archive(store)
    }

    /// Adds a room's archive to the catch-up (a room that had dropped us was joined again),
    /// starting it if none is running.
    pub(super) fn catch_up_room(&mut self, store: &mut Store, room: &str) -> Result<()> {
        let queued = self.mam.queue.iter().any(|a| a == room)
            || self.mam.current.as_ref().is_some_and(|c| c.archive == room);
        if queued {
            return Ok(());
        }
        self.mam.queue.push_back(room.to_owned());
        self.mam.dirty = true;
        if self.mam.current.is_none() {
            self.next_archive(store)?;
        }
        Ok(())
    }

    /// A resumed stream: the catch-up the lost connection (or a killed process) had running goes
    /// on. The server re-delivers what it had not seen acked of the running query; its answer is
    /// awaited again (and the page asked again if none comes in time).
    pub(super) fn continue_mam(&mut self, store: &mut Store) -> Result<()> {
        match self.mam.current.as_ref() {
            Some(current) => {
                let (id, deadline) = (current.iq_id.clone(), self.now + IQ_TIMEOUT);
                self.link_mut()
                    .pending_iqs
                    .insert(id, (PendingIq::Mam, deadline));
                Ok(())
            }
            None if self.mam.busy() => self.next_archive(store),
            // Messages a lost stream left unconfirmed (a restart that could not number them, say)
            // are checked although the stream was resumed: the account's own archive, and the
            // rooms they went to.
            None if !store.checking(self.account, None)?.is_empty() => {
                let rooms = store.rooms_checking(self.account)?;
                self.start_mam(store, rooms)
            }
            None => Ok(()),
        }
    }

    /// An archive's catch-up ended (complete, refused, absent or skipped): the messages checked
    /// against it that it did not hold become `failed`, with the reason they were checked for, and
    /// the user decides. `None`: every message still checked (the whole catch-up ended).
    fn fail_unverified(&mut self, store: &mut Store, archive: Option<&str>) -> Result<()> {
        let scope = archive.map(|a| (!a.is_empty()).then_some(a));
        let keys = store.checking(self.account, scope)?;
        if keys.is_empty() {
            return Ok(());
        }
        tracing::info!(
            archive,
            count = keys.len(),
            "not in the archive: the user decides"
        );
        let moves: Vec<Move> = keys
            .into_iter()
            .map(|key| Move {
                error: None,
                ..Move::to(key, State::Failed)
            })
            .collect();
        self.apply(store, &moves, &[])
    }

    /// No answer to the page query in time: ask for the same page again (a query written just
    /// before the link died is not re-sent by stream management), and skip the archive after
    /// [`RETRIES`].
    pub(super) fn on_mam_timeout(&mut self, store: &mut Store) -> Result<()> {
        let Some(current) = self.mam.current.as_mut() else {
            return Ok(());
        };
        let what = if current.archive.is_empty() {
            self.own.to_string()
        } else {
            current.archive.clone()
        };
        if current.retries >= RETRIES {
            self.emit(Event::error(
                ErrorKind::Mam,
                format!("the archive of {what} did not answer; catch-up of it skipped"),
            ));
            return self.next_archive(store);
        }
        current.retries += 1;
        self.mam.dirty = true;
        tracing::info!(archive = what, "archive query timed out; asking again");
        let last = store.mam_last_id(self.account, &current.archive.clone())?;
        self.query_page(store, last.flatten())
    }

    fn next_archive(&mut self, store: &mut Store) -> Result<()> {
        self.mam.dirty = true;
        if let Some(done) = self.mam.current.take() {
            self.fail_unverified(store, Some(&done.archive))?;
        }
        let Some(archive) = self.mam.queue.pop_front() else {
            return self.fail_unverified(store, None);
        };
        let last = store.mam_last_id(self.account, &archive)?;
        self.mam.current = Some(Current {
            archive,
            queryid: String::new(),
            iq_id: String::new(),
            stored: 0,
            retries: 0,
        });
        match last {
            Some(Some(id)) => self.query_page(store, Some(id)),
            _ => self.query_page(store, None),
        }
    }

    /// Asks for the page after `after`, or (first sync) the messages of the last few days.
    fn query_page(&mut self, store: &mut Store, after: Option<String>) -> Result<()> {
        let Some(current) = self.mam.current.as_mut() else {
            return Ok(());
        };
        let queryid = new_id("q");
        let iq_id = new_id("mam");
        current.queryid = queryid.clone();
        current.iq_id = iq_id.clone();
        self.mam.dirty = true;
        let archive = current.archive.clone();
        let form = if after.is_none() {
            let since = chrono::DateTime::<chrono::Utc>::from(self.link().wall)
                - chrono::Duration::from_std(self.config.mam_first_sync)
                    .unwrap_or_else(|_| chrono::Duration::days(7));
            let start = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            Some(DataForm::new(
                DataFormType::Submit,
                ns::MAM,
                vec![Field::text_single("start", &start)],
            ))
        } else {
            None
        };
        let query = Query {
            queryid: Some(QueryId(queryid)),
            node: None,
            form,
            set: Some(SetQuery {
                max: Some(PAGE),
                after,
                before: None,
                index: None,
            }),
            flip_page: false,
        };
        let mut iq = Iq::from_set(iq_id, query);
        if !archive.is_empty() {
            match archive.parse::<BareJid>() {
                Ok(room) => iq = iq.with_to(Jid::from(room)),
                Err(e) => {
                    tracing::warn!(archive, "bad room JID in the store: {e}");
                    return self.next_archive(store);
                }
            }
        }
        self.send_iq(iq, PendingIq::Mam);
        Ok(())
    }

    /// A `<result/>` message. Forged ones (another sender, or a query id we did not send) are
    /// dropped and reported.
    pub(super) fn on_mam_result(
        &mut self,
        store: &mut Store,
        from: Option<Jid>,
        result: Element,
    ) -> Result<()> {
        let own = self.own.clone();
        let Some(current) = self.mam.current.as_ref() else {
            return self.forged_mam(store, from, "no archive query is running");
        };
        let expected: Option<BareJid> = if current.archive.is_empty() {
            None
        } else {
            match current.archive.parse() {
                Ok(room) => Some(room),
                // Never fall back to "our own archive" for a room we cannot name.
                Err(_) => {
                    return self.forged_mam(store, from, "the queried room's JID is unusable")
                }
            }
        };
        let sender_ok = match (&expected, &from) {
            (None, None) => true,
            (None, Some(f)) => *f == own,
            (Some(room), Some(f)) => f == room,
            (Some(_), None) => false,
        };
        if !sender_ok {
            return self.forged_mam(store, from, "not from the queried archive");
        }
        let result = match Result_::try_from(result) {
            Ok(r) => r,
            Err(e) => return self.forged_mam(store, from, &format!("malformed result: {e}")),
        };
        if result.queryid.as_ref().map(|q| q.0.as_str()) != Some(current.queryid.as_str()) {
            return self.forged_mam(store, from, "unknown query id");
        }
        let archive_id = result.id;
        let delay = result
            .forwarded
            .delay
            .as_ref()
            .map(|d| d.stamp.0.timestamp_millis());
        let inner = result.forwarded.message;
        let type_ = inner.type_.clone();
        let (inner_from, inner_to) = (inner.from.clone(), inner.to.clone());
        let msg = match expected {
            None => {
                if !matches!(type_, MessageType::Chat | MessageType::Normal) {
                    return self.count_inbound();
                }
                let p = parse(inner, &own);
                let Some(sender) = inner_from else {
                    return self.count_inbound();
                };
                let outgoing = sender.to_bare() == own;
                if !outgoing && self.blocked(store, &sender)? {
                    return self.count_inbound();
                }
                let peer = if outgoing {
                    match inner_to {
                        Some(to) => to.to_bare(),
                        None => return self.count_inbound(),
                    }
                } else {
                    sender.to_bare()
                };
                let Some(c) = self.usable(peer.as_str(), &p) else {
                    return self.count_inbound();
                };
                InboundMessage {
                    direction: if outgoing {
                        Direction::Out
                    } else {
                        Direction::In
                    },
                    kind: "chat",
                    from_nick: None,
                    receipt_to: None,
                    id: p.id,
                    origin_id: p.origin_id,
                    stanza_id: Some(archive_id),
                    peer: peer.to_string(),
                    body: c.body,
                    server_ts: p.delay_ms.or(delay),
                    action: c.action,
                    target: c.target,
                    reactions: c.reactions,
                    file: c.file,
                    invite: c.invite,
                }
            }
            Some(room) => {
                let Some(Ok(sender)) = inner_from.map(Jid::try_into_full) else {
                    return self.count_inbound();
                };
                let nick = sender.resource().to_string();
                let our_nick = store.room_nick(self.account, room.as_str())?;
                let p = parse(inner, &room);
                let Some(c) = self.usable(room.as_str(), &p) else {
                    return self.count_inbound();
                };
                let direction = if our_nick.as_deref() == Some(nick.as_str()) {
                    Direction::Out
                } else {
                    Direction::In
                };
                room_message(
                    &room,
                    direction,
                    Some(nick),
                    p.id,
                    p.origin_id,
                    Some(archive_id),
                    c,
                    p.delay_ms.or(delay),
                )
            }
        };
        let account = self.account;
        if msg.direction == Direction::Out {
            // Ours: proof that the server has it, for a message still waiting for that proof
            // (one being checked after a lost stream, or one whose ack the link lost).
            let key = msg.origin_id.clone().or_else(|| msg.id.clone());
            if let Some(key) = key {
                let (peer, sid) = (msg.peer.clone(), msg.stanza_id.clone());
                let confirmed = if msg.kind == "groupchat" {
                    store
                        .has_outgoing(account, &peer, &key)?
                        .then_some(())
                        .map(|()| store.reflect(account, &peer, &key, sid.as_deref(), None))
                        .transpose()?
                } else {
                    store
                        .archived(account, &peer, &key, sid.as_deref())?
                        .map(Some)
                };
                if let Some(change) = confirmed {
                    self.count_inbound()?;
                    self.emit_changes(change.as_slice());
                    return Ok(());
                }
            }
        }
        let stored = self.commit_counted(store, |store, snap| {
            store.store_inbound_full(account, &msg, snap)
        })?;
        if self.announce_stored(&stored, &msg) {
            if let Some(current) = self.mam.current.as_mut() {
                current.stored += 1;
                self.mam.dirty = true;
            }
        }
        Ok(())
    }

    fn forged_mam(&mut self, _store: &mut Store, from: Option<Jid>, why: &str) -> Result<()> {
        tracing::warn!(?from, why, "archive result dropped");
        self.emit(Event::error(
            ErrorKind::Security,
            format!(
                "dropped an archive result from {}: {why}",
                from.map(|j| j.to_string())
                    .unwrap_or_else(|| "our server".into())
            ),
        ));
        self.count_inbound()
    }

    /// The answer to a page query: record where we are, then the next page or the next archive.
    pub(super) fn on_mam_answer(&mut self, store: &mut Store, iq: Iq) -> Result<()> {
        let Some(current) = self.mam.current.as_ref() else {
            return Ok(());
        };
        let archive = current.archive.clone();
        match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } => match Fin::try_from(payload) {
                Ok(fin) => {
                    let last = fin.set.last.clone();
                    store.set_mam_last_id(self.account, &archive, last.as_deref())?;
                    if !fin.complete && last.is_some() {
                        return self.query_page(store, last);
                    }
                    let stored = self.mam.current.as_ref().map_or(0, |c| c.stored);
                    self.emit(Event::Social(SocialEvent::MamSynced {
                        archive: if archive.is_empty() {
                            self.own.to_string()
                        } else {
                            archive
                        },
                        count: stored,
                    }));
                }
                Err(e) => self.emit(Event::error(
                    ErrorKind::Mam,
                    format!("bad archive answer: {e}"),
                )),
            },
            Iq::Error { error, .. } => {
                use tokio_xmpp::parsers::stanza_error::DefinedCondition as C;
                let what = if archive.is_empty() {
                    "our server"
                } else {
                    &archive
                };
                if matches!(
                    error.defined_condition,
                    C::ServiceUnavailable | C::FeatureNotImplemented
                ) {
                    // No archive there: nothing to catch up from, nothing to report.
                    tracing::info!(archive = what, "no message archive");
                } else {
                    self.emit(Event::error(
                        ErrorKind::Mam,
                        format!(
                            "archive query to {what} failed: {:?}",
                            error.defined_condition
                        ),
                    ));
                }
            }
            _ => {}
        }
        self.next_archive(store)
    }
}
