//! A fault-injecting TCP proxy.
//!
//! [`Proxy`] listens on a free port of 127.0.0.1 and forwards every
//! connection it accepts to one upstream address (typically
//! [`Prosody::addr`](crate::Prosody::addr)). Tests point the client under test
//! at [`Proxy::addr`] and break the link at will: close everything
//! ([`Proxy::drop_all`]), refuse new connections ([`Proxy::set_refuse`]),
//! silently stop forwarding ([`Proxy::set_blackhole`], or only towards the client:
//! [`Proxy::set_mute_downstream`],
//! [`Proxy::blackhole_current`]), cut after a byte count
//! ([`Proxy::drop_after_upstream_bytes`]) or slow the client's sending
//! ([`Proxy::set_rate_limit`]).
//!
//! The proxy runs on its own thread with its own single-threaded Tokio
//! runtime, so it can be used from plain synchronous tests (and from async
//! tests too: its controls never block on the runtime, except
//! [`Proxy::drop_all`], which waits briefly for the sockets to be closed).
//!
//! Each direction is copied through a small buffer ([`CHUNK`] bytes), so
//! faults land in the middle of a stream, not only between large reads.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Size of the copy buffer of each direction of each connection.
pub const CHUNK: usize = 1024;

/// How long [`Proxy::drop_all`] waits for the connections to be closed.
const DROP_WAIT: Duration = Duration::from_secs(5);

