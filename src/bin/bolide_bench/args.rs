//! The command line: the global options ([`Args`]), one struct of options per mode, and
//! [`Fan`], which makes the one struct of fan-out options ([`FanArgs`]) serve as both the
//! `fanout` and the `filter` subcommand.

use argh::{CommandInfo, EarlyExit, FromArgs, SubCommand};

use crate::null_broker::NullBrokerArgs;

/// VTP load generator: measures a broker's ingest rate, fan-out and filter latency, and
/// (with --pid) its CPU time and memory.
#[derive(FromArgs)]
pub struct Args {
    /// broker host; for null-broker, the address to listen on (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub host: String,
    /// broker's author (receive) port (default 8098)
    #[argh(option, default = "8098")]
    pub receive_port: u16,
    /// broker's subscriber (broadcast) port (default 8099)
    #[argh(option, default = "8099")]
    pub broadcast_port: u16,
    /// process id of the broker: sample its CPU time and RSS from /proc (default: none)
    #[argh(option)]
    pub pid: Option<u32>,
    /// hard limit on the whole run in seconds; what has not arrived by then is lost
    /// (default 300)
    #[argh(option, default = "300.0")]
    pub max_seconds: f64,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    #[argh(subcommand)]
    pub mode: Option<Mode>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Mode {
    Ingest(IngestArgs),
    Fanout(Fan<false>),
    Filter(Fan<true>),
    Catchup(crate::catchup::CatchupArgs),
    NullBroker(NullBrokerArgs),
}

/// K concurrent authors submit events, one per connection, as VTP authors do.
#[derive(FromArgs)]
#[argh(subcommand, name = "ingest")]
pub struct IngestArgs {
    /// concurrent author connections (default 16)
    #[argh(option, default = "16")]
    pub authors: usize,
    /// stop after this many events (default 0: no limit, --duration decides)
    #[argh(option, default = "0")]
    pub count: u64,
    /// stop after this many seconds (default 10; 0: no limit, --count decides)
    #[argh(option, default = "10.0")]
    pub duration: f64,
    /// extra bytes of Description text in every event (default 0)
    #[argh(option, default = "0")]
    pub pad: usize,
}

/// The options of `fanout` and `filter`. argh has no flatten, so this is a plain
/// (top-level) argh struct that [`Fan`] turns into either subcommand; its description is
/// `fanout`'s, which [`Fan`] swaps for `filter`'s in that subcommand's help.
#[derive(FromArgs)]
#[argh(description = "One author, S subscribers acking every event; end-to-end latency.")]
pub struct FanArgs {
    /// subscriber connections (default 1000)
    #[argh(option, default = "1000")]
    pub subscribers: usize,
    /// events to send (default 100)
    #[argh(option, default = "100")]
    pub count: u64,
    /// events per second (default 2; 0: back to back, each sent once the previous is acked)
    #[argh(option, default = "2.0")]
    pub rate: f64,
    /// extra bytes of Description text in every event (default 0)
    #[argh(option, default = "0")]
    pub pad: usize,
    /// threads running the subscribers (default: the number of CPUs, at most 4)
    #[argh(option)]
    pub threads: Option<usize>,
    /// fetch http://ADDR:PORT/metrics (the broker's --http) every second while sending
    /// (default: no scraping)
    #[argh(option)]
    pub scrape: Option<String>,
}

const FANOUT: CommandInfo = CommandInfo {
    name: "fanout",
    short: &'\0',
    description: "One author, S subscribers acking every event; end-to-end latency.",
};

const FILTER: CommandInfo = CommandInfo {
    name: "filter",
    short: &'\0',
    description: "Fan-out where subscribers install XPath filters; checks exactly the \
                  matching events arrive.",
};

/// [`FanArgs`] as a subcommand: `fanout` when `FILTERED` is false, `filter` when true.
pub struct Fan<const FILTERED: bool>(pub FanArgs);

impl<const FILTERED: bool> SubCommand for Fan<FILTERED> {
    const COMMAND: &'static CommandInfo = if FILTERED { &FILTER } else { &FANOUT };
}

impl<const FILTERED: bool> FromArgs for Fan<FILTERED> {
    fn from_args(command_name: &[&str], args: &[&str]) -> Result<Self, EarlyExit> {
        FanArgs::from_args(command_name, args)
            .map(Fan)
            .map_err(|mut exit| {
                // `--help` describes the subcommand that was asked for.
                exit.output =
                    exit.output
                        .replacen(FANOUT.description, Self::COMMAND.description, 1);
                exit
            })
    }

    fn redact_arg_values(command_name: &[&str], args: &[&str]) -> Result<Vec<String>, EarlyExit> {
        FanArgs::redact_arg_values(command_name, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, EarlyExit> {
        Args::from_args(&["bolide-bench"], args)
    }

    /// Both subcommands parse the same options into [`FanArgs`], and each one's help
    /// carries its own name and description.
    #[test]
    fn fanout_and_filter_share_their_options() {
        for (mode, filtered) in [("fanout", false), ("filter", true)] {
            let a = parse(&[mode, "--subscribers", "7", "--count", "9", "--rate", "0"])
                .unwrap_or_else(|e| panic!("{mode}: {}", e.output));
            let fan = match a.mode {
                Some(Mode::Fanout(Fan(fan))) if !filtered => fan,
                Some(Mode::Filter(Fan(fan))) if filtered => fan,
                _ => panic!("{mode} parsed as another mode"),
            };
            assert_eq!((fan.subscribers, fan.count, fan.rate), (7, 9, 0.0));
            assert_eq!((fan.pad, fan.threads), (0, None));

            let help = parse(&[mode, "--help"]).err().expect("help exits early");
            let (own, other) = if filtered {
                (FILTER, FANOUT)
            } else {
                (FANOUT, FILTER)
            };
            assert!(help
                .output
                .starts_with(&format!("Usage: bolide-bench {mode} ")));
            assert!(help.output.contains(own.description), "{}", help.output);
            assert!(!help.output.contains(other.description), "{}", help.output);
        }
    }
}
