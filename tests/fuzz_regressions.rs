//! Replays fuzz inputs through the fuzz harnesses (`tests/fuzz/src/lib.rs`, compiled in here
//! as a module), without a fuzzer:
//!
//! * every file in `tests/fuzz_regressions/`, named `<target>-<what>.bin`: inputs that
//!   once crashed that target (see `tests/fuzz/README.md`);
//! * a set of seed inputs (the shared invalid and hostile inputs, their control and a
//!   few real packets) through all four targets, so the harnesses' own invariants stay
//!   exercised by `make test`.

#[path = "fuzz/src/lib.rs"]
mod harness;

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/voevents");
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_regressions");

fn target_fn(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "frame" => harness::frame,
        "transport" => harness::transport,
        "xml" => harness::xml,
        "voevent" => harness::voevent,
        _ => return None,
    })
}

/// Run `f` on `data`; a panic becomes a failure line naming `what`.
fn replay(f: fn(&[u8]), data: &[u8], what: String, failures: &mut Vec<String>) {
    if let Err(e) = panic::catch_unwind(|| f(data)) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        failures.push(format!("{what}: {msg}"));
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

/// A frame-target input: header bytes, then `payload` framed.
fn framed(header: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut v = header.to_vec();
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn saved_crash_inputs() {
    let mut failures = Vec::new();
    let mut n = 0;
    for p in files(Path::new(REGRESSIONS)) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let target = name.split('-').next().unwrap();
        let f = target_fn(target).unwrap_or_else(|| {
            panic!("{name}: no fuzz target {target:?} (name files <target>-<what>.bin)")
        });
        replay(f, &fs::read(&p).unwrap(), name, &mut failures);
        n += 1;
    }
    eprintln!("replayed {n} saved fuzz inputs");
    assert!(
        failures.is_empty(),
        "fuzz regressions:\n{}",
        failures.join("\n")
    );
}

#[test]
fn seed_inputs_through_every_harness() {
    let shared = Path::new(SHARED);
    let mut inputs = files(&shared.join("invalid"));
    inputs.retain(|p| p.extension().is_some_and(|e| e == "xml" || e == "bin"));
    inputs.extend(files(&shared.join("invalid/control")));
    for real in [
        "fermi_gbm-fin-pos-int_7.xml",
        "lvc_o3-preliminary_4.xml",
        "icecube_astrotrack-gold_1.xml",
        "dc3_brokertest-no-namespace_1.xml",
    ] {
        inputs.push(shared.join(real));
    }
    assert!(inputs.len() > 30, "shared inputs missing under {SHARED}");
    let mut failures = Vec::new();
    for p in &inputs {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let mut data = fs::read(p).unwrap();
        data.truncate(1 << 20); // as tests/fuzz/seeds.sh does
        for t in ["transport", "xml", "voevent"] {
            replay(
                target_fn(t).unwrap(),
                &data,
                format!("{t} {name}"),
                &mut failures,
            );
        }
        // Limit 1 MiB in whole reads; odd small reads with an EINTR; a limit below the size.
        for header in [[0, 0, 0, 0], [0, 1, 7, 0xFF], [0x41, 0x31, 0, 3]] {
            if header[1] != 0 && data.len() > 64 << 10 {
                continue; // small reads of a big frame: slow in a debug build
            }
            let what = format!("frame {name} {header:?}");
            replay(harness::frame, &framed(header, &data), what, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "harness failures:\n{}",
        failures.join("\n")
    );
}
