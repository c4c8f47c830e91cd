//! The contract between the core and its front ends, defined once here and generated for them:
//! the rows and events the desktop UI receives (TypeScript types generated with ts-rs), the legal
//! moves of a delivery state (so a front end never shows a state going backwards), and the
//! configuration defaults that the CLI and the mobile bindings take as theirs.
//!
//! `ui/src/generated/contract.ts` is this module's [`typescript`]; the test
//! `the_typescript_contract_is_current` fails when the file is stale (CI runs it), and
//! `TETHER_WRITE_CONTRACT=1 cargo test -p tether-core contract` writes it anew.

use serde::Serialize;
use ts_rs::TS;

use crate::chat_state::ChatState;
use crate::config::ClientConfig;
use crate::delivery::{Direction, State};
use crate::events::{
    ConnState, ConnectionEvent, ErrorEvent, ErrorKind, Event, MessageEvent, ReceivedEvent,
    SocialEvent, TransferEvent, UpdatedEvent,
};
use crate::inbox::{AccountEvent, AccountStatus, InboxConversation};
use crate::store::{
    Action, Attachment, BlockEntry, BlockState, BlockWant, Contact, Conversation, Edit, MessageRow,
    Occupant, Profile, Quoted, ReactionCount, Room, SearchHit,
};

/// The configuration defaults every front end starts from (whole units, as their options take
/// them): the one place they are written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
pub struct Defaults {
    /// First reconnect delay.
    #[ts(type = "number")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    #[ts(type = "number")]
    pub reconnect_max_ms: u64,
    /// Silence before the keepalive probe.
    #[ts(type = "number")]
    pub keepalive_secs: u64,
    /// Time the probe has before the link counts as dead.
    #[ts(type = "number")]
    pub dead_after_secs: u64,
    /// Time the immediate probe after a network change has.
    #[ts(type = "number")]
    pub quick_probe_secs: u64,
    /// How often another process's commits are looked for (0: never by a timer).
    #[ts(type = "number")]
    pub outbox_poll_ms: u64,
    /// How far back the first archive sync reaches.
    #[ts(type = "number")]
    pub mam_first_sync_days: u64,
    /// The most the server may send without completing an element.
    #[ts(type = "number")]
    pub max_stanza_kib: u64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults::of(&ClientConfig::default())
    }
}

impl Defaults {
    /// The defaults of a profile (the mobile bindings take [`crate::config::Profile::Mobile`]'s).
    pub fn profile(profile: crate::config::Profile) -> Defaults {
        Defaults::of(&ClientConfig::profile(profile))
    }

    fn of(c: &ClientConfig) -> Defaults {
        Defaults {
            reconnect_min_ms: c.reconnect_min.as_millis() as u64,
            reconnect_max_ms: c.reconnect_max.as_millis() as u64,
            keepalive_secs: c.keepalive.as_secs(),
            dead_after_secs: c.dead_after.as_secs(),
            quick_probe_secs: c.quick_probe.as_secs(),
            outbox_poll_ms: c.outbox_poll.map_or(0, |d| d.as_millis() as u64),
            mam_first_sync_days: c.mam_first_sync.as_secs() / (24 * 3600),
            max_stanza_kib: (c.max_stanza_bytes / 1024) as u64,
        }
    }
}

/// Why a front end's command failed: what the window branches on (`kind`), and what it shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
pub struct CommandError {
    /// What failed.
    pub kind: CommandErrorKind,
    /// For [`CommandErrorKind::Core`]: the core's kind of error.
    pub core: Option<ErrorKind>,
    /// What to tell the user (the core's messages say what to do).
    pub message: String,
}

/// The kinds of [`CommandError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum CommandErrorKind {
    /// No OS keyring, and the user has not agreed to keep the password in the owner-only
    /// database: ask them.
    NoKeyring,
    /// The command needs an account: sign in first.
    NotSignedIn,
    /// An account is signed in already.
    AlreadySignedIn,
    /// The front end itself failed (a lock poisoned, a thread lost): a bug.
    Internal,
    /// The core refused or failed; see `core`.
    Core,
}

