//! Thin wrappers over the system calls bolide uses beyond `std::net`: non-blocking
//! `recv`/`send` on a borrowed socket, reads under an absolute deadline, a listening
//! socket's backlog and shutting it down, a connection from a chosen local address, an
//! exclusive file lock, the calling thread's kernel name and priority, the open-file
//! limit, the process's resident memory and thread count, and glibc's per-thread malloc
//! cache.
//!
//! Every role module (receiver, broadcaster, upstream, listener, verdict, outbox) and the
//! tools take these from here, so non-blocking I/O has one home and no role module is
//! imported for a helper.

use std::fs::File;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// A reader that never blocks: `recv` with `MSG_DONTWAIT` (nothing there yet is
/// `WouldBlock`). The receiver's first read of an author's event, the subscriber threads'
/// read of acks and iamalives, and the null broker's drain.
pub struct NonBlocking<'a>(pub &'a TcpStream);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv into a valid, writable buffer of the given length on a socket we
        // borrow for the duration of the call.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Wait up to `timeout` for `stream` to have something to read (or to be closed or in
/// error): `poll(2)`, so no buffer is held while waiting. `Ok(false)`: the time ran out.
pub fn wait_readable(stream: &TcpStream, timeout: std::time::Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Rounded up, so that a wait of less than a millisecond still waits.
    let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    loop {
        // SAFETY: poll(2) on one valid pollfd, on a descriptor we borrow for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A reader that applies an absolute deadline to every `read`: the time left is set as
/// the socket's receive timeout before each read, and a deadline already past is
/// `TimedOut` without a system call.
pub struct DeadlineReader<'a> {
    pub stream: &'a TcpStream,
    pub deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// `send(MSG_DONTWAIT)`: how much of `buf` the kernel took now (0 if none).
pub fn send_nonblocking(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    send_dontwait(stream, buf, 0)
}

/// [`send_nonblocking`] with extra `send(2)` flags (`MSG_MORE` for a last message).
/// `MSG_NOSIGNAL` is always set: a peer that went away is an error, never a `SIGPIPE`.
pub fn send_dontwait(stream: &TcpStream, buf: &[u8], flags: i32) -> io::Result<usize> {
    loop {
        // SAFETY: send(2) from a valid buffer on a descriptor we borrow for the call.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// `shutdown(2)` a listening socket: every thread blocked in its `accept` returns with an
/// error, while the descriptor stays open until the last owner drops it.
pub fn shutdown_listener(listener: &TcpListener) {
    // SAFETY: shutdown(2) on a descriptor we borrow for the call.
    unsafe {
        libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
    }
}

/// Let up to `backlog` connections wait in the kernel for `accept` (`listen(2)` again on
/// a listening socket; the kernel caps it at `net.core.somaxconn`). The standard library
/// listens with a backlog of 128: a burst of subscribers connecting at once overflows
/// it, and every connection over it waits a second for its SYN to be sent again.
pub fn set_listen_backlog(listener: &TcpListener, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on a descriptor we borrow for the call.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Take an exclusive `flock(2)` on `file` without waiting: `Ok(false)` if another open
/// file description holds a lock on it. The lock lasts until the file is closed.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock(2) on a descriptor we borrow for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

/// Where `path` is mapped into this process (`/proc/self/maps`): the start address and
/// length of the largest mapping of it, if any.
pub fn find_file_mapping(path: &std::path::Path) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let want = path.to_str()?;
    maps.lines()
        .filter(|l| l.ends_with(want) && l.split_whitespace().nth(5) == Some(want))
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end.checked_sub(start)?))
        })
        .max_by_key(|&(_, len)| len)
}

/// Drop this process's page-table entries for `len` bytes of a shared file mapping at
/// `addr` (`madvise(MADV_DONTNEED)`): the data stays in the file and the page cache, the
/// next access maps it again, and the pages no longer count in the process's RSS.
///
/// # Safety
/// `addr..addr + len` must be a shared file mapping (on private or anonymous memory
/// MADV_DONTNEED discards data).
pub unsafe fn drop_mapped_pages(addr: usize, len: usize) -> io::Result<()> {
    if libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set the calling thread's kernel name (what `top -H` and `ps -L` show); at most 15
/// bytes are kept.
pub fn set_kernel_name(label: &str) {
    let short: String = label.chars().take(15).collect();
    if let Ok(c) = std::ffi::CString::new(short) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0);
        }
    }
}

