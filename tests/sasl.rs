//! `presence run` with SASL/SCRAM-SHA-512, for real: tansu requiring
//! authentication (`scripts/sasl.sh`). `run --stop-at-end --kafka-config
//! FILE` with the mechanism, user and password equals backfill of the same
//! records, and the password appears nowhere in what it prints; a wrong
//! password fails within `--connect-timeout` with one line. (tansu has no
//! SASL/PLAIN; SCRAM is what managed clusters use.) `.ci/run` runs this with
//! `PRESENCE_SASL="$(scripts/sasl.sh DIR)" cargo test --release --test sasl -- --ignored`.

use std::time::Instant;

use presence::harness::generator::WorkloadConfig;
use presence::kafka::settings::ClientSettings;
use presence::kafka::Connection;

mod common;
use common::*;

#[test]
#[ignore = "needs tansu with SASL: PRESENCE_SASL=\"$(scripts/sasl.sh DIR)\""]
fn run_with_sasl_scram_equals_backfill_and_a_wrong_password_fails_clearly() {
    let value = std::env::var("PRESENCE_SASL")
        .expect("PRESENCE_SASL is \"ADDR USER PASSWORD\" (scripts/sasl.sh prints it)");
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [brokers, user, password] = parts[..] else {
        panic!("PRESENCE_SASL is \"ADDR USER PASSWORD\", not {value:?}")
    };
    let sasl = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", user),
        ("sasl.password", password),
    ];
    use_client_settings(
        sasl.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let mut settings = ClientSettings::default();
    for (key, value) in sasl {
        settings
            .add_pair(&format!("{key}={value}"), "test".into())
            .unwrap();
    }
    let kafka = Connection {
        settings,
        ..Connection::new(brokers)
    };
    let topics = fresh_topics("sasl", &kafka);
    let unique = output_prefix(&topics).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = WorkloadConfig {
        days: 1,
        devices: 300,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    };
    produce_and_backfill(brokers, &topics, &config, dir.path(), true);

    let properties = |password: &str| {
        let file = dir
            .path()
            .join(format!("client-{}.properties", password.len()));
        std::fs::write(
            &file,
            format!(
                "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.username={user}\nsasl.password={password}\n"
            ),
        )
        .unwrap();
        file
    };
    let command = |prefix: &str| run_to_end_command(brokers, &topics, prefix);
    let output = common::output(
        command(&unique)
            .arg("--kafka-config")
            .arg(properties(password)),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains(password),
        "the password in stderr: {stderr}"
    );
    check_outputs(brokers, &topics, &dir.path().join("out"), "with SASL");

    let wrong = format!("{password}-wrong");
    let started = Instant::now();
    let output = common::output(
        command(&format!("{unique}wrong-"))
            .arg("--kafka-config")
            .arg(properties(&wrong))
            .args(["--connect-timeout", "3s"]),
    );
    eprintln!("it failed after {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("SASL") && !stderr.contains(&wrong),
        "{stderr}"
    );
}
