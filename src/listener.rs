//! Listening sockets and the threads that serve them: bind (dual-stack by default),
//! check each peer against its whitelist and the connection caps at accept, and serve each
//! admitted connection on a thread of its own with an explicitly sized stack. A refused
//! peer is closed without a byte being sent.
//!
//! Connection threads accept for themselves (leader/followers): one thread of a listener
//! holds the *accept role*, blocks in `accept`, and serves what it accepts on the spot, so
//! a connection costs no hand-off between threads. Before it does anything that could
//! wait on the peer or on a queue (a read that would block, a large frame, a full
//! dispatcher inbox, any subscriber), the handler passes the role on
//! ([`Handoff::release`]): to the thread that went idle last (LIFO, so its stack is
//! still in cache), or to a new thread if none is idle. So someone is always accepting,
//! and every connection that can wait has a thread of its own. An author whose whole
//! event has already arrived (the usual case) is served without waking anyone, and the
//! connections that arrive meanwhile queue in the kernel's backlog rather than in
//! sleeping threads: under load the role holder takes them one after another without
//! sleeping. (If every idle thread waited in `accept`, each connection would wake one of
//! them: a context switch per event.)
//!
//! A thread whose connection ends without the role parks, at most [`MAX_IDLE_THREADS`]
//! per listener, and retires after [`IDLE_TIMEOUT`] unused. Reuse matters: starting a
//! thread costs TLB-shootdown interrupts on every CPU (glibc madvises the cached stack), a
//! cost that one author connection per event would otherwise pay for every event.
//! Connection threads start through [`sys::spawn_detached`], not `std::thread`: no
//! handle, result packet or signal stack, which a thread per subscriber would multiply.
//! While it serves a connection, a thread carries the peer in its kernel name (what
//! `top -H` and `ps -L` show), e.g. `author 192.0.2.7:4`. Subscriber threads run under
//! `SCHED_BATCH` ([`sys::batch_scheduling`]): their wake-ups do not preempt the
//! dispatcher's fan-out.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use std::time::Instant;

use log::{error, warn};

use crate::sys::{self, set_kernel_name};
use crate::whitelist::{normalize, Whitelist};

/// Most threads of one listener kept parked for the next connection that needs one.
pub const MAX_IDLE_THREADS: usize = 64;
/// How long a parked thread waits for work before it retires.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Stack for connection threads. Nothing on these threads recurses deeply (the XML parser
/// is iterative and the schema walk is bounded by the 64-level depth limit).
pub const CONNECTION_STACK: usize = 256 * 1024;

/// Connections the kernel keeps waiting for `accept` on each listening socket (capped by
/// `net.core.somaxconn`): enough for thousands of subscribers connecting at once, e.g.
/// after a broker restart.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Bind a listener with a backlog of [`LISTEN_BACKLOG`]. `::` on Linux accepts IPv4 too
/// (as v4-mapped addresses); on a host without IPv6, `::` falls back to `0.0.0.0` with a
/// warning.
pub fn bind(addr: IpAddr, port: u16) -> io::Result<TcpListener> {
    let l = bind_any(addr, port)?;
    sys::set_listen_backlog(&l, LISTEN_BACKLOG)?;
    Ok(l)
}

fn bind_any(addr: IpAddr, port: u16) -> io::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::new(addr, port)) {
        Err(e)
            if addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                ) =>
        {
            warn!("IPv6 is not available ({e}); listening on IPv4 only");
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        }
        other => other,
    }
}

/// Which port a listener serves, for log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Authors,
    Subscribers,
}

impl Kind {
    fn thread_name(self) -> &'static str {
        match self {
            Kind::Authors => "author",
            Kind::Subscribers => "subscriber",
        }
    }

    /// The kernel name of a thread of this listener waiting for a connection.
    fn idle_name(self) -> &'static str {
        match self {
            Kind::Authors => "author idle",
            Kind::Subscribers => "subscriber idle",
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Kind::Authors => "submission",
            Kind::Subscribers => "subscription",
        }
    }
}

