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
        &["ingest", "fanout", "filter", "null-broker"],
    );
}
