//! A local demo XMPP server for `scripts/demo.sh`: a throwaway Prosody on loopback with the demo
//! accounts `alice@localhost` (password `alice`), `bob@localhost` (password `bob`) and
//! `carol@localhost` (password `carol`), rooms on `conference.localhost`, message archives, and
//! account creation (in-band registration with passwords of 8 characters or more, and an
//! invitation link). Prints one JSON line (`{"addr": "...", "ca_file": "...", "invite": "..."}`)
//! once ready, then serves until stdin closes or the
//! process is terminated; the server and its data go away with it.

use std::io::Read;

use tether_e2e::prosody::{free_port, Prosody, ProsodyOptions, RegistrationOptions, UploadOptions};

fn main() -> std::io::Result<()> {
    // `--hibernation-secs N`: how long the server keeps a broken session resumable (tests shorten
    // it to reach `failed`).
    // Group chat (conference.localhost) and message archives, as a real server would have.
    // And file upload (XEP-0363, Prosody's own mod_http_file_share over HTTPS), up to 100 MiB.
    let https_port = free_port()?;
    let mut opts = ProsodyOptions {
        muc: true,
        mam: true,
        upload: Some(UploadOptions {
            size_limit: 100 << 20,
            https_port,
            external_port: https_port,
        }),
        // Anyone may create an account here (the desktop's "Create a new account").
        registration: Some(RegistrationOptions {
            invite_only: false,
            min_password: 8,
        }),
        ..ProsodyOptions::default()
    };
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--hibernation-secs") {
        opts.hibernation_secs = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other("--hibernation-secs takes a number"))?;
    }
    let prosody = Prosody::start(opts)?;
    // Carol is a second account for the same person: the desktop holds several side by side.
    for user in ["alice", "bob", "carol"] {
        prosody.register(user, user)?;
    }
    println!(
        "{}",
        serde_json::json!({
            "addr": prosody.addr().to_string(),
            "ca_file": prosody.ca_file(),
            "invite": prosody.create_invite(7 * 24 * 3600)?,
            "accounts": {
                "alice@localhost": "alice", "bob@localhost": "bob", "carol@localhost": "carol",
            },
        })
    );
    // Serve until our parent closes our stdin (or kills us: Prosody dies with us either way).
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    drop(prosody);
    Ok(())
}
