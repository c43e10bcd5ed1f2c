//! `bolide-send`: submit one VOEvent to a broker as a VTP author and report the broker's
//! answer. It is a drop-in for Comet's `comet-sendvo`: every command line `comet-sendvo`
//! accepts means the same here (see [`comet_argv`]), plus `--timeout` and `--version`.
//!
//! Exit status: 0 when the broker acks, 1 when it naks (the reason is printed), 2 on any
//! other failure (bad arguments, unreadable file, connection refused, timeout, garbage
//! reply, a subscriber port instead of a receive port), with a one-line message.
//! `comet-sendvo` exits 1 on every failure, so only a script that tells a nak from other
//! failures by status sees a difference.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use bolide::cli::Remote;
use bolide::frame::{write_frame, FrameError, FrameReader};
use bolide::sys::DeadlineReader;
use bolide::transport::{self, Role, TransportError};

/// Submit one VOEvent to a VTP broker and wait for its ack or nak.
#[derive(FromArgs)]
struct Args {
    /// file holding the VOEvent; - or none: standard input
    #[argh(option, short = 'f')]
    file: Option<PathBuf>,
    /// broker host name or address (default localhost)
    #[argh(option, short = 'h', default = "String::from(\"localhost\")")]
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

/// The long options and whether each takes a value.
const LONG: &[(&str, bool)] = &[
    ("file", true),
    ("host", true),
    ("port", true),
    ("timeout", true),
    ("version", false),
    ("help", false),
];

/// The short options, as `comet-sendvo` spells them: `-h` is the host, not help.
const SHORT: &[(char, &str)] = &[('f', "file"), ('h', "host"), ('p', "port")];

/// A command line that Comet's parser would refuse before argh sees it.
#[derive(Debug, PartialEq, Eq)]
enum ArgError {
    /// `--NAME` abbreviates more than one long option.
    Ambiguous {
        given: String,
        matches: Vec<&'static str>,
    },
    /// `--NAME=VALUE` for an option that takes no value.
    ValueNotAllowed { option: &'static str, value: String },
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Ambiguous { given, matches } => {
                write!(
                    f,
                    "--{given} is ambiguous: it could be --{}",
                    matches.join(" or --")
                )
            }
            ArgError::ValueNotAllowed { option, value } => {
                write!(f, "--{option} takes no value (got '{value}')")
            }
        }
    }
}

/// The long option `name` names: itself, or the one option it is a prefix of (Python's
/// getopt, which Comet's parser uses, takes unique abbreviations). `None` for an unknown
/// name, which argh then reports.
fn long_option(name: &str) -> Result<Option<(&'static str, bool)>, ArgError> {
    if let Some(&o) = LONG.iter().find(|(n, _)| *n == name) {
        return Ok(Some(o));
    }
    let matches: Vec<_> = LONG
        .iter()
        .filter(|(n, _)| !name.is_empty() && n.starts_with(name))
        .collect();
    match matches[..] {
        [] => Ok(None),
        [&o] => Ok(Some(o)),
        _ => Err(ArgError::Ambiguous {
            given: name.to_string(),
            matches: matches.iter().map(|(n, _)| *n).collect(),
        }),
    }
}

/// Rewrite a `comet-sendvo` command line into one argh parses the same way.
///
/// `comet-sendvo` reads its options with Python's getopt: `-h HOST`, `-hHOST`,
/// `--host HOST`, `--host=HOST` and unique abbreviations such as `--ho HOST` (likewise
/// `-p`/`--port` and `-f`/`--file`), where the value is always the next argument, even
/// one starting with `-`. argh has no attached short values, no abbreviations and its own
/// meaning for some words, so every option with a value becomes one `--name=value`
/// argument (which `bolide::cli` splits without looking inside the value). argh refuses
/// options after `--help` and getopt does not, so `--help` moves to the end. Anything
/// else (positional words, unknown options, what follows `--`) is passed on for argh to
/// refuse.
fn comet_argv(args: Vec<String>) -> Result<Vec<String>, ArgError> {
    let mut out = Vec::new();
    let mut help = false;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let (name, takes_value, attached) = if a == "--" {
            out.push(a);
            out.extend(args.by_ref());
            break;
        } else if let Some(long) = a.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            match long_option(name)? {
                Some((name, takes_value)) => (name, takes_value, attached),
                None => {
                    out.push(a);
                    continue;
                }
            }
        } else if let Some(&(_, name)) = a
            .strip_prefix('-')
            .and_then(|s| s.chars().next())
            .and_then(|c| SHORT.iter().find(|(s, _)| *s == c))
        {
            let rest = &a[2..];
            (name, true, (!rest.is_empty()).then(|| rest.to_string()))
        } else {
            out.push(a);
            continue;
        };
        if takes_value {
            match attached.or_else(|| args.next()) {
                Some(v) => out.push(format!("--{name}={v}")),
                // No value at all: argh says which option lacks one.
                None => out.push(format!("--{name}")),
            }
        } else if let Some(value) = attached {
            return Err(ArgError::ValueNotAllowed {
                option: name,
                value,
            });
        } else if name == "help" {
            help = true;
        } else {
            out.push(format!("--{name}"));
        }
    }
    if help {
        out.push("--help".into());
    }
    Ok(out)
}

