//! `bolide-archive` against a real broker: what the broker accepted over its sockets is
//! what the archive lists and shows, while the broker runs and after it stops or is
//! killed; filters against an oracle computed here from what was submitted; exports named
//! as `--save-event` names files; retention by age and size; a format-2 database
//! upgraded by the broker; listings during a burst of submissions; error messages and
//! exit statuses. Expected metadata comes from MANIFEST.tsv and from plain string searches
//! in the packets, never from bolide's parser.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lmdb::{DatabaseFlags, Environment, Transaction, WriteFlags};
use serde_json::Value;

use common::*;

/// A corpus packet bolide accepts, with what MANIFEST.tsv and the file say about it.
#[derive(Clone)]
struct Packet {
    file: String,
    ivorn: String,
    role: String,
    bytes: Vec<u8>,
    /// `Who/AuthorIVORN` and `Who/Date`, found by string search.
    author_ivorn: Option<String>,
    authored: Option<String>,
}

fn packets() -> Vec<Packet> {
    accepted_manifest_rows()
        .into_iter()
        .map(|row| {
            let bytes = read_corpus(&row["file"]);
            assert_eq!(bytes.len().to_string(), row["bytes"], "{}", row["file"]);
            let who = element_text(&String::from_utf8_lossy(&bytes), "Who");
            Packet {
                author_ivorn: who.as_deref().and_then(|w| element_text(w, "AuthorIVORN")),
                authored: who.as_deref().and_then(|w| element_text(w, "Date")),
                file: row["file"].clone(),
                ivorn: row["ivorn"].clone(),
                role: row["role"].clone(),
                bytes,
            }
        })
        .collect()
}

/// The text between `<name>` (or `<name ...>`) and `</name>`, trimmed: a string search,
/// enough for the corpus (no prefixes, entities or CDATA in these elements).
fn element_text(doc: &str, name: &str) -> Option<String> {
    let open = [format!("<{name}>"), format!("<{name} ")]
        .iter()
        .filter_map(|o| doc.find(o.as_str()))
        .min()?;
    let body = open + doc[open..].find('>')? + 1;
    let end = body + doc[body..].find(&format!("</{name}>"))?;
    Some(doc[body..end].trim().to_string())
}

/// Unix milliseconds of `YYYY-MM-DDThh:mm:ss[.fff…][Z|±hh:mm]`, counted here day by day
/// (independently of bolide::time).
fn iso_ms(s: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, mo, d) = (n(0..4), n(5..7), n(8..10));
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month = [
        31,
        28 + leap(y) as i64,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let days: i64 = (1970..y).map(|y| 365 + leap(y) as i64).sum::<i64>()
        + month[..mo as usize - 1].iter().sum::<i64>()
        + d
        - 1;
    let mut ms = (((days * 24 + n(11..13)) * 60 + n(14..16)) * 60 + n(17..19)) * 1000;
    let mut rest = &s[19..];
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.len() - f.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        ms += format!("{:0<3}", &f[..digits.min(3)])
            .parse::<i64>()
            .unwrap();
        rest = &f[digits..];
    }
    if rest.len() == 6 {
        let off =
            (rest[1..3].parse::<i64>().unwrap() * 60 + rest[4..6].parse::<i64>().unwrap()) * 60_000;
        ms += if rest.starts_with('+') { -off } else { off };
    }
    ms as u64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Run `bolide-archive --eventdb=db args...`.
fn archive(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bolide-archive"))
        .arg(format!("--eventdb={}", db.display()))
        .args(args)
        .output()
        .unwrap()
}

