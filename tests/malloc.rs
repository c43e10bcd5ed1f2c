//! bolide runs with glibc's per-thread malloc cache off (it executes itself again with
//! `GLIBC_TUNABLES` set), unless the operator's `GLIBC_TUNABLES` already sizes that
//! cache; the programs it starts (`--cmd`) get the environment bolide was given.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The environment the process `pid` was executed with (`/proc/PID/environ`).
fn environ_of(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

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
fn malloc_cache_is_off_and_children_keep_their_environment() {
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
    assert!(
        env.iter()
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"),
        "{env:?}"
    );
    // Same process, same arguments: it serves as usual.
    assert!(submit(b.receive(), &make_event("malloc-1", 0)).is_ack());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let child_env = std::fs::read_to_string(&out).expect("the --cmd child ran");
    assert!(
        !child_env.contains("GLIBC_TUNABLES") && !child_env.contains("BOLIDE_MALLOC"),
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
        env.iter()
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.tcache_count=3"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|v| v.starts_with("BOLIDE_MALLOC")),
        "{env:?}"
    );
    assert!(submit(b.receive(), &make_event("malloc-2", 0)).is_ack());
}

#[test]
fn other_tunables_are_kept_and_the_cache_is_off() {
    let b = start(
        &[("GLIBC_TUNABLES", Some("glibc.malloc.trim_threshold=131072"))],
        &[],
    );
    // glibc, as it reads the tunables, cuts the variable's bytes in place at each `:`,
    // which shows in /proc/PID/environ as separate entries.
    let env = environ_of(b.pid()).join(":");
    assert!(
        env.contains(
            "GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072:glibc.malloc.tcache_count=0"
        ),
        "{env}"
    );
}