impl CommandError {
    /// A command error of `kind` that is not the core's.
    pub fn new(kind: CommandErrorKind, message: impl Into<String>) -> CommandError {
        CommandError {
            kind,
            core: None,
            message: message.into(),
        }
    }
}

impl From<crate::Error> for CommandError {
    fn from(e: crate::Error) -> CommandError {
        CommandError {
            kind: CommandErrorKind::Core,
            core: Some(e.kind()),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The TypeScript file the desktop UI imports (`ui/src/generated/contract.ts`).
pub fn typescript() -> String {
    let mut out = String::from(
        "// Generated from tether-core (core/src/contract.rs) by ts-rs: do not edit.\n\
         // Regenerate: TETHER_WRITE_CONTRACT=1 cargo test -p tether-core contract\n\n",
    );
    // JSON numbers, not bigint: the core's counts and times fit in 2^53.
    let cfg = ts_rs::Config::new().with_large_int("number");
    let decls = [
        State::decl(&cfg),
        Direction::decl(&cfg),
        Action::decl(&cfg),
        ReactionCount::decl(&cfg),
        Quoted::decl(&cfg),
        Attachment::decl(&cfg),
        MessageRow::decl(&cfg),
        Edit::decl(&cfg),
        SearchHit::decl(&cfg),
        ChatState::decl(&cfg),
        Conversation::decl(&cfg),
        Contact::decl(&cfg),
        Room::decl(&cfg),
        Occupant::decl(&cfg),
        Profile::decl(&cfg),
        BlockWant::decl(&cfg),
        BlockState::decl(&cfg),
        BlockEntry::decl(&cfg),
        ConnState::decl(&cfg),
        MessageEvent::decl(&cfg),
        ReceivedEvent::decl(&cfg),
        UpdatedEvent::decl(&cfg),
        TransferEvent::decl(&cfg),
        ConnectionEvent::decl(&cfg),
        ErrorKind::decl(&cfg),
        ErrorEvent::decl(&cfg),
        SocialEvent::decl(&cfg),
        Event::decl(&cfg),
        AccountEvent::decl(&cfg),
        AccountStatus::decl(&cfg),
        InboxConversation::decl(&cfg),
        Defaults::decl(&cfg),
        CommandErrorKind::decl(&cfg),
        CommandError::decl(&cfg),
    ];
    for d in decls {
        out.push_str("export ");
        out.push_str(&d);
        out.push_str("\n\n");
    }
    // The legal moves of a delivery state (`State::can_move_to`), so a front end applies an event
    // only when it moves a message forward.
    out.push_str("/** The states each state may move to (the core's `State::can_move_to`). */\n");
    out.push_str("export const MOVES: Record<State, readonly State[]> = {\n");
    for from in State::ALL {
        let to: Vec<String> = State::ALL
            .into_iter()
            .filter(|t| from.can_move_to(*t))
            .map(|t| format!("\"{}\"", t.as_str()))
            .collect();
        out.push_str(&format!("  {}: [{}],\n", from.as_str(), to.join(", ")));
    }
    out.push_str("};\n\n");
    out.push_str("/** The configuration defaults. */\n");
    out.push_str(&format!(
        "export const DEFAULTS: Defaults = {};\n",
        serde_json::to_string_pretty(&Defaults::default()).expect("defaults serialize")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typescript_contract_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ui/src/generated/contract.ts");
        let want = typescript();
        if std::env::var_os("TETHER_WRITE_CONTRACT").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run TETHER_WRITE_CONTRACT=1 cargo test -p tether-core contract",
            path.display()
        );
    }

    #[test]
    fn defaults_are_the_client_config_defaults() {
        let d = Defaults::default();
        assert_eq!(d.keepalive_secs, 20);
        assert_eq!(d.dead_after_secs, 10);
        assert_eq!(
            std::time::Duration::from_millis(d.reconnect_min_ms),
            ClientConfig::default().reconnect_min
        );
    }
}
