//! The Kafka gateway over the real `bolide` binary (built with `--features kafka`) and
//! librdkafka's in-process mock cluster (`rdkafka::mocking::MockCluster`): the cluster
//! runs inside this test process on loopback, and bolide connects to its bootstrap
//! servers like to any cluster. No external server, no traffic off loopback.
#![cfg(feature = "kafka")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bolide::archive_reader::{ArchiveReader, Query};
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const T: Duration = Duration::from_secs(30);
const GCN_PATTERN: &str = r"^gcn\.classic\.voevent\..*";

/// A mock cluster of one broker (id 1).
fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    MockCluster::new(1).expect("mock cluster")
}

/// A mock cluster holding `topic` (one partition), its bootstrap servers, and a broker
/// consuming `topic` with `extra` options.
fn bolide_on(
    topic: &str,
    extra: &[&str],
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    Broker,
) {
    let (mock, bs) = cluster_with(topic, 1);
    let mut args = vec!["--kafka-topic", topic];
    args.extend_from_slice(extra);
    let b = bolide(None, &bs, &args);
    (mock, bs, b)
}

/// A mock cluster holding `topic` with `partitions` partitions, and its bootstrap servers.
fn cluster_with(
    topic: &str,
    partitions: i32,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let mock = cluster();
    mock.create_topic(topic, partitions, 1).unwrap();
    let bs = mock.bootstrap_servers();
    (mock, bs)
}

/// A producer like GCN's: zstd, no key.
fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "zstd")
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// Produce `value` (no key; `None`: a message without a value) and wait for it.
fn produce(p: &BaseProducer, topic: &str, value: Option<&[u8]>) {
    let mut r: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic);
    if let Some(v) = value {
        r = r.payload(v);
    }
    p.send(r).map_err(|(e, _)| e).expect("produce");
    p.flush(T).expect("flush");
}

/// GCN packets of the corpus: (ivorn, bytes), distinct ivorns and bytes.
fn gcn_corpus(n: usize) -> Vec<(String, Vec<u8>)> {
    let manifest = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).unwrap();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f[4].starts_with("ivo://nasa.gsfc.gcn/") && f[12] == "ACCEPT" && seen.insert(f[4]) {
            out.push((f[4].to_string(), read_corpus(f[0])));
        }
        if out.len() == n {
            break;
        }
    }
    assert_eq!(out.len(), n, "not enough GCN packets in the corpus");
    out
}

/// Start bolide consuming from `bootstrap` with `extra` options; metadata refreshed
/// every 500 ms so a new topic matching a pattern is found quickly.
fn bolide(db: Option<&std::path::Path>, bootstrap: &str, extra: &[&str]) -> Broker {
    let mut args = vec![
        format!("--kafka-bootstrap={bootstrap}"),
        "--kafka-option=topic.metadata.refresh.interval.ms=500".to_string(),
        "--kafka-option=session.timeout.ms=6000".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match db {
        Some(db) => Broker::start_with_db(db, &args, true),
        None => Broker::start(&args),
    }
}

/// A subscriber of `b`, once the dispatcher has registered it.
fn subscribe(b: &Broker) -> Subscriber {
    let s = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(
        b.wait_log(" connected (1 subscribers)", T),
        "{}",
        b.log_text()
    );
    s
}

/// Events a subscriber receives within `timeout`, until `n` of them.
fn receive(sub: &mut Subscriber, n: usize, timeout: Duration) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_event(left) {
            Some(e) => got.push(e),
            None => break,
        }
    }
    got
}

