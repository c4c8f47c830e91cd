//! The transfer worker: PUTs our files to the slots the engine obtained and fetches the files of
//! incoming messages, from the store's durable jobs (`store::attachments`), with progress events.
//! It decides nothing about delivery: an upload done releases its message to the outbox, a final
//! HTTP refusal fails it with the reason (the user decides), anything else is tried again.
//!
//! HTTP is reqwest over rustls, with the account's own TLS trust (its CA file, else the system's
//! roots: the same config the XMPP connection uses). Redirects are not followed: a slot's URL is
//! checked before use, and a redirect would take the file elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::engine::upload::check_download_url;
use crate::error::{Error, Result};
use crate::events::{Event, TransferEvent};
use crate::shared::Shared;
use crate::store::{Download, Upload};

/// How often progress is reported, at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The HTTP client with the account's TLS trust.
fn http_client(shared: &Shared) -> Result<reqwest::Client> {
    let tls = crate::connection::tls_config(shared.account.ca_file.as_deref())?;
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))
}

/// What an attempt came to.
enum Outcome {
    Done,
    /// Try again later (the network, a server error).
    Retry(String),
    /// The slot is unusable (expired, refused): ask for a new one.
    NewSlot(String),
    /// It never will: the reason goes to the user.
    Final(String),
}

/// Runs until the client shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let client = match http_client(&shared) {
        Ok(c) => c,
        Err(e) => {
            shared.emit(Event::error(
                e.kind(),
                format!("files cannot be sent or fetched: {e}"),
            ));
            return;
        }
    };
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let worked = match pass(&shared, &client).await {
            Ok(w) => w,
            Err(e) => {
                // A store error: nothing moved; said, and tried again on the next pass.
                tracing::warn!("transfer pass failed: {e}");
                shared.emit(Event::error(
                    e.kind(),
                    format!("files could not move on (tried again shortly): {e}"),
                ));
                false
            }
        };
        if *shutdown.borrow() {
            return;
        }
        if worked {
            continue;
        }
        tokio::select! {
            _ = shared.transfers.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass over the jobs. Returns whether one finished (another may be ready at once).
async fn pass(shared: &Arc<Shared>, client: &reqwest::Client) -> Result<bool> {
    let account = shared.account.id;
    let uploads = shared.store().uploads(account)?;
    let mut done = false;
    for up in uploads {
        let outcome = upload(shared, client, &up).await;
        let (key, id) = (up.key, up.id.clone());
        match outcome {
            Outcome::Done => {
                if shared.store().uploaded(key)? {
                    emit(
                        shared,
                        "file:uploaded",
                        key,
                        &id,
                        up.size,
                        Some(up.size),
                        None,
                    );
                    done = true;
                }
                // The message may go now.
                shared.outbox.notify_one();
            }
            Outcome::Retry(why) => {
                tracing::info!(%id, "upload will be tried again: {why}");
                emit(
                    shared,
                    "file:progress",
                    key,
                    &id,
                    0,
                    Some(up.size),
                    Some(why),
                );
            }
            Outcome::NewSlot(why) => {
                let changes = shared.store().upload_failed(key, &why, false)?;
                shared.emit_changes(&changes);
                shared.outbox.notify_one();
            }
            Outcome::Final(why) => {
                let changes = shared.store().upload_failed(key, &why, true)?;
                emit(shared, "file:failed", key, &id, 0, Some(up.size), Some(why));
                shared.emit_changes(&changes);
            }
        }
    }
    let max = shared.config.auto_download_max;
    let downloads = shared.store().downloads(account)?;
    for d in downloads
        .into_iter()
        .filter(|d| d.size.is_none_or(|s| s <= max))
    {
        let outcome = download(shared, client, &d).await;
        match outcome {
            Outcome::Done => done = true,
            Outcome::Retry(why) => tracing::info!(id = d.id, "download will be tried again: {why}"),
            Outcome::NewSlot(why) | Outcome::Final(why) => {
                shared.store().download_failed(d.key, &why)?;
                emit(shared, "file:failed", d.key, &d.id, 0, d.size, Some(why));
            }
        }
    }
    Ok(done)
}

fn emit(
    shared: &Shared,
    event: &'static str,
    key: i64,
    id: &str,
    done: u64,
    total: Option<u64>,
    error: Option<String>,
) {
    shared.emit(Event::Transfer(TransferEvent {
        event,
        key,
        id: Some(id.to_owned()),
        done,
        total,
        error,
    }));
}

/// One PUT of the blob to the slot, streamed with progress.
async fn upload(shared: &Arc<Shared>, client: &reqwest::Client, up: &Upload) -> Outcome {
    let path = shared.store().blobs().path(&up.sha256);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return Outcome::Final(format!("the file is gone from Tether's store: {e}")),
    };
    let (key, id, total) = (up.key, up.id.clone(), up.size);
    let progress = shared.clone();
    let mut sent = 0u64;
    let mut last = Instant::now();
    let body = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
        if let Ok(c) = &chunk {
            sent += c.len() as u64;
            if last.elapsed() >= PROGRESS_EVERY || sent == total {
                last = Instant::now();
                emit(
                    &progress,
                    "file:progress",
                    key,
                    &id,
                    sent,
                    Some(total),
                    None,
                );
            }
        }
        chunk
    });
    let mut req = client
        .put(&up.put_url)
        .header(reqwest::header::CONTENT_LENGTH, up.size)
        .header(reqwest::header::CONTENT_TYPE, &up.media_type)
        .body(reqwest::Body::wrap_stream(body));
    for (name, value) in &up.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(format!("the upload broke off: {e}")),
    };
    let status = resp.status();
    match status.as_u16() {
        200..=299 => Outcome::Done,
        // The slot was used already: by our own PUT that the kill or the cut cut off from its
        // answer, if the server has exactly our file.
        409 => match fetch_hash(client, &up.get_url).await {
            Some(h) if h == up.sha256 => Outcome::Done,
            _ => Outcome::NewSlot("the upload slot was used already".into()),
        },
        413 => Outcome::Final(format!(
            "the server refused the file as too large ({status})"
        )),
        300..=399 => Outcome::Final(format!(
            "the upload service answered with a redirect ({status}); files are not sent on elsewhere"
        )),
        400..=499 => Outcome::NewSlot(format!("the upload service refused the slot ({status})")),
        _ => Outcome::Retry(format!("the upload service failed ({status})")),
    }
}

