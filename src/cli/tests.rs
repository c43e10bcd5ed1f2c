//! Unit tests of bolide's options: Comet's spellings, defaults, refusals, and the
//! checks that turn them into a `Config`.

use super::*;
use crate::args::{parse_args, Parsed};

/// bolide's options from this command line (which must parse).
pub(crate) fn opts(args: &[&str]) -> Options {
    match parse_args::<Options>("bolide", args.iter().map(|s| s.to_string()).collect()) {
        Parsed::Run(o) => *o,
        Parsed::Exit { output, .. } => panic!("{output}"),
    }
}

#[test]
fn both_value_forms_and_comet_flags() {
    let o = opts(&[
        "-r",
        "--broadcast",
        "--local-ivo=ivo://me.test/b",
        "--receive-port",
        "0",
        "--broadcast-port=0",
        "--author-whitelist=127.0.0.1/32",
        "--author-whitelist",
        "::1",
        "--subscriber-whitelist=10.0.0.0/255.0.0.0",
        "-vv",
        "--eventdb=/tmp/x=y",
    ]);
    assert!(o.receive && o.broadcast);
    assert_eq!(o.local_ivo.as_deref(), Some("ivo://me.test/b"));
    assert_eq!((o.receive_port, o.broadcast_port), (0, 0));
    assert_eq!(o.author_whitelist, vec!["127.0.0.1/32", "::1"]);
    assert_eq!(o.verbose, 2);
    assert_eq!(o.log_level(), log::LevelFilter::Trace);
    assert_eq!(o.eventdb, Some(PathBuf::from("/tmp/x=y")));
    let c = o.into_config().unwrap();
    assert!(c.author_whitelist.allows("::1".parse().unwrap()));
    assert!(!c.author_whitelist.allows("10.0.0.1".parse().unwrap()));
}

#[test]
fn remotes_and_filters() {
    let r = |s| parse_remote(s).map(|r| (r.host, r.port));
    assert_eq!(
        r("broker.example.org").unwrap(),
        ("broker.example.org".into(), 8099)
    );
    assert_eq!(r("127.0.0.1:9000").unwrap(), ("127.0.0.1".into(), 9000));
    assert_eq!(r("[::1]:9000").unwrap(), ("::1".into(), 9000));
    assert_eq!(r("[2001:db8::1]").unwrap(), ("2001:db8::1".into(), 8099));
    assert_eq!(r("2001:db8::1").unwrap(), ("2001:db8::1".into(), 8099));
    assert_eq!(r("tcp:host:1").unwrap(), ("host".into(), 1));
    for bad in ["", ":8099", "h:0", "h:x", "[::1", "[nope]:1", "a b:1"] {
        assert!(parse_remote(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_remote("[::1]:5").unwrap().to_string(), "[::1]:5");
    // Only --remote: a plain subscriber, no --local-ivo needed; --subscribe is an alias.
    let c = opts(&["--remote=127.0.0.1:1", "--subscribe", "h"])
        .into_config()
        .unwrap();
    assert_eq!(c.remotes.len(), 2);
    assert_eq!(c.local_ivo, None);
    assert!(check_xpath("//Param[@name=\"SC_Lat\" and @value>600]").is_ok());
    assert!(matches!(
        opts(&["--remote=h", "--filter=//[bad"]).into_config(),
        Err(ConfigError::Filter { .. })
    ));
    assert!(matches!(
        opts(&["--remote=h", "--filter="]).into_config(),
        Err(ConfigError::Filter { .. })
    ));
}

#[test]
fn author_options() {
    let base = ["-r", "--local-ivo", "ivo://abc"];
    let c = opts(&base).into_config().unwrap();
    assert!(c.author_config.is_none() && !c.author_config_strict);
    assert_eq!(c.author_rate, None);
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        opts(&args).into_config()
    };
    let c = with(&["--author-rate=5/2"]).unwrap();
    assert_eq!(c.author_rate, Some(Rate { events: 5, secs: 2 }));
    let e = with(&["--author-rate", "5"]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--author-rate '5': expected N/SECONDS"),
        "{e}"
    );
    assert!(matches!(
        with(&["--author-config-strict"]),
        Err(ConfigError::Range {
            flag: "--author-config-strict",
            ..
        })
    ));
    let e = with(&["--author-config=/nonexistent/authors"]).unwrap_err();
    assert!(matches!(e, ConfigError::AuthorConfig(_)));
    assert!(
        e.to_string()
            .starts_with("--author-config: /nonexistent/authors: "),
        "{e}"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("64K"), Some(65536));
    assert_eq!(parse_size("3m"), Some(3 << 20));
    assert_eq!(parse_size("2G"), Some(2 << 30));
    assert_eq!(parse_size("4096"), Some(4096));
    assert_eq!(parse_size("x"), None);
    assert_eq!(parse_size(""), None);
}

#[test]
fn defaults() {
    let o = opts(&["-b", "--local-ivo", "ivo://abc"]);
    assert_eq!(o.log_level(), log::LevelFilter::Info);
    let c = o.into_config().unwrap();
    assert_eq!((c.receive_port, c.broadcast_port), (8098, 8099));
    assert_eq!(c.test_interval, Some(Duration::from_secs(3600)));
    assert_eq!(c.max_event_size, 1 << 20);
    assert_eq!(c.max_age_secs, 30 * 86400);
    assert_eq!(c.prune_interval, Duration::from_secs(6 * 3600));
    assert_eq!(c.bind, "::".parse::<IpAddr>().unwrap());
    assert_eq!(c.map_size, 4 << 30);
    assert_eq!(
        c.archive,
        Some(ArchiveConfig {
            max_age_secs: 30 * 86400,
            max_bytes: None
        })
    );
    assert!(c.author_whitelist.allows("192.0.2.1".parse().unwrap()));
    assert!(c.author_whitelist.allows("2001:db8::1".parse().unwrap()));
}

#[test]
fn refusals() {
    assert!(matches!(opts(&[]).into_config(), Err(ConfigError::NoRole)));
    assert!(matches!(
        opts(&["-r"]).into_config(),
        Err(ConfigError::NoLocalIvo { .. })
    ));
    assert!(matches!(
        opts(&["-r", "--local-ivo", "ivo://ab"]).into_config(),
        Err(ConfigError::LocalIvo(_))
    ));
    assert!(matches!(
        opts(&["-r", "--local-ivo", "ivo://abc#x"]).into_config(),
        Err(ConfigError::LocalIvo(_))
    ));
    assert!(matches!(
        opts(&[
            "-r",
            "--local-ivo",
            "ivo://abc",
            "--author-whitelist",
            "nope"
        ])
        .into_config(),
        Err(ConfigError::Network { .. })
    ));
    assert!(matches!(
        opts(&["-r", "--local-ivo", "ivo://abc", "--eventdb-map-size=1K"]).into_config(),
        Err(ConfigError::Range { .. })
    ));
    match parse_args::<Options>("bolide", vec!["--receive-port=x".into()]) {
        Parsed::Exit { status, output } => {
            assert_eq!(status, 2);
            assert!(output.contains("receive-port"), "{output}");
        }
        Parsed::Run(_) => panic!("accepted a bad port"),
    }
    match parse_args::<Options>("bolide", vec!["--help".into()]) {
        Parsed::Exit { status, output } => {
            assert_eq!(status, 0);
            assert!(output.contains("--local-ivo"));
        }
        Parsed::Run(_) => panic!("--help ran"),
    }
}