/// Connection caps: a total shared by every listener, and one per peer address for each.
#[derive(Clone, Debug)]
pub struct Caps {
    /// Connections open now, over all listeners (shared counter).
    pub total: Arc<AtomicUsize>,
    /// Most connections open at once over all listeners.
    pub max_total: usize,
    /// Most connections open at once from one address, on this listener.
    pub per_address: usize,
}

impl Caps {
    /// No limits (for tests of other things).
    pub fn unlimited() -> Caps {
        Caps {
            total: Arc::new(AtomicUsize::new(0)),
            max_total: usize::MAX,
            per_address: usize::MAX,
        }
    }
}

/// Log lines that a flood could multiply: at most one per second, with the number of
/// events folded into it.
#[derive(Default)]
pub struct RateLimitedLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    /// Log `msg` (at warn) unless a line went out less than a second ago; then count it.
    pub fn warn(&self, msg: impl FnOnce() -> String) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match st.0 {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => st.1 += 1,
            _ => {
                let suppressed = std::mem::take(&mut st.1);
                st.0 = Some(now);
                if suppressed > 0 {
                    warn!("{} ({suppressed} more like it in the last second)", msg());
                } else {
                    warn!("{}", msg());
                }
            }
        }
    }
}

/// Shared between an accept loop, its connection threads and the shutdown path.
pub struct ListenerState {
    /// Set by [`ListenerState::stop`]; the accept loop returns.
    pub stopping: AtomicBool,
    /// Connection threads running now.
    pub active: AtomicUsize,
    /// The listening socket, kept open here until [`ListenerState::stop`] has shut it
    /// down, so the descriptor cannot be closed and reused under it.
    listener: Mutex<Option<Arc<TcpListener>>>,
    /// Connection threads alive: accepting, serving or parked.
    threads: AtomicUsize,
    /// Parked threads, the most recently parked last.
    idle: Mutex<Vec<Parked>>,
    /// How long a parked thread waits before it retires ([`IDLE_TIMEOUT`]).
    idle_timeout: Duration,
    caps: Caps,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refusals: RateLimitedLog,
}

impl Default for ListenerState {
    fn default() -> Self {
        ListenerState::new(Caps::unlimited())
    }
}

impl ListenerState {
    /// A listener state under these caps.
    pub fn new(caps: Caps) -> ListenerState {
        ListenerState {
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            listener: Mutex::new(None),
            threads: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            idle_timeout: IDLE_TIMEOUT,
            caps,
            per_ip: Mutex::new(HashMap::new()),
            refusals: RateLimitedLog::default(),
        }
    }

    /// The same, with parked threads retiring after `t` instead of [`IDLE_TIMEOUT`].
    pub fn with_idle_timeout(mut self, t: Duration) -> ListenerState {
        self.idle_timeout = t;
        self
    }

    /// Count a new connection from `ip`, or say which cap it exceeds.
    fn admit(&self, ip: IpAddr) -> Result<(), &'static str> {
        let total = self.caps.total.fetch_add(1, Ordering::SeqCst) + 1;
        if total > self.caps.max_total {
            self.caps.total.fetch_sub(1, Ordering::SeqCst);
            return Err("the total connection cap (--max-connections)");
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.caps.per_address {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            self.caps.total.fetch_sub(1, Ordering::SeqCst);
            return Err("the per-address connection cap");
        }
        *n += 1;
        Ok(())
    }

    /// Undo [`ListenerState::admit`].
    fn release(&self, ip: IpAddr) {
        self.caps.total.fetch_sub(1, Ordering::SeqCst);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Make the accept loop return: flag it, shut the listening socket down so the
    /// blocked `accept` wakes up, and wake the parked threads so they exit.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(l) = listener {
            sys::shutdown_listener(&l);
        }
        for p in self.idle_list().drain(..) {
            p.thread.unpark();
        }
    }

    /// Connections being served now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Connection threads alive (accepting, serving or parked).
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::SeqCst)
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A parked connection thread: it waits to be handed the accept role.
struct Parked {
    thread: thread::Thread,
    /// Set by the thread that hands over the role, before it unparks `thread`.
    role: Arc<AtomicBool>,
}

/// The accept role as a connection handler sees it: while the handler holds it, no other
/// thread of the listener accepts, so the handler must [`release`](Handoff::release) it
/// before anything that may wait on its peer or on a queue.
pub struct Handoff<'a> {
    pass: &'a dyn Fn() -> bool,
    held: bool,
}

