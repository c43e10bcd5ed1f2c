//! bolide runs with glibc's per-thread malloc cache off and no static TLS reserve (it
//! executes itself again with `GLIBC_TUNABLES` set), except for the tunables the
//! operator's `GLIBC_TUNABLES` already sets; the programs it starts (`--cmd`) get the
//! environment bolide was given.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The environment the process `pid` was executed with (`/proc/PID/environ`), joined
/// with `:`: glibc, as it reads the tunables, cuts the variable's bytes in place at each
/// `:`, which shows in /proc/PID/environ as separate entries.
fn environ_of(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// All of bolide's tunables, as it sets them.
const LEAN: &str = "glibc.malloc.tcache_count=0:glibc.rtld.optional_static_tls=0:glibc.rtld.nns=1";

fn start(env: &[(&str, Option<&str>)], extra: &[&str]) -> Broker {
    let db = scratch("eventdb");
    let mut args: Vec<String> = [
        "--receive",
        "--broadcast",
        "--receive-port=0",
        "--broadcast-port=0",
        "--broadcast-test-interval=0",
        "--local-ivo=ivo://bolide.test/broker",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--eventdb={}", db.display()));
    args.extend(extra.iter().map(|s| s.to_string()));
    Broker::spawn_with_env(args, &db, false, env)
}

#[test]
fn threads_are_lean_and_children_keep_their_environment() {
    let dir = scratch("env");
    let out = dir.join("cmd-env");
    let script = dir.join("env.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat >/dev/null\nenv > {}\n", out.display()),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).unwrap();

    let b = start(
        &[("GLIBC_TUNABLES", None)],
        &[&format!("--cmd={}", script.display())],
    );
    let env = environ_of(b.pid());
    assert!(env.contains(&format!("GLIBC_TUNABLES={LEAN}")), "{env}");
    // Same process, same arguments: it serves as usual.
    assert!(submit(b.receive(), &make_event("malloc-1", 0)).is_ack());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let child_env = std::fs::read_to_string(&out).expect("the --cmd child ran");
    assert!(
        !child_env.contains("GLIBC_TUNABLES") && !child_env.contains("BOLIDE_GLIBC"),
        "{child_env}"
    );
}

#[test]
fn an_operator_setting_is_kept() {
    let b = start(
        &[("GLIBC_TUNABLES", Some("glibc.malloc.tcache_count=3"))],
        &[],
    );
    let env = environ_of(b.pid());
    assert!(
        env.contains(
            "GLIBC_TUNABLES=glibc.malloc.tcache_count=3:glibc.rtld.optional_static_tls=0:glibc.rtld.nns=1"
        ),
        "{env}"
    );
    assert!(submit(b.receive(), &make_event("malloc-2", 0)).is_ack());
}

#[test]
fn all_three_set_by_the_operator_means_no_restart() {
    let mine = "glibc.rtld.nns=2:glibc.malloc.tcache_count=3:glibc.rtld.optional_static_tls=512";
    let b = start(&[("GLIBC_TUNABLES", Some(mine))], &[]);
    let env = environ_of(b.pid());
    assert!(env.contains(&format!("GLIBC_TUNABLES={mine}")), "{env}");
    assert!(!env.contains("BOLIDE_GLIBC"), "{env}");
    assert!(submit(b.receive(), &make_event("malloc-3", 0)).is_ack());
}

#[test]
fn other_tunables_are_kept_and_ours_added() {
    let b = start(
        &[("GLIBC_TUNABLES", Some("glibc.malloc.trim_threshold=131072"))],
        &[],
    );
    let env = environ_of(b.pid());
    assert!(
        env.contains(&format!(
            "GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072:{LEAN}"
        )),
        "{env}"
    );
}