/// Give the calling thread the lowest CPU priority (nice 19): it runs on what other
/// threads leave. Linux keeps the nice value per thread, and a thread may always lower
/// its own priority (raising it back would need privileges, so only threads that end
/// with their work call this). Failure is ignored: the thread runs at normal priority.
pub fn lower_thread_priority() {
    // SAFETY: gettid and setpriority on the calling thread, no pointers.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Start `f` on a new detached thread with a stack of `stack` bytes, straight through
/// `pthread_create` rather than `std::thread`.
///
/// For threads that exist by the thousand (one per subscriber): a `std::thread` also
/// allocates a handle, a result packet and a stack-overflow record, and maps, protects and
/// later unmaps a guard-paged signal stack: about 250 bytes of heap and two mappings per
/// thread that such a thread never uses. The thread here has glibc's own guard page; if it
/// overflows its stack the process dies of SIGSEGV without Rust's "has overflowed its
/// stack" message. `std::thread::current()` and thread-locals work on it as on any thread.
/// A panic in `f` ends the thread only, as with `std::thread` (the panic hook reports it).
pub fn spawn_detached<F: FnOnce() + Send + 'static>(stack: usize, f: F) -> io::Result<()> {
    extern "C" fn start<F: FnOnce()>(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the box leaked below, handed to exactly this thread.
        let f = unsafe { Box::from_raw(arg as *mut F) };
        // Unwinding must not cross the C frame: stop it here, as std does.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(f));
    // SAFETY: the attribute is initialised before use and destroyed after; the thread
    // takes ownership of `arg` only if `pthread_create` succeeds.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut rc = libc::pthread_attr_init(&mut attr);
        if rc == 0 {
            rc = libc::pthread_attr_setstacksize(&mut attr, stack.max(libc::PTHREAD_STACK_MIN));
            if rc == 0 {
                rc = libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            }
            if rc == 0 {
                let mut tid: libc::pthread_t = 0;
                rc = libc::pthread_create(&mut tid, &attr, start::<F>, arg as *mut libc::c_void);
            }
            libc::pthread_attr_destroy(&mut attr);
        }
        if rc != 0 {
            drop(Box::from_raw(arg));
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Put the calling thread under `SCHED_BATCH`: same share of the CPU as before (its nice
/// value is kept), but a wake-up of this thread does not preempt the thread running. For
/// threads whose work can wait a scheduling tick, so that thousands of them waking do not
/// interrupt a thread on the critical path. Any thread may do this to itself; failure is
/// ignored (the thread keeps the normal policy).
pub fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid struct.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

/// Raise this process's open-file soft limit to its hard limit; returns the soft limit now
/// in force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialized struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// The glibc tunables that make a thread cheap, as `GLIBC_TUNABLES` names and values:
/// - `glibc.malloc.tcache_count=0`: no per-thread malloc cache. Each thread's cache keeps
///   up to seven freed blocks of every small size for that thread alone: with a thread per
///   subscriber that is kilobytes of heap per idle subscriber, left behind by its
///   handshake, that no other thread can use.
/// - `glibc.rtld.optional_static_tls=0` and `glibc.rtld.nns=1`: no static TLS kept in
///   reserve for libraries loaded later with `dlopen` (bolide loads none that need it) or
///   for extra link namespaces. glibc puts that reserve at the top of every thread's
///   stack, under its thread descriptor; without it a thread's first frame starts about
///   1.3 KiB higher, and a subscriber session stays within two stack pages.
pub const LEAN_THREADS: [(&str, &str); 3] = [
    ("glibc.malloc.tcache_count", "0"),
    ("glibc.rtld.optional_static_tls", "0"),
    ("glibc.rtld.nns", "1"),
];
/// Set in the environment of the program [`restart_with_lean_threads`] executes, so that
/// it knows to restore `GLIBC_TUNABLES` and never executes itself again.
const RESTARTED: &str = "BOLIDE_GLIBC_TUNABLES_WAS";

/// Execute this program again, same process and arguments, with the [`LEAN_THREADS`]
/// tunables added to `GLIBC_TUNABLES`, except those the operator's `GLIBC_TUNABLES`
/// already sets (the operator decides). glibc reads its tunables only as a process
/// starts, hence the `exec`; call this first thing, while the process has one thread. In
/// the program executed, it restores `GLIBC_TUNABLES` to what it was, so that the
/// programs bolide starts (`--cmd`) run with their own defaults. Returns without effect
/// where `exec` fails (no `/proc`): glibc's defaults then stay.
pub fn restart_with_lean_threads() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "GLIBC_TUNABLES";
    let tunables = std::env::var(VAR).ok();
    if let Some(was) = std::env::var_os(RESTARTED) {
        std::env::remove_var(RESTARTED);
        match was.to_str() {
            Some("") | None => std::env::remove_var(VAR),
            Some(was) => std::env::set_var(VAR, was),
        }
        return;
    }
    let Some(with_ours) = with_lean_threads(tunables.as_deref()) else {
        return;
    };
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else { return };
    // Returns only if it failed.
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(VAR, with_ours)
        .env(RESTARTED, tunables.unwrap_or_default())
        .exec();
}

/// `GLIBC_TUNABLES` with each of [`LEAN_THREADS`] that `tunables` does not name appended;
/// `None` if it names them all.
fn with_lean_threads(tunables: Option<&str>) -> Option<String> {
    let given = tunables.unwrap_or("");
    let named = |name: &str| {
        given
            .split(':')
            .any(|t| t.split_once('=').is_some_and(|(n, _)| n == name))
    };
    let ours: Vec<String> = LEAN_THREADS
        .iter()
        .filter(|(name, _)| !named(name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if ours.is_empty() {
        return None;
    }
    Some(
        std::iter::once(given)
            .filter(|g| !g.is_empty())
            .chain(ours.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Let glibc keep at most `arenas` malloc arenas (its default is eight per CPU), unless
/// the environment sets the number (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES`). Threads share the arenas, and each arena keeps part-used pages of
/// its own: the small blocks of thousands of subscriber threads spread over fewer arenas
/// fill fewer pages. Call it before any other thread starts.
pub fn limit_malloc_arenas(arenas: usize) {
    let set = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max="));
    if !set {
        let n = i32::try_from(arenas.max(1)).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets a malloc parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, n);
        }
    }
}

/// The process's resident memory and thread count, as the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStats {
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Threads of the process (`Threads`).
    pub threads: u64,
}

/// This process's [`ProcessStats`], read from `/proc/self/status`; `None` where that file
/// is missing or unreadable (no procfs).
pub fn process_stats() -> Option<ProcessStats> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmRSS` and `Threads` fields of a `/proc/PID/status` text.
fn parse_status(status: &str) -> Option<ProcessStats> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(ProcessStats {
        rss_bytes: field("VmRSS")? * 1024,
        threads: field("Threads")?,
    })
}

/// Connect to `to` from the local IPv4 address `from` (any 127.x.y.z works on Linux), so
/// a test or the bench can act as several peers.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::other("IPv4 only"));
    };
    let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we create and then own via TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sa(from, 0);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sa(*to.ip(), to.port());
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Whether the calling thread has an alternate signal stack, and its stack's size: how
/// tests tell a [`spawn_detached`] thread from a `std::thread` one.
#[cfg(test)]
pub(crate) fn thread_shape() -> (bool, usize) {
    // SAFETY: queries about the calling thread into initialised structs.
    unsafe {
        let mut ss: libc::stack_t = std::mem::zeroed();
        let alt = libc::sigaltstack(std::ptr::null(), &mut ss) == 0
            && ss.ss_flags & libc::SS_DISABLE == 0;
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut size = 0;
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) == 0 {
            let mut addr = std::ptr::null_mut();
            libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
            libc::pthread_attr_destroy(&mut attr);
        }
        (alt, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each lean-thread tunable is added unless the operator names it (with any value);
    /// the operator's own come first and are kept as given.
    #[test]
    fn lean_thread_tunables_keep_the_operators() {
        let all = "glibc.malloc.tcache_count=0:glibc.rtld.optional_static_tls=0:glibc.rtld.nns=1";
        assert_eq!(with_lean_threads(None).as_deref(), Some(all));
        assert_eq!(with_lean_threads(Some("")).as_deref(), Some(all));
        assert_eq!(
            with_lean_threads(Some("glibc.malloc.tcache_count=3")).as_deref(),
            Some("glibc.malloc.tcache_count=3:glibc.rtld.optional_static_tls=0:glibc.rtld.nns=1")
        );
        assert_eq!(
            with_lean_threads(Some("glibc.rtld.nns=2:glibc.malloc.trim_threshold=131072")).as_deref(),
            Some("glibc.rtld.nns=2:glibc.malloc.trim_threshold=131072:glibc.malloc.tcache_count=0:glibc.rtld.optional_static_tls=0")
        );
        // A name that only starts like one of ours is not ours.
        assert_eq!(
            with_lean_threads(Some("glibc.rtld.nns_x=1")).as_deref(),
            Some("glibc.rtld.nns_x=1:glibc.malloc.tcache_count=0:glibc.rtld.optional_static_tls=0:glibc.rtld.nns=1")
        );
        assert_eq!(
            with_lean_threads(Some(
                "glibc.rtld.nns=4:glibc.malloc.tcache_count=7:glibc.rtld.optional_static_tls=512"
            )),
            None
        );
    }

    /// A detached thread gets the stack asked for and no signal stack; a panic ends only
    /// its thread; `std::thread::current()` and thread-locals work on it.
    #[test]
    fn detached_threads_are_lean_and_contain_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = tx.clone();
        spawn_detached(512 * 1024, move || {
            thread_local!(static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
            N.with(|n| n.set(n.get() + 1));
            let id = std::thread::current().id();
            let _ = t.send((thread_shape(), id, N.with(|n| n.get())));
        })
        .unwrap();
        let ((alt, size), id, n) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(!alt, "a detached thread has no signal stack");
        // At least the size asked for: glibc may reuse a cached stack up to 4 times larger.
        assert!((512 * 1024..=2048 * 1024).contains(&size), "{size}");
        assert_ne!(id, std::thread::current().id());
        assert_eq!(n, 1);
        // A std thread, for contrast: Rust maps it a signal stack.
        let (std_alt, _) = std::thread::spawn(thread_shape).join().unwrap();
        assert!(std_alt, "std::thread installs a signal stack");

        spawn_detached(64 * 1024, || panic!("contained")).unwrap();
        let t = tx.clone();
        spawn_detached(64 * 1024, move || {
            let _ = t.send(((false, 0), std::thread::current().id(), 0));
        })
        .unwrap();
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
        // A stack size below the minimum is raised to it rather than refused.
        let t = tx;
        spawn_detached(1, move || {
            let _ = t.send((thread_shape(), std::thread::current().id(), 0));
        })
        .unwrap();
        let ((_, size), _, _) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(size >= libc::PTHREAD_STACK_MIN, "{size}");
    }

    /// The fields are read from the kernel's format, and this process's figures are
    /// plausible.
    #[test]
    fn process_stats_counts_threads_and_memory() {
        let text = "Name:\tbolide\nVmRSS:\t   18368 kB\nThreads:\t1007\n";
        assert_eq!(
            parse_status(text),
            Some(ProcessStats {
                rss_bytes: 18368 * 1024,
                threads: 1007
            })
        );
        assert_eq!(parse_status("Name:\tx\nThreads:\t3\n"), None);
        // This test's thread and the one started here, at least (other tests' threads
        // come and go meanwhile).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let during = process_stats().expect("procfs");
        assert!(during.threads >= 2, "{during:?}");
        assert!(during.rss_bytes > 1 << 20, "{during:?}");
        drop(tx);
        let _ = t.join();
    }
}
