//! The event database as the broker uses it: records expire after --eventdb-max-age and
//! are pruned every --eventdb-prune-interval; a full map gives naks with a clear reason
//! while subscribers keep being served, and the broker recovers once space is freed.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn records_expire_and_are_pruned() {
    let b = Broker::start(&["--eventdb-max-age=1", "--eventdb-prune-interval=1"]);
    let ev = make_event("ttl-1", 0);
    assert!(submit(b.receive(), &ev).is_ack());
    assert!(submit(b.receive(), &ev).is_nak());
    assert!(
        b.wait_log("pruned 1 expired records", Duration::from_secs(10)),
        "{}",
        b.log_text()
    );
    let r = submit(b.receive(), &ev);
    assert!(r.is_ack(), "an expired record still counted as seen: {r:?}");
}

#[test]
fn a_full_map_naks_with_a_reason_and_subscribers_are_still_served() {
    let b = Broker::start(&[
        "--no-sync",
        "--eventdb-map-size=96K",
        "--eventdb-max-age=2",
        "--eventdb-prune-interval=1",
    ]);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", Duration::from_secs(10)));
    let mut full_at = None;
    for i in 0..2000 {
        let r = submit(b.receive(), &make_event(&format!("full-{i}"), 0));
        if r.is_nak() {
            assert_eq!(r.result(), "Event rejected: storage unavailable");
            full_at = Some(i);
            break;
        }
        assert!(r.is_ack(), "{r:?}");
    }
    let n = full_at.expect("the 96 KiB map never filled");
    assert!(b.wait_log("event database commit of", Duration::from_secs(5)));
    assert!(b.log_text().contains("is full"), "{}", b.log_text());
    // The subscriber was served throughout (fan-out does not wait for the commit) and is
    // still connected.
    for _ in 0..=n {
        assert!(sub.next_event(Duration::from_secs(10)).is_some());
    }
    // Once the records expire and are pruned, the broker accepts events again.
    let mut recovered = false;
    for i in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        if submit(b.receive(), &make_event(&format!("after-full-{i}"), 0)).is_ack() {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "{}", b.log_text());
    assert!(sub.next_event(Duration::from_secs(10)).is_some());
}

/// Names of a process's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Under --no-sync the dispatcher commits itself: no committer thread, and what it
/// acked is in the database after a restart. Durable commits keep their thread.
#[test]
fn no_sync_commits_on_the_dispatcher() {
    let db = scratch("eventdb");
    let ev = make_event("inline-1", 0);
    {
        let mut b = Broker::start_with_db(&db, &["--no-sync"], true);
        let names = thread_names(b.pid());
        assert!(names.iter().any(|n| n == "dispatcher"), "{names:?}");
        assert!(!names.iter().any(|n| n == "committer"), "{names:?}");
        assert!(submit(b.receive(), &ev).is_ack());
        assert!(submit(b.receive(), &ev).is_nak());
        for i in 0..50 {
            let r = submit(b.receive(), &make_event(&format!("inline-more-{i}"), 0));
            assert!(r.is_ack(), "{r:?}");
        }
        assert!(b
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
    }
    let b = Broker::start_with_db(&db, &[], false);
    let names = thread_names(b.pid());
    assert!(names.iter().any(|n| n == "committer"), "{names:?}");
    let r = submit(b.receive(), &ev);
    assert_eq!(r.result(), "Event rejected: Previously seen by this broker");
    assert!(submit(b.receive(), &make_event("inline-more-49", 0)).is_nak());
}

/// A tmpfs mounted for one test (needs root; the test reports SKIPPED otherwise),
/// unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(tag: &str, opts: &str) -> Option<Tmpfs> {
        let dir = scratch(tag);
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "none", dir.to_str().unwrap()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_read_only_filesystem_refuses_start_up_naming_the_path() {
    let Some(fs) = Tmpfs::mount("ro-fs", "ro,size=1m") else {
        return;
    };
    let db = fs.0.join("eventdb");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bolide"))
        .args([
            "-r",
            "--local-ivo=ivo://abc",
            "--receive-port=0",
            &format!("--eventdb={}", db.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(db.to_str().unwrap()), "{err}");
    assert!(
        err.contains("Read-only file system") || err.contains("not writable"),
        "{err}"
    );
}

#[test]
fn a_full_filesystem_naks_with_a_reason_and_subscribers_are_still_served() {
    let Some(fs) = Tmpfs::mount("full-fs", "size=96k") else {
        return;
    };
    let db = fs.0.join("eventdb");
    let b = Broker::start_with_db(&db, &["--eventdb-map-size=16M"], true);
    let mut sub = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    assert!(b.wait_log("(1 subscribers)", Duration::from_secs(10)));
    let mut failed = None;
    for i in 0..3000 {
        let r = submit(b.receive(), &make_event(&format!("enospc-{i}"), 0));
        if r.is_nak() {
            assert_eq!(r.result(), "Event rejected: storage unavailable");
            failed = Some(i);
            break;
        }
        assert!(r.is_ack(), "{r:?}");
        assert!(sub.next_event(Duration::from_secs(10)).is_some());
    }
    let n = failed.expect("a 96 KiB filesystem never filled");
    assert!(
        b.wait_log("event database commit of", Duration::from_secs(5)),
        "{}",
        b.log_text()
    );
    // Subscribers are still served (the refused event itself was relayed before the commit).
    assert!(
        sub.next_event(Duration::from_secs(10)).is_some(),
        "after {n} events"
    );
    assert!(b.log_count("disconnected") == 0);
    // Space comes back: the broker accepts again without a restart.
    std::process::Command::new("mount")
        .args(["-o", "remount,size=4m", fs.0.to_str().unwrap()])
        .status()
        .unwrap();
    let r = submit(b.receive(), &make_event("enospc-after", 0));
    assert!(r.is_ack(), "{r:?}\n{}", b.log_text());
}