/// Why an event was not submitted (exit status 2).
#[derive(Debug)]
enum SendError {
    /// `--timeout 0`.
    ZeroTimeout,
    /// `--host` (`given`) carries a port, as in `localhost:8098` or `[::1]:8098`.
    HostWithPort {
        given: String,
        host: String,
        port: String,
    },
    /// The file (or standard input, `-`) cannot be read.
    Read { file: String, err: io::Error },
    /// The event does not fit in a VTP frame.
    TooLarge,
    /// The host name does not resolve.
    Resolve { host: String, err: io::Error },
    /// No address of the host accepts a connection (`err` is the last refusal).
    Connect {
        target: String,
        err: Option<io::Error>,
    },
    /// Writing the event failed.
    Send { target: String, err: io::Error },
    /// The connection closed, or `--timeout` passed, before a reply.
    NoReply { target: String, err: FrameError },
    /// The reply is not a Transport message.
    Unreadable { target: String, err: TransportError },
    /// The peer spoke first, as a broker's broadcast port does to a new subscriber.
    SubscriberPort { target: String, role: &'static str },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::ZeroTimeout => write!(f, "--timeout must be at least 1 second"),
            SendError::HostWithPort { given, host, port } => write!(
                f,
                "--host '{given}' includes a port: give the port with -p/--port, as in -h {host} -p {port}"
            ),
            SendError::Read { file, err } => write!(f, "cannot read {file}: {err}"),
            SendError::TooLarge => write!(
                f,
                "the event is larger than a VTP frame can carry (4 GiB)"
            ),
            SendError::Resolve { host, err } => write!(f, "cannot resolve {host}: {err}"),
            SendError::Connect { target, err } => {
                let why = err.as_ref().map_or("no address".to_string(), |e| e.to_string());
                write!(
                    f,
                    "cannot connect to {target}: {why} (is a broker running there with --receive?)"
                )
            }
            SendError::Send { target, err } => write!(f, "sending to {target} failed: {err}"),
            SendError::NoReply { target, err } => write!(f, "no reply from {target}: {err}"),
            SendError::Unreadable { target, err } => {
                write!(f, "unreadable reply from {target}: {err}")
            }
            SendError::SubscriberPort { target, role } => write!(
                f,
                "{target} is a subscriber port (it sent {role}); authors submit to the broker's receive port, 8098 by default"
            ),
        }
    }
}

/// The broker's verdict.
enum Verdict {
    Ack,
    Nak,
}

/// The name to resolve for `--host`: as given, or the address inside `[...]`. A host
/// that carries a port (`name:digits`, `[v6]:port`) is refused, since the resolver would
/// only say it does not know the name; a bare IPv6 address such as `::1` is a host.
fn host_to_resolve(host: &str) -> Result<&str, SendError> {
    let with_port = |h: &str, p: &str| SendError::HostWithPort {
        given: host.to_string(),
        host: h.to_string(),
        port: p.to_string(),
    };
    if host.parse::<Ipv6Addr>().is_ok() {
        return Ok(host);
    }
    if let Some((v6, after)) = host.strip_prefix('[').and_then(|r| r.split_once(']')) {
        return match after.strip_prefix(':') {
            Some(port) => Err(with_port(v6, port)),
            None if after.is_empty() => Ok(v6),
            None => Ok(host),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && !name.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Err(with_port(name, port))
        }
        _ => Ok(host),
    }
}

/// The event's bytes: from the file, or from standard input for `-` or no `--file`.
fn read_event(file: Option<&PathBuf>) -> Result<Vec<u8>, SendError> {
    match file.filter(|p| p.as_os_str() != "-") {
        Some(p) => std::fs::read(p).map_err(|err| SendError::Read {
            file: p.display().to_string(),
            err,
        }),
        None => {
            let mut b = Vec::new();
            match io::stdin().read_to_end(&mut b) {
                Ok(_) => Ok(b),
                Err(err) => Err(SendError::Read {
                    file: "standard input".into(),
                    err,
                }),
            }
        }
    }
}

