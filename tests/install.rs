//! `make install` into a temporary DESTDIR installs the binaries, the man pages and the
//! systemd unit where a packager expects them; `make uninstall` removes them again.

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
    let files = [
        ("usr/bin/bolide", 0o755),
        ("usr/bin/bolide-send", 0o755),
        ("usr/share/man/man8/bolide.8", 0o644),
        ("usr/share/man/man1/bolide-send.1", 0o644),
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
    // The unit: installed paths, unprivileged, state in /var/lib/bolide, hardened.
    let unit = std::fs::read_to_string(dest.join("usr/lib/systemd/system/bolide.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/bolide --eventdb=/var/lib/bolide/eventdb $BOLIDE_OPTS",
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
    make("uninstall");
    for (f, _) in files {
        assert!(!dest.join(f).exists(), "{f} left behind by make uninstall");
    }
    let _ = std::fs::remove_dir_all(&dest);
}
