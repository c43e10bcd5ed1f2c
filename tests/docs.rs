//! The man pages document every option the binaries accept: each long option in
//! `--help` appears in the page (as `\-\-name`), and each option the page describes
//! under OPTIONS is one the binary knows.

use std::process::Command;

fn long_options(help: &str) -> Vec<String> {
    let mut v: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn check(bin: &str, page: &str) {
    check_with(bin, page, &[]);
}

/// `subcommands`: their `--help` outputs count too.
fn check_with(bin: &str, page: &str, subcommands: &[&str]) {
    let mut help = String::new();
    for sub in std::iter::once(None).chain(subcommands.iter().map(Some)) {
        let mut c = Command::new(bin);
        if let Some(s) = sub {
            c.arg(s);
        }
        let o = c.arg("--help").output().unwrap();
        help.push_str(&String::from_utf8(o.stdout).unwrap());
    }
    let man = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(page))
        .unwrap();
    let opts = long_options(&help);
    assert!(opts.len() > 3, "{help}");
    for o in &opts {
        let escaped = o.replace('-', "\\-");
        assert!(man.contains(&escaped), "{page} does not document {o}");
    }
    // Options documented as .BI/.B entries in the man page's OPTIONS section exist.
    let options = man
        .split(".SH OPTIONS")
        .nth(1)
        .unwrap()
        .split("\n.SH ")
        .next()
        .unwrap();
    for line in options.lines().filter(|l| {
        l.starts_with(".BI \\-\\-") || l.starts_with(".B \\-\\-") || l.starts_with(".BR \\-\\-")
    }) {
        let name = line.split_whitespace().nth(1).unwrap().replace("\\-", "-");
        let name = name
            .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
        assert!(
            opts.contains(&name),
            "{page} documents {name}, which {bin} --help does not list"
        );
    }
}

#[test]
fn bolide_man_page_matches_help() {
    check(env!("CARGO_BIN_EXE_bolide"), "man/bolide.8");
}

#[test]
fn bolide_send_man_page_matches_help() {
    check(env!("CARGO_BIN_EXE_bolide-send"), "man/bolide-send.1");
}

#[test]
fn bolide_bench_man_page_matches_help() {
    check_with(
        env!("CARGO_BIN_EXE_bolide-bench"),
        "man/bolide-bench.1",
        &["ingest", "fanout", "filter", "catchup", "null-broker"],
    );
}

#[test]
fn bolide_archive_man_page_matches_help() {
    check_with(
        env!("CARGO_BIN_EXE_bolide-archive"),
        "man/bolide-archive.1",
        &["list", "show", "export", "stats"],
    );
}

