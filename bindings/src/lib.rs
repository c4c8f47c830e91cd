//! # tether-ffi
//!
//! Tether's core for iOS and Android (and any language uniffi targets), generated with uniffi
//! 0.32 proc-macros. It exports [`TetherClient`] (the core's `Client`), its records and events,
//! the [`EventListener`] trait the app implements, and the lifecycle calls a mobile OS needs:
//! [`TetherClient::suspend`], [`TetherClient::resume`], [`TetherClient::network_changed`] and
//! [`TetherClient::close`].
//!
//! This crate holds no delivery rule of its own: every call delegates to `tether-core`. It adds
//! only what a foreign app needs around it: a tokio runtime (two `tether-core` worker threads)
//! and one `tether-listener` thread that calls the app's listener.
#![deny(missing_docs)]

mod client;
mod types;

pub use client::{add_account, EventListener, TetherClient, LISTENER_THREAD};
pub use types::*;

uniffi::setup_scaffolding!();
