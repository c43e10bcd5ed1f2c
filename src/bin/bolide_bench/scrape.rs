//! `--scrape ADDR:PORT`: a thread that fetches the broker's `/metrics` (its `--http` view)
//! once a second while events are sent, as a Prometheus server would (more often than
//! the usual 15 s), so the cost of being watched shows in the broker's CPU per copy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Time between scrapes.
const INTERVAL: Duration = Duration::from_secs(1);

/// The running scraper.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

/// Start scraping `http://addr/metrics`.
pub fn start(addr: &str) -> Result<Scraper, String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("--scrape '{addr}': expected ADDR:PORT, the broker's --http"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name("scrape".into())
        .spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                match scrape(addr) {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
                next += INTERVAL;
                while !s.load(Ordering::Relaxed) && Instant::now() < next {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            (ok, failed)
        })
        .map_err(|e| format!("cannot start the scraper: {e}"))?;
    Ok(Scraper { stop, thread })
}

impl Scraper {
    /// Stop; the scrapes that got a `200` and those that did not.
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

fn scrape(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    if body.starts_with(b"HTTP/1.1 200 ") {
        Ok(())
    } else {
        Err(std::io::Error::other("not 200"))
    }
}
