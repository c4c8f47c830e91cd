//! The network part of Tether's benchmarks (issue "Performance"), against one local Prosody
//! started for the run. Prints Markdown tables.
//!
//! ```sh
//! tether-bench-net [--messages N] [--rounds R] [--resume N] [--mam] [--pin] [--python PATH]
//! ```
//!
//! Side by side, against the same server, each sender sending N chat messages of 100-byte bodies
//! to a receiver that is a Tether client (`tether run`) storing what arrives:
//! - **the limit**: a raw client on the core's own transport (TCP, STARTTLS, SCRAM, one SM stream)
//!   that writes pre-serialized copies of the very stanza Tether writes (id, origin-id, receipt
//!   request, markable) in chunks, asks for an ack every 64, answers the server's `<r/>`, and
//!   counts the server's `h`. No store, no per-message work: the server's ceiling here.
//! - **Tether**: `tether run --stdin` given N messages at once: each is committed before it is
//!   written; time until the server acked all, and until the receiver stored all. Client CPU (from
//!   `/proc/PID/stat`) per message over the round, and peak RSS (`VmHWM`), sender and receiver
//!   apart.
//! - **slixmpp** (from PyPI, XEP-0198 on; `--python` names the interpreter that has it): the same
//!   N messages, time to all acked, CPU per message, peak RSS.
//! - **resume**: a Tether sender behind a proxy that stops forwarding; N messages (`--resume`)
//!   go unacked; the link is cut; time from the reconnect (`connecting`) to the stream resumed
//!   and to every message acked.
//!
//! Each throughput measure runs R rounds (default 3), interleaved (limit, Tether, slixmpp, limit,
//! ...), and the median is reported. `--mam` turns Prosody's archive on (the issue asks for one
//! run with it). `--pin` gives the server a core of its own (CPU 0) and runs every client on the
//! other (CPU 1; needs 2 cores), so that a client's CPU is not taken from the server's.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tether_core::bench::Wire;
use tether_core::store::{Account, NewAccount, Store, StoreOptions};
use tether_e2e::tether::{confirmed_id, Node, Running};
use tether_e2e::{Prosody, ProsodyOptions, Proxy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, WriteHalf};
use tokio::sync::{watch, Mutex};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::bind::BindQuery;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::sm::{self, Nonza};
use tokio_xmpp::xmlstream::{FallibleStreamElement, XmppStreamElement};
use tokio_xmpp::Stanza;

const BODY: usize = 100;
const PASSWORD: &str = "bench-password";
const WAIT: Duration = Duration::from_secs(900);
/// The raw client asks for an ack every this many stanzas, and writes this many per chunk.
const RAW_CHUNK: usize = 64;

struct Opts {
    messages: usize,
    rounds: usize,
    resume: usize,
    mam: bool,
    python: Option<PathBuf>,
    /// Give the server a core of its own (CPU 0) and every client the other (CPU 1).
    pin: bool,
}