/// The ivorns in the archive of the event database `db`, once it holds `n` (or after
/// the timeout): fan-out precedes the commit, so a subscriber may see an event first.
fn archived_n(db: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let v = archived(db);
        if v.len() >= n || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ivorns in the archive of the event database `db`.
fn archived(db: &std::path::Path) -> Vec<String> {
    let r = ArchiveReader::open(db).expect("archive");
    let mut v = Vec::new();
    r.query(&Query::default(), |e| {
        v.push(e.ivorn.to_string());
        true
    })
    .unwrap();
    v
}

/// Real GCN packets produced (zstd) to gcn.classic.voevent.* topics reach a VTP
/// subscriber byte for byte, including on a topic created after bolide started (the
/// regular-expression subscription picks it up).
#[test]
fn gcn_notices_reach_a_subscriber_byte_for_byte() {
    let mock = cluster();
    let bs = mock.bootstrap_servers();
    mock.create_topic("gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK", 2, 1)
        .unwrap();
    let b = bolide(
        None,
        &bs,
        &["--kafka-topic", GCN_PATTERN, "--kafka-start=earliest"],
    );
    let mut sub = subscribe(&b);
    let packets = gcn_corpus(12);
    let p = producer(&bs);
    for (_, bytes) in &packets[..6] {
        produce(&p, "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK", Some(bytes));
    }
    let mut got = receive(&mut sub, 6, T);
    // A topic that did not exist when bolide subscribed.
    mock.create_topic("gcn.classic.voevent.FERMI_GBM_FLT_POS", 1, 1)
        .unwrap();
    for (_, bytes) in &packets[6..] {
        produce(&p, "gcn.classic.voevent.FERMI_GBM_FLT_POS", Some(bytes));
    }
    got.extend(receive(&mut sub, 6, T));
    let want: BTreeMap<String, Vec<u8>> = packets.into_iter().collect();
    let got: BTreeMap<String, Vec<u8>> = got.into_iter().collect();
    assert_eq!(got.len(), 12, "{}", b.log_text());
    for (ivorn, bytes) in &want {
        assert!(got.get(ivorn) == Some(bytes), "{ivorn} not received intact");
    }
    assert!(b.wait_log("from kafka gcn.classic.voevent.FERMI_GBM_FLT_POS", T));
    assert_eq!(archived_n(&b.eventdb, 12).len(), 12);
}

/// Messages that are not events (no value, not XML, not a VOEvent, too large) and
/// librdkafka's errors (a subscribed topic that does not exist) are logged with where
/// they are, skipped, and committed past: the next event goes through, and the group's
/// committed offset is past all of them.
#[test]
fn poison_messages_are_skipped_and_committed_past() {
    let topic = "gcn.classic.voevent.POISON";
    let (_mock, bs, b) = bolide_on(
        topic,
        &[
            "--kafka-topic=gcn.classic.voevent.NO_SUCH_TOPIC",
            "--kafka-start=earliest",
            "--kafka-group-id=poison-test",
            "--max-event-size=20000",
        ],
    );
    let mut sub = subscribe(&b);
    let p = producer(&bs);
    let big = make_event("big", 30_000);
    let poison: [Option<&[u8]>; 5] = [
        None,
        Some(b"this is not XML"),
        Some(b"<Transport role='iamalive'/>"),
        Some(br#"{"alert_datetime": "2026-01-01T00:00:00Z"}"#),
        Some(&big),
    ];
    for m in poison {
        produce(&p, topic, m);
    }
    let good = make_event("after-poison", 10);
    produce(&p, topic, Some(&good));
    let got = receive(&mut sub, 1, T);
    assert_eq!(got.len(), 1, "{}", b.log_text());
    assert_eq!(got[0].1, good);
    let too_large = format!("{} bytes, over --max-event-size 20000", big.len());
    for (offset, why) in [
        (0, "no value"),
        (1, "not XML"),
        (2, "not a VOEvent"),
        (3, "not XML"),
        (4, too_large.as_str()),
    ] {
        let line = format!("kafka {topic} partition 0 offset {offset}: skipped: {why}");
        assert!(b.wait_log(&line, T), "no `{line}`: {}", b.log_text());
    }
    assert!(b.wait_log("UnknownTopicOrPartition", T) || b.wait_log("Unknown topic", T));
    // The group's committed offset is past every message.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "poison-test")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let deadline = Instant::now() + T;
    loop {
        let committed = c
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .unwrap();
        let off = committed.find_partition(topic, 0).unwrap().offset();
        if off == rdkafka::Offset::Offset(6) {
            break;
        }
        assert!(Instant::now() < deadline, "committed offset {off:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kill -9 in the middle of a stream, then a restart on the same event database: the
/// consumer group kept there resumes, every message is accepted exactly once (the
/// archive holds each once), and no subscriber gets an event twice. Then a new group
/// reading the whole topic again finds every event already seen.
#[test]
fn kill_9_mid_stream_loses_nothing_and_repeats_nothing() {
    let topic = "gcn.classic.voevent.CRASH";
    let (_mock, bs) = cluster_with(topic, 1);
    let db = scratch("kafka-kill");
    let args = ["--kafka-topic", topic, "--kafka-start=earliest"];
    let mut b1 = bolide(Some(&db), &bs, &args);
    let mut sub1 = subscribe(&b1);
    let events: Vec<Vec<u8>> = (0..50)
        .map(|i| make_event(&format!("kill-{i}"), 200))
        .collect();
    let stream = {
        let events = events[..40].to_vec();
        let bs = bs.clone();
        std::thread::spawn(move || {
            let p = producer(&bs);
            for e in &events {
                produce(&p, topic, Some(e));
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let first = receive(&mut sub1, 10, T);
    assert_eq!(first.len(), 10, "{}", b1.log_text());
    // These ten are recorded: after the restart none of them may come again.
    assert!(archived_n(&db, 10).len() >= 10);
    let log = b1.log_text();
    let group = log
        .split("kafka consumer: group ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("the group id in the log")
        .to_string();
    b1.kill();
    let first: Vec<String> = first.into_iter().map(|(i, _)| i).collect();
    // What the broker relayed after them, up to the kill, may not be recorded yet
    // (fan-out precedes the commit): those may be relayed again, nothing else.
    let mut window = Vec::new();
    while let Ok(m) = sub1.next_message(Duration::from_millis(200)) {
        if let Incoming::Event { ivorn, .. } = m {
            window.push(ivorn);
        }
    }
    stream.join().unwrap();
    let b2 = bolide(Some(&db), &bs, &args);
    assert!(
        group.starts_with("bolide-") && b2.wait_log(&format!("kafka consumer: group {group},"), T),
        "the stored group id is used: {}",
        b2.log_text()
    );
    let mut sub2 = subscribe(&b2);
    let p = producer(&bs);
    for e in &events[40..] {
        produce(&p, topic, Some(e));
    }
    let deadline = Instant::now() + T;
    let mut second = Vec::new();
    while Instant::now() < deadline
        && second
            .iter()
            .filter(|i: &&String| i.contains("kill-4"))
            .count()
            < 10
    {
        if let Some((i, _)) = sub2.next_event(Duration::from_millis(200)) {
            second.push(i);
        }
    }
    for i in 40..50 {
        let ivorn = format!("ivo://bolide.test/stream#kill-{i}");
        assert!(
            second.contains(&ivorn),
            "{ivorn} not relayed after the restart"
        );
    }
    let twice: Vec<&String> = first.iter().filter(|i| second.contains(i)).collect();
    let unique: BTreeSet<&String> = second.iter().collect();
    assert_eq!(
        unique.len(),
        second.len(),
        "an event relayed twice after the restart"
    );
    // Every message reached a subscriber: before the kill, or after the restart.
    let missed: Vec<String> = (0..50)
        .map(|i| format!("ivo://bolide.test/stream#kill-{i}"))
        .filter(|i| !first.contains(i) && !window.contains(i) && !second.contains(i))
        .collect();
    assert!(missed.is_empty(), "never relayed: {missed:?}");
    let held = archived_n(&db, 50);
    let distinct: BTreeSet<&String> = held.iter().collect();
    assert_eq!((held.len(), distinct.len()), (50, 50), "{}", b2.log_text());
    drop(b2);
    // A new group reads the whole topic again: every event is recognised as seen.
    let b3 = bolide(
        Some(&db),
        &bs,
        &[
            "--kafka-topic",
            topic,
            "--kafka-start=earliest",
            "--kafka-group-id=second-reader",
        ],
    );
    let mut sub3 = subscribe(&b3);
    let deadline = Instant::now() + T;
    while b3.log_count("previously seen") < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b3.log_count("previously seen"), 50, "{}", b3.log_text());
    assert!(sub3.next_event(Duration::from_millis(300)).is_none());
    assert_eq!(archived(&db).len(), 50);
    assert!(twice.is_empty(), "recorded, yet relayed again: {twice:?}");
    let again: Vec<&String> = window.iter().filter(|i| second.contains(i)).collect();
    eprintln!(
        "kill -9: {} relayed after the last recorded one before the kill, {} of them again after the restart",
        window.len(),
        again.len()
    );
    drop(b3);
    let _ = std::fs::remove_dir_all(&db);
}

/// The same notice via Kafka and via a VTP upstream is relayed once, whichever arrives
/// first.
#[test]
fn the_same_event_via_kafka_and_vtp_is_relayed_once() {
    let topic = "gcn.classic.voevent.BOTH";
    let (_mock, bs) = cluster_with(topic, 1);
    let upstream = Broker::start(&[]);
    let remote = format!("--remote={}", upstream.broadcast());
    let b = bolide(
        None,
        &bs,
        &["--kafka-topic", topic, "--kafka-start=earliest", &remote],
    );
    assert!(upstream.wait_log("subscriber", T));
    assert!(b.wait_log("subscribed to upstream", T));
    std::thread::sleep(Duration::from_millis(300));
    let mut sub = subscribe(&b);
    let packets = gcn_corpus(2);
    let p = producer(&bs);
    // VTP first, then Kafka.
    assert!(submit(upstream.receive(), &packets[0].1).is_ack());
    let got = receive(&mut sub, 1, T);
    assert_eq!(got.len(), 1, "{}", b.log_text());
    produce(&p, topic, Some(&packets[0].1));
    assert!(b.wait_log(&format!("ignored {} from kafka {topic}", packets[0].0), T));
    // Kafka first, then VTP.
    produce(&p, topic, Some(&packets[1].1));
    let got2 = receive(&mut sub, 1, T);
    assert_eq!(got2.len(), 1);
    assert!(submit(upstream.receive(), &packets[1].1).is_ack());
    assert!(b.wait_log(&format!("ignored {} from upstream", packets[1].0), T));
    assert!(sub.next_event(Duration::from_millis(500)).is_none());
    assert_eq!(got[0].1, packets[0].1);
    assert_eq!(got2[0].1, packets[1].1);
}

/// Read every message of `topic` (from the start) for up to `timeout`, until `n` distinct
/// keys are seen: key -> values.
fn consume_all(
    bs: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("group.id", scratch("reader").display().to_string())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let key = String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap();
            out.entry(key)
                .or_default()
                .push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// Publishing: every event authors submit is on the topic with key = ivorn and value =
/// the exact bytes; a broker consuming the topic it publishes to finds its own events
/// seen (no loop); and after a Kafka outage, with a kill -9 during it, every event
/// accepted meanwhile is published from the archive.
#[test]
fn authors_events_are_published_and_survive_an_outage() {
    let topic = "bolide.events";
    let (mock, bs) = cluster_with(topic, 3);
    let db = scratch("kafka-publish");
    let args = [
        "--kafka-publish",
        topic,
        "--kafka-topic",
        topic,
        "--kafka-start=earliest",
        "--kafka-option=message.timeout.ms=1500",
    ];
    let mut b = bolide(Some(&db), &bs, &args);
    let mut sub = subscribe(&b);
    let events: Vec<Vec<u8>> = (0..20)
        .map(|i| make_event(&format!("pub-{i}"), 100 + i))
        .collect();
    for e in &events[..10] {
        assert!(submit(b.receive(), e).is_ack());
    }
    let on_topic = consume_all(&bs, topic, 10, T);
    assert_eq!(on_topic.len(), 10, "{}", b.log_text());
    for (i, e) in events[..10].iter().enumerate() {
        let key = format!("ivo://bolide.test/stream#pub-{i}");
        assert_eq!(on_topic[&key], vec![e.clone()], "{key}");
    }
    // Its own events came back through its consumer: seen, not relayed again.
    let deadline = Instant::now() + T;
    while b.log_count("previously seen") < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.log_count("previously seen"), 10, "{}", b.log_text());
    assert_eq!(receive(&mut sub, 11, Duration::from_secs(1)).len(), 10);
    // Outage: authors still get their acks; deliveries time out and are retried.
    mock.broker_down(1).unwrap();
    for e in &events[10..15] {
        assert!(submit(b.receive(), e).is_ack());
    }
    assert!(
        b.wait_log("not delivered to bolide.events", T),
        "{}",
        b.log_text()
    );
    // kill -9 during the outage, and more events on the restarted broker.
    b.kill();
    drop(b);
    mock.broker_up(1).unwrap();
    let b = bolide(Some(&db), &bs, &args);
    for e in &events[15..] {
        assert!(submit(b.receive(), e).is_ack());
    }
    let on_topic = consume_all(&bs, topic, 20, T);
    assert_eq!(on_topic.len(), 20, "{}", b.log_text());
    for (i, e) in events.iter().enumerate() {
        let key = format!("ivo://bolide.test/stream#pub-{i}");
        assert!(on_topic[&key].iter().all(|v| v == e), "{key}");
    }
    drop(b);
    let _ = std::fs::remove_dir_all(&db);
}

/// Kafka options in the built binary: a setting librdkafka refuses stops the start-up
/// with its message (exit 1), and so does a bad pattern.
#[test]
fn settings_librdkafka_refuses_stop_the_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bolide"))
        .args([
            "--kafka-bootstrap=127.0.0.1:1",
            "--kafka-topic=t",
            "--kafka-option=no.such.setting=1",
            "--remote=127.0.0.1:1",
        ])
        .arg(format!("--eventdb={}", scratch("kafka-bad").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot create the Kafka consumer"), "{err}");
    assert!(err.contains("no.such.setting"), "{err}");
}

/// One subscriber's events: (ivorn, when its frame was complete).
type Arrivals = Vec<(String, Instant)>;

/// Lean subscribers for the latency test: two threads, each polling its half of the
/// connections (`poll(2)`, non-blocking reads), time each event as its frame is complete,
/// find its ivorn by a byte search and ack it. So the test's side of the 100 connections
/// costs two thread wake-ups per event, not a hundred, on the 2 CPUs it shares with the
/// broker. Returns (ivorn, arrival) of up to `n` events per subscriber.
fn lean_receive(subs: Vec<Subscriber>, n: usize) -> Vec<std::thread::JoinHandle<Vec<Arrivals>>> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let half = subs.len().div_ceil(2);
    let mut groups: Vec<Vec<std::net::TcpStream>> = vec![Vec::new(), Vec::new()];
    for (i, s) in subs.into_iter().enumerate() {
        s.stream.set_nonblocking(true).unwrap();
        groups[i / half].push(s.stream);
    }
    groups
        .into_iter()
        .map(|mut streams| {
            std::thread::spawn(move || {
                let mut got: Vec<Arrivals> = vec![Vec::new(); streams.len()];
                let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut chunk = vec![0u8; 64 << 10];
                while got.iter().any(|g| g.len() < n) && Instant::now() < deadline {
                    let mut fds: Vec<libc::pollfd> = streams
                        .iter()
                        .map(|s| libc::pollfd {
                            fd: s.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        })
                        .collect();
                    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
                    let ready =
                        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
                    if ready <= 0 {
                        continue;
                    }
                    for (i, fd) in fds.iter().enumerate() {
                        if fd.revents == 0 {
                            continue;
                        }
                        while let Ok(k) = streams[i].read(&mut chunk) {
                            if k == 0 {
                                break;
                            }
                            bufs[i].extend_from_slice(&chunk[..k]);
                        }
                        let now = Instant::now();
                        while bufs[i].len() >= 4 {
                            let len = u32::from_be_bytes(bufs[i][..4].try_into().unwrap()) as usize;
                            if bufs[i].len() < 4 + len {
                                break;
                            }
                            let frame: Vec<u8> = bufs[i].drain(..4 + len).skip(4).collect();
                            if frame
                                .windows(10)
                                .any(|w| w == b"<Transport" || w == b":Transport")
                            {
                                continue;
                            }
                            let Some(at) = frame.windows(7).position(|w| w == b"ivorn=\"") else {
                                continue;
                            };
                            let rest = &frame[at + 7..];
                            let end = rest.iter().position(|&c| c == b'"').unwrap_or(0);
                            let ivorn = String::from_utf8_lossy(&rest[..end]).into_owned();
                            let ack = bolide::transport::ack(&ivorn, None);
                            let mut out = (ack.len() as u32).to_be_bytes().to_vec();
                            out.extend_from_slice(&ack);
                            let _ = streams[i].write_all(&out);
                            got[i].push((ivorn, now));
                        }
                    }
                }
                got
            })
        })
        .collect()
}

/// Latency from a message being produced (linger 0, on loopback: a consumer's long poll
/// has it as soon as the broker does, before the producer hears of the delivery) to its
/// delivery to each of 100 VTP subscribers, against the same for a plain librdkafka
/// consumer in this process (what the Kafka fetch itself takes): the difference is what
/// the bridge adds. 1 000 messages 10 ms apart; the subscribers are [`lean_receive`]'s,
/// so the test's own reading costs little of the CPUs the broker runs on. Run:
/// `cargo test --release --features kafka --test kafka -- --ignored --nocapture latency`.
#[test]
#[ignore]
fn latency_kafka_to_100_subscribers() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    const SUBS: usize = 100;
    const N: usize = 1000;
    let topic = "gcn.classic.voevent.LATENCY";
    let (_mock, bs, b) = bolide_on(
        topic,
        &[
            "--kafka-start=earliest",
            "--no-sync",
            "--max-subscribers-per-address=200",
            "--kafka-option=fetch.wait.max.ms=10",
            "-q",
        ],
    );
    let available: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let subs = lean_receive(
        (0..SUBS)
            .map(|_| Subscriber::connect(b.broadcast(), Behaviour::Healthy))
            .collect(),
        N,
    );
    // The baseline: a consumer of the same topic in this process.
    let base = {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bs)
            .set("group.id", "latency-baseline")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        c.subscribe(&[topic]).unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while got.len() < N && Instant::now() < deadline {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    let now = Instant::now();
                    let doc = bolide::xml::parse(m.payload().unwrap(), Default::default()).unwrap();
                    got.push((doc.attr(0, "ivorn").unwrap().to_string(), now));
                }
            }
            got
        })
    };
    // Let both consumers join their groups before the measured stream.
    std::thread::sleep(Duration::from_secs(6));
    let p = producer(&bs);
    for i in 0..N {
        let e = make_event(&format!("lat-{i}"), 3000);
        let ivorn = format!("ivo://bolide.test/stream#lat-{i}");
        let mut r: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic);
        r = r.payload(&e);
        available.lock().unwrap().insert(ivorn, Instant::now());
        p.send(r).map_err(|(e, _)| e).unwrap();
        p.flush(T).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let pct = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
    };
    let available = available.lock().unwrap();
    let latency = |got: Vec<(String, Instant)>| -> Vec<Duration> {
        got.into_iter()
            .map(|(i, at)| at.saturating_duration_since(available[&i]))
            .collect()
    };
    let joined: Vec<Arrivals> = subs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let basegot = base.join().unwrap();
    // Per message: the first subscriber's arrival after the plain consumer's (the bridge's
    // own path, when positive), and the spread from the first subscriber to the last (the
    // fan-out to 100 connections).
    let mut reach: HashMap<&str, (Instant, Instant)> = HashMap::new();
    for (ivorn, at) in joined.iter().flatten() {
        let e = reach.entry(ivorn.as_str()).or_insert((*at, *at));
        e.0 = e.0.min(*at);
        e.1 = e.1.max(*at);
    }
    let (mut first, mut spread) = (Vec::new(), Vec::new());
    for (ivorn, at) in &basegot {
        if let Some((f, l)) = reach.get(ivorn.as_str()) {
            first.push(f.saturating_duration_since(*at));
            spread.push(*l - *f);
        }
    }
    eprintln!(
        "first subscriber after the plain consumer: p50 {:.2} ms; first to last subscriber: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut first, 0.5),
        pct(&mut spread, 0.5),
        pct(&mut spread, 0.99)
    );
    let mut all: Vec<Duration> = joined.into_iter().flat_map(latency).collect();
    let mut base = latency(basegot);
    assert!(all.len() >= SUBS * N * 9 / 10, "{} deliveries", all.len());
    let (p50, p99) = (pct(&mut all, 0.5), pct(&mut all, 0.99));
    let (b50, b99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
    eprintln!(
        "kafka -> {SUBS} VTP subscribers: {} deliveries, p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        all.len(),
        pct(&mut all, 1.0)
    );
    eprintln!(
        "kafka -> plain consumer (the fetch itself): {} messages, p50 {b50:.2} ms, p99 {b99:.2} ms",
        base.len(),
    );
    eprintln!(
        "the bridge adds: p50 {:.2} ms, p99 {:.2} ms",
        p50 - b50,
        p99 - b99
    );
}

/// The gateway's figures for the metrics, from a gateway in this process (its dispatcher
/// played by the test, accepting every event): before a heartbeat none is reported; then
/// its age; the topics with a partition assigned (the heartbeat topic among them); and
/// once every message is read, a lag of 0 for each assigned partition, from librdkafka's
/// statistics.
#[test]
fn gateway_stats_report_heartbeat_topics_and_lag() {
    use bolide::cli::{KafkaConfig, KafkaStart};
    use bolide::dispatcher::Msg;
    use bolide::kafka::{Gateway, Source};
    use bolide::store::{Store, StoreConfig};
    use bolide::verdict::Verdict;
    let topic = "gcn.classic.voevent.STATS";
    let (mock, bs) = cluster_with(topic, 3);
    mock.create_topic("gcn.heartbeat", 1, 1).unwrap();
    let db = scratch("kafka-stats");
    let store = Arc::new(Store::open(&StoreConfig::new(&db)).unwrap());
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let accepted = std::thread::spawn(move || {
        let mut n = 0;
        for m in rx {
            if let Msg::Submit { reply, event } = m {
                // Packed for the archive on the consumer's thread.
                assert_eq!(
                    event.packed.as_deref(),
                    Some(&bolide::archive::pack(event.payload())[..])
                );
                if let Some(r) = reply {
                    r.send(Verdict::Accepted);
                }
                n += 1;
            }
        }
        n
    });
    let cfg = KafkaConfig {
        client: vec![
            ("bootstrap.servers".into(), bs.clone()),
            ("statistics.interval.ms".into(), "200".into()),
            ("session.timeout.ms".into(), "6000".into()),
        ],
        topics: vec![topic.to_string()],
        group_id: Some("stats-test".into()),
        start: KafkaStart::Earliest,
        heartbeat_topic: Some("gcn.heartbeat".into()),
        heartbeat_timeout: Duration::from_secs(60),
        publish: None,
    };
    let source = Source {
        max_event_size: 1 << 20,
        dispatcher: tx,
        archive: true,
    };
    let mut gw = Gateway::start(&cfg, &store, source).expect("gateway");
    let stats = gw.stats();
    assert_eq!(stats.heartbeat_age(), None, "no heartbeat seen yet");
    let p = producer(&bs);
    for i in 0..9 {
        let e = make_event(&format!("stats-{i}"), 10);
        let mut r: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic).partition(i % 3);
        r = r.payload(&e);
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(T).unwrap();
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + T;
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("topics assigned", &|| stats.topics().len() == 2);
    assert_eq!(
        stats.topics(),
        vec![
            "gcn.classic.voevent.STATS".to_string(),
            "gcn.heartbeat".into()
        ]
    );
    produce(
        &p,
        "gcn.heartbeat",
        Some(br#"{"alert_datetime": "2026-12-06T00:00:00Z"}"#),
    );
    until("a heartbeat", &|| stats.heartbeat_age().is_some());
    assert!(stats.heartbeat_age().unwrap() < T);
    let want: Vec<(String, i32, i64)> = (0..3)
        .map(|p| (topic.to_string(), p, 0))
        .chain([("gcn.heartbeat".to_string(), 0, 0)])
        .collect();
    until("every partition read, lag 0", &|| {
        let mut lag = stats.lag();
        lag.sort();
        lag == want
    });
    gw.stop_consuming();
    assert_eq!(accepted.join().unwrap(), 9);
    drop(store);
    let _ = std::fs::remove_dir_all(&db);
}

/// Produce one heartbeat (GCN's small JSON) to `gcn.heartbeat` every 200 ms until `stop`.
fn heartbeats(bs: &str, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<()> {
    let p = producer(bs);
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let beat = br#"{"alert_datetime": "2026-12-06T00:00:00Z"}"#;
            produce(&p, "gcn.heartbeat", Some(beat));
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// `--kafka-heartbeat-topic` with `--kafka-heartbeat-timeout`: a silent heartbeat topic
/// gets one warning (not one per poll), heartbeats coming again get one line, and a new
/// silence a new warning. Heartbeats are neither relayed nor logged as skipped.
#[test]
fn a_silent_heartbeat_topic_is_warned_about_once_per_silence() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let topic = "gcn.classic.voevent.HEARTBEAT";
    let (mock, bs) = cluster_with(topic, 1);
    mock.create_topic("gcn.heartbeat", 1, 1).unwrap();
    let b = bolide(
        None,
        &bs,
        &[
            "--kafka-topic",
            topic,
            "--kafka-heartbeat-topic=gcn.heartbeat",
            "--kafka-heartbeat-timeout=2s",
        ],
    );
    let mut sub = subscribe(&b);
    let warning = "kafka consumer: no heartbeat on gcn.heartbeat for 2 s";
    let again = "kafka consumer: heartbeats on gcn.heartbeat again";
    assert!(b.wait_log(warning, T), "{}", b.log_text());
    // The consumer polls every 100 ms: ten rounds later the warning is still one line.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(b.log_count(warning), 1, "{}", b.log_text());
    let stop = Arc::new(AtomicBool::new(false));
    let beating = heartbeats(&bs, Arc::clone(&stop));
    assert!(b.wait_log(again, T), "{}", b.log_text());
    stop.store(true, Ordering::Relaxed);
    beating.join().unwrap();
    let deadline = Instant::now() + T;
    while b.log_count(warning) < 2 {
        assert!(Instant::now() < deadline, "{}", b.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.log_count(again), 1, "{}", b.log_text());
    assert_eq!(b.log_count("skipped"), 0, "{}", b.log_text());
    assert!(sub.next_event(Duration::from_millis(300)).is_none());
}

/// Kafka unreachable (its broker taken down): one warning for the whole outage however
/// often librdkafka retries, one "connected again" when it is back. Meanwhile authors get
/// their acks and subscribers their events; afterwards Kafka's messages flow again.
#[test]
fn a_kafka_outage_is_one_line_and_the_broker_keeps_working() {
    let topic = "gcn.classic.voevent.OUTAGE";
    let (mock, bs, b) = bolide_on(
        topic,
        &[
            "--kafka-start=earliest",
            "--kafka-option=reconnect.backoff.max.ms=200",
            // The group keeps its member through the outage (a session timing out is a
            // change of state of its own, with its own line).
            "--kafka-option=session.timeout.ms=45000",
        ],
    );
    // With the long session timeout the group's first assignment can take a while.
    assert!(
        b.wait_log("partitions of", Duration::from_secs(60)),
        "{}",
        b.log_text()
    );
    let mut sub = subscribe(&b);
    let p = producer(&bs);
    let first = make_event("before-outage", 10);
    produce(&p, topic, Some(&first));
    assert_eq!(receive(&mut sub, 1, T).len(), 1, "{}", b.log_text());
    mock.broker_down(1).unwrap();
    let down = "kafka consumer: Kafka unreachable";
    assert!(b.wait_log(down, T), "{}", b.log_text());
    // librdkafka goes on retrying; each failure it reports is logged at debug level only.
    let retries = |b: &Broker| b.log_count("kafka consumer: Global error");
    let seen = retries(&b);
    let deadline = Instant::now() + T;
    while retries(&b) < seen + 3 {
        assert!(Instant::now() < deadline, "{}", b.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // An author's event meanwhile: acknowledged and relayed.
    let during = make_event("during-outage", 10);
    assert!(submit(b.receive(), &during).is_ack());
    let got = receive(&mut sub, 1, T);
    assert_eq!(got.len(), 1, "{}", b.log_text());
    assert_eq!(got[0].1, during);
    mock.broker_up(1).unwrap();
    assert!(
        b.wait_log("kafka consumer: connected again", T),
        "{}",
        b.log_text()
    );
    let after = make_event("after-outage", 10);
    produce(&p, topic, Some(&after));
    let got = receive(&mut sub, 1, T);
    assert_eq!(got.len(), 1, "{}", b.log_text());
    assert_eq!(got[0].1, after);
    assert_eq!(b.log_count("keeps retrying"), 1, "{}", b.log_text());
    assert_eq!(b.log_count("connected again"), 1, "{}", b.log_text());
    assert_eq!(warnings(&b), 1, "{}", b.log_text());
}

/// The broker's warnings about Kafka.
fn warnings(b: &Broker) -> usize {
    b.log_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("kafka"))
        .count()
}

/// No Kafka at all (bootstrap servers on a closed loopback port): one warning, however
/// often librdkafka retries, and the broker serves authors and subscribers.
#[test]
fn an_unreachable_bootstrap_is_one_line_and_the_broker_keeps_working() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = bolide(
        None,
        &closed.to_string(),
        &[
            "--kafka-topic=gcn.classic.voevent.NOWHERE",
            "--kafka-option=reconnect.backoff.max.ms=200",
        ],
    );
    one_warning_while_serving(&b, "kafka consumer: Kafka unreachable");
}

/// `b` logs the warning `line`, librdkafka retries (its errors reported six more times,
/// at debug level), an author's event is acknowledged and relayed to a subscriber, and
/// `line` stays the only warning about Kafka.
fn one_warning_while_serving(b: &Broker, line: &str) {
    let mut sub = subscribe(b);
    assert!(b.wait_log(line, T), "{}", b.log_text());
    let retries = |b: &Broker| b.log_count("kafka consumer: Global error");
    let (seen, deadline) = (retries(b), Instant::now() + T);
    while retries(b) < seen + 6 {
        assert!(Instant::now() < deadline, "{}", b.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = make_event("kafka-down", 10);
    assert!(submit(b.receive(), &e).is_ack());
    let got = receive(&mut sub, 1, T);
    assert_eq!(got.len(), 1, "{}", b.log_text());
    assert_eq!(got[0].1, e);
    assert_eq!(b.log_count("keeps retrying"), 1, "{}", b.log_text());
    assert_eq!(warnings(b), 1, "{}", b.log_text());
}

/// A login Kafka refuses (SCRAM against the mock cluster, which has no SASL): one
/// warning that authentication fails, not one per retry, nor a second one for the "all
/// brokers down" that follows it; the broker serves authors and subscribers meanwhile.
#[test]
fn failing_authentication_is_one_line() {
    let (_mock, _bs, b) = bolide_on(
        "gcn.classic.voevent.LOGIN",
        &[
            "--kafka-option=security.protocol=sasl_plaintext",
            "--kafka-option=sasl.mechanisms=SCRAM-SHA-256",
            "--kafka-option=sasl.username=bolide",
            "--kafka-option=sasl.password=wrong",
            "--kafka-option=reconnect.backoff.max.ms=200",
        ],
    );
    one_warning_while_serving(&b, "kafka consumer: Kafka authentication failing");
    assert!(!b.log_text().contains("password=wrong"), "{}", b.log_text());
}

/// Produce `events` to `topic`, event i to partition i % `partitions`.
fn produce_spread(p: &BaseProducer, topic: &str, partitions: i32, events: &[(usize, Vec<u8>)]) {
    for (i, e) in events {
        let r: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic)
            .partition(*i as i32 % partitions)
            .payload(e);
        p.send(r).map_err(|(e, _)| e).expect("produce");
    }
    p.flush(T).expect("flush");
}

/// Two bolides in one consumer group on a topic of four partitions. When the second
/// joins, the group rebalances and partitions are taken from the first while messages
/// keep coming: every message is accepted by one of the two (together: all of them;
/// after the rebalance each has a share and relays it to its subscriber), and in the end
/// the group's committed offsets are at the end of every partition.
#[test]
fn two_bolides_in_one_group_share_the_partitions_and_lose_nothing() {
    let topic = "gcn.classic.voevent.GROUP";
    let (_mock, bs) = cluster_with(topic, 4);
    let args = [
        "--kafka-topic",
        topic,
        "--kafka-start=earliest",
        "--kafka-group-id=shared",
    ];
    let events: Vec<(usize, Vec<u8>)> = (0..100)
        .map(|i| (i, make_event(&format!("group-{i}"), 100)))
        .collect();
    let ivorn = |i: usize| format!("ivo://bolide.test/stream#group-{i}");
    let a = bolide(None, &bs, &args);
    let mut sub_a = subscribe(&a);
    let p = producer(&bs);
    produce_spread(&p, topic, 4, &events[..20]);
    assert_eq!(receive(&mut sub_a, 20, T).len(), 20, "{}", a.log_text());
    // Messages keep coming while the second bolide joins.
    let stream = {
        let events = events[20..60].to_vec();
        let bs = bs.clone();
        std::thread::spawn(move || {
            let p = producer(&bs);
            for e in events.chunks(2) {
                produce_spread(&p, topic, 4, e);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let b = bolide(None, &bs, &args);
    let mut sub_b = subscribe(&b);
    let shared = "kafka consumer: 2 partitions of 1 topics assigned";
    for (broker, line) in [
        (&a, "partitions revoked by a rebalance"),
        (&b, shared),
        (&a, shared),
    ] {
        assert!(broker.wait_log(line, T), "{}", broker.log_text());
    }
    stream.join().unwrap();
    produce_spread(&p, topic, 4, &events[60..]);
    let (arch_a, arch_b) = {
        let deadline = Instant::now() + T;
        loop {
            let (x, y) = (archived(&a.eventdb), archived(&b.eventdb));
            let union: BTreeSet<&String> = x.iter().chain(&y).collect();
            if union.len() == 100 || Instant::now() > deadline {
                break (x, y);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let union: BTreeSet<String> = arch_a.iter().chain(&arch_b).cloned().collect();
    let all: BTreeSet<String> = (0..100).map(ivorn).collect();
    let missing: Vec<&String> = all.difference(&union).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    // After the rebalance each bolide has two partitions: a share of the last forty.
    let last: BTreeSet<String> = (60..100).map(ivorn).collect();
    for (name, arch) in [("first", &arch_a), ("second", &arch_b)] {
        let share = arch.iter().filter(|i| last.contains(*i)).count();
        assert!(share > 0, "the {name} bolide got none of the last 40");
    }
    // Each subscriber gets its bolide's share of the last forty.
    for (name, sub, arch) in [
        ("first", &mut sub_a, &arch_a),
        ("second", &mut sub_b, &arch_b),
    ] {
        let want: BTreeSet<&String> = arch.iter().filter(|i| last.contains(*i)).collect();
        let mut got = BTreeSet::new();
        let deadline = Instant::now() + T;
        while !want.iter().all(|i| got.contains(*i)) && Instant::now() < deadline {
            if let Some((i, _)) = sub.next_event(Duration::from_millis(200)) {
                got.insert(i);
            }
        }
        let not: Vec<&&String> = want.iter().filter(|i| !got.contains(**i)).collect();
        assert!(not.is_empty(), "the {name} subscriber missed {not:?}");
    }
    // The group's committed offsets reach the end of every partition.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "shared")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for partition in 0..4 {
        tpl.add_partition(topic, partition);
    }
    let deadline = Instant::now() + T;
    loop {
        let committed = c
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .unwrap();
        let offsets: Vec<rdkafka::Offset> = (0..4)
            .map(|p| committed.find_partition(topic, p).unwrap().offset())
            .collect();
        if offsets == vec![rdkafka::Offset::Offset(25); 4] {
            break;
        }
        assert!(Instant::now() < deadline, "committed offsets {offsets:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The group's committed offset of `topic` partition 0.
fn committed(bs: &str, group: &str, topic: &str) -> rdkafka::Offset {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let offset = committed.find_partition(topic, 0).unwrap().offset();
    offset
}

/// SIGTERM while consuming: bolide stops cleanly (exit status 0, the consumer's last
/// line logged) and the group's committed offset is past every message it recorded.
#[test]
fn sigterm_commits_what_is_recorded_and_exits_cleanly() {
    let topic = "gcn.classic.voevent.SIGTERM";
    let (_mock, bs, mut b) = bolide_on(
        topic,
        &["--kafka-start=earliest", "--kafka-group-id=sigterm-test"],
    );
    let mut sub = subscribe(&b);
    let p = producer(&bs);
    let events: Vec<(usize, Vec<u8>)> = (0..20)
        .map(|i| (i, make_event(&format!("term-{i}"), 100)))
        .collect();
    produce_spread(&p, topic, 1, &events);
    assert_eq!(receive(&mut sub, 20, T).len(), 20, "{}", b.log_text());
    assert_eq!(archived_n(&b.eventdb, 20).len(), 20);
    let status = b.terminate(T).expect("bolide exits after SIGTERM");
    assert!(status.success(), "{status}: {}", b.log_text());
    assert!(
        b.log_text()
            .contains("kafka consumer stopped (0 messages not yet recorded"),
        "{}",
        b.log_text()
    );
    assert_eq!(
        committed(&bs, "sigterm-test", topic),
        rdkafka::Offset::Offset(20)
    );
    assert_eq!(b.log_count("revoked"), 0, "{}", b.log_text());
}

/// With `--http`, `/metrics` and `/status` show the consumer: the lag of its partition (0
/// once everything is read; librdkafka's statistics every 200 ms here) and
/// the heartbeat's age, which a heartbeat brings back under a second.
#[test]
fn the_http_view_shows_the_consumers_lag_and_heartbeat() {
    use common::http::{get, http_addr, metrics_until, sample};
    use std::sync::atomic::{AtomicBool, Ordering};
    let topic = "gcn.classic.voevent.WATCHED";
    let (mock, bs) = cluster_with(topic, 1);
    mock.create_topic("gcn.heartbeat", 1, 1).unwrap();
    let b = bolide(
        None,
        &bs,
        &[
            "--kafka-topic",
            topic,
            "--kafka-start=earliest",
            "--kafka-heartbeat-topic=gcn.heartbeat",
            "--kafka-option=statistics.interval.ms=200",
            "--http=127.0.0.1:0",
        ],
    );
    let h = http_addr(&b);
    let mut sub = subscribe(&b);
    let p = producer(&bs);
    for i in 0..4 {
        produce(&p, topic, Some(&make_event(&format!("watched-{i}"), 10)));
    }
    assert_eq!(receive(&mut sub, 4, T).len(), 4, "{}", b.log_text());
    let stop = Arc::new(AtomicBool::new(false));
    let beating = heartbeats(&bs, Arc::clone(&stop));
    let lag =
        |part: u32| format!("bolide_kafka_consumer_lag{{topic=\"{topic}\",partition=\"{part}\"}}");
    let text = metrics_until(h, |t| {
        t.lines().any(|l| l == format!("{} 0", lag(0)))
            && t.contains("bolide_kafka_heartbeat_age_seconds")
    });
    stop.store(true, Ordering::Relaxed);
    beating.join().unwrap();
    assert_eq!(sample(&text, &lag(0)), 0.0, "{text}");
    assert!(
        sample(&text, "bolide_kafka_heartbeat_age_seconds") < 5.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "bolide_events_accepted_total{source=\"kafka\"}"),
        4.0,
        "{text}"
    );
    let st = get(h, "/status").json();
    let topics: Vec<&str> = st["kafka"]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(topics.contains(&topic), "{st}");
    assert!(st["kafka"]["heartbeat_age_seconds"].is_number(), "{st}");
}