/// The long options named in `text` (`--name`, in backticks or groff's `\-\-name`).
fn named_options(text: &str) -> Vec<String> {
    long_options(&text.replace("\\-", "-").replace(['`', '(', ')', '='], " "))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// Every option of `bolide --help` is either one of Comet's (the first column of the
/// README's mapping table) or in the "Options bolide adds" lists of the README and the man
/// page, and nothing is in both.
#[test]
fn options_bolide_adds_lists_are_complete() {
    let o = Command::new(env!("CARGO_BIN_EXE_bolide"))
        .arg("--help")
        .output()
        .unwrap();
    let mut help = long_options(&String::from_utf8(o.stdout).unwrap());
    help.retain(|o| o != "--help");
    let readme = read("README.md");
    let table = readme
        .split("## Mapping from Comet's flags")
        .nth(1)
        .unwrap()
        .split("Options bolide adds:")
        .next()
        .unwrap();
    let comet: Vec<String> = table
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .flat_map(|l| named_options(l.split('|').nth(1).unwrap()))
        .collect();
    assert!(comet.len() > 10, "{comet:?}");
    let man = read("man/bolide.8");
    for (doc, text) in [
        ("README.md", readme.as_str()),
        ("man/bolide.8", man.as_str()),
    ] {
        let list = text
            .split("Options bolide adds:")
            .nth(1)
            .unwrap_or_else(|| panic!("{doc} has no 'Options bolide adds:' list"));
        let end = list.find("\n\n").or_else(|| list.find("\n.PP")).unwrap();
        let adds = named_options(&list[..end]);
        for o in &help {
            assert!(
                comet.contains(o) != adds.contains(o),
                "{doc}: {o} must be either in the Comet mapping table or in 'Options bolide adds' (Comet: {}, adds: {})",
                comet.contains(o),
                adds.contains(o)
            );
        }
        for o in &adds {
            assert!(
                help.contains(o),
                "{doc} lists {o}, which bolide --help does not"
            );
        }
    }
}

/// Every command in the README can be pasted as it stands: no fenced block is indented
/// (a pasted heredoc would never see its indented terminator), and each heredoc in a
/// shell block ends with its terminator alone on a line. The tour's event, written by
/// its own heredoc, is a VOEvent the broker's parser accepts.
#[test]
fn readme_commands_paste_as_they_stand() {
    let readme = read("README.md");
    for (n, line) in readme.lines().enumerate() {
        assert!(
            !(line.starts_with(' ') && line.trim_start().starts_with("```")),
            "README.md line {}: indented code fence {line:?}",
            n + 1
        );
    }
    let mut blocks = readme.split("```sh\n").skip(1);
    let tour = std::env::temp_dir().join(format!("bolide-tour-{}", std::process::id()));
    std::fs::create_dir_all(&tour).unwrap();
    let mut heredocs = 0;
    for block in blocks.by_ref() {
        let block = block.split("```").next().unwrap();
        for (i, line) in block.lines().enumerate() {
            let Some(at) = line.find("<<'") else { continue };
            let word = line[at + 3..].split('\'').next().unwrap();
            assert!(
                block.lines().skip(i + 1).any(|l| l == word),
                "heredoc {word} never closed in:\n{block}"
            );
            heredocs += 1;
            // Run the heredoc (only it) into a scratch directory.
            let end = block.lines().skip(i + 1).position(|l| l == word).unwrap() + i + 1;
            let script: Vec<&str> = block.lines().skip(i).take(end - i + 1).collect();
            let script = script
                .join("\n")
                .replace("/tmp/tour", tour.to_str().unwrap());
            let o = Command::new("bash")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(o.status.success(), "{script}");
        }
    }
    assert!(heredocs >= 1, "the tour's heredoc was not found");
    let event = std::fs::read(tour.join("event.xml")).unwrap();
    assert!(
        event.starts_with(b"<?xml"),
        "{}",
        String::from_utf8_lossy(&event)
    );
    bolide::xml::parse(&event, Default::default()).expect("the tour's event parses");
    let _ = std::fs::remove_dir_all(&tour);
}

/// Every program Cargo.toml builds is in the README's programs table and in what
/// `make install` installs (with its man page).
#[test]
fn every_program_is_listed_and_installed() {
    let cargo = read("Cargo.toml");
    let readme = read("README.md");
    let makefile = read("Makefile");
    let bins: Vec<&str> = cargo
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.lines().find(|l| l.starts_with("name = ")))
        .map(|l| l.trim_start_matches("name = ").trim_matches('"'))
        .collect();
    assert!(bins.len() >= 4, "{bins:?}");
    let install_line = makefile
        .lines()
        .find(|l| l.starts_with("BINS"))
        .expect("BINS in the Makefile");
    let man_line = makefile
        .lines()
        .find(|l| l.starts_with("MANPAGES"))
        .expect("MANPAGES in the Makefile");
    for b in bins {
        assert!(
            readme.contains(&format!("| `{b}` |")),
            "README's programs table lacks {b}"
        );
        assert!(
            install_line.split_whitespace().any(|w| w == b),
            "make install lacks {b}: {install_line}"
        );
        assert!(
            man_line.contains(&format!("/{b}.")),
            "no man page installed for {b}"
        );
    }
}