fn main() {
    let mut o = Opts {
        messages: 10_000,
        rounds: 3,
        resume: 1_000,
        mam: false,
        python: None,
        pin: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--messages" => o.messages = num(),
            "--rounds" => o.rounds = num(),
            "--resume" => o.resume = num(),
            "--mam" => o.mam = true,
            "--pin" => o.pin = true,
            "--python" => o.python = Some(PathBuf::from(args.next().expect("--python PATH"))),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(o.rounds >= 1 && o.messages >= 1);
    let mut prosody = Prosody::start(ProsodyOptions {
        mam: o.mam,
        hibernation_secs: 300,
        ..ProsodyOptions::default()
    })
    .expect("start Prosody");
    if o.pin {
        // Every thread of the server on CPU 0; then this process (the raw client) on CPU 1, which
        // every client started from here on inherits. Without it the clients and the server share
        // both cores, and a client's CPU time is partly taken from the server's.
        pin(prosody.pid().expect("Prosody's pid"), 0);
        pin(std::process::id(), 1);
    }
    for user in ["limit", "alice", "bob", "sink", "slix", "resumer", "rsink"] {
        prosody.register(user, PASSWORD).expect("register");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = prosody.ca_file();
    let n = o.messages;

    // Receivers: `sink` for the raw and slixmpp senders, `bob` for Tether's (so that bob's CPU
    // and RSS are Tether's receiving side alone). Both are Tether clients storing everything.
    let sink = Node::new(dir.path(), "sink", PASSWORD, prosody.addr(), &ca);
    let sink_run = sink.spawn_run(&[]).online(WAIT, "sink");
    let bob = Node::new(dir.path(), "bob", PASSWORD, prosody.addr(), &ca);
    let bob_run = bob.spawn_run(&[]).online(WAIT, "bob");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server_pid = prosody.pid().expect("Prosody's pid");
    let limit_account = account(dir.path(), "limit", &prosody);
    eprintln!("receivers online; raw baseline logging in");
    let mut raw = rt.block_on(RawSender::connect(&limit_account));
    // A warm-up burst (not counted), so the first measured round does not pay the server's and
    // the receiver's first-use costs.
    rt.block_on(raw.blast(n.div_ceil(10), "sink@localhost"));
    let warm_up = n.div_ceil(10);

    let alice = Node::new(dir.path(), "alice", PASSWORD, prosody.addr(), &ca);
    let mut alice_run = alice.spawn_run(&["--stdin"]).online(WAIT, "alice");
    // Each round's bodies are numbered on from the last, so every message is distinct.
    let alice_lines = |round: usize| -> String {
        (round * n..(round + 1) * n)
            .map(|i| {
                let line = serde_json::json!({"to": "bob@localhost", "body": body(i)});
                format!("{line}\n")
            })
            .collect()
    };

    let mut slix = o.python.as_deref().map(|py| Slix::start(py, &prosody, n));

    let mut limit = Vec::new();
    let mut limit_recv = Vec::new();
    let mut tether = Vec::new();
    let mut tether_recv = Vec::new();
    let mut slix_rounds = Vec::new();
    let mut slix_recv = Vec::new();
    // The server's CPU and the machine's load during each sender's rounds.
    let (mut limit_load, mut tether_load, mut slix_load) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let want = (round + 1) * n;
        // The limit.
        let meter = Meter::start(server_pid);
        let t0 = Instant::now();
        limit.push(rt.block_on(raw.blast(n, "sink@localhost")));
        eprintln!("round {}: limit acked", round + 1);
        let at = nth_received(&sink_run, "limit@localhost", warm_up + want);
        limit_recv.push(at - t0);
        limit_load.push(meter.stop(server_pid));

        // Tether.
        let cpu0 = (cpu_secs(alice_run.pid()), cpu_secs(bob_run.pid()));
        let lines = alice_lines(round);
        let meter = Meter::start(server_pid);
        let t0 = Instant::now();
        alice_run.write_line(lines.trim_end());
        let acked = nth_confirmed(&alice_run, want);
        eprintln!("round {}: Tether acked", round + 1);
        let stored = nth_received(&bob_run, "alice@localhost", want);
        tether_load.push(meter.stop(server_pid));
        let cpu1 = (cpu_secs(alice_run.pid()), cpu_secs(bob_run.pid()));
        tether.push(Round {
            acked: acked - t0,
            cpu: cpu1.0 - cpu0.0,
        });
        tether_recv.push(Round {
            acked: stored - t0,
            cpu: cpu1.1 - cpu0.1,
        });

        // slixmpp.
        if let Some(s) = slix.as_mut() {
            let cpu0 = cpu_secs(s.child.id());
            let meter = Meter::start(server_pid);
            let t0 = Instant::now();
            s.round();
            let acked = t0.elapsed();
            let cpu = cpu_secs(s.child.id()) - cpu0;
            slix_rounds.push(Round { acked, cpu });
            let at = nth_received(&sink_run, "slix@localhost", want);
            slix_recv.push(at - t0);
            slix_load.push(meter.stop(server_pid));
        }
        eprintln!("round {} of {} done", round + 1, o.rounds);
    }
    let alice_rss = peak_rss_kib(alice_run.pid());
    let bob_rss = peak_rss_kib(bob_run.pid());
    let slix_rss = slix.as_ref().map(|s| peak_rss_kib(s.child.id()));
    // Nothing lost or doubled on the way: the receivers' stores hold each message once.
    let (total, distinct) = bob.received_from("alice@localhost");
    assert_eq!(
        (total, distinct),
        (o.rounds * n, o.rounds * n),
        "bob's store"
    );

    let limit_t = median(&mut limit);
    let rate = |t: Duration| n as f64 / t.as_secs_f64();
    let tether_ack = median(&mut tether.iter().map(|r| r.acked).collect::<Vec<_>>());
    let tether_cpu = median_f(tether.iter().map(|r| r.cpu).collect());
    let recv_t = median(&mut tether_recv.iter().map(|r| r.acked).collect::<Vec<_>>());
    let recv_cpu = median_f(tether_recv.iter().map(|r| r.cpu).collect());
    println!(
        "## Throughput: {n} messages of {BODY} bytes, median of {} rounds, Prosody MAM {}{}",
        o.rounds,
        if o.mam { "on" } else { "off" },
        if o.pin {
            ", the server alone on CPU 0 and every client on CPU 1"
        } else {
            ""
        }
    );
    println!();
    println!("| sender | to server ack | msg/s | vs the limit | receiver stored all | client CPU per message | peak RSS | server CPU per message | machine busy |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let load = |l: &[Load]| {
        let server = median_f(l.iter().map(|x| x.server).collect()) / n as f64 * 1e6;
        let busy = median_f(l.iter().map(|x| x.busy).collect()) * 100.0;
        format!("{server:.0} us | {busy:.0}%")
    };
    println!(
        "| raw limit (pre-serialized, no store) | {:.0} ms | {:.0} | 1.00x | {:.0} ms | - | - | {} |",
        ms(limit_t),
        rate(limit_t),
        ms(median(&mut limit_recv)),
        load(&limit_load),
    );
    println!(
        "| Tether (`tether run --stdin`, each committed first) | {:.0} ms | {:.0} | {:.2}x | {:.0} ms | {:.1} us (receiver {:.1} us) | {} MiB (receiver {} MiB) | {} |",
        ms(tether_ack),
        rate(tether_ack),
        rate(tether_ack) / rate(limit_t),
        ms(recv_t),
        tether_cpu / n as f64 * 1e6,
        recv_cpu / n as f64 * 1e6,
        alice_rss / 1024,
        bob_rss / 1024,
        load(&tether_load),
    );
    if !slix_rounds.is_empty() {
        let slix_ack = median(&mut slix_rounds.iter().map(|r| r.acked).collect::<Vec<_>>());
        let slix_cpu = median_f(slix_rounds.iter().map(|r| r.cpu).collect());
        println!(
            "| slixmpp {} (XEP-0198) | {:.0} ms | {:.0} | {:.2}x | {:.0} ms | {:.1} us | {} MiB | {} |",
            slix.as_ref().map(|s| s.version.as_str()).unwrap_or("?"),
            ms(slix_ack),
            rate(slix_ack),
            rate(slix_ack) / rate(limit_t),
            ms(median(&mut slix_recv)),
            slix_cpu / n as f64 * 1e6,
            slix_rss.unwrap_or(0) / 1024,
            load(&slix_load),
        );
        println!();
        println!(
            "Tether's client CPU per message is {:.3} of slixmpp's (goal <= 0.1); throughput to server ack {:.2}x the limit (goal >= 0.95).",
            tether_cpu / slix_cpu,
            rate(tether_ack) / rate(limit_t),
        );
    } else {
        println!();
        println!(
            "slixmpp not run (no --python); throughput to server ack {:.2}x the limit (goal >= 0.95).",
            rate(tether_ack) / rate(limit_t),
        );
    }
    drop(slix);

    if o.resume > 0 {
        let r = resume(&prosody, dir.path(), o.resume);
        println!();
        println!(
            "## Resume: {} unacked messages, link cut, median of {} reconnects",
            o.resume,
            r.len()
        );
        println!();
        println!("| measure | median | all |");
        println!("|---|---|---|");
        let online: Vec<Duration> = r.iter().map(|x| x.0).collect();
        let acked: Vec<Duration> = r.iter().map(|x| x.1).collect();
        let all = |v: &[Duration]| {
            v.iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| reconnect (`connecting`) to stream resumed | {:.0} ms | {} ms |",
            ms(median(&mut online.clone())),
            all(&online)
        );
        println!(
            "| reconnect to all {} acked | {:.0} ms | {} ms |",
            o.resume,
            ms(median(&mut acked.clone())),
            all(&acked)
        );
        // The messages never reached the server (the link was blackholed), so all go again: the
        // server cannot take them faster than its own ceiling measured above.
        println!(
            "| the server's own time to take {} messages, at the limit's rate | {:.0} ms | - |",
            o.resume,
            o.resume as f64 / rate(limit_t) * 1e3
        );
    }
}

struct Round {
    acked: Duration,
    cpu: f64,
}

/// The account row for `user` (the raw client logs in with the core's login, which takes one).
fn account(dir: &Path, user: &str, prosody: &Prosody) -> Account {
    let mut store =
        Store::open(dir.join(format!("{user}-raw.db")), &StoreOptions::default()).expect("store");
    store
        .add_account(&NewAccount {
            jid: prosody.jid(user),
            password: PASSWORD.into(),
            server: Some(prosody.addr().to_string()),
            ca_file: Some(prosody.ca_file().to_string_lossy().into_owned()),
            insecure_plaintext: false,
            direct_tls: false,
        })
        .expect("account")
}

/// 100 bytes, numbered.
fn body(i: usize) -> String {
    let prefix = format!("{i:010} ");
    format!("{prefix}{}", "x".repeat(BODY - prefix.len()))
}

/// The raw baseline sender.
struct RawSender {
    writer: Arc<Mutex<WriteHalf<tether_core::bench::Io>>>,
    acked: watch::Receiver<u32>,
    sent: u32,
    r: Vec<u8>,
}

impl RawSender {
    async fn connect(account: &Account) -> RawSender {
        let logged_in = tether_core::bench::login(account, PASSWORD)
            .await
            .expect("raw login");
        let mut stream = logged_in.stream;
        // The core's socket ends the stream after 4 MiB without a complete element unless the
        // reader says one completed, as the core's session does.
        let budget = logged_in.budget;
        let bind = Iq::from_set("bind", BindQuery::new(Some("raw".into())));
        stream
            .send(&XmppStreamElement::Stanza(Stanza::Iq(bind)))
            .await
            .expect("bind");
        loop {
            match stream.next().await {
                Some(Ok(Wire::Xmpp(FallibleStreamElement::Ok(XmppStreamElement::Stanza(
                    Stanza::Iq(Iq::Result { id, .. }),
                )))))
                    if id == "bind" =>
                {
                    break
                }
                Some(Ok(_)) => continue,
                other => panic!("bind failed: {other:?}"),
            }
        }
        stream
            .send(&XmppStreamElement::SM(Nonza::Enable(sm::Enable::new())))
            .await
            .expect("enable");
        loop {
            match stream.next().await {
                Some(Ok(Wire::Xmpp(FallibleStreamElement::Ok(XmppStreamElement::SM(
                    Nonza::Enabled(_),
                ))))) => break,
                Some(Ok(_)) => continue,
                other => panic!("enable failed: {other:?}"),
            }
        }
        // From here on: bytes. The rest of the server's stream is read by rxml (the stream header
        // it already read is given again, so the parser knows the namespaces).
        let (reader, writer) = tokio::io::split(stream.into_inner());
        let writer = Arc::new(Mutex::new(writer));
        let (acked_tx, acked) = watch::channel(0u32);
        let w = writer.clone();
        tokio::spawn(async move {
            let header: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
            let mut xml = rxml::AsyncReader::new(tokio::io::BufReader::new(header.chain(reader)));
            let mut depth = 0usize;
            let mut inbound = 0u32;
            loop {
                let event = match xml.read().await {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        eprintln!("raw baseline: the server closed the stream");
                        return;
                    }
                    Err(e) => {
                        eprintln!("raw baseline: reading from the server failed: {e}");
                        return;
                    }
                };
                match event {
                    rxml::Event::StartElement(_, (ns, name), attrs) => {
                        depth += 1;
                        if depth != 2 {
                            continue;
                        }
                        if ns.as_str() == tokio_xmpp::parsers::ns::SM {
                            match name.as_str() {
                                "a" => {
                                    let h = attrs
                                        .get(rxml::Namespace::none(), "h")
                                        .and_then(|h| h.parse::<u32>().ok())
                                        .expect("an <a/> with h");
                                    acked_tx.send_replace(h);
                                }
                                "r" => {
                                    let a = xml_bytes(Element::from(sm::A::new(inbound)));
                                    let mut w = w.lock().await;
                                    w.write_all(&a).await.expect("write");
                                    w.flush().await.expect("flush");
                                }
                                _ => {}
                            }
                        } else {
                            inbound = inbound.wrapping_add(1);
                        }
                    }
                    rxml::Event::EndElement(_) => {
                        depth -= 1;
                        if depth == 1 {
                            budget.reset();
                        }
                    }
                    _ => {}
                }
            }
        });
        RawSender {
            writer,
            acked,
            sent: 0,
            r: xml_bytes(Element::from(sm::R)),
        }
    }

    /// Serializes `n` messages to `to`, then writes them and waits until the server's `h` covers
    /// them. Returns the time from the first write to the last ack.
    async fn blast(&mut self, n: usize, to: &str) -> Duration {
        let start = self.sent as usize;
        let chunks: Vec<Vec<u8>> = (start..start + n)
            .collect::<Vec<_>>()
            .chunks(RAW_CHUNK)
            .map(|c| {
                let mut bytes = Vec::new();
                for i in c {
                    let stanza =
                        tether_core::bench::chat_stanza(to, &format!("raw-{i}"), &body(*i))
                            .expect("stanza");
                    bytes.extend(xml_bytes(Element::from(stanza)));
                }
                bytes.extend_from_slice(&self.r);
                bytes
            })
            .collect();
        let t0 = Instant::now();
        for chunk in chunks {
            let mut w = self.writer.lock().await;
            w.write_all(&chunk).await.expect("write");
            w.flush().await.expect("flush");
        }
        self.sent += n as u32;
        let want = self.sent;
        self.acked
            .wait_for(|h| *h == want)
            .await
            .expect("the raw reader ended");
        t0.elapsed()
    }
}

