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