/// The SHA-256 of what `url` serves (to recognise our own finished upload).
async fn fetch_hash(client: &reqwest::Client, url: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    let resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        hasher.update(chunk.ok()?);
    }
    Some(crate::store::blobs::hex(&hasher.finalize()))
}

/// Fetches an incoming file into the blob store, resuming a partial download, refusing more
/// than was announced, and checking the announced hash.
async fn download(shared: &Arc<Shared>, client: &reqwest::Client, d: &Download) -> Outcome {
    if let Some(why) = check_download_url(&d.url, shared.config.allow_http_files) {
        return Outcome::Final(why);
    }
    let cap = d.size.unwrap_or(shared.config.auto_download_max);
    let (path, mut have) = match shared.store().blobs().partial(&d.key.to_string()) {
        Ok(p) => p,
        Err(e) => return Outcome::Retry(format!("cannot write the download: {e}")),
    };
    if let Err(e) = shared.store().downloading(d.key) {
        return Outcome::Retry(e.to_string());
    }
    let mut req = client.get(&d.url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(format!("the download broke off: {e}")),
    };
    let status = resp.status().as_u16();
    let append = match status {
        206 => true,
        200 => false,
        416 if have > 0 && Some(have) == d.size => return finish(shared, d, &path, have),
        300..=399 => {
            return Outcome::Final(format!(
                "the server answered with a redirect ({status}); it is not followed"
            ))
        }
        404 | 410 => {
            return Outcome::Final(format!("the file is no longer on the server ({status})"))
        }
        400..=499 => return Outcome::Final(format!("the server refused the download ({status})")),
        _ => return Outcome::Retry(format!("the server failed ({status})")),
    };
    if !append {
        have = 0;
    }
    if let Some(len) = resp.content_length() {
        if have + len > cap {
            let _ = std::fs::remove_file(&path);
            return Outcome::Final(format!(
                "the server offers {} bytes, more than the {cap} announced: refused",
                have + len
            ));
        }
    }
    let mut out = match tokio::fs::OpenOptions::new()
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) => return Outcome::Retry(format!("cannot write the download: {e}")),
    };
    let mut stream = resp.bytes_stream();
    let mut last = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = out.flush().await;
                return Outcome::Retry(format!("the download broke off: {e}"));
            }
        };
        if have + chunk.len() as u64 > cap {
            drop(out);
            let _ = std::fs::remove_file(&path);
            return Outcome::Final(format!(
                "the file is larger than the {cap} bytes announced: refused"
            ));
        }
        if let Err(e) = out.write_all(&chunk).await {
            return Outcome::Retry(format!("cannot write the download: {e}"));
        }
        have += chunk.len() as u64;
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            emit(shared, "file:progress", d.key, &d.id, have, d.size, None);
        }
    }
    if let Err(e) = out.sync_all().await {
        return Outcome::Retry(format!("cannot write the download: {e}"));
    }
    drop(out);
    if d.size.is_some_and(|s| have < s) {
        return Outcome::Retry(format!("the download stopped at {have} bytes"));
    }
    finish(shared, d, &path, have)
}

