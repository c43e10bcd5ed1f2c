//! How bolide's programs read their command lines, on top of argh.
//!
//! argh only understands `--opt value`; [`normalize_args`] first rewrites `--opt=value`
//! into that form and `-vv` into `-v -v`, so every Comet spelling works. Comet (Twisted's
//! option parser) lets the last value of a repeated single-value option win, where argh
//! refuses the repetition: [`last_value_wins`] drops the earlier occurrences first, using
//! the option shapes argh itself prints in its usage line ([`OptionShapes`]). A program
//! with an `--options-file` option gets each `--options-file FILE` replaced by the options
//! the file holds, one per line, so a value may contain spaces (which a systemd unit's
//! environment variable cannot carry).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use argh::FromArgs;

/// Rewrite `--opt=value` as `--opt value` and `-vv`/`-qq` as repeated flags.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest_literal = false;
    for a in args {
        if rest_literal {
            out.push(a);
        } else if a == "--" {
            rest_literal = true;
            out.push(a);
        } else if a.starts_with("--") && a.contains('=') {
            let (k, v) = a.split_once('=').expect("contains =");
            out.push(k.to_string());
            out.push(v.to_string());
        } else if a.len() > 2
            && a.starts_with('-')
            && !a.starts_with("--")
            && a[1..]
                .bytes()
                .all(|b| b == b'v' || b == b'q' || b == b'r' || b == b'b')
        {
            for c in a[1..].chars() {
                out.push(format!("-{c}"));
            }
        } else {
            out.push(a);
        }
    }
    out
}

/// How a program's options are written, as read from argh's usage and option list:
/// which take exactly one value (`[--eventdb <eventdb>]`, as opposed to a repeatable
/// `[--cmd <cmd...>]` or a switch `[-r]`) and the long name of each short alias.
#[derive(Debug, Default)]
pub struct OptionShapes {
    /// Every option that takes a value (by long name): `true` if it is repeatable.
    valued: HashMap<String, bool>,
    long_of: HashMap<String, String>,
}

impl OptionShapes {
    /// The shapes of `T`'s options, from the help text argh generates for it.
    pub fn of<T: FromArgs>() -> OptionShapes {
        let help = match T::from_args(&["prog"], &["--help"]) {
            Ok(_) => return OptionShapes::default(),
            Err(e) => e.output,
        };
        OptionShapes::from_help(&help)
    }

    fn from_help(help: &str) -> OptionShapes {
        let mut shapes = OptionShapes::default();
        let usage = help.lines().next().unwrap_or("");
        for group in usage.split('[').skip(1) {
            let group = group.split(']').next().unwrap_or("");
            let mut words = group.split_whitespace();
            if let (Some(name), Some(value)) = (words.next(), words.next()) {
                if value.starts_with('<') {
                    shapes
                        .valued
                        .insert(name.to_string(), value.ends_with("...>"));
                }
            }
        }
        // Option lines read `  -f, --file   ...`: the short alias and its long name.
        for line in help.lines() {
            let mut words = line.split_whitespace();
            if let (Some(short), Some(long)) = (words.next(), words.next()) {
                if let Some(short) = short.strip_suffix(',') {
                    if short.len() == 2 && long.starts_with("--") {
                        shapes.long_of.insert(short.to_string(), long.to_string());
                    }
                }
            }
        }
        // The usage line names an option by its short alias when it has one.
        let shorts: Vec<(String, String)> = shapes
            .long_of
            .iter()
            .map(|(s, l)| (s.clone(), l.clone()))
            .collect();
        for (short, long) in shorts {
            if let Some(repeatable) = shapes.valued.remove(&short) {
                shapes.valued.insert(long, repeatable);
            }
        }
        shapes
    }

    /// For an option that takes a value (short or long): its long name, and whether it
    /// may be repeated.
    fn valued(&self, arg: &str) -> Option<(&str, bool)> {
        let long = self.long_of.get(arg).map_or(arg, String::as_str);
        self.valued
            .get_key_value(long)
            .map(|(k, &r)| (k.as_str(), r))
    }

    /// Whether `name` (e.g. `--options-file`) is one of the program's options.
    pub fn has(&self, name: &str) -> bool {
        self.valued.contains_key(name)
    }
}

/// Drop every occurrence of a single-value option but its last, with its value, as
/// Twisted's parser (and so Comet) does; repeatable options and switches are kept as they
/// are. `args` is already normalized (`--opt value`). Only the options before the first
/// positional argument (a subcommand) or `--` are the program's own; the rest is kept.
pub fn last_value_wins(args: Vec<String>, shapes: &OptionShapes) -> Vec<String> {
    // (start, long name of a single-value option) of each option occurrence, up to the
    // first positional argument.
    let mut spans: Vec<(usize, usize, Option<&str>)> = Vec::new();
    let mut i = 0;
    while i < args.len() && args[i] != "--" && args[i].starts_with('-') {
        let (len, single) = match shapes.valued(&args[i]) {
            Some((long, repeatable)) if i + 1 < args.len() => (2, (!repeatable).then_some(long)),
            _ => (1, None),
        };
        spans.push((i, len, single));
        i += len;
    }
    let own = i;
    let last: HashMap<&str, usize> = spans
        .iter()
        .filter_map(|&(at, _, single)| single.map(|name| (name, at)))
        .collect();
    let mut out = Vec::with_capacity(args.len());
    for &(at, len, single) in &spans {
        if single.map_or(true, |name| last.get(name) == Some(&at)) {
            out.extend_from_slice(&args[at..at + len]);
        }
    }
    out.extend_from_slice(&args[own..]);
    out
}