impl Handoff<'_> {
    /// Let another thread accept from now on (an idle one, or a new one). Idempotent. If
    /// no thread can be started, the role stays here (logged): the connection is still
    /// served, and new ones wait in the backlog until it is done.
    pub fn release(&mut self) {
        if self.held && (self.pass)() {
            self.held = false;
        }
    }

    /// Whether this handler still holds the accept role.
    pub fn held(&self) -> bool {
        self.held
    }
}

/// Decrements the counts when a connection thread ends, however it ends.
struct ActiveGuard(Arc<ListenerState>, IpAddr);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.release(self.1);
    }
}

/// A connection handler: serves one admitted connection on the calling thread, releasing
/// the accept role (see [`Handoff`]) before anything that may wait.
pub trait Handler: Fn(TcpStream, SocketAddr, &mut Handoff<'_>) + Send + Sync + 'static {}
impl<F: Fn(TcpStream, SocketAddr, &mut Handoff<'_>) + Send + Sync + 'static> Handler for F {}

/// What the accepting threads of one listener share.
struct Acceptors<F> {
    listener: Arc<TcpListener>,
    whitelist: Whitelist,
    kind: Kind,
    state: Arc<ListenerState>,
    handler: F,
}

/// Start accepting on `listener` (until [`ListenerState::stop`]): each admitted
/// connection is served by `handler` on a thread of its own (see the module comment).
pub fn start<F>(
    listener: TcpListener,
    whitelist: Whitelist,
    kind: Kind,
    state: Arc<ListenerState>,
    handler: F,
) -> io::Result<()>
where
    F: Handler,
{
    let listener = Arc::new(listener);
    *state.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&listener));
    let shared = Arc::new(Acceptors {
        listener,
        whitelist,
        kind,
        state,
        handler,
    });
    spawn_acceptor(&shared)
}

/// Start a connection thread that holds the accept role from its first instruction.
fn spawn_acceptor<F>(shared: &Arc<Acceptors<F>>) -> io::Result<()>
where
    F: Handler,
{
    shared.state.threads.fetch_add(1, Ordering::SeqCst);
    let s = Arc::clone(shared);
    // No Rust thread name: the thread sets its kernel name itself (`top -H`, `ps -L`), and
    // a name would cost each of thousands of connection threads two heap blocks.
    let spawned = sys::spawn_detached(CONNECTION_STACK, move || {
        accept_and_serve(&s);
        s.state.threads.fetch_sub(1, Ordering::SeqCst);
    });
    if spawned.is_err() {
        shared.state.threads.fetch_sub(1, Ordering::SeqCst);
    }
    spawned.map(|_| ())
}

/// Give the accept role to the most recently parked thread, or to a new one. `false`:
/// no thread could be started, the caller keeps the role.
fn pass_role<F>(a: &Arc<Acceptors<F>>, peer: SocketAddr) -> bool
where
    F: Handler,
{
    let next = a.state.idle_list().pop();
    if let Some(p) = next {
        p.role.store(true, Ordering::SeqCst);
        p.thread.unpark();
        return true;
    }
    match spawn_acceptor(a) {
        Ok(()) => true,
        Err(e) => {
            a.state.refusals.warn(|| {
                format!(
                    "cannot start a thread ({e}): serving {peer} on the accepting thread, new {} connections wait until it is done",
                    a.kind.thread_name()
                )
            });
            false
        }
    }
}