fn finish(shared: &Arc<Shared>, d: &Download, path: &std::path::Path, have: u64) -> Outcome {
    let checked = shared
        .store()
        .blobs()
        .finish_partial(path, d.sha256.as_deref());
    match checked {
        Ok(stored) => {
            if let Err(e) = shared
                .store()
                .downloaded(d.key, &stored.sha256, stored.size)
            {
                return Outcome::Retry(e.to_string());
            }
            emit(
                shared,
                "file:downloaded",
                d.key,
                &d.id,
                have,
                Some(stored.size),
                None,
            );
            Outcome::Done
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            shared.emit(Event::error(
                crate::events::ErrorKind::Security,
                format!("a file from {} failed its check: {e}", d.peer),
            ));
            Outcome::Final(e.to_string())
        }
        Err(e) => Outcome::Retry(format!("cannot store the download: {e}")),
    }
}

#[cfg(test)]
mod tests {
    //! The worker against a hostile HTTP server of the test's own (hyper, plain HTTP on
    //! loopback with the test-only `allow_http_files`): every answer a server can give a PUT or a
    //! GET, and what the store says after.

    use super::*;
    use crate::store::{InboundFile, InboundMessage, NewAccount, NewFile, Store, StoreOptions};
    use crate::{Client, ClientConfig, Direction, State};
    use http_body_util::Full;
    use hyper::{body::Bytes, Request, Response, StatusCode};
    use sha2::{Digest, Sha256};

    /// Serves `answer(method, path, range start)` on 127.0.0.1; returns the base URL.
    async fn serve(
        answer: impl Fn(&str, &str, u64) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let answer = answer.clone();
                            async move {
                                let start = req
                                    .headers()
                                    .get("range")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.strip_prefix("bytes="))
                                    .and_then(|v| v.trim_end_matches('-').parse().ok())
                                    .unwrap_or(0);
                                let (method, path) =
                                    (req.method().to_string(), req.uri().path().to_owned());
                                // Read the whole body (a PUT), as a server would.
                                let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                                Ok::<_, std::convert::Infallible>(answer(&method, &path, start))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn status(code: u16, body: &'static [u8]) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from_static(body)));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        if (300..400).contains(&code) {
            r.headers_mut()
                .insert("location", "https://elsewhere.test/x".parse().unwrap());
        }
        r
    }

