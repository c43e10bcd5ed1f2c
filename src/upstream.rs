//! Subscribing to upstream brokers (`--remote`): one thread per upstream, the subscriber
//! state machine of spec §3.5.
//!
//! The thread connects, then answers what the upstream sends: `iamalive` with an iamalive
//! response, `authenticate` with an authenticate response carrying our `--filter`
//! expressions, and every VOEvent with an `ack` (always: valid or not, new or duplicate,
//! so the upstream never drops us). New events go to the dispatcher like an author's,
//! without schema or IVOID checks (spec §5.2). No parseable message for `--remote-timeout`
//! (120 s) means the link is dead. Reconnects back off geometrically with jitter from 1 s
//! to 60 s; the backoff resets only after a connection stayed up for [`HEALTHY_AFTER`], so
//! an upstream that accepts and closes at once (a whitelist refusal) costs at most one
//! attempt per backoff step, never a reconnect storm.

use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::cli::Remote;
use crate::dispatcher::Msg;
use crate::frame::{write_frame, FrameError, FrameReader};
use crate::metrics::{LinkState, UpstreamStat, METRICS};
use crate::transport::{self, Role};
use crate::voevent::upstream_event;
use crate::xml::{self, Limits};

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every upstream thread shares.
pub struct UpstreamContext {
    /// Sent as `Response` in our replies, if configured.
    pub local_ivo: Option<String>,
    /// Sent in every authenticate response.
    pub filters: Vec<String>,
    pub max_event_size: usize,
    pub limits: Limits,
    pub inactivity: Duration,
    /// Time the upstream may take to finish a message it started sending.
    pub frame_timeout: Duration,
    pub dispatcher: Sender<Msg>,
}

/// Why a session with an upstream ended.
#[derive(Debug)]
enum End {
    Closed,
    Silent(Duration),
    Io(io::Error),
    Frame(FrameError),
}

/// Geometric backoff with jitter: `min(1 s × 2^failures, 60 s)`, then a uniform factor in
/// [0.5, 1.0], never below 1 s.
pub struct Backoff {
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The next delay (and count one more failure).
    pub fn next_delay(&mut self) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        let unit = r as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.5 + 0.5 * unit).max(BACKOFF_MIN)
    }

    /// The link proved healthy.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Thread body: subscribe to `remote` until `stop` fires or closes.
pub fn run(remote: Remote, ctx: Arc<UpstreamContext>, stop: Receiver<()>) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (remote.port as u64) << 17;
    let mut backoff = Backoff::new(seed);
    let name = remote.to_string();
    let stat = METRICS.upstream(name.clone());
    loop {
        let started = Instant::now();
        stat.set(LinkState::Connecting);
        match connect(&remote) {
            Ok(stream) => {
                info!("subscribed to upstream {name}");
                stat.set(LinkState::Connected);
                let end = session(&stream, &name, &ctx, &stat);
                let _ = stream.shutdown(Shutdown::Both);
                let lived = started.elapsed();
                match &end {
                    End::Closed => warn!(
                        "upstream {name} closed the connection after {:.1} s",
                        lived.as_secs_f64()
                    ),
                    End::Silent(d) => warn!(
                        "no iamalive received from upstream {name} for {} seconds; reconnecting",
                        d.as_secs()
                    ),
                    End::Io(e) => warn!("upstream {name}: {e}"),
                    End::Frame(e) => warn!("upstream {name}: {e}"),
                }
                if lived >= HEALTHY_AFTER {
                    backoff.reset();
                }
            }
            Err(e) => warn!("cannot connect to upstream {name}: {e}"),
        }
        stat.set(LinkState::Waiting);
        let delay = backoff.next_delay();
        info!(
            "reconnecting to upstream {name} in {:.1} s",
            delay.as_secs_f64()
        );
        match stop.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}

fn connect(remote: &Remote) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (remote.host.as_str(), remote.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn session(stream: &TcpStream, name: &str, ctx: &UpstreamContext, stat: &UpstreamStat) -> End {
    let mut frames = FrameReader::new(ctx.max_event_size);
    let mut out = stream;
    if let Err(e) = stream.set_write_timeout(Some(ctx.inactivity)) {
        return End::Io(e);
    }
    let local = ctx.local_ivo.as_deref();
    let mut last_good = Instant::now();
    loop {
        let frame = match frames.read_frame_deadlines(
            stream,
            last_good + ctx.inactivity,
            ctx.frame_timeout,
        ) {
            Ok(f) => f,
            Err(FrameError::Closed) => return End::Closed,
            Err(FrameError::TimedOut) => return End::Silent(ctx.inactivity),
            Err(e) => return End::Frame(e),
        };
        let doc = match xml::parse(&frame, ctx.limits) {
            Ok(d) => d,
            Err(e) => {
                // Not acked (no ivorn to ack) and does not count as a sign of life.
                warn!("unparsable message from upstream {name}: {e}");
                continue;
            }
        };
        last_good = Instant::now();
        let root = doc.root();
        let reply = match root.local {
            "Transport" => {
                let m = match transport::from_document(&doc) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!("upstream {name}: {e}");
                        continue;
                    }
                };
                let origin = m.origin.as_deref().unwrap_or("");
                match m.role {
                    Some(Role::IAmAlive) => {
                        debug!("iamalive from upstream {name}");
                        transport::iamalive_response(origin, local)
                    }
                    Some(Role::Authenticate) => {
                        debug!(
                            "authenticate from upstream {name}; sending {} filters",
                            ctx.filters.len()
                        );
                        transport::authenticate_response(origin, local, &ctx.filters)
                    }
                    _ => {
                        info!(
                            "incomprehensible message from upstream {name} (role={})",
                            m.role_attr
                        );
                        continue;
                    }
                }
            }
            "VOEvent" => match upstream_event(&doc, &frame, name) {
                Ok(ev) => {
                    let ack = transport::ack(&ev.ivorn, local);
                    debug!("received {} from upstream {name}", ev.ivorn);
                    stat.received();
                    if ctx
                        .dispatcher
                        .send(Msg::Submit {
                            event: Arc::new(ev),
                            reply: None,
                        })
                        .is_err()
                    {
                        return End::Closed;
                    }
                    ack
                }
                Err(e) => {
                    warn!("unusable event from upstream {name}: {e}");
                    continue;
                }
            },
            other => {
                info!(
                    "incomprehensible <{}> document from upstream {name}",
                    other.chars().take(40).collect::<String>()
                );
                continue;
            }
        };
        if let Err(e) = write_frame(&mut out, &reply) {
            return End::Io(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_geometrically_within_bounds_and_resets() {
        let mut b = Backoff::new(42);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << i.min(6)).min(BACKOFF_MAX);
            assert!(
                *d >= base.mul_f64(0.5).max(BACKOFF_MIN) && *d <= base,
                "{i}: {d:?}"
            );
        }
        assert!(delays[11] >= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        // Jitter: two seeds give different sequences.
        let mut c = Backoff::new(7);
        let other: Vec<Duration> = (0..12).map(|_| c.next_delay()).collect();
        assert_ne!(delays, other);
    }
}