/// Its standard output, which it must have exited 0 with.
fn archive_ok(db: &Path, args: &[&str]) -> String {
    let o = archive(db, args);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "bolide-archive {args:?}: {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `list --json` with `args`: one object per line.
fn list_json(db: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    archive_ok(db, &all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The ivorns `list` prints with `args` (the last field of each line).
fn list_ivorns(db: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list"];
    all.extend_from_slice(args);
    archive_ok(db, &all)
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

/// A packet as submitted: when it was sent and when its ack came back (its acceptance
/// time lies between).
struct Sent {
    p: Packet,
    sent_ms: u64,
    acked_ms: u64,
}

fn submit_all(b: &Broker, packets: &[Packet]) -> Vec<Sent> {
    packets
        .iter()
        .map(|p| {
            let sent_ms = now_ms();
            let r = submit(b.receive(), &p.bytes);
            assert!(r.is_ack(), "{}: {r:?}", p.file);
            Sent {
                p: p.clone(),
                sent_ms,
                acked_ms: now_ms(),
            }
        })
        .collect()
}

/// Every accepted corpus packet is listed in acceptance order with its metadata (checked
/// against MANIFEST.tsv and the packet's own text), shown byte for byte and counted by
/// `stats`, while the broker runs and again after it has stopped.
#[test]
fn corpus_packets_are_listed_shown_and_counted() {
    let db = scratch("eventdb");
    let mut b = Broker::start_with_db(&db, &[], true);
    let all = packets();
    assert_eq!(all.len(), 131);
    let sent = submit_all(&b, &all);
    let check = |when: &str| {
        let listed = list_json(&db, &[]);
        assert_eq!(listed.len(), sent.len(), "{when}");
        let mut last_seq = 0;
        for (e, s) in listed.iter().zip(&sent) {
            let p = &s.p;
            let what = format!("{when}: {}", p.file);
            assert_eq!(e["ivorn"], p.ivorn.as_str(), "{what}");
            assert_eq!(e["role"], p.role.as_str(), "{what}");
            assert_eq!(e["bytes"], p.bytes.len(), "{what}");
            assert_eq!(e["stream"], p.ivorn.split('#').next().unwrap(), "{what}");
            assert_eq!(
                e["author_ivorn"].as_str(),
                p.author_ivorn.as_deref(),
                "{what}"
            );
            assert_eq!(e["authored"].as_str(), p.authored.as_deref(), "{what}");
            assert_eq!(e["source_kind"], "author", "{what}");
            assert!(
                e["source"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{what}: {e}"
            );
            let seq = e["seq"].as_u64().unwrap();
            assert!(seq > last_seq, "{what}: seq {seq} after {last_seq}");
            last_seq = seq;
            let accepted = e["accepted"].as_str().unwrap();
            assert_eq!(
                accepted.len(),
                "2026-12-05T12:00:00.000Z".len(),
                "{accepted}"
            );
            let t = iso_ms(accepted);
            assert!(
                (s.sent_ms..=s.acked_ms).contains(&t),
                "{what}: accepted {accepted} outside {}..={}",
                s.sent_ms,
                s.acked_ms
            );
        }
        // The plain form: time, role, size, ivorn, single spaces.
        let text = archive_ok(&db, &["list"]);
        for (line, e) in text.lines().zip(&listed) {
            let want = format!(
                "{} {} {} {}",
                e["accepted"].as_str().unwrap(),
                e["role"].as_str().unwrap(),
                e["bytes"],
                e["ivorn"].as_str().unwrap()
            );
            assert_eq!(line, want, "{when}");
        }
        assert_eq!(text.lines().count(), sent.len(), "{when}");
        for s in &sent {
            let o = archive(&db, &["show", &s.p.ivorn]);
            assert!(o.status.success(), "{when}: show {}", s.p.ivorn);
            assert!(o.stdout == s.p.bytes, "{when}: show {} differs", s.p.file);
        }
        let stats: Value = serde_json::from_str(&archive_ok(&db, &["stats", "--json"])).unwrap();
        assert_eq!(stats["count"], sent.len(), "{when}");
        let total: usize = sent.iter().map(|s| s.p.bytes.len()).sum();
        assert_eq!(stats["bytes"], total, "{when}");
        assert_eq!(stats["archive_id"].as_str().unwrap().len(), 32);
        let mut roles: HashMap<&str, u64> = HashMap::new();
        let mut streams: HashMap<&str, u64> = HashMap::new();
        for s in &sent {
            *roles.entry(s.p.role.as_str()).or_default() += 1;
            *streams
                .entry(s.p.ivorn.split('#').next().unwrap())
                .or_default() += 1;
        }
        assert_eq!(stats["roles"].as_object().unwrap().len(), roles.len());
        for (role, n) in &roles {
            assert_eq!(stats["roles"][role], *n, "{when}: role {role}");
        }
        assert_eq!(stats["streams"].as_object().unwrap().len(), streams.len());
        for (stream, n) in &streams {
            assert_eq!(stats["streams"][stream]["count"], *n, "{when}: {stream}");
        }
        assert_eq!(stats["oldest"], listed[0]["accepted"]);
        assert_eq!(stats["newest"], listed[listed.len() - 1]["accepted"]);
        let text = archive_ok(&db, &["stats"]);
        assert!(
            text.contains(&format!("\ntotal {} events {total} bytes\n", sent.len())),
            "{text}"
        );
        assert!(
            text.contains("\nstream ivo://nasa.gsfc.gcn/SWIFT 41 "),
            "{text}"
        );
    };
    check("while the broker runs");
    assert!(b.terminate(Duration::from_secs(20)).is_some());
    check("after the broker stopped");
    let _ = std::fs::remove_dir_all(&db);
}

/// Every filter, alone and combined, selects exactly what an oracle over the submitted
/// packets selects: acceptance-time bounds as ISO times (with milliseconds, seconds or a
/// date) and as ages, authored-time bounds, ivorn prefixes and substrings, roles, XPath,
/// and --limit/--reverse.
#[test]
fn filters_select_what_the_oracle_selects() {
    let b = Broker::start(&[]);
    let db = b.eventdb.clone();
    let all = packets();
    // Three batches: 40; after a pause of 6 s, 45 (the ages are checked after the first of
    // them); the rest.
    let mut sent = submit_all(&b, &all[..40]);
    std::thread::sleep(Duration::from_secs(6));
    let t1 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    sent.extend(submit_all(&b, &all[40..41]));
    // The first batch is over 6 s old, the one event after it under 5 s (checked).
    let recent = list_ivorns(&db, &["--since", "5s"]);
    let old = list_ivorns(&db, &["--until", "5s"]);
    assert!(now_ms() - t1 < 5000, "too slow to check ages");
    assert_eq!(recent, vec![all[40].ivorn.clone()]);
    let first: Vec<String> = all[..40].iter().map(|p| p.ivorn.clone()).collect();
    assert_eq!(old, first);
    sent.extend(submit_all(&b, &all[41..85]));
    std::thread::sleep(Duration::from_millis(20));
    let t2 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    sent.extend(submit_all(&b, &all[85..]));
    let oracle = |f: &dyn Fn(&Sent) -> bool| -> Vec<String> {
        sent.iter()
            .filter(|s| f(s))
            .map(|s| s.p.ivorn.clone())
            .collect()
    };
    let stamp = |ms: u64| bolide::time::utc_timestamp_ms(ms);
    let (t1s, t2s) = (stamp(t1), stamp(t2));
    let everything = oracle(&|_| true);
    for age in ["1h", "90m", "1d", "3600s"] {
        assert_eq!(list_ivorns(&db, &["--since", age]), everything, "{age}");
        assert!(list_ivorns(&db, &["--until", age]).is_empty(), "{age}");
    }
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec!["--since", &t1s], oracle(&|s| s.sent_ms >= t1)),
        (vec!["--until", &t1s], oracle(&|s| s.acked_ms < t1)),
        (
            vec!["--since", &t1s, "--until", &t2s],
            oracle(&|s| s.sent_ms >= t1 && s.acked_ms < t2),
        ),
        (vec!["--since", "2000-01-01"], everything.clone()),
        (vec!["--until", "2000-01-01T00:00:00Z"], vec![]),
        (
            vec!["--ivorn-prefix", "ivo://nasa.gsfc.gcn/SWIFT#"],
            oracle(&|s| s.p.ivorn.starts_with("ivo://nasa.gsfc.gcn/SWIFT#")),
        ),
        (
            vec![
                "--ivorn-prefix",
                "ivo://gwnet/",
                "--ivorn-prefix=ivo://nasa.gsfc.gcn/Fermi#",
            ],
            oracle(&|s| {
                s.p.ivorn.starts_with("ivo://gwnet/")
                    || s.p.ivorn.starts_with("ivo://nasa.gsfc.gcn/Fermi#")
            }),
        ),
        (vec!["--ivorn-prefix", "ivo://nowhere/"], vec![]),
        (
            vec!["--ivorn-contains", "_Pos_"],
            oracle(&|s| s.p.ivorn.contains("_Pos_")),
        ),
        (
            vec![
                "--ivorn-prefix",
                "ivo://nasa.gsfc.gcn/",
                "--ivorn-contains",
                "Test",
                "--role",
                "test",
            ],
            oracle(&|s| {
                s.p.ivorn.starts_with("ivo://nasa.gsfc.gcn/")
                    && s.p.ivorn.contains("Test")
                    && s.p.role == "test"
            }),
        ),
        (
            vec![
                "--authored-since",
                "2019-01-01",
                "--authored-until",
                "2020-01-01",
            ],
            oracle(&|s| {
                s.p.authored.as_deref().is_some_and(|d| {
                    (iso_ms("2019-01-01T00:00:00")..iso_ms("2020-01-01T00:00:00"))
                        .contains(&iso_ms(d))
                })
            }),
        ),
        // Inclusive at an event's exact Who/Date; a Date with a zone offset compares as
        // the instant it names.
        (
            vec!["--authored-since", "2019-11-17T00:09:00"],
            oracle(&|s| {
                s.p.authored
                    .as_deref()
                    .is_some_and(|d| iso_ms(d) >= iso_ms("2019-11-17T00:09:00"))
            }),
        ),
        (
            vec!["--authored-until", "2015-12-16T17:30:12.001Z"],
            oracle(&|s| {
                s.p.authored
                    .as_deref()
                    .is_some_and(|d| iso_ms(d) < iso_ms("2015-12-16T17:30:12.001Z"))
            }),
        ),
        (
            vec![
                "--xpath",
                "//*[local-name()='AuthorIVORN' and contains(., 'nasa')]",
            ],
            oracle(&|s| {
                s.p.author_ivorn
                    .as_deref()
                    .is_some_and(|a| a.contains("nasa"))
            }),
        ),
        (
            vec!["--xpath", "count(//Param) > 20", "--since", &t2s],
            oracle(&|s| {
                s.sent_ms >= t2
                    && String::from_utf8_lossy(&s.p.bytes)
                        .matches("<Param ")
                        .count()
                        > 20
            }),
        ),
    ];
    for role in ["observation", "prediction", "utility", "test"] {
        assert_eq!(
            list_ivorns(&db, &["--role", role]),
            oracle(&|s| s.p.role == role),
            "{role}"
        );
    }
    for (args, want) in &cases {
        assert_eq!(&list_ivorns(&db, args), want, "{args:?}");
        assert_eq!(
            list_json(&db, args)
                .iter()
                .map(|e| e["ivorn"].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            *want,
            "--json {args:?}"
        );
        // Newest first, and the limit cuts at the right end.
        let mut reversed = args.clone();
        reversed.extend(["--reverse", "--limit", "3"]);
        let newest: Vec<String> = want.iter().rev().take(3).cloned().collect();
        assert_eq!(list_ivorns(&db, &reversed), newest, "{reversed:?}");
        let mut limited = args.clone();
        limited.extend(["--limit", "4"]);
        let oldest: Vec<String> = want.iter().take(4).cloned().collect();
        assert_eq!(list_ivorns(&db, &limited), oldest, "{limited:?}");
    }
    // The selective cases select something (the oracle is not vacuous).
    assert!(cases.iter().filter(|(_, w)| !w.is_empty()).count() >= 12);
}

/// `export` writes each selected event under the name `--save-event` gives it (compared
/// with the files the broker itself saved), never overwriting: a second export appends
/// `_`; it prints how many it wrote.
#[test]
fn export_names_files_as_save_event_does() {
    let saved = scratch("saved");
    let b = Broker::start(&[
        "--save-event",
        &format!("--save-event-directory={}", saved.display()),
    ]);
    let sent = submit_all(&b, &packets()[..30]);
    // The files in `dir`, but the temporary ones a save writes first (`.NAME.PID.N.tmp`).
    let files = |dir: &Path| -> HashMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap())
            .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
            .map(|f| {
                let name = f.file_name().into_string().unwrap();
                (name, std::fs::read(f.path()).unwrap())
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while files(&saved).len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "the broker did not save every event"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let by_broker = files(&saved);
    let out = scratch("export").join("new");
    let dir = format!("--dir={}", out.display());
    let printed = archive_ok(&b.eventdb, &["export", &dir]);
    assert_eq!(
        printed,
        format!("exported {} events to {}\n", sent.len(), out.display())
    );
    assert_eq!(files(&out), by_broker);
    // Again: every name is taken, so each file gets one `_` more, and nothing changes.
    archive_ok(&b.eventdb, &["export", &dir]);
    let twice = files(&out);
    assert_eq!(twice.len(), 2 * sent.len());
    for (name, bytes) in &by_broker {
        assert_eq!(twice.get(name), Some(bytes), "{name}");
        assert_eq!(twice.get(&format!("{name}_")), Some(bytes), "{name}_");
    }
    // With a filter: only the selected ones.
    let tests = sent.iter().filter(|s| s.p.role == "test").count();
    assert!(tests > 0);
    let printed = archive_ok(&b.eventdb, &["export", &dir, "--role", "test"]);
    assert!(printed.starts_with(&format!("exported {tests} events to ")));
    assert_eq!(files(&out).len(), 2 * sent.len() + tests);
    for s in sent.iter().filter(|s| s.p.role == "test") {
        let name = bolide::handlers::file_name(&s.p.ivorn);
        assert_eq!(files(&out).get(&format!("{name}__")), Some(&s.p.bytes));
    }
    for d in [&saved, out.parent().unwrap()] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Events acked before a `kill -9` are all in the archive, readable at once and after a
/// restart, and their dedup records still refuse a resubmission.
#[test]
fn acked_events_survive_kill_9() {
    let db = scratch("eventdb");
    let mut b = Broker::start_with_db(&db, &[], true);
    let sent = submit_all(&b, &packets()[..50]);
    let want: Vec<String> = sent.iter().map(|s| s.p.ivorn.clone()).collect();
    b.kill();
    assert_eq!(list_ivorns(&db, &[]), want);
    let b = Broker::start_with_db(&db, &[], false);
    assert_eq!(list_ivorns(&db, &[]), want);
    let again = submit(b.receive(), &sent[0].p.bytes);
    assert!(again.is_nak(), "{again:?}");
    let more = submit_all(&b, &packets()[50..51]);
    let mut want = want;
    want.push(more[0].p.ivorn.clone());
    assert_eq!(list_ivorns(&db, &[]), want);
}

/// `--archive-max-size`: after every commit the archive keeps the newest events that fit
/// (the longest run of newest events within the size). `--archive-max-age`: once the old
/// ones are past it, the next commit deletes them.
#[test]
fn retention_by_size_and_by_age() {
    let b = Broker::start(&["--archive-max-size=20K"]);
    let sent = submit_all(&b, &packets()[..40]);
    let mut kept = Vec::new();
    let mut size = 0;
    for s in sent.iter().rev() {
        if size + s.p.bytes.len() > 20 * 1024 {
            break;
        }
        size += s.p.bytes.len();
        kept.insert(0, s.p.ivorn.clone());
    }
    assert!(kept.len() >= 2 && kept.len() < 20, "{kept:?}");
    assert_eq!(list_ivorns(&b.eventdb, &[]), kept);
    let stats: Value = serde_json::from_str(&archive_ok(&b.eventdb, &["stats", "--json"])).unwrap();
    assert_eq!(stats["bytes"], size);
    drop(b);

    let b = Broker::start(&["--archive-max-age=2s"]);
    let old = submit_all(&b, &packets()[..10]);
    assert_eq!(list_ivorns(&b.eventdb, &[]).len(), old.len());
    std::thread::sleep(Duration::from_millis(2500));
    let new = submit_all(&b, &packets()[10..11]);
    assert_eq!(list_ivorns(&b.eventdb, &[]), vec![new[0].p.ivorn.clone()]);
}

/// A format-2 event database (dedup records only) is refused by bolide-archive with a
/// pointer to the upgrade; the broker upgrades it on start, keeping its records (the
/// event whose record it holds is still a duplicate), and the archive then works.
#[test]
fn a_format_2_database_is_upgraded_by_the_broker() {
    let db = scratch("format2");
    let all = packets();
    let old = &all[0];
    let key: [u8; 32] = {
        let doc = bolide::xml::parse(&old.bytes, Default::default()).unwrap();
        bolide::voevent::Event::new(
            &old.bytes,
            old.ivorn.clone(),
            bolide::voevent::EventRole::Observation,
            doc.root_span.clone(),
            bolide::voevent::Origin::Local,
        )
        .key
    };
    {
        let env = Environment::new().set_max_dbs(8).open(&db).unwrap();
        let meta = env.create_db(Some("meta"), DatabaseFlags::empty()).unwrap();
        let events = env
            .create_db(Some("events"), DatabaseFlags::empty())
            .unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(meta, b"format", b"bolide-eventdb-2", WriteFlags::empty())
            .unwrap();
        let now = now_ms() / 1000;
        txn.put(events, &key, &now.to_be_bytes(), WriteFlags::empty())
            .unwrap();
        txn.commit().unwrap();
    }
    let o = archive(&db, &["list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bolide-eventdb-2")
            && err.contains("upgrade")
            && err.contains(&db.display().to_string()),
        "{err}"
    );
    let b = Broker::start_with_db(&db, &[], false);
    assert!(b.wait_log("upgraded event database", Duration::from_secs(10)));
    assert!(b
        .log_text()
        .contains("bolide-eventdb-2 to bolide-eventdb-5"));
    assert_eq!(archive_ok(&db, &["list"]), "");
    let dup = submit(b.receive(), &old.bytes);
    assert!(dup.is_nak(), "the format-2 record was lost: {dup:?}");
    let new = submit_all(&b, &all[1..3]);
    assert_eq!(
        list_ivorns(&db, &[]),
        vec![new[0].p.ivorn.clone(), new[1].p.ivorn.clone()]
    );
    assert!(archive_ok(&db, &["stats"]).contains("\ntotal 2 events "));
}

/// Listings during a burst from several authors: every call succeeds, and each sees a
/// prefix of the final listing, in order (each chunk a consistent snapshot, appended to
/// in acceptance order).
#[test]
fn listings_during_a_burst_see_prefixes() {
    let b = Broker::start(&[]);
    let addr = b.receive();
    let done = Arc::new(AtomicBool::new(false));
    let authors: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..100 {
                    let r = submit(addr, &make_event(&format!("burst-{t}-{i}"), 300));
                    assert!(r.is_ack(), "{r:?}");
                }
            })
        })
        .collect();
    let watcher = {
        let done = Arc::clone(&done);
        let db = b.eventdb.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push(list_ivorns(&db, &[]));
            }
            seen
        })
    };
    for a in authors {
        a.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    let last = list_ivorns(&b.eventdb, &[]);
    assert_eq!(last.len(), 400);
    assert!(
        seen.len() >= 3,
        "only {} listings during the burst",
        seen.len()
    );
    let mut growing = 0;
    for s in &seen {
        assert_eq!(s[..], last[..s.len()], "not a prefix of the final listing");
        growing += (!s.is_empty() && s.len() < last.len()) as usize;
    }
    assert!(growing >= 1, "no listing caught the burst midway");
}