/// Why an `--options-file` could not be used.
#[derive(Debug)]
pub enum OptionsFileError {
    /// The file cannot be read.
    Read { path: PathBuf, err: std::io::Error },
    /// A line that is not an option.
    Line {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
}

impl fmt::Display for OptionsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsFileError::Read { path, err } => {
                write!(
                    f,
                    "--options-file {}: cannot read it: {err}",
                    path.display()
                )
            }
            OptionsFileError::Line { path, line, why } => {
                write!(f, "--options-file {}, line {line}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for OptionsFileError {}

/// The arguments an options file stands for: one option per line, `--opt=value` or
/// `--opt value` (the value runs to the end of the line, inner spaces kept) or a switch;
/// blank lines and lines starting with `#` are skipped.
pub fn read_options_file(path: &Path) -> Result<Vec<String>, OptionsFileError> {
    let text = std::fs::read_to_string(path).map_err(|err| OptionsFileError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let mut args = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why| OptionsFileError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            why,
        };
        if !line.starts_with('-') {
            return Err(bad("not an option (options start with - or --)"));
        }
        let (name, value) = match line.find(['=', ' ', '\t']) {
            Some(at) if line.starts_with("--") => (&line[..at], Some(line[at + 1..].trim_start())),
            _ => (line, None),
        };
        if name == "--options-file" {
            return Err(bad("an options file cannot name another one"));
        }
        args.push(name.to_string());
        args.extend(value.map(str::to_string));
    }
    Ok(args)
}

/// Replace each `--options-file FILE` of a normalized command line by the file's options.
fn expand_options_files(args: Vec<String>) -> Result<Vec<String>, OptionsFileError> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a);
            out.extend(it);
            break;
        }
        match (a.as_str(), it.next()) {
            ("--options-file", Some(path)) => {
                out.extend(normalize_args(read_options_file(Path::new(&path))?));
                // Kept too, so the program knows where its options came from.
                out.extend(["--options-file".to_string(), path]);
            }
            (_, next) => {
                out.push(a);
                out.extend(next);
            }
        }
    }
    Ok(out)
}

/// Outcome of parsing a command line.
pub enum Parsed<T> {
    /// Run with these options.
    Run(Box<T>),
    /// Print this (help or an error) and exit with this status.
    Exit { output: String, status: i32 },
}

/// Parse `args` (without the program name) for any of bolide's programs.
pub fn parse_args<T: FromArgs>(program: &str, args: Vec<String>) -> Parsed<T> {
    let shapes = OptionShapes::of::<T>();
    let mut args = normalize_args(args);
    if shapes.has("--options-file") {
        args = match expand_options_files(args) {
            Ok(a) => a,
            Err(e) => {
                return Parsed::Exit {
                    output: e.to_string(),
                    status: 2,
                }
            }
        };
    }
    let args = last_value_wins(args, &shapes);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match T::from_args(&[program], &refs) {
        Ok(o) => Parsed::Run(Box::new(o)),
        Err(e) => Parsed::Exit {
            output: e.output,
            status: if e.status.is_ok() { 0 } else { 2 },
        },
    }
}

/// The command line of the running program (`name` when `argv[0]` is missing), parsed; on
/// `--help` or an error, the output is printed (help to standard output, errors to
/// standard error with a pointer to `--help`) and the exit status returned.
pub fn parse_env<T: FromArgs>(name: &str) -> Result<T, std::process::ExitCode> {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| name.into());
    parse_or_exit(name, &program, argv.collect())
}

/// [`parse_env`] for a command line the program has rewritten first.
pub fn parse_or_exit<T: FromArgs>(
    name: &str,
    program: &str,
    args: Vec<String>,
) -> Result<T, std::process::ExitCode> {
    match parse_args::<T>(program, args) {
        Parsed::Run(o) => Ok(*o),
        Parsed::Exit { output, status: 0 } => {
            println!("{output}");
            Err(std::process::ExitCode::SUCCESS)
        }
        Parsed::Exit { output, status } => {
            usage_error(name, output.trim_end());
            Err(std::process::ExitCode::from(status as u8))
        }
    }
}

