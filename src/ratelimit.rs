//! How fast an author may publish (`--author-rate N/SECONDS`): a token bucket per author
//! address, holding at most N tokens and refilled at N per SECONDS, so an author may send
//! a burst of N events and then N every SECONDS.
//!
//! What counts: every event the receiver hands to the dispatcher, that is every event that
//! passed its own checks and `--author-config`, whether it then turns out new or a
//! duplicate. Those are what a runaway author script multiplies: each one costs the
//! dispatcher a lookup and, when new, a copy to every subscriber. An event refused
//! earlier (invalid, not permitted) costs only its own connection and gets its own reason
//! in the nak instead of "rate limit exceeded"; counting only the events found new would
//! need the dispatcher's verdict, which the receiver never waits for.
//!
//! The buckets live in one map under a mutex, keyed by address (IPv4-mapped IPv6
//! addresses as IPv4, as the listener reports them). A bucket untouched for SECONDS is
//! full again, the same as no bucket at all, so such idle buckets are forgotten whenever
//! the map has doubled since the last sweep; the map never holds more than
//! [`MAX_BUCKETS`], the least recently used giving way.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses with a bucket at once.
pub const MAX_BUCKETS: usize = 65_536;

/// Size of the map below which idle buckets are not swept.
const SWEEP_MIN: usize = 1024;

/// `--author-rate`: `events` per `secs` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub events: u32,
    pub secs: u64,
}

impl Rate {
    /// Parse `N/SECONDS`, both whole numbers of at least 1.
    pub fn parse(s: &str) -> Option<Rate> {
        let (n, secs) = s.trim().split_once('/')?;
        let events: u32 = n.parse().ok().filter(|&n| n > 0)?;
        let secs: u64 = secs.parse().ok().filter(|&s| s > 0)?;
        Some(Rate { events, secs })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {} s", self.events, self.secs)
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<IpAddr, Bucket>,
    /// Size at which the next sweep of idle buckets runs.
    sweep_at: usize,
}

/// The buckets of every author address, shared by the receiver threads.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    period: Duration,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            period: Duration::from_secs(rate.secs),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                sweep_at: SWEEP_MIN,
            }),
        }
    }

    /// The limit applied.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Take a token for an event from `ip`: false if its bucket is empty.
    pub fn take(&self, ip: IpAddr) -> bool {
        self.take_at(ip, Instant::now())
    }

    /// [`RateLimiter::take`] at the time `now`.
    pub fn take_at(&self, ip: IpAddr, now: Instant) -> bool {
        let burst = f64::from(self.rate.events);
        let per_sec = burst / self.rate.secs as f64;
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !b.map.contains_key(&ip) {
            self.make_room(&mut b, now);
        }
        let bucket = b.map.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        // Threads may arrive out of order: time never runs backwards for a bucket.
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Before a new address gets a bucket: forget the idle ones once the map has doubled
    /// since the last sweep, and the least recently used one if the map is still full.
    fn make_room(&self, b: &mut Buckets, now: Instant) {
        if b.map.len() >= b.sweep_at {
            b.map
                .retain(|_, v| now.saturating_duration_since(v.last) < self.period);
            b.sweep_at = (2 * b.map.len()).max(SWEEP_MIN);
        }
        if b.map.len() >= MAX_BUCKETS {
            if let Some(oldest) = b.map.iter().min_by_key(|(_, v)| v.last).map(|(k, _)| *k) {
                b.map.remove(&oldest);
            }
        }
    }

    /// Addresses with a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whitelist::tests::ip;

    #[test]
    fn parse_rates() {
        assert_eq!(Rate::parse("5/2"), Some(Rate { events: 5, secs: 2 }));
        assert_eq!(
            Rate::parse(" 100/60 "),
            Some(Rate {
                events: 100,
                secs: 60
            })
        );
        for bad in [
            "", "5", "0/1", "5/0", "-1/2", "5/x", "x/5", "5/2/3", "5.5/2", "5/1m",
        ] {
            assert_eq!(Rate::parse(bad), None, "{bad}");
        }
        assert_eq!(Rate { events: 5, secs: 2 }.to_string(), "5 per 2 s");
    }

    #[test]
    fn burst_then_refusals_then_refill() {
        let l = RateLimiter::new(Rate { events: 3, secs: 6 });
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        assert!((0..3).all(|_| l.take_at(a, t0)));
        assert!(!l.take_at(a, t0));
        // Another address has its own bucket.
        assert!(l.take_at(ip("2001:db8::1"), t0));
        // One token per 2 s.
        assert!(!l.take_at(a, t0 + Duration::from_millis(1900)));
        assert!(l.take_at(a, t0 + Duration::from_millis(2000)));
        assert!(!l.take_at(a, t0 + Duration::from_millis(2100)));
        // Refills up to the burst, no further.
        let later = t0 + Duration::from_secs(600);
        assert!((0..3).all(|_| l.take_at(a, later)));
        assert!(!l.take_at(a, later));
    }

    #[test]
    fn idle_buckets_are_forgotten_and_the_map_is_bounded() {
        let l = RateLimiter::new(Rate { events: 1, secs: 1 });
        let t0 = Instant::now();
        let v4 = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..SWEEP_MIN as u32 {
            assert!(l.take_at(v4(i), t0));
        }
        assert_eq!(l.tracked(), SWEEP_MIN);
        // A second later they are all full again: the next new address sweeps them.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.take_at(ip("192.0.2.1"), t1));
        assert_eq!(l.tracked(), 1);
        // Active addresses beyond the cap: the least recently used gives way.
        let t2 = t1 + Duration::from_millis(1);
        for i in 0..(MAX_BUCKETS as u32 + 10) {
            l.take_at(v4(i), t2 + Duration::from_nanos(u64::from(i)));
        }
        assert_eq!(l.tracked(), MAX_BUCKETS);
        // The newest is still limited.
        assert!(!l.take_at(v4(MAX_BUCKETS as u32 + 9), t2));
    }
}
