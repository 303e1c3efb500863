//! A fault-injecting TCP proxy between redguard and a real `redis-server`, on loopback.
//!
//! redguard is pointed at the proxy (`FaultProxy::url`) instead of Redis, and the test changes, at any moment,
//! what the network between them does: pass bytes through, hold every reply chunk for a while (a slow link or
//! an overloaded Redis), black-hole (accept and read, never answer), refuse new connections, reset every open
//! connection, or cut the next reply in the middle. These are the faults a production Redis really has, and
//! the ones a killed or paused `redis-server` alone cannot produce.
//!
//! The proxy never reorders or loses bytes inside a connection that stays usable, because TCP never does: a
//! black-holed connection stays dead for good, like a connection to a host that vanished without a reset (TCP
//! reports nothing until its retransmission timeout, many minutes later); only connections opened after the
//! black-hole is lifted work again. Requests are never delayed, only replies, so a request reaches Redis before
//! the next one is sent, or never.
//!
//! Threads, not an async runtime: one acceptor, three pumps per connection (requests; replies read and
//! stamped; replies delivered when due). Every loop wakes at least every
//! `TICK` to look at the shutdown flag, so dropping the proxy stops and joins all of them within a few ticks
//! (a blocked write gives up after `WRITE_TIMEOUT`). The counts of faults injected are logged on drop.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often every loop looks at the shutdown flag and the mode.
const TICK: Duration = Duration::from_millis(10);
/// A peer that does not take our bytes for this long is treated as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
const CHUNK: usize = 16 * 1024;

/// What the proxy does with traffic, until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything as it comes.
    Pass,
    /// Deliver each chunk Redis sends back a time drawn uniformly from `[min, max]` (fixed when equal) after it
    /// arrived. Chunks stay in order: one drawn a shorter delay than the chunk before it waits for that one.
    Latency { min: Duration, max: Duration },
    /// Accept and read, never answer. Every connection open now, or accepted while this lasts, is dead for good.
    BlackHole,
    /// Close every new connection at once with a reset, as a host with nothing listening would refuse it.
    /// Open connections are left alone: reset them too to force redguard to reconnect.
    Refuse,
}

/// Counts of what the proxy did, for assertions and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Connections accepted and forwarded to Redis.
    pub connections: u64,
    /// Connections closed at once in `Refuse` mode.
    pub refused: u64,
    /// Connections accepted while Redis itself was down, closed with a reset.
    pub upstream_down: u64,
    /// Reply chunks held back in `Latency` mode.
    pub delayed_chunks: u64,
    /// Connections that fell into a black hole.
    pub black_holed: u64,
    /// Bytes read and never forwarded because of a black hole.
    pub black_holed_bytes: u64,
    /// Connections closed with a reset by [`FaultProxy::reset_all`].
    pub resets: u64,
    /// Replies cut in the middle by [`FaultProxy::cut_next_replies`].
    pub cut_replies: u64,
}

impl fmt::Display for FaultStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections, {} refused, {} while Redis was down, {} reply chunks delayed, {} black-holed \
             ({} bytes swallowed), {} resets, {} replies cut",
            self.connections,
            self.refused,
            self.upstream_down,
            self.delayed_chunks,
            self.black_holed,
            self.black_holed_bytes,
            self.resets,
            self.cut_replies
        )
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    upstream_down: AtomicU64,
    delayed_chunks: AtomicU64,
    black_holed: AtomicU64,
    black_holed_bytes: AtomicU64,
    resets: AtomicU64,
    cut_replies: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One proxied connection, as the control side sees it.
struct Conn {
    /// A handle on the application-side socket, taken by a reset to set SO_LINGER 0 on it. The pumps hold the
    /// other handles, and close them when they stop.
    client: Mutex<Option<TcpStream>>,
    /// The pumps stop forwarding and close their ends when this is set.
    closed: AtomicBool,
    /// Fell into a black hole: read and swallow everything until closed.
    stranded: AtomicBool,
    /// Pumps still running (and so still holding a handle on the sockets).
    pumps: AtomicU32,
}

impl Conn {
    fn strand(&self, counters: &Counters) {
        if !self.stranded.swap(true, Ordering::SeqCst) {
            bump(&counters.black_holed);
        }
    }
}

