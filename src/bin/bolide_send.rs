//! `bolide-send`: submit one VOEvent to a broker as a VTP author (the `comet-sendvo`
//! equivalent) and report the broker's answer.
//!
//! Exit status: 0 when the broker acks, 1 when it naks (the reason is printed), 2 on any
//! other failure (bad arguments, unreadable file, connection refused, timeout, garbage
//! reply), with a one-line message.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use bolide::frame::{write_frame, FrameReader};
use bolide::sys::DeadlineReader;
use bolide::transport::{self, Role};

/// Submit one VOEvent to a VTP broker and wait for its ack or nak.
#[derive(FromArgs)]
struct Args {
    /// file holding the VOEvent (default: standard input)
    #[argh(option, short = 'f')]
    file: Option<PathBuf>,
    /// broker host name or address (default localhost)
    #[argh(option, default = "String::from(\"localhost\")")]
    host: String,
    /// broker's receive port (default 8098)
    #[argh(option, short = 'p', default = "8098")]
    port: u16,
    /// seconds to wait for the connection and the reply (default 30)
    #[argh(option, default = "30")]
    timeout: u64,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("bolide-send: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = match bolide::args::parse_env::<Args>("bolide-send") {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        println!("bolide-send {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if args.timeout == 0 {
        return fail("--timeout must be at least 1 second");
    }
    let payload = match &args.file {
        Some(p) => match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot read {}: {e}", p.display())),
        },
        None => {
            let mut b = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut b) {
                return fail(format!("cannot read standard input: {e}"));
            }
            b
        }
    };
    if payload.len() > u32::MAX as usize {
        return fail("the event is larger than a VTP frame can carry (4 GiB)");
    }
    let ivorn = bolide::xml::parse(&payload, Default::default())
        .ok()
        .and_then(|d| d.attr(0, "ivorn").map(str::to_string));
    let timeout = Duration::from_secs(args.timeout);
    let deadline = Instant::now() + timeout;
    let target = format!("{}:{}", args.host, args.port);
    let addrs = match (args.host.as_str(), args.port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return fail(format!("cannot resolve {}: {e}", args.host)),
    };
    let mut stream = None;
    let mut last_err = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        let why = last_err.map_or("no address".to_string(), |e| e.to_string());
        return fail(format!(
            "cannot connect to {target}: {why} (is a broker running there with --receive?)"
        ));
    };
    let _ = stream.set_write_timeout(Some(timeout));
    if let Err(e) = write_frame(&mut stream, &payload).and_then(|_| stream.flush()) {
        return fail(format!("sending to {target} failed: {e}"));
    }
    let mut frames = FrameReader::new(1 << 20);
    let mut r = DeadlineReader {
        stream: &stream,
        deadline,
    };
    loop {
        let reply = match frames.read_frame(&mut r) {
            Ok(f) => f,
            Err(e) => return fail(format!("no reply from {target}: {e}")),
        };
        let msg = match transport::parse(&reply) {
            Ok(m) => m,
            Err(e) => return fail(format!("unreadable reply from {target}: {e}")),
        };
        let origin = msg.origin.clone().unwrap_or_default();
        if let (Some(iv), false) = (&ivorn, origin.is_empty()) {
            if *iv != origin {
                eprintln!("bolide-send: warning: reply is for {origin}, not {iv}");
            }
        }
        match msg.role {
            Some(Role::Ack) => {
                println!(
                    "ack from {target} for {}",
                    ivorn.as_deref().unwrap_or(&origin)
                );
                return ExitCode::SUCCESS;
            }
            Some(Role::Nak) => {
                println!(
                    "nak from {target}: {}",
                    msg.result.as_deref().unwrap_or("no reason given")
                );
                return ExitCode::from(1);
            }
            _ => eprintln!(
                "bolide-send: ignoring a {} message from {target}",
                msg.role_attr
            ),
        }
    }
}