    struct World {
        client: Client,
        http: reqwest::Client,
        _dir: tempfile::TempDir,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
        store
            .add_account(&NewAccount {
                jid: "alice@localhost".into(),
                password: "pw".into(),
                server: None,
                ca_file: None,
                insecure_plaintext: false,
                direct_tls: false,
            })
            .unwrap();
        drop(store);
        let config = ClientConfig {
            allow_http_files: true,
            ..ClientConfig::default()
        };
        let client = Client::open(&db, config).unwrap();
        client.verify().unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        World {
            client,
            http,
            _dir: dir,
        }
    }

    impl World {
        fn shared(&self) -> Arc<Shared> {
            self.client.shared_arc()
        }

        /// An incoming message from bob linking to `url`, announcing `size` and `sha256`.
        fn incoming(&self, url: &str, size: u64, sha256: Option<String>) -> i64 {
            let msg = InboundMessage {
                direction: Direction::In,
                kind: "chat",
                from_nick: None,
                receipt_to: None,
                id: Some(format!("f-{url}")),
                origin_id: None,
                stanza_id: None,
                peer: "bob@localhost".into(),
                body: url.into(),
                server_ts: None,
                action: None,
                target: None,
                reactions: vec![],
                file: Some(InboundFile {
                    url: url.into(),
                    name: "x.bin".into(),
                    size: Some(size),
                    media_type: None,
                    sha256,
                    refused: None,
                }),
                invite: None,
            };
            let account = self.shared().account.id;
            self.shared()
                .store()
                .store_inbound(account, &msg, None)
                .unwrap()
                .unwrap()
                .key
        }

        /// One of our files with a slot granted for `put`.
        fn upload(&self, put: &str) -> (i64, String) {
            let src = self._dir.path().join("up.bin");
            std::fs::write(&src, vec![1u8; 1000]).unwrap();
            let shared = self.shared();
            let stored = shared.store().blobs().put_file(&src).unwrap();
            let account = shared.account.id;
            let change = shared
                .store()
                .enqueue_file(
                    account,
                    "bob@localhost",
                    &NewFile {
                        name: "up.bin".into(),
                        size: 1000,
                        media_type: "application/octet-stream".into(),
                        sha256: stored.sha256,
                    },
                )
                .unwrap();
            shared
                .store()
                .set_slot(change.key, put, &[], &format!("{put}/get"))
                .unwrap();
            (change.key, change.id)
        }

        fn transfer(&self, key: i64) -> (String, Option<String>) {
            let row = self
                .shared()
                .store()
                .messages(self.shared().account.id, &Default::default())
                .unwrap()
                .into_iter()
                .find(|m| m.seq == key)
                .unwrap();
            let f = row.file.unwrap();
            (f.transfer, f.error)
        }

        async fn pass(&self) {
            pass(&self.shared(), &self.http).await.unwrap();
        }
    }

    fn sha(data: &[u8]) -> String {
        crate::store::blobs::hex(&Sha256::digest(data))
    }

    #[tokio::test]
    async fn a_download_larger_than_announced_or_with_the_wrong_hash_is_refused_and_not_kept() {
        let w = world();
        let base = serve(|_, path, _| match path {
            "/big" => status(200, &[7u8; 2000]),
            "/forged" => status(200, b"not what was announced"),
            "/moved" => status(302, b""),
            _ => status(404, b""),
        })
        .await;
        let big = w.incoming(&format!("{base}/big"), 1000, None);
        let forged = w.incoming(&format!("{base}/forged"), 22, Some(sha(b"the real thing")));
        let moved = w.incoming(&format!("{base}/moved"), 10, None);
        let gone = w.incoming(&format!("{base}/gone"), 10, None);
        let mut events = w.client.subscribe();
        w.pass().await;
        let (t, e) = w.transfer(big);
        assert_eq!(t, "failed");
        assert!(e.unwrap().contains("more than the 1000 announced"));
        let (t, e) = w.transfer(forged);
        assert_eq!(t, "failed");
        assert!(e.unwrap().contains("SHA-256"));
        assert!(w.transfer(moved).1.unwrap().contains("redirect"));
        assert!(w
            .transfer(gone)
            .1
            .unwrap()
            .contains("no longer on the server"));
        let mut security = 0;
        while let Ok(ev) = events.try_recv() {
            if matches!(&ev, Event::Error(e) if e.kind == crate::events::ErrorKind::Security) {
                security += 1;
            }
        }
        assert_eq!(security, 1, "the hash mismatch is a security event");
        // Nothing of theirs is kept as a blob, and no partial file stays.
        let blobs = w.shared().store().blobs().clone();
        assert!(!blobs.has(&sha(&[7u8; 2000])));
        assert!(!blobs.has(&sha(b"not what was announced")));
    }

