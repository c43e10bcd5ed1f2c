//! --subscriber-config: filters imposed per subscriber network, ANDed with what the
//! subscriber asks for, reloaded on SIGHUP without dropping connections.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

fn wait_count(b: &Broker, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + T;
    while b.log_count(needle) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "waiting for {n}× {needle:?}\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn imposed_filters_apply_and_reload_on_sighup() {
    let dir = scratch("sites");
    let sites = dir.join("sites");
    std::fs::write(&sites, "# loopback gets Swift BAT GRB positions only\n127.0.0.0/8 //Param[@name=\"Packet_Type\" and @value=61]\n192.0.2.0/24 true()\n").unwrap();
    let b = Broker::start(&[&format!("--subscriber-config={}", sites.display())]);
    // Asks for everything: gets only the imposed selection.
    let mut greedy = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    greedy.authenticate(&["true()"]);
    // Asks for one trigger: gets the intersection.
    let mut narrow = Subscriber::connect(b.broadcast(), Behaviour::Healthy);
    narrow.authenticate(&["contains(@ivorn, '690738')"]);
    wait_count(&b, "installed 1 filters", 2);
    wait_count(&b, "1 filters imposed by the subscriber config", 2);
    let bat_690738 = read_corpus("swift_grb690738-bat-grb-pos_10.xml"); // 61
    let bat_707545 = read_corpus("swift_grb707545-bat-grb-pos_7.xml"); // 61
    let xrt_690738 = read_corpus("swift_grb690738-xrt-pos_23.xml"); // not 61
    for ev in [&xrt_690738, &bat_707545, &bat_690738] {
        assert!(submit(b.receive(), ev).is_ack());
    }
    let quiet = Duration::from_millis(700);
    let mut got = Vec::new();
    while let Some((iv, _)) = greedy.next_event(quiet) {
        got.push(iv);
    }
    got.sort();
    assert_eq!(
        got,
        [
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_690738-383",
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_707545-520"
        ]
    );
    assert_eq!(
        narrow.next_event(quiet).unwrap().0,
        "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_690738-383"
    );
    assert!(narrow.next_event(quiet).is_none());

    // Reload: loopback now gets test-role packets only. Same connections.
    std::fs::write(&sites, "127.0.0.1 @role=\"test\"\n").unwrap();
    b.signal(libc::SIGHUP);
    assert!(b.wait_log(
        "subscriber config reloaded: 1 networks; 2 subscribers re-evaluated",
        T
    ));
    let test_role = read_corpus("fermi_gbm-test-pos_9.xml");
    assert!(submit(
        b.receive(),
        &read_corpus("swift_grb558756-bat-grb-pos_5.xml")
    )
    .is_ack());
    assert!(submit(b.receive(), &test_role).is_ack());
    assert_eq!(greedy.next_event(T).unwrap().1, test_role);
    assert!(greedy.next_event(quiet).is_none());

    // A broken file on reload keeps the rules in force.
    std::fs::write(&sites, "127.0.0.1 //[\n").unwrap();
    b.signal(libc::SIGHUP);
    assert!(b.wait_log("not reloaded, keeping the previous rules", T));
    assert!(b.log_text().contains("line 1: invalid XPath"));
    assert!(submit(b.receive(), &read_corpus("fermi_lat-test-pos_12.xml")).is_ack());
    assert!(submit(b.receive(), &read_corpus("fermi_lat-monitor_10.xml")).is_ack());
    assert_eq!(
        greedy.next_event(T).unwrap().0,
        "ivo://nasa.gsfc.gcn/Fermi#LAT_Test_Pos_2018-09-06T19:27:29.00_099999_1-182"
    );
    assert!(greedy.next_event(quiet).is_none());
    assert_eq!(b.log_count("disconnected"), 0, "a connection was dropped");
}

#[test]
fn a_bad_subscriber_config_refuses_to_start() {
    let dir = scratch("sites-bad");
    let sites = dir.join("sites");
    std::fs::write(&sites, "10.0.0.0/8 true()\n10.0.0.0/40 true()\n").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bolide"))
        .args([
            "-b",
            "--local-ivo=ivo://abc",
            &format!("--subscriber-config={}", sites.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 2") && err.contains("invalid network"),
        "{err}"
    );
}