/// Submit the event and return the broker's verdict, after printing it.
fn run(args: &Args) -> Result<Verdict, SendError> {
    if args.timeout == 0 {
        return Err(SendError::ZeroTimeout);
    }
    let host = host_to_resolve(&args.host)?;
    let payload = read_event(args.file.as_ref())?;
    if payload.len() > u32::MAX as usize {
        return Err(SendError::TooLarge);
    }
    let ivorn = bolide::xml::parse(&payload, Default::default())
        .ok()
        .and_then(|d| d.attr(0, "ivorn").map(str::to_string));
    let timeout = Duration::from_secs(args.timeout);
    let deadline = Instant::now() + timeout;
    // `[v6]:port` for an IPv6 address, `host:port` otherwise.
    let target = Remote {
        host: host.to_string(),
        port: args.port,
    }
    .to_string();
    let addrs = (host, args.port)
        .to_socket_addrs()
        .map_err(|err| SendError::Resolve {
            host: host.to_string(),
            err,
        })?;
    let mut stream = None;
    let mut last_err = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        return Err(SendError::Connect {
            target,
            err: last_err,
        });
    };
    let _ = stream.set_write_timeout(Some(timeout));
    if let Err(err) = write_frame(&mut stream, &payload).and_then(|_| stream.flush()) {
        return Err(SendError::Send { target, err });
    }
    let mut frames = FrameReader::new(1 << 20);
    let mut r = DeadlineReader {
        stream: &stream,
        deadline,
    };
    loop {
        let reply = match frames.read_frame(&mut r) {
            Ok(f) => f,
            Err(err) => return Err(SendError::NoReply { target, err }),
        };
        let msg = match transport::parse(&reply) {
            Ok(m) => m,
            Err(err) => return Err(SendError::Unreadable { target, err }),
        };
        let origin = msg.origin.clone().unwrap_or_default();
        let verdict = match msg.role {
            Some(Role::Ack) => Verdict::Ack,
            Some(Role::Nak) => Verdict::Nak,
            // A receive port only ever answers; these open a subscription.
            Some(role @ (Role::Authenticate | Role::IAmAlive)) => {
                return Err(SendError::SubscriberPort {
                    target,
                    role: role.as_str(),
                })
            }
            None => {
                eprintln!(
                    "bolide-send: ignoring a {} message from {target}",
                    msg.role_attr
                );
                continue;
            }
        };
        if let (Some(iv), false) = (&ivorn, origin.is_empty()) {
            if *iv != origin {
                eprintln!("bolide-send: warning: reply is for {origin}, not {iv}");
            }
        }
        match verdict {
            Verdict::Ack => println!(
                "ack from {target} for {}",
                ivorn.as_deref().unwrap_or(&origin)
            ),
            Verdict::Nak => println!(
                "nak from {target}: {}",
                msg.result.as_deref().unwrap_or("no reason given")
            ),
        }
        return Ok(verdict);
    }
}