/// Errors: one line naming the problem (and the path or value), exit status 1 for the
/// database (missing, not LMDB, LMDB but not bolide's, no such event), 2 for the command
/// line (a bad time, role or XPath: checked before the database is opened).
#[test]
fn errors_name_the_problem() {
    let fails = |db: &Path, args: &[&str], status: i32, needles: &[&str]| {
        let o = archive(db, args);
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(status), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("bolide-archive: "), "{err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
        }
    };
    let missing = scratch("missing").join("eventdb");
    let m = missing.display().to_string();
    fails(&missing, &["list"], 1, &[&m, "no event database"]);
    fails(&missing, &["stats"], 1, &[&m]);
    let junk = scratch("junk");
    let bytes: Vec<u8> = (0..65536u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(junk.join("data.mdb"), bytes).unwrap();
    let j = junk.display().to_string();
    fails(&junk, &["list"], 1, &[&j, "not an LMDB database"]);
    let foreign = scratch("foreign");
    {
        let env = Environment::new().open(&foreign).unwrap();
        let main = env.open_db(None).unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(main, b"hello", b"world", WriteFlags::empty())
            .unwrap();
        txn.commit().unwrap();
    }
    let f = foreign.display().to_string();
    fails(
        &foreign,
        &["show", "ivo://x/y#z"],
        1,
        &[&f, "not a bolide event database"],
    );
    // Usage errors win over a missing database.
    for (args, needles) in [
        (
            vec!["list", "--since", "yesterday"],
            vec!["--since", "'yesterday'"],
        ),
        (vec!["list", "--until", "12h30"], vec!["--until", "'12h30'"]),
        (
            vec!["export", "--dir=/tmp/x", "--authored-since", "2026-13-01"],
            vec!["--authored-since", "'2026-13-01'"],
        ),
        (vec!["list", "--since", "20261205"], vec!["'20261205'"]),
        (
            vec!["list", "--xpath", "//Param[@name="],
            vec!["--xpath", "'//Param[@name='"],
        ),
        (vec!["list", "--role", "alert"], vec!["--role", "'alert'"]),
    ] {
        fails(&missing, &args, 2, &needles);
    }
    let b = Broker::start(&[]);
    fails(&b.eventdb, &["show", "ivo://x/y#z"], 1, &["'ivo://x/y#z'"]);
    // argh's own errors: status 2, with a pointer to --help.
    let o = archive(&b.eventdb, &["list", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let o = archive(&b.eventdb, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give a command"));
    let o = Command::new(env!("CARGO_BIN_EXE_bolide-archive"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("bolide-archive {}\n", env!("CARGO_PKG_VERSION"))
    );
    // Without --eventdb: the broker's default, under XDG_DATA_HOME.
    let home = scratch("xdg");
    let o = Command::new(env!("CARGO_BIN_EXE_bolide-archive"))
        .arg("list")
        .env("XDG_DATA_HOME", &home)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let want = home.join("bolide/eventdb").display().to_string();
    assert!(String::from_utf8_lossy(&o.stderr).contains(&want));
    for d in [missing.parent().unwrap(), &junk, &foreign, &home] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Not a test: fills an event database with many archived events, to time bolide-archive
/// on it. The events are the accepted corpus packets in turn, each ivorn made unique
/// (`-N` appended), as from one author, accepted one after the other over the 30 days up
/// to now (so an hour holds count / 720 of them). The broker's code creates the database
/// (`Store::open`); the entries are then written by the function its insert path uses
/// (`archive::append`, then `archive::index_tail`), given those acceptance times, with
/// their dedup records, in transactions of 10 000 without fsync; the last 255 are left
/// in the tail, not indexed, as a running broker may leave them. The directory and count come from the
/// environment:
///
/// ```text
/// BOLIDE_FILL_DIR=/tmp/archive-1m BOLIDE_FILL_COUNT=1000000 \
///   cargo test --release --test archive -- --ignored --nocapture fill_a_large_archive
/// ```
#[test]
#[ignore]
fn fill_a_large_archive() {
    use bolide::archive::{self, Dbs};
    use bolide::store::{Store, StoreConfig};
    use bolide::voevent::{Event, EventRole, Origin};
    const SPAN_MS: u64 = 30 * 86_400_000;
    let dir = PathBuf::from(std::env::var("BOLIDE_FILL_DIR").expect("BOLIDE_FILL_DIR"));
    let count: u64 = std::env::var("BOLIDE_FILL_COUNT")
        .map_or(1_000_000, |n| n.parse().expect("BOLIDE_FILL_COUNT"));
    let map_size = 32 << 30;
    drop(
        Store::open(&StoreConfig {
            map_size,
            ..StoreConfig::new(&dir)
        })
        .unwrap(),
    );
    let env = Environment::new()
        .set_max_dbs(8)
        .set_map_size(map_size)
        .set_flags(lmdb::EnvironmentFlags::NO_SYNC)
        .open(&dir)
        .unwrap();
    let dbs = Dbs {
        archive: env.open_db(Some(archive::ARCHIVE_DB)).unwrap(),
        bytes: env.open_db(Some(archive::BYTES_DB)).unwrap(),
        by_ivorn: env.open_db(Some(archive::BY_IVORN_DB)).unwrap(),
        meta: env.open_db(Some("meta")).unwrap(),
    };
    let events = env.open_db(Some("events")).unwrap();
    let mut c = archive::load_counters(&env.begin_ro_txn().unwrap(), dbs).unwrap();
    let templates = packets();
    let from = "127.0.0.1:4000".parse().unwrap();
    let (start, first_ms) = (Instant::now(), now_ms() - SPAN_MS);
    // The last entries stay in the tail, as a running broker leaves them.
    let indexed = count - (archive::INDEX_EVERY - 1).min(count);
    let mut i = 0;
    while i < count {
        let end = if i < indexed {
            indexed.min(i + 10_000)
        } else {
            count
        };
        let mut txn = env.begin_rw_txn().unwrap();
        for i in i..end {
            let t = &templates[i as usize % templates.len()];
            let at = t.bytes.windows(7).position(|w| w == b"ivorn=\"").unwrap() + 7;
            let end = at + t.bytes[at..].iter().position(|&c| c == b'"').unwrap();
            let mut bytes = t.bytes[..end].to_vec();
            bytes.extend_from_slice(format!("-{i}").as_bytes());
            bytes.extend_from_slice(&t.bytes[end..]);
            let doc = bolide::xml::parse(&bytes, Default::default()).unwrap();
            let ivorn = format!("{}-{i}", t.ivorn);
            assert_eq!(doc.attr(0, "ivorn"), Some(ivorn.as_str()));
            let role = EventRole::from_attr(&t.role).unwrap();
            let span = doc.root_span.clone();
            let e = Event::new(&bytes, ivorn, role, span, Origin::Author(from)).with_who(&doc);
            let accepted_ms = first_ms + i * SPAN_MS / count;
            let secs = (accepted_ms / 1000).to_be_bytes();
            txn.put(events, &e.key, &secs, WriteFlags::empty()).unwrap();
            archive::append(&mut txn, dbs, &mut c, &e, accepted_ms).unwrap();
        }
        if end <= indexed {
            archive::index_tail(&mut txn, dbs, &mut c).unwrap();
        }
        txn.commit().unwrap();
        i = end;
    }
    env.sync(true).unwrap();
    println!(
        "{} events ({} bytes) archived in {dir:?} in {:.1} s",
        c.count,
        c.bytes,
        start.elapsed().as_secs_f64()
    );
}
