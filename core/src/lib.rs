//! # tether-core
//!
//! Tether's shared core: every rule about message delivery lives here, once.
//!
//! - [`sm`]: the XEP-0198 stream-management engine, sans-IO.
//! - [`delivery`]: the per-message state machine.
//! - [`store`]: the SQLite store (messages, outbox, SM state, account).
//! - [`auth`]: the SASL2 login (Bind2, inline resumption, FAST tokens), sans-IO.
//! - [`connection`]: the I/O shell over tokio-xmpp's low-level stream.
//! - [`Client`]: the API that the CLI, the desktop app and the mobile bindings call, per account.
//! - [`register`]: account creation (XEP-0077 in-band registration, XEP-0401 invitations), sans-IO.
//! - [`Inbox`]: several accounts in one store, side by side, and the unified conversation list.
//!
//! The guarantees: a message is committed before any byte of it reaches a socket; an inbound stanza is
//! counted in `h` only in the transaction that commits it; the SM state is written in the same
//! transaction as the change that moved it, so a process killed at any instant resumes its stream.
#![deny(missing_docs)]

pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod chat_state;
pub mod client;
pub mod config;
pub mod connection;
pub mod contract;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod events;
pub mod inbox;
pub mod profile;
pub mod register;
mod shared;
pub mod sm;
pub mod store;
pub mod transfer;
pub mod wake;

pub use client::{Client, ClientConfig};
pub use delivery::{Direction, State};
pub use error::{Error, Result};
pub use events::Event;
pub use inbox::Inbox;