fn main() -> ExitCode {
    let program = std::env::args().next().unwrap_or("bolide-send".into());
    let argv = match comet_argv(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => return bolide::args::usage_error("bolide-send", e),
    };
    let args: Args = match bolide::args::parse_or_exit("bolide-send", &program, argv) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        println!("bolide-send {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(Verdict::Ack) => ExitCode::SUCCESS,
        Ok(Verdict::Nak) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bolide-send: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Result<Vec<String>, ArgError> {
        comet_argv(args.iter().map(|s| s.to_string()).collect())
    }

    /// The options argh ends up with for this command line.
    fn parsed(args: &[&str]) -> Args {
        let a = argv(args).unwrap();
        match bolide::args::parse_args::<Args>("bolide-send", a) {
            bolide::args::Parsed::Run(a) => *a,
            bolide::args::Parsed::Exit { output, .. } => panic!("{args:?}: {output}"),
        }
    }

    #[test]
    fn every_comet_sendvo_spelling_means_the_same() {
        for line in [
            &["-h", "broker.test", "-p", "9000", "-f", "ev.xml"][..],
            &["-hbroker.test", "-p9000", "-fev.xml"],
            &[
                "--host",
                "broker.test",
                "--port",
                "9000",
                "--file",
                "ev.xml",
            ],
            &["--host=broker.test", "--port=9000", "--file=ev.xml"],
            &["--ho", "broker.test", "--po=9000", "--fi", "ev.xml"],
        ] {
            let a = parsed(line);
            assert_eq!(a.host, "broker.test", "{line:?}");
            assert_eq!(a.port, 9000, "{line:?}");
            assert_eq!(a.file, Some(PathBuf::from("ev.xml")), "{line:?}");
        }
        let a = parsed(&[]);
        assert_eq!((a.host.as_str(), a.port, a.file), ("localhost", 8098, None));
        assert_eq!(parsed(&["-f", "-"]).file, Some(PathBuf::from("-")));
        assert_eq!(parsed(&["-f-"]).file, Some(PathBuf::from("-")));
        assert!(parsed(&["--v"]).version);
        assert_eq!(parsed(&["--ti", "5"]).timeout, 5);
    }

    #[test]
    fn values_pass_through_untouched() {
        // The value is the next argument whatever it looks like, as in getopt; `-vv` and
        // `a=b` survive bolide::cli's own rewriting.
        assert_eq!(parsed(&["-f", "-vv"]).file, Some(PathBuf::from("-vv")));
        assert_eq!(
            parsed(&["-f", "--host"]).file,
            Some(PathBuf::from("--host"))
        );
        assert_eq!(parsed(&["--file", "a=b"]).file, Some(PathBuf::from("a=b")));
        assert_eq!(parsed(&["-h", "help"]).host, "help");
        assert_eq!(parsed(&["-h::1"]).host, "::1");
    }

    #[test]
    fn rewritten_forms() {
        assert_eq!(
            argv(&["-hx", "--po", "1", "--help", "-f", "-"]).unwrap(),
            ["--host=x", "--port=1", "--file=-", "--help"]
        );
        // A missing value, unknown options and positional words reach argh as given.
        assert_eq!(argv(&["-p"]).unwrap(), ["--port"]);
        assert_eq!(
            argv(&["-x", "--bogus=1", "word"]).unwrap(),
            ["-x", "--bogus=1", "word"]
        );
        assert_eq!(argv(&["--", "-h"]).unwrap(), ["--", "-h"]);
    }

    #[test]
    fn command_line_refusals() {
        assert_eq!(
            argv(&["--h", "x"]),
            Err(ArgError::Ambiguous {
                given: "h".into(),
                matches: vec!["host", "help"]
            })
        );
        assert_eq!(
            argv(&["--h", "x"]).unwrap_err().to_string(),
            "--h is ambiguous: it could be --host or --help"
        );
        assert_eq!(
            argv(&["--version=2"]).unwrap_err().to_string(),
            "--version takes no value (got '2')"
        );
        for bad in [
            &["-p", "x"][..],
            &["-p"],
            &["-q"],
            &["word"],
            &["-p", "70000"],
        ] {
            let a = argv(bad).unwrap();
            assert!(
                matches!(
                    bolide::args::parse_args::<Args>("bolide-send", a),
                    bolide::args::Parsed::Exit { status: 2, .. }
                ),
                "{bad:?}"
            );
        }
        // Only the long form is help: -h is the host.
        assert!(matches!(
            bolide::args::parse_args::<Args>(
                "bolide-send",
                argv(&["-p", "1", "--help", "-h", "x"]).unwrap()
            ),
            bolide::args::Parsed::Exit { status: 0, .. }
        ));
    }

    #[test]
    fn hosts_with_a_port_are_refused_bare_ipv6_is_a_host() {
        for ok in [
            "localhost",
            "broker.example.org",
            "127.0.0.1",
            "::1",
            "2001:db8::8098",
        ] {
            assert_eq!(host_to_resolve(ok).unwrap(), ok);
        }
        assert_eq!(host_to_resolve("[::1]").unwrap(), "::1");
        for (bad, host, port) in [
            ("localhost:8098", "localhost", "8098"),
            ("127.0.0.1:1", "127.0.0.1", "1"),
            ("[::1]:8098", "::1", "8098"),
        ] {
            let e = host_to_resolve(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("--host '{bad}' includes a port: give the port with -p/--port, as in -h {host} -p {port}")
            );
        }
    }

    #[test]
    fn subscriber_port_message_names_the_port_and_the_role() {
        let e = SendError::SubscriberPort {
            target: Remote {
                host: "::1".into(),
                port: 8099,
            }
            .to_string(),
            role: Role::Authenticate.as_str(),
        };
        assert_eq!(
            e.to_string(),
            "[::1]:8099 is a subscriber port (it sent authenticate); authors submit to the broker's receive port, 8098 by default"
        );
    }
}