fn xml_bytes(el: Element) -> Vec<u8> {
    let mut out = Vec::new();
    el.write_to(&mut out).expect("serialize");
    out
}

/// slixmpp in a Python process (tests/bench/slix_sender.py).
struct Slix {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::BufReader<ChildStdout>,
    version: String,
}

impl Slix {
    fn start(python: &Path, prosody: &Prosody, n: usize) -> Slix {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/slix_sender.py");
        let version = Command::new(python)
            .args(["-c", "import slixmpp; print(slixmpp.__version__)"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let mut child = Command::new(python)
            .arg(script)
            .arg(prosody.jid("slix"))
            .arg(PASSWORD)
            .arg("127.0.0.1")
            .arg(prosody.port().to_string())
            .arg(prosody.ca_file())
            .arg("sink@localhost")
            .arg(n.to_string())
            .arg(BODY.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start slixmpp");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("slixmpp output");
        assert_eq!(line.trim(), "ready", "slixmpp did not start");
        Slix {
            child,
            stdin,
            stdout,
            version,
        }
    }

    fn round(&mut self) {
        writeln!(self.stdin, "go").expect("slixmpp stdin");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("slixmpp output");
        assert!(line.starts_with("done"), "slixmpp: {line}");
    }
}

impl Drop for Slix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Time until the `n`-th `message:received` from `from`.
fn nth_received(run: &Running, from: &str, n: usize) -> Instant {
    nth_event(run, n, |e| {
        e["event"] == "message:received" && e["from"] == from
    })
}

/// When the `n`-th distinct message was confirmed by the server (see
/// [`tether_e2e::tether::confirmed_id`]).
fn nth_confirmed(run: &Running, n: usize) -> Instant {
    let mut seen = std::collections::HashSet::new();
    nth_event(run, n, move |e| {
        confirmed_id(e).is_some_and(|id| seen.insert(id.to_owned()))
    })
}

/// When the `n`-th event matching `pred` was read.
fn nth_event(run: &Running, n: usize, mut pred: impl FnMut(&Value) -> bool) -> Instant {
    let deadline = Instant::now() + WAIT;
    let mut seen = 0;
    let mut from = 0;
    loop {
        let events = run.events_since(from);
        for (i, e) in events.iter().enumerate() {
            if pred(e) {
                seen += 1;
                if seen == n {
                    return run.arrival(from + i);
                }
            }
        }
        from += events.len();
        assert!(
            Instant::now() < deadline,
            "only {seen} of {n} events: {}",
            run.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The resume measure: returns (connecting -> resumed, connecting -> all acked) per attempt.
fn resume(prosody: &Prosody, dir: &Path, n: usize) -> Vec<(Duration, Duration)> {
    let proxy = Proxy::start(prosody.addr());
    let node = Node::new(dir, "resumer", PASSWORD, proxy.addr(), &prosody.ca_file());
    let rsink = Node::new(dir, "rsink", PASSWORD, prosody.addr(), &prosody.ca_file());
    let _rsink_run = rsink.spawn_run(&[]).online(WAIT, "rsink");
    let mut run = node.spawn_run(&["--stdin"]).online(WAIT, "resumer");
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"to": "rsink@localhost", "body": body(i)})
            )
        })
        .collect();
    let mut out = Vec::new();
    for attempt in 0..3 {
        let want = (attempt + 1) * n;
        // Let the session's start (presence, roster, carbons) or the last attempt settle, so that
        // the link dies between stanzas, not inside one.
        std::thread::sleep(Duration::from_secs(1));
        proxy.blackhole_current();
        let mark = run.len();
        run.write_line(lines.trim_end());
        // Every message committed and as many written as flow control lets out; none acked.
        run.wait_after(mark, WAIT, |e| e["event"] == "message:written")
            .expect("written");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            run.confirmed(),
            attempt * n,
            "nothing confirmed while blackholed"
        );
        let cut = run.len();
        proxy.drop_all();
        let (i, _) = run
            .wait_after(cut, WAIT, |e| {
                e["event"] == "connection" && e["state"] == "connecting"
            })
            .expect("reconnect");
        let t0 = run.arrival(i);
        let (j, online) = run
            .wait_after(i, WAIT, |e| {
                e["event"] == "connection" && e["state"] == "online"
            })
            .expect("online");
        assert_eq!(
            online["resumed"],
            true,
            "the stream resumed: {online}; events since the cut: {:?}",
            run.events_since(cut)
                .iter()
                .filter(|e| e["event"] != "message:written" && e["event"] != "message:hibernated")
                .take(20)
                .collect::<Vec<_>>()
        );
        let resumed = run.arrival(j) - t0;
        let all = nth_confirmed(&run, want) - t0;
        out.push((resumed, all));
    }
    out
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Moves every thread of process `pid` to CPU `cpu` (`taskset -a`).
fn pin(pid: u32, cpu: u32) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux)");
    assert!(status.success(), "taskset {pid} to CPU {cpu}: {status}");
}