/// Print a command-line error as every program does (the message, then where the options
/// are described) and return exit status 2.
pub fn usage_error(name: &str, msg: impl fmt::Display) -> std::process::ExitCode {
    eprintln!("{name}: {msg}\nRun {name} --help for the options.");
    std::process::ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::opts;
    use crate::cli::Options;

    /// The shapes come from argh's own help: single-value, repeatable, switch, aliases.
    #[test]
    fn option_shapes_follow_the_usage_line() {
        let shapes = OptionShapes::of::<Options>();
        assert_eq!(shapes.valued("--eventdb"), Some(("--eventdb", false)));
        assert_eq!(
            shapes.valued("--options-file"),
            Some(("--options-file", false))
        );
        assert_eq!(shapes.valued("--cmd"), Some(("--cmd", true)));
        assert_eq!(shapes.valued("--remote"), Some(("--remote", true)));
        assert_eq!(shapes.valued("--receive"), None);
        assert_eq!(shapes.valued("-r"), None);
        let help = "Usage: p [-f <file>] [--host <host>] [-x]\n\nOptions:\n  -f, --file        a file\n  -x, --xx  a switch\n";
        let s = OptionShapes::from_help(help);
        assert_eq!(s.valued("-f"), Some(("--file", false)));
        assert_eq!(s.valued("--file"), Some(("--file", false)));
        assert_eq!(s.valued("--host"), Some(("--host", false)));
        assert_eq!(s.valued("-x"), None);
    }

    /// Comet's rule: the last value of a repeated single-value option wins; repeatable
    /// options keep every value, in order.
    #[test]
    fn last_value_wins_for_single_value_options() {
        let o = opts(&[
            "-r",
            "--eventdb=/a",
            "--local-ivo",
            "ivo://x.y/one",
            "--eventdb",
            "/b",
            "--cmd=/bin/true",
            "--receive-port=1",
            "--cmd",
            "/bin/false",
            "--local-ivo=ivo://x.y/two",
            "-r",
        ]);
        assert_eq!(o.eventdb, Some(PathBuf::from("/b")));
        assert_eq!(o.local_ivo.as_deref(), Some("ivo://x.y/two"));
        assert_eq!(o.receive_port, 1);
        assert_eq!(
            o.cmd,
            vec![PathBuf::from("/bin/true"), PathBuf::from("/bin/false")]
        );
        assert!(o.receive);
        // Past the first positional argument (a subcommand) nothing is touched.
        let shapes = OptionShapes::of::<Options>();
        let args: Vec<String> = [
            "--eventdb",
            "/a",
            "sub",
            "--eventdb",
            "/b",
            "--eventdb",
            "/c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(last_value_wins(args.clone(), &shapes), args);
    }

    fn options_file(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("bolide-opts-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// An options file carries values with spaces; options after it override it, options
    /// before it are overridden by it.
    #[test]
    fn options_file_values_keep_their_spaces() {
        let f = options_file(
            "ok",
            "# site options\n\n--receive\n--local-ivo=ivo://x.y/file\n--filter //Param[@name=\"Packet_Type\" and @value > 110]\n--eventdb = /from/file\n  -v\n",
        );
        let path = f.to_str().unwrap();
        let o = opts(&[
            "--eventdb=/before",
            "--options-file",
            path,
            "--local-ivo=ivo://x.y/after",
        ]);
        assert!(o.receive);
        assert_eq!(o.verbose, 1);
        assert_eq!(
            o.filter,
            vec!["//Param[@name=\"Packet_Type\" and @value > 110]".to_string()]
        );
        assert_eq!(o.eventdb, Some(PathBuf::from("= /from/file")));
        assert_eq!(o.local_ivo.as_deref(), Some("ivo://x.y/after"));
        let _ = std::fs::remove_file(f);
    }

    /// A missing file, a line that is not an option and a nested options file are refused
    /// with the path (and line).
    #[test]
    fn options_file_errors_name_the_path_and_line() {
        let exit = |args: &[&str]| match parse_args::<Options>(
            "bolide",
            args.iter().map(|s| s.to_string()).collect(),
        ) {
            Parsed::Exit { output, status } => (output, status),
            Parsed::Run(_) => panic!("{args:?} ran"),
        };
        let (out, status) = exit(&["--options-file=/nonexistent/bolide.conf"]);
        assert_eq!(status, 2);
        assert!(
            out.contains("/nonexistent/bolide.conf") && out.contains("No such file"),
            "{out}"
        );
        let bad = options_file("bad", "--receive\nlocal-ivo=ivo://x.y/z\n");
        let (out, _) = exit(&["--options-file", bad.to_str().unwrap()]);
        assert!(
            out.contains(&format!("{}, line 2: not an option", bad.display())),
            "{out}"
        );
        let nested = options_file("nested", "--options-file=/etc/other\n");
        let (out, _) = exit(&["--options-file", nested.to_str().unwrap()]);
        assert!(
            out.contains("line 1: an options file cannot name another one"),
            "{out}"
        );
        let _ = std::fs::remove_file(bad);
        let _ = std::fs::remove_file(nested);
    }
}
