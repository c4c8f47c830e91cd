//! The client's configuration: defined once here, and used as is by every front end (the CLI,
//! the desktop app and the mobile bindings take their defaults from [`ClientConfig::default`]).

use std::time::Duration;

use crate::sm::SmConfig;

/// How the client connects and reconnects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Stream-management tunables.
    pub sm: SmConfig,
    /// First reconnect delay; doubles per failure (with jitter) up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Silence after which we ask the server for an ack (`<r/>`) to check the link.
    pub keepalive: Duration,
    /// Time the server has to answer that before the link counts as dead.
    pub dead_after: Duration,
    /// Time the server has to answer the immediate probe sent after [`crate::Client::network_changed`],
    /// [`crate::Client::resume`] or a push wake-up: short, so that a link the network change
    /// killed is found at once instead of after `keepalive` + `dead_after`.
    pub quick_probe: Duration,
    /// How often to look for messages committed by another process (`None`: only when this
    /// process sends, or wakes anyway; the mobile profile, where nothing else writes while the
    /// app drives the stream and each timer costs the battery).
    pub outbox_poll: Option<Duration>,
    /// How far back the first archive sync of an archive reaches.
    pub mam_first_sync: Duration,
    /// How many events a subscriber may fall behind before it is told it missed some (and should
    /// reload from the store). Bounds the event stream's memory.
    pub event_buffer: usize,
    /// The most the server may send without completing an element (a stanza or nonza), in bytes.
    /// More ends the stream (an error event; the client reconnects with backoff) instead of
    /// buffering without bound.
    pub max_stanza_bytes: usize,
    /// Test only: allow plain-HTTP file transfers to loopback addresses (a test server without
    /// TLS on its upload service). Files otherwise go over HTTPS only.
    pub allow_http_files: bool,
    /// Incoming files up to this size are downloaded by themselves (bytes).
    pub auto_download_max: u64,
    /// What kind of device this is, as the client's identity tells others (XEP-0030).
    pub device: Device,
}

/// The kind of device, as XEP-0030's registry names client identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// A desktop or laptop (`pc`).
    Pc,
    /// A phone (`phone`).
    Phone,
}

impl Device {
    /// The registry's `type` for a `client` identity.
    pub fn identity_type(self) -> &'static str {
        match self {
            Device::Pc => "pc",
            Device::Phone => "phone",
        }
    }
}

/// Default of [`ClientConfig::auto_download_max`]: 100 MiB.
pub const AUTO_DOWNLOAD_MAX: u64 = 100 << 20;

/// Default of [`ClientConfig::max_stanza_bytes`]: 4 MiB, room for a large roster or vCard.
pub const MAX_STANZA_BYTES: usize = 4 << 20;

/// A named set of timer values ([`ClientConfig::profile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A desktop or server: mains power, a link that rarely changes. A probe after 20 s of
    /// silence, and another process's commits looked for every 200 ms (the CLI's `send` beside a
    /// running `run`). Today's values, and [`ClientConfig::default`].
    Desktop,
    /// A phone (the bindings' default): a probe after 300 s of silence, as Conversations and
    /// Monal do (at most 12 wake-ups an hour when idle), no polling timer, and an immediate
    /// probe with a [`ClientConfig::quick_probe`] timeout after a network change, a resume or a
    /// push, so that a dead link is still found at once when it matters.
    Mobile,
}

impl ClientConfig {
    /// The configuration of a profile; every other field is the default.
    pub fn profile(profile: Profile) -> ClientConfig {
        match profile {
            Profile::Desktop => ClientConfig::default(),
            Profile::Mobile => ClientConfig {
                keepalive: Duration::from_secs(300),
                outbox_poll: None,
                device: Device::Phone,
                ..ClientConfig::default()
            },
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            sm: SmConfig::default(),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
            keepalive: Duration::from_secs(20),
            dead_after: Duration::from_secs(10),
            quick_probe: Duration::from_secs(5),
            outbox_poll: Some(Duration::from_millis(200)),
            mam_first_sync: Duration::from_secs(7 * 24 * 3600),
            event_buffer: EVENT_BUFFER,
            max_stanza_bytes: MAX_STANZA_BYTES,
            allow_http_files: false,
            auto_download_max: AUTO_DOWNLOAD_MAX,
            device: Device::Pc,
        }
    }
}

/// Default capacity of the event channel ([`ClientConfig::event_buffer`]). Events are notifications; a subscriber that falls this far behind
/// is told how many it missed (and the store still has every state).
pub const EVENT_BUFFER: usize = 65_536;