/// User + system CPU seconds of a live process (`/proc/PID/stat`, fields 14 and 15).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// The server's CPU and the whole machine's load over one sender's round (started by
/// [`Meter::start`]).
#[derive(Clone, Copy)]
struct Meter {
    server: f64,
    busy: u64,
    total: u64,
}

/// What a [`Meter`] measured: the server's CPU seconds, and the share of all cores' time that was
/// busy (every process on the machine: server, sender, receivers, this harness).
struct Load {
    server: f64,
    busy: f64,
}

impl Meter {
    fn start(server_pid: u32) -> Meter {
        let (busy, total) = machine_ticks();
        Meter {
            server: cpu_secs(server_pid),
            busy,
            total,
        }
    }

    fn stop(self, server_pid: u32) -> Load {
        let (busy, total) = machine_ticks();
        Load {
            server: cpu_secs(server_pid) - self.server,
            busy: (busy - self.busy) as f64 / (total - self.total).max(1) as f64,
        }
    }
}

/// All cores' (busy, total) ticks so far (`/proc/stat`: user nice system idle iowait irq softirq
/// steal; idle and iowait are not busy).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpu = stat.lines().next().expect("the cpu line");
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().expect("a tick count"))
        .collect();
    let total: u64 = f.iter().sum();
    (total - f[3] - f[4], total)
}

/// Peak resident set of a live process, KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}
