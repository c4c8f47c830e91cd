//! End-to-end test harness for Tether.
//!
//! This crate provides the two moving parts that Tether's end-to-end tests are
//! built from:
//!
//! * [`Prosody`]: a throwaway Prosody 13 server running as a child process in
//!   its own temporary directory, with a freshly generated test CA and a
//!   `localhost` certificate signed by it, listening for c2s on a free
//!   loopback port. It can be stopped, killed and restarted on the same port
//!   with the same data.
//! * [`Proxy`]: a fault-injecting TCP proxy, placed between the client under
//!   test and the server, that can drop, refuse, black-hole, cut after a byte
//!   count, or rate-limit connections.
//!
//! Both are synchronous to use (the proxy runs its own Tokio runtime on a
//! background thread), so tests can be plain `#[test]` functions, and both
//! clean up after themselves on drop, including when a test panics.
//!
//! [`raw`] is a plain XMPP client (tokio-xmpp) for a second user or a hostile one.
//!
//! [`tether`] drives the `tether` CLI (built from `core/`) as a separate
//! process, one database per client.
//!
//! Environment variables:
//!
//! * `TETHER_KEEP_TEST_DIRS`: when set, Prosody's temporary directory (config,
//!   certificates, data and logs) is kept after the test and its path printed
//!   to stderr.
//! * `TETHER_PROSODY_DEBUG`: when set, Prosody logs at `debug` level instead
//!   of `info`.
//!
//! Prosody 13 must be installed (`tests/install-prosody.sh` does that on
//! Debian bookworm).

#![warn(missing_docs)]

pub mod ejabberd;
pub mod ffi;
pub mod pair;
mod process;
pub mod prosody;
pub mod proxy;
pub mod push_server;
pub mod raw;
pub mod scripted;
pub mod slix_peer;
pub mod small_disk;
pub mod tether;

pub use prosody::{Prosody, ProsodyOptions, DOMAIN, MUC_DOMAIN};
pub use proxy::Proxy;
pub use raw::RawClient;
