//! Event handlers, run on every accepted event (from authors and upstreams, never the
//! broker's own test events) off the dispatcher's path: `--print-event`, `--save-event`,
//! and `--cmd`.
//!
//! The dispatcher `try_send`s each new event to the handler thread; a full queue is logged
//! (never a silent drop) and never blocks the dispatcher or an author's ack. `--cmd`
//! children run on a fixed pool of runner threads (`--cmd-concurrency`): beyond that,
//! jobs queue (up to [`CMD_QUEUE`], the backlog logged past 100; then the handler thread
//! waits, its own queue fills, and the dispatcher logs each event it cannot hand over), each child gets the raw bytes on standard
//! input, its output is logged at debug, a non-zero exit at warn, and a child still
//! running after `--cmd-timeout` is killed and logged.
//!
//! With the archive on (the default) the handlers do not take events from the dispatcher:
//! their thread is a reader of the archive with a position, like the Kafka publisher. It
//! reads the entries after its position as commits append them ([`Store::wait_for_archive`])
//! and handles each in order; the position (`meta` key [`POSITION_KEY`]) is the seq before
//! the oldest event whose `--cmd` children have not all ended, written at most every
//! [`SAVE_EVERY`] and when the broker stops. So after a crash or `kill -9`, every archived
//! event not yet handled is handled, in order, before new ones (at least once: an event
//! handled just before the crash can be handled again). `--save-event` never writes a
//! second file for the same bytes: a file of that name with those bytes already there is
//! the event saved. The first start handles the events accepted from then on.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use log::{debug, error, info, warn};

use crate::store::Store;
use crate::voevent::Event;

/// The `meta` key of the handlers' position in the archive (big-endian seq).
pub const POSITION_KEY: &[u8] = b"handled_seq";
/// How often at most the position is written.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);
/// Most archive entries read per read transaction.
const READ_CHUNK: usize = 64;

/// Events waiting for the handler thread before new ones are refused (with a log line).
pub const HANDLER_QUEUE: usize = 10_000;
/// Queued `--cmd` jobs above which each new job logs a warning.
const CMD_BACKLOG_WARN: usize = 100;
/// Most queued `--cmd` jobs; beyond it the handler thread waits (and so its own queue
/// fills, which the dispatcher logs), so memory stays bounded.
pub const CMD_QUEUE: usize = 1000;

/// Handler settings.
#[derive(Clone, Debug, Default)]
pub struct HandlerConfig {
    pub print_event: bool,
    /// Directory to save events in, if `--save-event`.
    pub save_dir: Option<PathBuf>,
    /// Executables to run per event.
    pub cmds: Vec<PathBuf>,
    pub cmd_timeout: Duration,
    pub cmd_concurrency: usize,
}

impl HandlerConfig {
    /// True if any handler is configured.
    pub fn any(&self) -> bool {
        self.print_event || self.save_dir.is_some() || !self.cmds.is_empty()
    }
}

/// Comet's file name for an event (spec §8.2): one leading `.` removed, `/` and `\` turned
/// into `_`, then everything but ASCII letters, digits, `_` and `.` deleted. Names that
/// would be empty, `.` or `..` get an `event` prefix; very long names are cut to 200 bytes.
pub fn file_name(ivorn: &str) -> String {
    let s = ivorn.strip_prefix('.').unwrap_or(ivorn);
    let mut name: String = s
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        name.insert_str(0, "event");
    }
    name.truncate(200);
    name
}

/// Write `bytes` to `dir/name`, never overwriting: if the name is taken, append `_` until
/// it is free. The file appears atomically (written to a temporary name, synced, then
/// hard-linked into place; the link fails rather than replace an existing file).
pub fn save(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    save_as(dir, name, bytes, false)
}

/// [`save`], except that a file of that name (or one with `_` appended) already holding
/// these very bytes is this event, saved before: its path is returned, nothing written.
pub fn save_once(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    save_as(dir, name, bytes, true)
}

