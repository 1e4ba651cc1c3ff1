//! `presence run` over TLS, for real: tansu behind stunnel, with a CA and a
//! certificate the test script makes (`scripts/tls.sh`), so that every
//! client must speak TLS. `run --stop-at-end --kafka-config FILE` with
//! `security.protocol=SSL` and `ssl.ca.location` equals backfill of the same
//! records; without TLS settings, the same run fails within
//! `--connect-timeout` with one line that says what to check. `.ci/run`
//! runs this with `PRESENCE_TLS="$(scripts/tls.sh DIR)" cargo test --release
//! --test tls -- --ignored`.

use std::time::Instant;

use presence::harness::generator::WorkloadConfig;
use presence::kafka::settings::ClientSettings;
use presence::kafka::Connection;

mod common;
use common::*;

/// The TLS address and the CA file, from `PRESENCE_TLS`.
fn endpoint() -> (String, String) {
    let value = std::env::var("PRESENCE_TLS")
        .expect("PRESENCE_TLS is \"ADDR CA_FILE\" (scripts/tls.sh prints it)");
    let (addr, ca) = value.trim().split_once(' ').expect("ADDR CA_FILE");
    (addr.to_owned(), ca.to_owned())
}

#[test]
#[ignore = "needs tansu behind TLS: PRESENCE_TLS=\"$(scripts/tls.sh DIR)\""]
fn run_over_tls_equals_backfill_and_without_tls_fails_clearly() {
    let (brokers, ca) = endpoint();
    let tls = vec![
        ("security.protocol".to_owned(), "SSL".to_owned()),
        ("ssl.ca.location".to_owned(), ca.clone()),
    ];
    use_client_settings(tls.clone());
    let mut settings = ClientSettings::default();
    for (key, value) in &tls {
        settings
            .add_pair(&format!("{key}={value}"), "test".into())
            .unwrap();
    }
    let kafka = Connection {
        settings,
        ..Connection::new(brokers.clone())
    };
    let topics = fresh_topics("tls", &kafka);
    let unique = output_prefix(&topics).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = WorkloadConfig {
        days: 1,
        devices: 300,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    };
    produce_and_backfill(&brokers, &topics, &config, dir.path(), true);

    // The settings as an operator writes them: a properties file.
    let file = dir.path().join("client.properties");
    std::fs::write(
        &file,
        format!("# TLS to the broker\nsecurity.protocol=SSL\nssl.ca.location={ca}\n"),
    )
    .unwrap();
    let command = |prefix: &str| run_to_end_command(&brokers, &topics, prefix);
    let output = common::output(command(&unique).arg("--kafka-config").arg(&file));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    check_outputs(&brokers, &topics, &dir.path().join("out"), "over TLS");

    // Without TLS settings: one clear line within the connect timeout.
    let started = Instant::now();
    let output =
        common::output(command(&format!("{unique}plain-")).args(["--connect-timeout", "3s"]));
    eprintln!("it failed after {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&brokers) && stderr.contains("TLS") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
