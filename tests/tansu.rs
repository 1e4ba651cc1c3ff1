//! `presence run --stop-at-end` against tansu, a real Kafka-compatible
//! broker (no auto-created topics, no transactions): the upsert topics equal
//! file backfill of the same records. Needs a broker: `scripts/tansu.sh`
//! starts one and `.ci/run` runs this with
//! `PRESENCE_TANSU=127.0.0.1:PORT cargo test --release --test tansu -- --ignored`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use presence::harness::generator::WorkloadConfig;
use presence::observe::metrics::Metrics;
use presence::service::{run, RunJob, Topics};

mod common;
use common::*;

#[test]
#[ignore = "needs a Kafka-compatible broker: PRESENCE_TANSU=$(scripts/tansu.sh)"]
fn stop_at_end_against_tansu_equals_backfill() {
    let brokers = std::env::var("PRESENCE_TANSU")
        .expect("PRESENCE_TANSU names the broker (scripts/tansu.sh prints it)");
    let topics = fresh_topics("t", &brokers.as_str().into());

    let config = WorkloadConfig {
        days: 2,
        devices: 600,
        businesses: 8,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(&brokers, &topics, &config, dir.path(), true);

    let job = RunJob {
        stop_at_end: true,
        output_partitions: 3,
        ..RunJob::new(brokers.clone(), topics.clone())
    };
    let summary = run(
        timely::Config::process(2),
        job,
        Arc::new(AtomicBool::new(false)),
        Metrics::default(),
    )
    .unwrap();
    assert!(summary.accepted[0] > 5_000, "{summary:?}");
    check_outputs(&brokers, &topics, &dir.path().join("out"), "tansu -w 2");

    // Two real processes against the same broker and input topics.
    let n2 = format!("{}n2-", output_prefix(&topics));
    run_two_processes(dir.path(), || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_presence"));
        command
            .args([
                "run",
                "--stop-at-end",
                "--brokers",
                &brokers,
                "--output-prefix",
                &n2,
            ])
            .args([
                "--probes-topic",
                &topics.probes,
                "--logins-topic",
                &topics.logins,
            ])
            .args(["--base-counts-topic", &topics.base_counts]);
        command
    });
    let two_processes = Topics {
        probes: topics.probes.clone(),
        logins: topics.logins.clone(),
        base_counts: topics.base_counts.clone(),
        ..Topics::with_output_prefix(&n2)
    };
    check_outputs(
        &brokers,
        &two_processes,
        &dir.path().join("out"),
        "tansu -n 2",
    );
}

/// The query endpoints against tansu: answers are the topics' state at
/// their frontier while the service catches up, and what backfill wrote
/// once it has.
#[test]
#[ignore = "needs a Kafka-compatible broker: PRESENCE_TANSU=$(scripts/tansu.sh)"]
fn queries_against_tansu_answer_the_topics_state_at_their_frontier() {
    use common::query::{ask, until_caught_up, Keys, TopicState};
    let brokers = std::env::var("PRESENCE_TANSU")
        .expect("PRESENCE_TANSU names the broker (scripts/tansu.sh prints it)");
    let topics = fresh_topics("q", &brokers.as_str().into());
    let config = WorkloadConfig {
        days: 1,
        devices: 300,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(&brokers, &topics, &config, dir.path(), true);
    let out = dir.path().join("out");
    let paths = Keys::of_backfill(&out, 8).paths();
    let job = RunJob {
        output_partitions: 3,
        // An idle partition's promise is the wall clock, which would
        // close every visit of the generated history.
        idle_timeout: std::time::Duration::from_secs(3600),
        ..RunJob::new(brokers.clone(), topics.clone())
    };
    let metrics = Metrics::default();
    let addr = presence::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        job.queries.clone(),
    )
    .unwrap()
    .to_string();
    let shutdown = Arc::new(AtomicBool::new(false));
    let service = {
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    let mut asked: Vec<_> = paths.iter().map(|path| ask(&addr, path)).collect();
    until_caught_up(&addr, &paths, &out, &mut asked);
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    service.join().unwrap().unwrap();
    let checked = TopicState::read(&brokers, &topics).check(&asked, "tansu -w 2");
    assert!(checked >= paths.len(), "{checked} answers checked");
}

/// The crash loop of `tests/crash.rs`, shorter, against tansu: three kills
/// of a two-process cluster at random moments, then a run to the end.
#[test]
#[ignore = "needs a Kafka-compatible broker: PRESENCE_TANSU=$(scripts/tansu.sh)"]
fn killed_and_restarted_against_tansu_the_outputs_are_exact() {
    let brokers = std::env::var("PRESENCE_TANSU")
        .expect("PRESENCE_TANSU names the broker (scripts/tansu.sh prints it)");
    let topics = fresh_topics("c", &brokers.as_str().into());
    let dir = tempfile::tempdir().unwrap();
    common::crash::CrashLoop {
        brokers,
        topics,
        kills: 3,
        shapes: vec![0],
        seed: 7,
        dir: dir.path().to_owned(),
        one_record_tail: true,
    }
    .run(WorkloadConfig {
        days: 1,
        devices: 300,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    });
}
