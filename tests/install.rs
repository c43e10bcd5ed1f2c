//! `make install` into a temporary DESTDIR installs the binaries (stripped), the man
//! pages, the systemd unit and its options file where a packager expects them; `make
//! uninstall` removes them again but for the options file, which an operator edits. The
//! unit passes `systemd-analyze verify`, and refuses to start until `--local-ivo` is set.

use std::path::Path;
use std::process::Command;

#[test]
fn make_install_and_uninstall_with_destdir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = std::env::temp_dir().join(format!("bolide-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let built = Path::new(env!("CARGO_BIN_EXE_bolide")).parent().unwrap();
    let make = |target: &str| {
        let o = Command::new("make")
            .current_dir(root)
            .args([
                target,
                &format!("DESTDIR={}", dest.display()),
                "PREFIX=/usr",
                "NOBUILD=1",
                &format!("BUILT={}", built.display()),
            ])
            .output()
            .expect("make");
        assert!(
            o.status.success(),
            "make {target}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    make("install");
    let conf = dest.join("etc/bolide/bolide.conf");
    let files = [
        ("usr/bin/bolide", 0o755),
        ("usr/bin/bolide-send", 0o755),
        ("usr/bin/bolide-archive", 0o755),
        ("usr/share/man/man8/bolide.8", 0o644),
        ("usr/share/man/man1/bolide-send.1", 0o644),
        ("usr/share/man/man1/bolide-archive.1", 0o644),
        ("usr/lib/systemd/system/bolide.service", 0o644),
    ];
    for (f, mode) in files {
        let p = dest.join(f);
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(m.permissions().mode() & 0o777, mode, "{f}");
    }
    // The installed binaries run.
    let v = Command::new(dest.join("usr/bin/bolide"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("bolide {}", env!("CARGO_PKG_VERSION"))
    );
    let v = Command::new(dest.join("usr/bin/bolide-send"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success());
    // Stripped: the build's debug information stays out of the package.
    for b in ["bolide", "bolide-send", "bolide-bench", "bolide-archive"] {
        let installed = std::fs::metadata(dest.join("usr/bin").join(b))
            .unwrap()
            .len();
        let original = std::fs::metadata(built.join(b)).unwrap().len();
        assert!(
            installed < original / 2,
            "{b}: installed {installed} bytes, built {original}: not stripped"
        );
    }
    // The options file: installed once, never overwritten, and bolide refuses to start
    // with it as installed, saying where to set --local-ivo (exit 2: no restart loop).
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let o = Command::new(dest.join("usr/bin/bolide"))
        .arg(format!("--eventdb={}", dest.join("eventdb").display()))
        .arg(format!("--options-file={}", conf.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--local-ivo is required")
            && err.contains(&format!("set it in {}", conf.display())),
        "{err}"
    );
    std::fs::write(
        &conf,
        "--receive\n--local-ivo=ivo://edited.example/broker\n",
    )
    .unwrap();
    make("install");
    assert!(
        std::fs::read_to_string(&conf)
            .unwrap()
            .contains("edited.example"),
        "bolide.conf overwritten"
    );
    // The unit: installed paths, unprivileged, state in /var/lib/bolide, hardened.
    let unit = std::fs::read_to_string(dest.join("usr/lib/systemd/system/bolide.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/bolide --eventdb=/var/lib/bolide/eventdb --options-file=/etc/bolide/bolide.conf $BOLIDE_OPTS",
        "RestartPreventExitStatus=2",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "EnvironmentFile=-/etc/default/bolide",
        "DynamicUser=yes",
        "StateDirectory=bolide",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line:?}:\n{unit}"
        );
    }
    // It would bind --cmd children too (JIT runtimes): not set.
    assert!(!unit.contains("\nMemoryDenyWriteExecute"), "{unit}");
    make("uninstall");
    for (f, _) in files {
        assert!(!dest.join(f).exists(), "{f} left behind by make uninstall");
    }
    assert!(
        conf.exists(),
        "make uninstall removed the operator's bolide.conf"
    );
    let _ = std::fs::remove_dir_all(&dest);
}

/// The installed unit passes `systemd-analyze verify` (installed under a temporary
/// PREFIX, so the paths it names exist). Skipped, loudly, without systemd-analyze; CI sets
/// BOLIDE_REQUIRE_SYSTEMD=1, which turns the skip into a failure.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if analyze.map_or(true, |o| !o.status.success()) {
        let why = "systemd-analyze is not installed (Debian package systemd)";
        assert!(
            std::env::var_os("BOLIDE_REQUIRE_SYSTEMD").is_none(),
            "BOLIDE_REQUIRE_SYSTEMD is set but {why}"
        );
        eprintln!("SKIPPED: systemd_unit_passes_systemd_analyze_verify: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefix = std::env::temp_dir().join(format!("bolide-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let built = Path::new(env!("CARGO_BIN_EXE_bolide")).parent().unwrap();
    let o = Command::new("make")
        .current_dir(root)
        .args([
            "install",
            &format!("PREFIX={}", prefix.display()),
            "NOBUILD=1",
            &format!("BUILT={}", built.display()),
        ])
        .output()
        .expect("make");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unit = prefix.join("lib/systemd/system/bolide.service");
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let _ = std::fs::remove_dir_all(&prefix);
}