fn save_as(dir: &Path, name: &str, bytes: &[u8], once: bool) -> io::Result<PathBuf> {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        let mut candidate = name.to_string();
        loop {
            let target = dir.join(&candidate);
            match fs::hard_link(&tmp, &target) {
                Ok(()) => return Ok(target),
                // The same bytes under this name: this event, saved already.
                Err(e)
                    if once
                        && e.kind() == io::ErrorKind::AlreadyExists
                        && fs::read(&target).is_ok_and(|b| b == bytes) =>
                {
                    return Ok(target)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => candidate.push('_'),
                Err(e) => return Err(e),
            }
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// A running handler stage: the sender the dispatcher uses (`None`: the handlers follow
/// the archive), and the archive follower's stop flag and thread.
pub struct Handlers {
    pub tx: Option<Sender<Arc<Event>>>,
    follower: Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>,
}

impl Handlers {
    /// Stop following the archive and record the position (after the last commit).
    pub fn stop(self) {
        if let Some((stop, t)) = self.follower {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// Why the handlers could not start.
#[derive(Debug)]
pub enum HandlerError {
    /// The `--save-event-directory` cannot be used.
    SaveDir { path: PathBuf, source: io::Error },
    /// A handler thread could not be started.
    Thread(io::Error),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, source) = match self {
            HandlerError::SaveDir { path, source } => (path.display(), source),
            HandlerError::Thread(e) => return write!(f, "cannot start a handler thread: {e}"),
        };
        match (source.kind(), source.raw_os_error()) {
            (io::ErrorKind::AlreadyExists, _) | (_, Some(libc::ENOTDIR)) => write!(
                f,
                "--save-event-directory {path} is not a directory (a file is in the way): give a directory; it is created if missing"
            ),
            (io::ErrorKind::PermissionDenied, _) | (_, Some(libc::EROFS)) => write!(
                f,
                "--save-event-directory {path} is not writable ({source}): make it writable by the user bolide runs as (under systemd, add ReadWritePaths={path} to the unit)"
            ),
            _ => write!(f, "--save-event-directory {path}: {source}"),
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandlerError::SaveDir { source, .. } | HandlerError::Thread(source) => Some(source),
        }
    }
}

/// Create the save directory if missing and check that a file can be created in it, so
/// a directory the broker cannot write to is refused at start-up, not event by event.
fn check_save_dir(dir: &Path) -> Result<(), HandlerError> {
    let err = |source| HandlerError::SaveDir {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    if !dir.is_dir() {
        return Err(err(io::ErrorKind::AlreadyExists.into()));
    }
    let probe = dir.join(format!(".bolide-probe-{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(err)?;
    fs::remove_file(&probe).map_err(err)
}

/// Start the handler thread (and the `--cmd` runners), following the archive in `store`
/// if given. Returns `None` if no handler is configured.
pub fn start(
    cfg: HandlerConfig,
    store: Option<Arc<Store>>,
) -> Result<Option<Handlers>, HandlerError> {
    if !cfg.any() {
        return Ok(None);
    }
    if let Some(dir) = &cfg.save_dir {
        check_save_dir(dir)?;
    }
    let (tx, rx) = bounded::<Arc<Event>>(HANDLER_QUEUE);
    let cmd_tx = if cfg.cmds.is_empty() {
        None
    } else {
        let (jtx, jrx) = bounded::<Job>(CMD_QUEUE);
        let backlog = Arc::new(AtomicUsize::new(0));
        for i in 0..cfg.cmd_concurrency.max(1) {
            let jrx = jrx.clone();
            let timeout = cfg.cmd_timeout;
            let backlog = Arc::clone(&backlog);
            thread::Builder::new()
                .name(format!("cmd runner {i}"))
                .stack_size(256 * 1024)
                .spawn(move || run_jobs(jrx, timeout, backlog))
                .map_err(HandlerError::Thread)?;
        }
        Some((jtx, backlog))
    };
    let builder = thread::Builder::new()
        .name("handlers".into())
        .stack_size(256 * 1024);
    let Some(store) = store else {
        builder
            .spawn(move || run(rx, cfg, cmd_tx))
            .map_err(HandlerError::Thread)?;
        return Ok(Some(Handlers {
            tx: Some(tx),
            follower: None,
        }));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let t = builder
        .spawn(move || follow(&store, &cfg, cmd_tx, &flag))
        .map_err(HandlerError::Thread)?;
    Ok(Some(Handlers {
        tx: None,
        follower: Some((stop, t)),
    }))
}

struct Job {
    cmd: PathBuf,
    event: Arc<Event>,
    /// Told the event's seq when the child ended (archive follower).
    done: Option<(u64, Sender<u64>)>,
}

/// The archive follower's position, as stored.
pub fn position(store: &Store) -> Option<u64> {
    store
        .meta_get(POSITION_KEY)
        .ok()
        .flatten()
        .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
}

/// Thread body with the archive on: handle each archived event after the position, in
/// order, until `stop`.
fn follow(
    store: &Store,
    cfg: &HandlerConfig,
    cmds: Option<(Sender<Job>, Arc<AtomicUsize>)>,
    stop: &AtomicBool,
) {
    let end = store.archive_counters().next_seq.saturating_sub(1);
    let mut saved = match store.meta_get_or_insert(POSITION_KEY, || end.to_be_bytes().to_vec()) {
        Ok(v) => v.try_into().map(u64::from_be_bytes).unwrap_or(end),
        Err(e) => {
            error!(
                "handlers: position unreadable ({e}); handling events from archive seq {} on",
                end + 1
            );
            end
        }
    };
    info!(
        "handlers: handling archived events from seq {} on ({} not yet handled)",
        saved + 1,
        end.saturating_sub(saved)
    );
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<u64>();
    // Seqs whose --cmd children have not all ended, and how many are left.
    let mut running: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut read = saved;
    let mut saved_at = Instant::now();
    let mut batch: Vec<(u64, Arc<Event>)> = Vec::with_capacity(READ_CHUNK);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            store.wait_for_archive(read, SAVE_EVERY / 2);
            let result = store.read_archive(read + 1, |e| {
                batch.push((e.seq, Arc::new(Event::archived(e))));
                batch.len() < READ_CHUNK
            });
            if let Err(e) = result {
                error!("handlers: cannot read the archive: {e}");
                thread::sleep(Duration::from_secs(1));
            }
        }
        for (seq, ev) in batch.drain(..) {
            read = seq;
            let done = Some((seq, done_tx.clone()));
            let jobs = handle(&ev, cfg, &cmds, &done);
            if jobs > 0 {
                running.insert(seq, jobs);
            }
        }
        while let Ok(seq) = done_rx.try_recv() {
            if let Some(left) = running.get_mut(&seq) {
                *left -= 1;
                if *left == 0 {
                    running.remove(&seq);
                }
            }
        }
        let position = running.keys().next().map_or(read, |s| s - 1);
        if position != saved && (stopping || saved_at.elapsed() >= SAVE_EVERY) {
            match store.meta_put(POSITION_KEY, &position.to_be_bytes()) {
                Ok(()) => saved = position,
                Err(e) => warn!("handlers: position not saved: {e}"),
            }
            saved_at = Instant::now();
        }
        if stopping {
            info!("handlers stopped at archive seq {saved}");
            return;
        }
    }
}

fn run(
    rx: Receiver<Arc<Event>>,
    cfg: HandlerConfig,
    cmds: Option<(Sender<Job>, Arc<AtomicUsize>)>,
) {
    for ev in rx {
        handle(&ev, &cfg, &cmds, &None);
    }
}

/// Print, save and queue the `--cmd` jobs of one event; the number of jobs queued.
fn handle(
    ev: &Arc<Event>,
    cfg: &HandlerConfig,
    cmds: &Option<(Sender<Job>, Arc<AtomicUsize>)>,
    done: &Option<(u64, Sender<u64>)>,
) -> usize {
    let mut jobs = 0;
    {
        if cfg.print_event {
            let out = io::stdout();
            let mut out = out.lock();
            let mut r = out.write_all(ev.payload());
            if !ev.payload().ends_with(b"\n") {
                r = r.and_then(|_| out.write_all(b"\n"));
            }
            if let Err(e) = r.and_then(|_| out.flush()) {
                warn!(
                    "--print-event: cannot write {} to standard output: {e}",
                    ev.ivorn
                );
            }
        }
        if let Some(dir) = &cfg.save_dir {
            match save_once(dir, &file_name(&ev.ivorn), ev.payload()) {
                Ok(p) => debug!("saved {} as {}", ev.ivorn, p.display()),
                Err(e) => error!(
                    "--save-event: cannot save {} in {}: {e}",
                    ev.ivorn,
                    dir.display()
                ),
            }
        }
        if let Some((jtx, backlog)) = &cmds {
            for cmd in &cfg.cmds {
                let queued = backlog.fetch_add(1, Ordering::SeqCst) + 1;
                if queued > CMD_BACKLOG_WARN {
                    warn!(
                        "{queued} --cmd jobs waiting for a free runner; {} queued for {}",
                        ev.ivorn,
                        cmd.display()
                    );
                }
                let job = Job {
                    cmd: cmd.clone(),
                    event: Arc::clone(ev),
                    done: done.clone(),
                };
                if jtx.send(job).is_ok() {
                    jobs += 1;
                }
            }
        }
    }
    jobs
}

fn run_jobs(rx: Receiver<Job>, timeout: Duration, backlog: Arc<AtomicUsize>) {
    for job in rx {
        backlog.fetch_sub(1, Ordering::SeqCst);
        run_one(&job.cmd, &job.event, timeout);
        if let Some((seq, tx)) = job.done {
            let _ = tx.send(seq);
        }
    }
}

/// Read a child's pipe to the end on its own thread, returning what it said.
fn collect<R: Read + Send + 'static>(r: Option<R>) -> Option<thread::JoinHandle<Vec<u8>>> {
    let mut r = r?;
    thread::Builder::new()
        .name("cmd output".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = Vec::new();
            // Keep at most 64 KiB for the log; drain the rest so the child never blocks.
            let mut chunk = [0u8; 8192];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if buf.len() < 64 * 1024 {
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            buf
        })
        .ok()
}

fn run_one(cmd: &Path, ev: &Arc<Event>, timeout: Duration) {
    let started = Instant::now();
    let mut child: Child = match Command::new(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(
                "--cmd {}: cannot run it for {}: {e}",
                cmd.display(),
                ev.ivorn
            );
            return;
        }
    };
    // Feed standard input on its own thread: a child that never reads must not block us.
    let stdin = child.stdin.take();
    let ev2 = Arc::clone(ev);
    let feeder = thread::Builder::new()
        .name("cmd stdin".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            if let Some(mut i) = stdin {
                let _ = i.write_all(ev2.payload());
            }
        });
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                warn!(
                    "--cmd {} for {} still running after {} s: killed",
                    cmd.display(),
                    ev.ivorn,
                    timeout.as_secs()
                );
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                warn!("--cmd {}: {e}", cmd.display());
                break None;
            }
        }
    };
    if let Ok(f) = feeder {
        let _ = f.join();
    }
    for (what, h) in [("standard output", out), ("standard error", err)] {
        if let Some(text) = h.and_then(|h| h.join().ok()).filter(|t| !t.is_empty()) {
            debug!(
                "--cmd {} ({}) said on {what}: {}",
                cmd.display(),
                ev.ivorn,
                String::from_utf8_lossy(&text).trim_end()
            );
        }
    }
    match status {
        Some(st) if st.success() => info!(
            "--cmd {} handled {} in {:.2} s",
            cmd.display(),
            ev.ivorn,
            started.elapsed().as_secs_f64()
        ),
        Some(st) => match st.code() {
            Some(code) => warn!(
                "--cmd {} returned non-zero ({code}) for {}",
                cmd.display(),
                ev.ivorn
            ),
            None => warn!(
                "--cmd {} was killed by a signal ({st}) for {}",
                cmd.display(),
                ev.ivorn
            ),
        },
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_comet() {
        assert_eq!(
            file_name("ivo://test.ivoid/1234#5678"),
            "ivo__test.ivoid_12345678"
        );
        assert_eq!(file_name("ab/c"), "ab_c");
        assert_eq!(file_name("a*bc"), "abc");
        assert_eq!(file_name("a\\/b"), "a__b");
        assert_eq!(file_name(".abc"), "abc");
        assert_eq!(file_name("..abc"), ".abc");
        assert_eq!(file_name(""), "event");
        assert_eq!(file_name("..."), "event..");
        assert_eq!(file_name(".."), "event.");
        assert_eq!(
            file_name("ivo://bolide.test/../../etc/passwd#x"),
            "ivo__bolide.test_.._.._etc_passwdx"
        );
        assert_eq!(file_name(&"a".repeat(500)).len(), 200);
    }

    #[test]
    fn save_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("bolide-save-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let a = save(&dir, "n", b"first").unwrap();
        let b = save(&dir, "n", b"second").unwrap();
        let c = save(&dir, "n", b"third").unwrap();
        assert_eq!(a, dir.join("n"));
        assert_eq!(b, dir.join("n_"));
        assert_eq!(c, dir.join("n__"));
        assert_eq!(fs::read(&a).unwrap(), b"first");
        assert_eq!(fs::read(&b).unwrap(), b"second");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }
}
