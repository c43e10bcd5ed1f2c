//! `bolide`: the broker executable. Parses Comet's command line, sets up logging, starts
//! the broker and runs until killed.
//!
//! Exit status: 0 after `--help`/`--version`; 2 for a command-line error (unknown flag,
//! bad value, missing role or `--local-ivo`, invalid IVOID or network); 1 when start-up
//! fails (event database, listening port).

use std::process::ExitCode;

use bolide::broker::Broker;
use bolide::cli::{self, Parsed};

fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_else(|| "bolide".into());
    let opts = match cli::parse_args(&program, args.collect()) {
        Parsed::Run(o) => o,
        Parsed::Exit { output, status } => {
            if status == 0 {
                println!("{output}");
            } else {
                eprintln!("{output}\nRun bolide --help for the options.");
            }
            return ExitCode::from(status as u8);
        }
    };
    if opts.version {
        println!("bolide {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::new()
        .filter_level(opts.log_level())
        .format_target(false)
        .parse_default_env()
        .init();
    let cfg = match opts.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bolide: {e}");
            return ExitCode::from(2);
        }
    };
    log::info!(
        "bolide {} starting as {}",
        env!("CARGO_PKG_VERSION"),
        cfg.local_ivo
    );
    match Broker::start(cfg) {
        Ok(broker) => {
            broker.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bolide: {e}");
            ExitCode::from(1)
        }
    }
}
