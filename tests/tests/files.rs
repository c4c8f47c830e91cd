//! Files against Prosody's own upload service (`mod_http_file_share`, XEP-0363) over HTTPS with
//! the test CA (issue 14, part 1). The upload goes through a fault proxy of its own, so that the
//! PUT can be cut mid-way; the sender is SIGKILLed mid-upload too. The receiver is a Tether client
//! that downloads the file and checks the announced hash.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tether_e2e::pair::Pair;
use tether_e2e::prosody::{free_port, Prosody, ProsodyOptions, UploadOptions};
use tether_e2e::proxy::Proxy;

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
/// Time limits only bound a broken run; nothing here is timed.
const LONG: Duration = Duration::from_secs(180);

/// A server with uploads up to `limit` bytes, and the fault proxy in front of its HTTPS port.
fn world(limit: u64) -> (Pair<Prosody>, Proxy) {
    let https_port = free_port().expect("a port");
    let http = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, https_port)));
    let server = Prosody::start(ProsodyOptions {
        upload: Some(UploadOptions {
            size_limit: limit,
            https_port,
            external_port: http.addr().port(),
        }),
        ..ProsodyOptions::default()
    })
    .expect("start prosody");
    (Pair::new(server), http)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file of `size` bytes that compresses to nothing useful (no shortcut anywhere).
fn random_file(dir: &std::path::Path, name: &str, size: usize) -> (std::path::PathBuf, String) {
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, hex(&Sha256::digest(&data)))
}

fn send_file(node: &tether_e2e::tether::Node, to: &str, path: &std::path::Path) -> String {
    let out = node.exec(&["send-file", "--to", to, "--path", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "send-file: {}", out.stderr);
    out.stdout.trim().to_owned()
}

fn progress(evs: &[Value]) -> u64 {
    evs.iter()
        .filter(|e| e["event"] == "file:progress")
        .filter_map(|e| e["done"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_5mb_file_cut_and_killed_mid_upload_arrives_once_with_its_hash_checked() {
    let (w, http) = world(20 << 20);
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = random_file(dir.path(), "video.mp4", 5 << 20);
    let mut bob = w.bob.spawn_run(&[]).online(LONG, "bob");
    // Committed with its blob before anything connects; the original may go at once.
    let id = send_file(&w.alice, BOB, &path);
    std::fs::remove_file(&path).unwrap();

    // The first PUT is cut 1.5 MB in; the ones after crawl, so that the kill lands mid-way.
    http.drop_after_upstream_bytes(1_500_000);
    http.set_rate_limit(Some(1 << 20));
    let mut alice = w.alice.spawn_run(&[]).online(LONG, "alice");
    assert!(
        alice.wait_for(LONG, |evs| evs
            .iter()
            .any(|e| e["event"] == "file:progress" && e["error"].is_string())),
        "the cut never showed: {}",
        alice.stderr()
    );
    let after_cut = alice.len();
    let cuts = http.connections_accepted();
    assert!(
        alice.wait_for(LONG, |evs| progress(&evs[after_cut.min(evs.len())..])
            >= 1 << 20),
        "no progress after the cut: {}",
        alice.stderr()
    );
    assert!(
        http.connections_accepted() > cuts,
        "a new PUT after the cut"
    );
    alice.kill9();
    let row = w.alice.message(&id).expect("the row survives the kill");
    assert_eq!(
        row["state"], "queued",
        "nothing sent before the upload: {row}"
    );
    assert!(
        bob.count("message:received") == 0,
        "bob got something early"
    );

    // Restarted: the upload is made again and the message goes once.
    http.set_rate_limit(None);
    let mut again = w.alice.spawn_run(&["--until-idle"]);
    again.finish(LONG, "alice finishes the upload");
    let row = w.alice.message(&id).unwrap();
    assert!(
        matches!(
            row["state"].as_str(),
            Some("acked" | "delivered" | "displayed")
        ),
        "{row}"
    );
    assert_eq!(row["file"]["transfer"], "uploaded");

    // Bob has exactly one message from alice, its file fetched and its hash checked.
    assert!(
        w.bob.wait_until(LONG, |b| b
            .messages(&["--direction", "in", "--peer", ALICE])
            .iter()
            .any(|m| m["file"]["transfer"] == "downloaded")),
        "bob never got the file: {}",
        bob.stderr()
    );
    let got = w.bob.messages(&["--direction", "in", "--peer", ALICE]);
    assert_eq!(got.len(), 1, "exactly one message: {got:#?}");
    let file = &got[0]["file"];
    assert_eq!(file["sha256"], sha.as_str(), "the announced hash, checked");
    assert_eq!(file["size"], 5 << 20);
    assert_eq!(file["name"], "video.mp4");
    let local = file["local_path"].as_str().expect("a local copy");
    assert_eq!(
        hex(&Sha256::digest(std::fs::read(local).unwrap())),
        sha,
        "the bytes are the bytes sent"
    );
    bob.stop(LONG, "bob");
}

#[test]
fn an_oversized_file_fails_with_the_limit_in_the_reason_and_nothing_is_sent() {
    let (w, http) = world(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = random_file(dir.path(), "big.bin", (1 << 20) + 1);
    let id = send_file(&w.alice, BOB, &path);
    let mut alice = w.alice.spawn_run(&[]).online(LONG, "alice");
    assert!(
        w.alice.wait_until(LONG, |a| a
            .message(&id)
            .is_some_and(|m| m["state"] == "failed")),
        "{}",
        alice.stderr()
    );
    let row = w.alice.message(&id).unwrap();
    let why = row["error"].as_str().unwrap();
    assert!(why.contains("at most 1048576"), "{why}");
    assert_eq!(http.bytes_upstream(), 0, "not a byte was uploaded");
    alice.stop(LONG, "alice");
    let mut bob = w.bob.spawn_run(&["--until-idle"]);
    bob.finish(LONG, "bob");
    assert!(
        w.bob.messages(&["--direction", "in"]).is_empty(),
        "nothing reached bob"
    );
}
