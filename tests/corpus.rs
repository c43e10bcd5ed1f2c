//! Every real packet in ../shared/voevents: accepted or refused exactly as MANIFEST.tsv's
//! `comet_check` column predicts, and each accepted one relayed to a subscriber unchanged.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn every_real_packet_is_accepted_or_rejected_as_the_manifest_predicts() {
    let manifest = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).unwrap();
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file_col, check_col, ivorn_col) = (col("file"), col("comet_check"), col("ivorn"));

    let b = Broker::start(&[]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", Duration::from_secs(10)));
    let (mut accepted, mut rejected) = (0, 0);
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        let (file, check, ivorn) = (f[file_col], f[check_col], f[ivorn_col]);
        let bytes = read_corpus(file);
        let r = submit(b.receive(), &bytes);
        if check == "ACCEPT" {
            assert!(r.is_ack(), "{file}: expected ack, got {r:?}");
            assert_eq!(r.msg().origin.as_deref(), Some(ivorn), "{file}");
            let (got_ivorn, got) = sub
                .next_event(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{file} was not relayed"));
            assert_eq!(got_ivorn, ivorn, "{file}");
            assert!(got == bytes, "{file}: relayed bytes differ");
            accepted += 1;
        } else {
            assert!(check.starts_with("REJECT"), "{file}: {check}");
            assert!(r.is_nak(), "{file}: expected nak, got {r:?}");
            assert!(r.result().starts_with("Event rejected: "), "{file}");
            rejected += 1;
        }
    }
    assert_eq!((accepted, rejected), (131, 8));
    assert!(
        sub.next_event(Duration::from_millis(300)).is_none(),
        "a rejected packet was relayed"
    );
}