/// One thread's life: hold the accept role and serve what it accepts; once the role has
/// been passed on, park until it comes back (see the module comment).
fn accept_and_serve<F>(a: &Arc<Acceptors<F>>)
where
    F: Handler,
{
    let state = &a.state;
    let idle_name = a.kind.idle_name();
    set_kernel_name(idle_name);
    if a.kind == Kind::Subscribers {
        // A subscriber thread reads acks and iamalive answers every few seconds and
        // writes backlog for slow readers: work that can wait a tick, and with thousands
        // of subscribers, wake-ups that would otherwise preempt the dispatcher in the
        // middle of a fan-out.
        sys::batch_scheduling();
    }
    let role = Arc::new(AtomicBool::new(true));
    loop {
        // This thread holds the accept role here.
        let accepted = a.listener.accept();
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("accepting a {} connection failed: {e}", a.kind.refusal());
                    // Out of descriptors and the like: do not spin.
                    thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let peer = SocketAddr::new(normalize(peer.ip()), peer.port());
        if !admit(a, peer) {
            drop(stream);
            continue;
        }
        // Named after its peer only once the connection has this thread to itself (the
        // role passed on): an author served on the spot costs no prctl calls.
        let named = std::cell::Cell::new(false);
        let pass = || {
            set_kernel_name(&format!("{} {peer}", a.kind.thread_name()));
            named.set(true);
            pass_role(a, peer)
        };
        let mut handoff = Handoff {
            pass: &pass,
            held: true,
        };
        if a.kind == Kind::Subscribers {
            // A subscriber connection lasts: it never holds up the next one.
            handoff.release();
        }
        {
            let _guard = ActiveGuard(Arc::clone(state), peer.ip());
            (a.handler)(stream, peer, &mut handoff);
        }
        if named.get() {
            set_kernel_name(idle_name);
        }
        if handoff.held() {
            continue;
        }
        {
            let mut idle = state.idle_list();
            // Checked under the lock that `stop` takes after setting the flag, so a
            // thread cannot park after `stop` has woken the parked ones.
            if state.stopping.load(Ordering::SeqCst) || idle.len() >= MAX_IDLE_THREADS {
                return;
            }
            role.store(false, Ordering::SeqCst);
            idle.push(Parked {
                thread: thread::current(),
                role: Arc::clone(&role),
            });
        }
        if !park_until_promoted(state, &role) {
            return;
        }
    }
}

/// Wait (parked) until `role` is handed to this thread (`true`), or until the idle
/// timeout passes or the listener stops (`false`: the thread should exit).
fn park_until_promoted(state: &ListenerState, role: &Arc<AtomicBool>) -> bool {
    let deadline = Instant::now() + state.idle_timeout;
    loop {
        if role.load(Ordering::SeqCst) {
            return true;
        }
        if state.stopping.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            let mut idle = state.idle_list();
            if let Some(i) = idle.iter().position(|p| Arc::ptr_eq(&p.role, role)) {
                idle.remove(i);
                return false; // unused for the idle timeout: retire
            }
            // Taken off the list by a thread handing over the role: it is on its way.
            drop(idle);
            while !role.load(Ordering::SeqCst) {
                if state.stopping.load(Ordering::SeqCst) {
                    return false;
                }
                thread::park_timeout(Duration::from_millis(10));
            }
            return true;
        }
        thread::park_timeout(deadline - now);
    }
}