struct Shared {
    /// The proxy's own port, in its threads' names.
    port: u16,
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    /// Replies still to cut, one per reply chunk, whichever connection carries it.
    cuts_pending: AtomicU32,
    shutdown: AtomicBool,
    conns: Mutex<Vec<Arc<Conn>>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
    counters: Counters,
    rng: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A pump that panicked leaves nothing half-updated behind these locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    fn stopping(&self, conn: &Conn) -> bool {
        self.shutdown.load(Ordering::SeqCst) || conn.closed.load(Ordering::SeqCst)
    }

    /// A delay drawn uniformly from `[min, max]` (splitmix64: no dependency for a test fixture).
    fn delay(&self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        let mut state = lock(&self.rng);
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let span = (max - min).as_micros() as u64;
        min + Duration::from_micros(z % (span + 1))
    }

    /// Sleeps until `until` in ticks, giving up early on shutdown or when the connection is closed.
    fn sleep_until(&self, conn: &Conn, until: Instant) {
        while !self.stopping(conn) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            thread::sleep(left.min(TICK));
        }
    }

    fn forget(&self, conn: &Arc<Conn>) {
        lock(&self.conns).retain(|c| !Arc::ptr_eq(c, conn));
    }
}

/// The proxy. Listens on an ephemeral loopback port; stops and joins its threads when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts forwarding 127.0.0.1:<ephemeral> to 127.0.0.1:`upstream_port`, in `Mode::Pass`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let shared = Arc::new(Shared {
            port: addr.port(),
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            mode: Mutex::new(Mode::Pass),
            cuts_pending: AtomicU32::new(0),
            shutdown: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
            counters: Counters::default(),
            rng: Mutex::new(seed),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("fp{}-accept", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .unwrap()
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The URL to give redguard instead of Redis's.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every thread of this proxy is named with this prefix (Linux keeps 15 bytes of a name: enough).
    pub fn thread_prefix(&self) -> String {
        format!("fp{}-", self.addr.port())
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        if mode == Mode::BlackHole {
            // Strand the open connections now, not when their pumps next wake: a reply already on its way
            // must not slip through after the black hole "started".
            for conn in lock(&self.shared.conns).iter() {
                conn.strand(&self.shared.counters);
            }
        }
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Back to forwarding everything, with no cut pending. Connections a black hole swallowed stay dead.
    pub fn pass(&self) {
        self.shared.cuts_pending.store(0, Ordering::SeqCst);
        self.set_mode(Mode::Pass);
    }

    /// Every reply chunk is held for exactly `d`.
    pub fn latency(&self, d: Duration) {
        self.set_mode(Mode::Latency { min: d, max: d });
    }

    /// Every reply chunk is held for a random time in `[min, max]`.
    pub fn jitter(&self, min: Duration, max: Duration) {
        self.set_mode(Mode::Latency { min, max });
    }

    pub fn black_hole(&self) {
        self.set_mode(Mode::BlackHole);
    }

    pub fn refuse(&self) {
        self.set_mode(Mode::Refuse);
    }

    /// Closes every open connection with a reset (SO_LINGER 0, then close): the application side sees
    /// ECONNRESET on its next read or write. Returns once every reset has been sent (the pumps let go of their
    /// handles within a tick), so a request made after this never travels on an old connection. Returns how
    /// many connections were reset.
    pub fn reset_all(&self) -> usize {
        let conns: Vec<Arc<Conn>> = std::mem::take(&mut *lock(&self.shared.conns));
        for conn in &conns {
            if let Some(client) = lock(&conn.client).take() {
                set_linger_zero(&client);
            }
            conn.closed.store(true, Ordering::SeqCst);
            bump(&self.shared.counters.resets);
        }
        let deadline = Instant::now() + 2 * WRITE_TIMEOUT;
        while conns.iter().any(|c| c.pumps.load(Ordering::SeqCst) > 0) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        conns.len()
    }

    /// The next `n` reply chunks (across all connections) are forwarded only in their first half, and their
    /// connection is closed right after: a reply cut in the middle.
    pub fn cut_next_replies(&self, n: u32) {
        self.shared.cuts_pending.fetch_add(n, Ordering::SeqCst);
    }

    /// Cuts asked for and not yet applied (no reply has come by since).
    pub fn cuts_pending(&self) -> u32 {
        self.shared.cuts_pending.load(Ordering::SeqCst)
    }

    /// Connections open now (stranded ones included).
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    pub fn stats(&self) -> FaultStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultStats {
            connections: get(&c.connections),
            refused: get(&c.refused),
            upstream_down: get(&c.upstream_down),
            delayed_chunks: get(&c.delayed_chunks),
            black_holed: get(&c.black_holed),
            black_holed_bytes: get(&c.black_holed_bytes),
            resets: get(&c.resets),
            cut_replies: get(&c.cut_replies),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The acceptor has stopped, so no pump can be added any more.
        let pumps = std::mem::take(&mut *lock(&self.shared.pumps));
        for pump in pumps {
            let _ = pump.join();
        }
        eprintln!("fault proxy {}: {}", self.addr, self.stats());
    }
}

fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized, initialized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn prepare(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TICK))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                // Finished pumps are reaped here, so a long soak does not pile up handles.
                lock(&shared.pumps).retain(|p| !p.is_finished());
                // A connection the application dropped before we got to it is simply gone.
                let _ = admit(shared, client);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("fault proxy: accept failed: {e}");
                thread::sleep(TICK);
            }
        }
    }
}

