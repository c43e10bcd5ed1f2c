//! Measurements: the tool's own CPU time, latency percentiles, and the broker's CPU time
//! and memory sampled from /proc (`--pid`) by [`Sampler`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// CPU time (user + system) of this process, seconds.
pub fn self_cpu_s() -> f64 {
    // SAFETY: getrusage fills a zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Percentiles (nearest rank) of microsecond samples, in ms: (p50, p99, max).
pub fn percentiles(v: &mut [u32]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1000.0
    };
    Some((at(0.50), at(0.99), v[v.len() - 1] as f64 / 1000.0))
}

/// One reading of the broker's /proc files.
#[derive(Clone, Copy, Default)]
pub struct ProcSample {
    cpu_ticks: u64,
    pub rss_kb: u64,
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kb,
    })
}

/// What is known of the broker at the end of a run (the JSON's `broker` object).
pub struct BrokerFigures {
    /// CPU time over the measured phase.
    pub cpu_s: f64,
    pub rss_start: u64,
    pub rss_end: u64,
    pub rss_peak: u64,
    /// With every subscriber connected, before the first event (fan-out modes).
    pub rss_subscribers_idle: Option<u64>,
}

/// Samples a broker every 100 ms on its own thread.
pub struct Sampler {
    pid: u32,
    tick_hz: f64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    /// A sampler for `--pid`, if given; an error when its /proc files cannot be read.
    pub fn for_pid(pid: Option<u32>) -> Result<Option<Sampler>, String> {
        match pid {
            None => Ok(None),
            Some(pid) => Sampler::start(pid)
                .map(Some)
                .ok_or_else(|| format!("cannot read /proc/{pid}")),
        }
    }

    fn start(pid: u32) -> Option<Sampler> {
        let first = proc_sample(pid)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let peak = Arc::new(AtomicU64::new(first.rss_kb));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (Arc::clone(&peak), Arc::clone(&stop));
        let handle = thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Some(s) = proc_sample(pid) {
                    p2.fetch_max(s.rss_kb, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Some(Sampler {
            pid,
            tick_hz: if hz > 0 { hz as f64 } else { 100.0 },
            peak,
            stop,
            handle: Some(handle),
        })
    }

    /// The broker now (a zero sample if it cannot be read any more).
    pub fn now(&self) -> ProcSample {
        let s = proc_sample(self.pid).unwrap_or_default();
        self.peak.fetch_max(s.rss_kb, Ordering::Relaxed);
        s
    }

    /// Forget the peak so far (the measured phase starts).
    pub fn reset_peak(&self, to: u64) {
        self.peak.store(to, Ordering::Relaxed);
    }

    /// Stop sampling; the figures from `from`, taken when the measured phase started, to
    /// now (`rss_start` is `from`'s RSS).
    pub fn finish(mut self, from: ProcSample) -> BrokerFigures {
        let to = self.now();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        BrokerFigures {
            cpu_s: (to.cpu_ticks.saturating_sub(from.cpu_ticks)) as f64 / self.tick_hz,
            rss_start: from.rss_kb,
            rss_end: to.rss_kb,
            rss_peak: self.peak.load(Ordering::Relaxed),
            rss_subscribers_idle: None,
        }
    }
}