    #[tokio::test]
    async fn a_download_cut_short_resumes_from_where_it_stopped() {
        let w = world();
        let data: &'static [u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let asked = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let seen = asked.clone();
        let base = serve(move |_, _, start| {
            seen.store(start, std::sync::atomic::Ordering::SeqCst);
            let mut r = Response::new(Full::new(Bytes::from_static(&data[start as usize..])));
            if start > 0 {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            }
            r
        })
        .await;
        let key = w.incoming(&format!("{base}/f"), data.len() as u64, Some(sha(data)));
        // A killed process left the first ten bytes.
        let (partial, _) = w
            .shared()
            .store()
            .blobs()
            .partial(&key.to_string())
            .unwrap();
        std::fs::write(&partial, &data[..10]).unwrap();
        w.pass().await;
        assert_eq!(w.transfer(key), ("downloaded".into(), None));
        assert_eq!(
            asked.load(std::sync::atomic::Ordering::SeqCst),
            10,
            "asked from byte 10 on"
        );
        let blobs = w.shared().store().blobs().clone();
        assert_eq!(std::fs::read(blobs.path(&sha(data))).unwrap(), data);
    }

    #[tokio::test]
    async fn a_put_answered_with_an_error_or_a_redirect_is_retried_asked_again_or_failed() {
        let w = world();
        let base = serve(|method, path, _| match (method, path) {
            ("PUT", "/busy") => status(503, b""),
            ("PUT", "/expired") => status(403, b""),
            ("PUT", "/moved") => status(307, b""),
            ("PUT", "/big") => status(413, b""),
            ("PUT", "/ok") => status(201, b""),
            _ => status(404, b""),
        })
        .await;
        let (busy, _) = w.upload(&format!("{base}/busy"));
        w.pass().await;
        assert_eq!(
            w.transfer(busy).0,
            "uploading",
            "a server error is tried again"
        );
        w.shared().store().upload_failed(busy, "x", true).unwrap();
        let (expired, _) = w.upload(&format!("{base}/expired"));
        w.pass().await;
        assert_eq!(
            w.transfer(expired).0,
            "slot-needed",
            "a refused slot: ask for a new one"
        );
        w.shared()
            .store()
            .upload_failed(expired, "x", true)
            .unwrap();
        let (moved, moved_id) = w.upload(&format!("{base}/moved"));
        w.pass().await;
        let (t, e) = w.transfer(moved);
        assert_eq!(t, "failed");
        assert!(e.unwrap().contains("redirect"));
        let state = w.client.message(&moved_id).unwrap().state;
        assert_eq!(state, State::Failed, "the user decides");
        let (big, _) = w.upload(&format!("{base}/big"));
        w.pass().await;
        assert!(w.transfer(big).1.unwrap().contains("too large"));
        let (ok, ok_id) = w.upload(&format!("{base}/ok"));
        w.pass().await;
        assert_eq!(w.transfer(ok).0, "uploaded");
        let row = w.client.message(&ok_id).unwrap();
        assert_eq!(row.state, State::Queued, "released to the outbox");
        assert_eq!(
            row.body,
            format!("{base}/ok/get"),
            "the body is the file's link"
        );
    }
}