/// A fault-injecting TCP proxy running on a background thread.
///
/// All controls take `&self` and can be called from any thread. Dropping the
/// proxy closes the listener and every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `upstream`, listening on 127.0.0.1 on a free port.
    ///
    /// # Panics
    ///
    /// If the proxy cannot be started (binding 127.0.0.1:0, creating the
    /// runtime or the thread failed); see [`Proxy::try_start`] to get the
    /// error instead.
    pub fn start(upstream: SocketAddr) -> Proxy {
        match Self::try_start(upstream) {
            Ok(proxy) => proxy,
            Err(e) => panic!("cannot start the test proxy to {upstream}: {e}"),
        }
    }

    /// Starts a proxy to `upstream`, listening on 127.0.0.1 on a free port.
    pub fn try_start(upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| context(e, "binding the proxy to 127.0.0.1:0"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| context(e, "building the proxy runtime"))?;
        let listener = runtime.block_on(async { TcpListener::from_std(listener) })?;

        let shared = Arc::new(Shared::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("tether-e2e-proxy-{}", addr.port()))
                .spawn(move || {
                    runtime.block_on(accept_loop(listener, upstream, shared, shutdown_rx));
                    // Dropping the runtime drops every connection task, and
                    // with them their sockets.
                })
                .map_err(|e| context(e, "spawning the proxy thread"))?
        };
        Ok(Proxy {
            addr,
            upstream,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// How many client connections were accepted so far, including the ones
    /// closed at once because of [`set_refuse`](Self::set_refuse). Useful to
    /// assert that a client reconnected, or did not retry in a loop.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open now (accepted, not refused, not yet
    /// closed).
    pub fn active_connections(&self) -> usize {
        self.shared.conns().len()
    }

    /// Waits up to `timeout` until at least `n` connections have been
    /// accepted in total. Returns whether they were.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.connections_accepted() < n {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Closes every current connection at once, both the client's and the
    /// server's side, so both see EOF (or a reset). Returns once the sockets
    /// are closed (waiting at most 5 s). New connections are still accepted.
    pub fn drop_all(&self) {
        let ids = self.shared.kill_all();
        let deadline = Instant::now() + DROP_WAIT;
        while Instant::now() < deadline {
            if !ids.iter().any(|id| self.shared.conns().contains_key(id)) {
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// While `true`, new connections are accepted and closed at once with a
    /// reset, so the client sees a network error (they still count in
    /// [`connections_accepted`](Self::connections_accepted)). Open
    /// connections are not affected.
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// While `true`, every connection (open now or opened meanwhile) is a
    /// silently dead link: bytes are still read from both sides, but
    /// discarded instead of forwarded, and the sockets stay open. Discarded
    /// bytes are lost for good: turning it off again forwards later bytes
    /// only.
    pub fn set_blackhole(&self, blackhole: bool) {
        self.shared.blackhole.store(blackhole, Ordering::SeqCst);
    }

    /// While `true`, server-to-client bytes are read and discarded (lost for good), and
    /// client-to-server bytes still flow: the server gets everything the client writes and the
    /// client hears nothing back, no ack and no answer. The half-dead link after which only the
    /// server knows what arrived.
    pub fn set_mute_downstream(&self, mute: bool) {
        self.shared.mute_down.store(mute, Ordering::SeqCst);
    }

    /// Turns the connections open now into silently dead links for the rest
    /// of their life (as [`set_blackhole`](Self::set_blackhole), but only for
    /// them): connections opened afterwards work normally. This is the usual
    /// "the network went away under the client, which must notice and
    /// reconnect" scenario, without racing to turn the black hole off.
    pub fn blackhole_current(&self) {
        for conn in self.shared.conns().values() {
            conn.blackholed.store(true, Ordering::SeqCst);
        }
    }

    /// One-shot: once `n` more client-to-server bytes have been forwarded
    /// (counted from this call, over all connections), closes every
    /// connection, as [`drop_all`](Self::drop_all). Exactly `n` bytes get
    /// through: the chunk that crosses the limit is cut. With `n == 0`, the
    /// connections are closed as soon as the client sends anything more.
    /// A later call replaces a pending one.
    pub fn drop_after_upstream_bytes(&self, n: u64) {
        *lock(&self.shared.drop_after) = Some(n);
    }

    /// Limits client-to-server traffic to `bytes_per_sec` (over all
    /// connections; `None` = unlimited, the default), so that a burst takes a
    /// predictable time. Bytes are paced in slices of a tenth of a second's
    /// worth. `Some(0)` is treated as 1 byte per second.
    pub fn set_rate_limit(&self, bytes_per_sec: Option<u64>) {
        let mut pacer = lock(&self.shared.pacer);
        pacer.rate = bytes_per_sec.map(|r| r.max(1));
        pacer.next = Instant::now();
    }

    /// Holds every chunk for `one_way` in each direction before forwarding it (in order), for
    /// connections made from now on: a round trip then takes twice that (the kernel here has no
    /// `netem`). The TCP handshake with the proxy itself is not delayed.
    pub fn set_latency(&self, one_way: Duration) {
        self.shared
            .latency_us
            .store(one_way.as_micros() as u64, Ordering::SeqCst);
    }

    /// Client-to-server bytes forwarded so far.
    pub fn bytes_upstream(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::SeqCst)
    }

    /// Server-to-client bytes forwarded so far.
    pub fn bytes_downstream(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// State shared between the [`Proxy`] handle and its runtime.
#[derive(Debug, Default)]
struct Shared {
    accepted: AtomicUsize,
    refuse: AtomicBool,
    blackhole: AtomicBool,
    /// Set by [`Proxy::set_mute_downstream`].
    mute_down: AtomicBool,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// Client-to-server bytes still allowed before closing everything.
    drop_after: Mutex<Option<u64>>,
    pacer: Mutex<Pacer>,
    /// [`Proxy::set_latency`], in microseconds each way.
    latency_us: AtomicU64,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        lock(&self.conns)
    }

    /// Tells every open connection to close; returns their ids.
    fn kill_all(&self) -> Vec<u64> {
        let conns = self.conns();
        for conn in conns.values() {
            conn.kill.send_replace(true);
        }
        conns.keys().copied().collect()
    }

    /// Takes up to `n` bytes from the [`Proxy::drop_after_upstream_bytes`]
    /// budget. Returns how many of them may be forwarded and whether the
    /// budget is exhausted after them (then everything must be closed).
    fn take_upstream_budget(&self, n: usize) -> (usize, bool) {
        let mut budget = lock(&self.drop_after);
        match *budget {
            None => (n, false),
            Some(left) => {
                let allowed = usize::try_from(left).map_or(n, |left| n.min(left));
                let left = left - allowed as u64;
                if left == 0 {
                    *budget = None;
                    (allowed, true)
                } else {
                    *budget = Some(left);
                    (allowed, false)
                }
            }
        }
    }
}

/// Client-to-server rate limiting: a pacing clock shared by all
/// connections.
#[derive(Debug)]
struct Pacer {
    /// Bytes per second, `None` for unlimited.
    rate: Option<u64>,
    /// When the next slice may be sent.
    next: Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            rate: None,
            next: Instant::now(),
        }
    }
}

impl Pacer {
    /// Reserves a slice of at most `want` bytes. Returns its size and when it
    /// may be sent (`None`: now, no limit).
    fn reserve(&mut self, want: usize) -> (usize, Option<Instant>) {
        let Some(rate) = self.rate else {
            return (want, None);
        };
        let max_slice = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
        let slice = want.min(max_slice);
        let start = self.next.max(Instant::now());
        self.next = start + Duration::from_secs_f64(slice as f64 / rate as f64);
        (slice, Some(start))
    }
}

/// One proxied connection, as seen from the controls.
#[derive(Debug)]
struct Conn {
    /// Set to `true` to close the connection.
    kill: watch::Sender<bool>,
    /// Set by [`Proxy::blackhole_current`].
    blackholed: AtomicBool,
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                // E.g. out of file descriptors: don't spin.
                eprintln!("tether-e2e proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            reset(client);
            continue;
        }

        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (kill, killed) = watch::channel(false);
        let conn = Arc::new(Conn {
            kill,
            blackholed: AtomicBool::new(false),
        });
        shared.conns().insert(id, Arc::clone(&conn));
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            proxy_connection(client, upstream, &shared, &conn, killed).await;
            // The sockets are closed by now.
            shared.conns().remove(&id);
        });
    }
    shared.kill_all();
}