/// Takes one new connection in, as the mode says.
fn admit(shared: &Arc<Shared>, client: TcpStream) -> io::Result<()> {
    match shared.mode() {
        Mode::Refuse => {
            bump(&shared.counters.refused);
            set_linger_zero(&client);
        }
        Mode::BlackHole => {
            prepare(&client)?;
            let conn = register(shared, &client)?;
            conn.strand(&shared.counters);
            let pump = spawn_pump(shared, &conn, "swallow", move |s, c| swallow(s, c, client));
            lock(&shared.pumps).push(pump);
        }
        Mode::Pass | Mode::Latency { .. } => match TcpStream::connect_timeout(&shared.upstream, WRITE_TIMEOUT) {
            Ok(upstream) => {
                prepare(&client)?;
                prepare(&upstream)?;
                let (c2, u2, u3) = (client.try_clone()?, upstream.try_clone()?, upstream.try_clone()?);
                let conn = register(shared, &client)?;
                bump(&shared.counters.connections);
                let (due_tx, due_rx) = mpsc::channel();
                let requests = spawn_pump(shared, &conn, "req", move |s, c| {
                    forward_requests(s, c, client, upstream)
                });
                let replies_in = spawn_pump(shared, &conn, "rep-in", move |s, c| read_replies(s, c, u2, due_tx));
                let replies_out = spawn_pump(shared, &conn, "rep-out", move |s, c| {
                    deliver_replies(s, c, c2, u3, due_rx)
                });
                lock(&shared.pumps).extend([requests, replies_in, replies_out]);
            }
            Err(_) => {
                // Redis itself is down: the application sees its connection reset, as it would.
                bump(&shared.counters.upstream_down);
                set_linger_zero(&client);
            }
        },
    }
    Ok(())
}

fn register(shared: &Shared, client: &TcpStream) -> io::Result<Arc<Conn>> {
    let conn = Arc::new(Conn {
        client: Mutex::new(Some(client.try_clone()?)),
        closed: AtomicBool::new(false),
        stranded: AtomicBool::new(false),
        pumps: AtomicU32::new(0),
    });
    lock(&shared.conns).push(conn.clone());
    Ok(conn)
}

fn spawn_pump(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    role: &str,
    f: impl FnOnce(&Shared, &Conn) + Send + 'static,
) -> JoinHandle<()> {
    let (shared, conn) = (shared.clone(), conn.clone());
    conn.pumps.fetch_add(1, Ordering::SeqCst);
    thread::Builder::new()
        .name(format!("fp{}-{role}", shared.port))
        .spawn(move || {
            // `f` owns this pump's handles on the sockets: they are closed when it returns.
            f(&shared, &conn);
            // Whichever pump ends first closes the connection for both; a reset already removed it.
            conn.closed.store(true, Ordering::SeqCst);
            shared.forget(&conn);
            conn.pumps.fetch_sub(1, Ordering::SeqCst);
        })
        .unwrap()
}

/// What one read gave.
enum Got {
    Data(usize),
    Idle,
    Closed,
}

fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Got {
    match stream.read(buf) {
        Ok(0) => Got::Closed,
        Ok(n) => Got::Data(n),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) =>
        {
            Got::Idle
        }
        Err(_) => Got::Closed,
    }
}

/// Ends a connection for a reason of its own (a peer closed, a write failed, a reply was cut): both sides see
/// a FIN at once. Not used after `reset_all` or on shutdown, where a FIN would get ahead of the reset.
fn close_both(conn: &Conn, a: &TcpStream, b: &TcpStream) {
    conn.closed.store(true, Ordering::SeqCst);
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// A connection accepted inside a black hole: read everything, answer nothing, never reach Redis.
fn swallow(shared: &Shared, conn: &Conn, mut client: TcpStream) {
    let mut buf = vec![0u8; CHUNK];
    while !shared.stopping(conn) {
        match read_some(&mut client, &mut buf) {
            Got::Data(n) => {
                shared.counters.black_holed_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Got::Idle => {}
            Got::Closed => return,
        }
    }
}

/// Application to Redis: forwarded at once, or swallowed once the connection is in a black hole.
fn forward_requests(shared: &Shared, conn: &Conn, mut client: TcpStream, mut upstream: TcpStream) {
    let mut buf = vec![0u8; CHUNK];
    while !shared.stopping(conn) {
        if shared.mode() == Mode::BlackHole {
            conn.strand(&shared.counters);
        }
        match read_some(&mut client, &mut buf) {
            Got::Data(n) if conn.stranded.load(Ordering::SeqCst) => {
                shared.counters.black_holed_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            // Read just as the connection was reset: it goes nowhere.
            Got::Data(_) if shared.stopping(conn) => return,
            Got::Data(n) => {
                if upstream.write_all(&buf[..n]).is_err() {
                    return close_both(conn, &client, &upstream);
                }
            }
            Got::Idle => {}
            Got::Closed => return close_both(conn, &client, &upstream),
        }
    }
}

/// Redis to application, first half: reads each chunk as it arrives and stamps when it is due (now, or after
/// the latency in force), so that latency is added per chunk without the chunks queueing behind each other's
/// delays, as on a slow link rather than a narrow one. A connection in a black hole swallows here.
fn read_replies(shared: &Shared, conn: &Conn, mut upstream: TcpStream, due: mpsc::Sender<(Instant, Vec<u8>)>) {
    let mut buf = vec![0u8; CHUNK];
    while !shared.stopping(conn) {
        let n = match read_some(&mut upstream, &mut buf) {
            Got::Data(n) => n,
            Got::Idle => continue,
            // Dropping `due` tells the delivery side, which closes once the chunks already read are out.
            Got::Closed => return,
        };
        if conn.stranded.load(Ordering::SeqCst) || shared.mode() == Mode::BlackHole {
            conn.strand(&shared.counters);
            shared.counters.black_holed_bytes.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        let at = match shared.mode() {
            Mode::Latency { min, max } => {
                bump(&shared.counters.delayed_chunks);
                Instant::now() + shared.delay(min, max)
            }
            _ => Instant::now(),
        };
        if due.send((at, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// Redis to application, second half: delivers each chunk, in order, once it is due; or cuts it in the middle
/// and closes; or swallows it if the connection fell into a black hole meanwhile.
fn deliver_replies(
    shared: &Shared,
    conn: &Conn,
    mut client: TcpStream,
    upstream: TcpStream,
    due: mpsc::Receiver<(Instant, Vec<u8>)>,
) {
    while !shared.stopping(conn) {
        let (at, chunk) = match due.recv_timeout(TICK) {
            Ok(item) => item,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return close_both(conn, &client, &upstream),
        };
        shared.sleep_until(conn, at);
        if conn.stranded.load(Ordering::SeqCst) {
            shared
                .counters
                .black_holed_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            continue;
        }
        if shared.stopping(conn) {
            return;
        }
        let cut = shared
            .cuts_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if cut {
            bump(&shared.counters.cut_replies);
            let _ = client.write_all(&chunk[..chunk.len() / 2]);
            return close_both(conn, &client, &upstream);
        }
        if client.write_all(&chunk).is_err() {
            return close_both(conn, &client, &upstream);
        }
    }
}
