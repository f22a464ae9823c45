//! The log file: one line per verb, level honoured, size bounded, private, never on stdout.

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use support::{call, Scratch};

#[test]
fn one_line_per_verb_private_and_level_honoured() {
    let s = Scratch::new();
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.80.0.0/24", "logLevel": "info"}),
    );
    let args = [("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p")];
    let ip = call("ADD", "c1", "eth0", &args, &conf).ip();
    assert_eq!(call("DEL", "c1", "eth0", &args, &conf).code, 0);
    let log = std::fs::read_to_string(s.log_file()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    for (line, verb) in lines.iter().zip(["ADD", "DEL"]) {
        assert!(
            line.contains(verb)
                && line.contains("c1")
                && line.contains("ns/p")
                && line.contains("elapsed_ms"),
            "{line}"
        );
        assert!(line.contains(&ip), "{line}");
    }
    let mode = std::fs::metadata(s.log_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // At error level, a successful call writes nothing; a failed one writes its error.
    let quiet = s.conf(
        "1.0.0",
        json!({"subnet": "10.80.0.0/24", "logLevel": "error"}),
    );
    call("ADD", "c2", "eth0", &[], &quiet).ip();
    assert_eq!(
        std::fs::read_to_string(s.log_file())
            .unwrap()
            .lines()
            .count(),
        2
    );
    call("ADD", "c3", "eth0", &[("CNI_ARGS", "IP=10.99.0.1")], &quiet).err(7);
    let log = std::fs::read_to_string(s.log_file()).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().last().unwrap().contains("10.99.0.1"), "{log}");
}

#[test]
fn log_is_rotated_past_its_size() {
    let s = Scratch::new();
    let conf = s.conf("1.0.0", json!({"subnet": "10.81.0.0/24", "logMaxSize": 1}));
    std::fs::write(s.log_file(), vec![b'x'; (1 << 20) + 1]).unwrap();
    call("ADD", "c1", "eth0", &[], &conf).ip();
    let rotated = s.path().join("kube-ipam.log.1");
    assert_eq!(std::fs::metadata(&rotated).unwrap().len(), (1 << 20) + 1);
    let fresh = std::fs::read_to_string(s.log_file()).unwrap();
    assert_eq!(fresh.lines().count(), 1, "{fresh}");
    let bad = s.conf("1.0.0", json!({"subnet": "10.81.0.0/24", "logMaxSize": 0}));
    assert!(call("ADD", "c2", "eth0", &[], &bad)
        .err(7)
        .contains("logMaxSize"));
}

#[test]
fn refusals_before_the_config_is_validated_log_to_its_log_file() {
    let s = Scratch::new();
    // Bad environment: the config was never read, but its logFile is in it.
    let conf = s.conf("1.0.0", json!({"subnet": "10.82.0.0/24"}));
    call("BOGUS", "c1", "eth0", &[], &conf).err(4);
    // Invalid config whose logging keys are fine.
    let bad = s.conf("1.0.0", json!({"subnet": "10.82.0.1/24"}));
    call("ADD", "c1", "eth0", &[], &bad).err(7);
    let log = std::fs::read_to_string(s.log_file()).expect("the config's log file");
    assert!(log.contains("BOGUS"), "{log}");
    assert!(log.contains("10.82.0.1/24"), "{log}");
}

#[test]
fn debug_is_about_kube_ipam_and_times_are_rounded() {
    let etcd = kube_ipam_etcd::testing::EtcdServer::start().expect("etcd");
    let s = Scratch::new();
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.83.0.0/24", "logLevel": "debug", "etcdConfig": {"etcdURL": etcd.endpoint()}}),
    );
    call("ADD", "c1", "eth0", &[], &conf).ip();
    call("DEL", "c1", "eth0", &[], &conf).quiet();
    let log = std::fs::read_to_string(s.log_file()).unwrap();
    for noise in [
        "frame=",
        "Connection{peer",
        "updating from discover",
        "client connection",
    ] {
        assert!(!log.contains(noise), "{noise} in the log:\n{log}");
    }
    for line in log.lines().filter(|l| l.contains("elapsed_ms=")) {
        let ms = line
            .split("elapsed_ms=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default();
        let decimals = ms.split('.').nth(1).map_or(0, str::len);
        assert!(decimals <= 1, "{ms} in {line}");
    }
}