/// Whitelist and caps for a just-accepted connection. `false`: refused (the caller
/// closes it).
fn admit<F>(a: &Arc<Acceptors<F>>, peer: SocketAddr) -> bool
where
    F: Handler,
{
    let state = &a.state;
    let refusal = a.kind.refusal();
    if !a.whitelist.allows(peer.ip()) {
        state
            .refusals
            .warn(|| format!("Attempted {refusal} from non-whitelisted {peer}"));
        return false;
    }
    if let Err(cap) = state.admit(peer.ip()) {
        state
            .refusals
            .warn(|| format!("refused {refusal} from {peer}: over {cap}"));
        return false;
    }
    state.active.fetch_add(1, Ordering::SeqCst);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// A listener whose handler reports its thread and echoes one byte; with `release`,
    /// it passes the accept role on before it reads (as handlers that may wait must).
    fn echo_listener(
        caps: Caps,
        release: bool,
    ) -> (
        SocketAddr,
        Arc<ListenerState>,
        mpsc::Receiver<thread::ThreadId>,
    ) {
        echo_listener_on(ListenerState::new(caps), release)
    }

    fn echo_listener_on(
        state: ListenerState,
        release: bool,
    ) -> (
        SocketAddr,
        Arc<ListenerState>,
        mpsc::Receiver<thread::ThreadId>,
    ) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let (addr, state) = serve(
            state,
            move |mut s: TcpStream, _, handoff: &mut Handoff<'_>| {
                if release {
                    handoff.release();
                }
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = tx.lock().unwrap().send(thread::current().id());
                    let _ = s.write_all(&b);
                }
            },
        );
        (addr, state, rx)
    }

    /// An author listener on an ephemeral loopback port, served by `handler`.
    fn serve<F: Handler>(state: ListenerState, handler: F) -> (SocketAddr, Arc<ListenerState>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(state);
        start(
            l,
            Whitelist::allow_all(),
            Kind::Authors,
            Arc::clone(&state),
            handler,
        )
        .unwrap();
        (addr, state)
    }

    fn round_trip(addr: SocketAddr) -> TcpStream {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"x").unwrap();
        c
    }

    /// One echo round trip; the thread that served it.
    fn echo(addr: SocketAddr, rx: &mpsc::Receiver<thread::ThreadId>) -> thread::ThreadId {
        let mut c = round_trip(addr);
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        rx.recv().unwrap()
    }

    /// [`echo`], then wait until the listener is quiet again.
    fn served_by(
        addr: SocketAddr,
        state: &ListenerState,
        rx: &mpsc::Receiver<thread::ThreadId>,
    ) -> thread::ThreadId {
        let id = echo(addr, rx);
        assert!(wait_for(|| quiet(state)));
        id
    }

    /// Nothing being served, and every thread but the accepting one parked.
    fn quiet(state: &ListenerState) -> bool {
        state.active() == 0 && state.idle_list().len() + 1 == state.threads()
    }

    /// Connection threads are started lean ([`sys::spawn_detached`]): the stack asked for
    /// and no signal stack, whose mapping and heap records thousands of subscriber
    /// threads would otherwise each carry.
    #[test]
    fn connection_threads_are_lean() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let (addr, _state) = serve(
            ListenerState::new(Caps::unlimited()),
            move |_s: TcpStream, _, handoff: &mut Handoff<'_>| {
                handoff.release();
                let _ = tx.lock().unwrap().send(sys::thread_shape());
            },
        );
        for _ in 0..3 {
            let _c = TcpStream::connect(addr).unwrap();
            let (alt, size) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert!(!alt, "a connection thread has a signal stack");
            // glibc may reuse a cached stack up to 4 times larger.
            assert!(
                (CONNECTION_STACK..=4 * CONNECTION_STACK).contains(&size),
                "{size}"
            );
        }
    }

    /// Subscriber connection threads run under `SCHED_BATCH`, author threads under the
    /// normal policy.
    #[test]
    fn subscriber_threads_do_not_preempt() {
        for (kind, policy) in [
            (Kind::Subscribers, libc::SCHED_BATCH),
            (Kind::Authors, libc::SCHED_OTHER),
        ] {
            let (tx, rx) = mpsc::channel();
            let tx = Mutex::new(tx);
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let state = Arc::new(ListenerState::new(Caps::unlimited()));
            start(
                l,
                Whitelist::allow_all(),
                kind,
                Arc::clone(&state),
                move |_s: TcpStream, _, handoff: &mut Handoff<'_>| {
                    handoff.release();
                    // SAFETY: a query about the calling thread.
                    let _ = tx
                        .lock()
                        .unwrap()
                        .send(unsafe { libc::sched_getscheduler(0) });
                },
            )
            .unwrap();
            let _c = TcpStream::connect(addr).unwrap();
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(10)).unwrap(),
                policy,
                "{kind:?}"
            );
            state.stop();
        }
    }

    /// A thread is named after its peer while the connection has it to itself (the role
    /// passed on), and "<kind> idle" otherwise: an author served on the spot is never
    /// renamed (no prctl calls on the fast path).
    #[test]
    fn threads_are_named_after_peers_they_wait_for() {
        let comm = |tid: i32| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .unwrap()
                .trim()
                .to_string()
        };
        for release in [false, true] {
            let (tx, rx) = mpsc::channel();
            let tx = Mutex::new(tx);
            let (addr, state) = serve(
                ListenerState::new(Caps::unlimited()),
                move |s: TcpStream, _, handoff: &mut Handoff<'_>| {
                    if release {
                        handoff.release();
                    }
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    let _ = tx.lock().unwrap().send((tid, comm(tid)));
                    drop(s);
                },
            );
            let _c = TcpStream::connect(addr).unwrap();
            let (tid, serving) = rx.recv().unwrap();
            let expected = if release {
                "author 127.0.0"
            } else {
                "author idle"
            };
            assert!(serving.starts_with(expected), "{release}: {serving:?}");
            assert!(wait_for(|| quiet(&state)));
            assert_eq!(comm(tid), "author idle");
            state.stop();
        }
    }

    /// Sequential connections that release the role are served by two threads taking
    /// turns: the one that went idle last is woken first, nobody new is started.
    #[test]
    fn threads_are_reused_last_parked_first() {
        let (addr, state, rx) = echo_listener(Caps::unlimited(), true);
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(served_by(addr, &state, &rx));
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            2,
            "{} threads for 20 sequential connections",
            distinct.len()
        );
        assert!(
            ids.windows(2).all(|w| w[0] != w[1]),
            "the two threads alternate"
        );
        assert_eq!(state.threads(), 2);
        state.stop();
    }

    /// A handler that keeps the role serves connection after connection on one thread,
    /// and no other thread is ever started.
    #[test]
    fn a_connection_that_keeps_the_role_wakes_no_one() {
        let (addr, state, rx) = echo_listener(Caps::unlimited(), false);
        let first = served_by(addr, &state, &rx);
        for _ in 0..20 {
            assert_eq!(served_by(addr, &state, &rx), first);
        }
        assert_eq!(state.threads(), 1);
        state.stop();
    }

    /// Connections open at the same time each have a thread of their own: the handler of
    /// the first blocks until its byte comes, and the others are served meanwhile.
    #[test]
    fn concurrent_connections_each_get_a_thread() {
        let (addr, state, rx) = echo_listener(Caps::unlimited(), true);
        let silent: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(
            wait_for(|| state.active() == 5),
            "active {}",
            state.active()
        );
        echo(addr, &rx);
        // Five waiting on their peers, the one that served, and one accepting.
        assert_eq!(state.threads(), 7);
        drop(silent);
        assert!(wait_for(|| quiet(&state)));
        // Parked now, not gone: a new connection reuses one of them.
        assert_eq!(state.threads(), 7);
        served_by(addr, &state, &rx);
        assert_eq!(state.threads(), 7);
        state.stop();
        assert!(
            wait_for(|| state.threads() == 0),
            "{} threads left after stop",
            state.threads()
        );
    }

    /// Parked threads retire after the idle timeout; the accepting one stays, and a new
    /// connection still gets a thread.
    #[test]
    fn parked_threads_retire() {
        let state =
            ListenerState::new(Caps::unlimited()).with_idle_timeout(Duration::from_millis(200));
        let (addr, state, rx) = echo_listener_on(state, true);
        let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(wait_for(|| state.active() == 3));
        drop(silent);
        assert!(wait_for(|| state.active() == 0));
        assert_eq!(state.threads(), 4);
        assert!(
            wait_for(|| state.threads() == 1),
            "{} threads",
            state.threads()
        );
        served_by(addr, &state, &rx);
        assert!(wait_for(|| state.threads() == 1));
        state.stop();
        assert!(wait_for(|| state.threads() == 0));
    }

    /// Over the per-address cap the connection is closed at once, without a byte.
    #[test]
    fn over_the_cap_is_closed() {
        let caps = Caps {
            total: Arc::new(AtomicUsize::new(0)),
            max_total: 100,
            per_address: 2,
        };
        let (addr, state, _rx) = echo_listener(caps, true);
        let _held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(wait_for(|| state.active() == 2));
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
        state.stop();
    }

    /// After stop, the port no longer accepts and every thread, parked or accepting, is
    /// gone.
    #[test]
    fn stop_closes_the_port() {
        let (addr, state, rx) = echo_listener(Caps::unlimited(), true);
        served_by(addr, &state, &rx);
        assert_eq!(state.threads(), 2, "one parked, one accepting");
        assert_eq!(state.idle_list().len(), 1);
        state.stop();
        assert!(wait_for(|| state.threads() == 0));
        assert!(wait_for(|| TcpStream::connect(addr).is_err()));
    }
}
