//! `bolide`: the broker executable. Parses Comet's command line, sets up logging, starts
//! the broker and runs until killed.
//!
//! SIGINT and SIGTERM shut the broker down cleanly (see [`Broker::shutdown`]); SIGHUP
//! re-reads `--subscriber-config` and `--author-config`.
//!
//! Exit status: 0 after `--help`/`--version` or a clean shutdown; 2 for a command-line error (unknown flag,
//! bad value, missing role or `--local-ivo`, invalid IVOID or network, unreadable or
//! invalid `--subscriber-config` or `--author-config`); 1 when start-up
//! fails (event database, listening port).

use std::process::ExitCode;

use bolide::broker::Broker;
use bolide::cli;
use bolide::signals;

fn main() -> ExitCode {
    let opts = match bolide::args::parse_env::<cli::Options>("bolide") {
        Ok(o) => o,
        Err(code) => return code,
    };
    if opts.version {
        println!("bolide {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // While this is the only thread: a thread per subscriber is cheaper without glibc's
    // per-thread malloc cache and static TLS reserve (this executes bolide again, once)
    // and with fewer arenas.
    bolide::sys::restart_with_lean_threads();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    bolide::sys::limit_malloc_arenas(cpus);
    env_logger::Builder::new()
        .filter_level(opts.log_level())
        .format_target(false)
        .parse_default_env()
        .init();
    let mut cfg = match opts.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bolide: {e}");
            return ExitCode::from(2);
        }
    };
    // Every connection costs one descriptor: raise the soft limit to the hard one and
    // keep the connection cap within it (less a margin for the database, logs and the
    // listening sockets).
    let nofile = bolide::sys::raise_nofile_limit();
    let fit = nofile.saturating_sub(64) as usize;
    if cfg.max_connections > fit {
        log::warn!(
            "--max-connections {} lowered to {fit} to fit the descriptor limit ({nofile}); raise `ulimit -n` for more",
            cfg.max_connections
        );
        cfg.max_connections = fit.max(1);
    }
    match &cfg.local_ivo {
        Some(ivo) => log::info!("bolide {} starting as {ivo}", env!("CARGO_PKG_VERSION")),
        None => log::info!(
            "bolide {} starting as a subscriber",
            env!("CARGO_PKG_VERSION")
        ),
    }
    // Block the shutdown signals in every thread (they inherit this mask); the main
    // thread then waits for them synchronously.
    let signals = signals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    match Broker::start(cfg) {
        Ok(broker) => {
            loop {
                let sig = signals::wait(&signals);
                log::info!("received {}", signals::name(sig));
                if sig == libc::SIGHUP {
                    broker.reload();
                } else {
                    break;
                }
            }
            broker.shutdown();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bolide: {e}");
            ExitCode::from(1)
        }
    }
}
