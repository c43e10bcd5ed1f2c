//! `bolide-bench`: a VTP load generator for bolide or any other VTP broker (Comet, …).
//!
//! Modes:
//! * `ingest`: K concurrent authors, one event per connection; ack latency and events/s
//!   ([`ingest`]).
//! * `fanout`: one author, S subscribers that answer authenticate/iamalive and ack every
//!   event; end-to-end latency (author send → each subscriber's receipt, one clock)
//!   ([`fanout`]).
//! * `filter`: fanout where the subscribers install XPath filters (4 distinct
//!   expressions, round-robin); exactly the matching events must arrive ([`fanout`]).
//! * `catchup`: subscribers that reconnect after N events; the time to receive them
//!   from the broker's catch-up, the events lost or duplicated, and (with a live rate)
//!   what the replays cost live authors and subscribers ([`catchup`]).
//! * `null-broker`: not a load generator but the other end: a broker doing only the
//!   unavoidable socket work, to measure the machine's floor ([`null_broker`]).
//!
//! The subscribers run on a few threads, each with one epoll set over its share of the
//! sockets, reading into one scratch buffer per thread and answering with prebuilt acks
//! ([`subscribers`]); an event is recognised by a byte search for `ivorn="`, never a DOM
//! parse ([`scan`]). The tool reports its own CPU time next to the broker's (`--pid`,
//! [`stats`]) so its overhead can be judged.
//!
//! The other modules: [`args`] (the command line), [`author`] (connecting and one author
//! transaction), [`event`] (the event template `event.xml` and the filters), [`report`]
//! (the output).
//!
//! The last line of standard output is one JSON object with every figure. Exit status:
//! 0 when nothing was lost, duplicated or unexpected and no error occurred; 1 otherwise;
//! 2 for a usage error or when the broker cannot be reached at all.

use std::process::ExitCode;

use serde::Serialize;

mod args;
mod author;
mod catchup;
mod event;
mod fanout;
mod ingest;
mod null_broker;
mod report;
mod scan;
mod scrape;
mod stats;
mod subscribers;

use args::{Args, Fan, Mode};
use report::Report;

fn main() -> ExitCode {
    let args = match bolide::args::parse_env::<Args>("bolide-bench") {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        println!("bolide-bench {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if !args.max_seconds.is_finite() || args.max_seconds <= 0.0 || args.max_seconds > 1e9 {
        eprintln!("bolide-bench: --max-seconds must be positive");
        return ExitCode::from(2);
    }
    match &args.mode {
        None => {
            eprintln!(
                "bolide-bench: give a mode: ingest, fanout, filter, catchup or null-broker (see --help)"
            );
            ExitCode::from(2)
        }
        Some(Mode::NullBroker(a)) => null_broker::run(&args.host, a),
        Some(Mode::Ingest(a)) => finish(ingest::run(&args, a)),
        Some(Mode::Fanout(Fan(a))) => finish(fanout::run(&args, a, false)),
        Some(Mode::Filter(Fan(a))) => finish(fanout::run(&args, a, true)),
        Some(Mode::Catchup(a)) => finish(catchup::run(&args, a)),
    }
}

/// Print a measuring mode's report, or its error (exit status 2: it could not run).
fn finish<T: Serialize>(result: Result<Report<T>, String>) -> ExitCode {
    match result {
        Ok(report) => report.print(),
        Err(e) => {
            eprintln!("bolide-bench: {e}");
            ExitCode::from(2)
        }
    }
}