/// Connects to `upstream` and forwards both ways until both sides are done
/// or the connection is killed. Sockets are closed on return.
async fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    shared: &Shared,
    conn: &Conn,
    killed: watch::Receiver<bool>,
) {
    let server = tokio::select! {
        server = TcpStream::connect(upstream) => server,
        _ = wait_killed(killed.clone()) => return,
    };
    let server = match server {
        Ok(server) => server,
        Err(_) => {
            // Upstream is down: the client sees a reset, as it would without
            // the proxy (well, almost: it got to connect first).
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(
            Direction::Up,
            client_read,
            server_write,
            shared,
            conn,
            killed.clone()
        ),
        pump(
            Direction::Down,
            server_read,
            client_write,
            shared,
            conn,
            killed
        ),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Copies one direction until EOF or an error, or until the connection is
/// killed. On EOF, the other side's writing is shut down (so a half-close goes
/// through); on an error, the whole connection is killed. Dropping the halves
/// on return closes the sockets once both directions are done.
async fn pump(
    direction: Direction,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    conn: &Conn,
    killed: watch::Receiver<bool>,
) {
    tokio::select! {
        result = copy(direction, &mut from, &mut to, shared, conn) => {
            if result.is_err() {
                // A reset or similar on one side: close the other one too.
                conn.kill.send_replace(true);
            }
        }
        () = wait_killed(killed) => {}
    }
}

/// The copy loop of [`pump`], applying the faults.
async fn copy(
    direction: Direction,
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
    conn: &Conn,
) -> io::Result<()> {
    let latency = Duration::from_micros(shared.latency_us.load(Ordering::SeqCst));
    if !latency.is_zero() {
        return copy_late(direction, from, to, shared, conn, latency).await;
    }
    let mut buf = [0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        forward(direction, &buf[..n], to, shared, conn).await?;
    }
}

/// [`copy`] with every chunk held for `latency` (read at once, forwarded in order when due).
async fn copy_late(
    direction: Direction,
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
    conn: &Conn,
    latency: Duration,
) -> io::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = [0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            // An empty chunk is the end of the stream, delayed like the rest.
            if tx
                .send((Instant::now() + latency, buf[..n].to_vec()))
                .is_err()
                || n == 0
            {
                return io::Result::Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if data.is_empty() {
                return to.shutdown().await;
            }
            forward(direction, &data, to, shared, conn).await?;
        }
        Ok(())
    };
    let (r, w) = tokio::join!(reader, writer);
    r.and(w)
}

/// Forwards one chunk read from one side, applying the faults.
async fn forward(
    direction: Direction,
    buf: &[u8],
    to: &mut OwnedWriteHalf,
    shared: &Shared,
    conn: &Conn,
) -> io::Result<()> {
    let n = buf.len();
    {
        if shared.blackhole.load(Ordering::SeqCst) || conn.blackholed.load(Ordering::SeqCst) {
            return Ok(());
        }
        match direction {
            Direction::Down if shared.mute_down.load(Ordering::SeqCst) => {}
            Direction::Down => {
                // Counted before writing, so that whoever receives the bytes
                // sees them counted already.
                shared.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
                to.write_all(&buf[..n]).await?;
            }
            Direction::Up => {
                let (allowed, exhausted) = shared.take_upstream_budget(n);
                let mut data = &buf[..allowed];
                while !data.is_empty() {
                    let (slice, at) = lock(&shared.pacer).reserve(data.len());
                    if let Some(at) = at {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    shared.bytes_up.fetch_add(slice as u64, Ordering::SeqCst);
                    to.write_all(&data[..slice]).await?;
                    data = &data[slice..];
                }
                if exhausted {
                    shared.kill_all();
                    // The kill reaches `pump`, which drops this future.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    Ok(())
}

/// Resolves once the connection is told to close.
async fn wait_killed(mut killed: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once the
    // connection is being torn down anyway.
    let _ = killed.wait_for(|&k| k).await;
}

/// Closes `stream` with a reset (`SO_LINGER` 0) rather than a FIN.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `stream` owns a valid socket fd for the duration of the call,
    // and `linger` is a valid `struct linger` of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Locks `mutex`, ignoring poisoning (the data stays consistent: every
/// critical section is a plain read or write).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
