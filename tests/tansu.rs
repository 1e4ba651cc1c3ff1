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

/// A checkpoint that resumes a partition inside a record batch: tansu 0.6
/// answers a fetch from the middle of a batch without the rest of it, and
/// repeats the batches after it in the same answer. A first `--stop-at-end`
/// run stops one batch short on tansu (its end offset is the last batch's
/// first offset + 1), so its final checkpoint resumes every partition
/// inside its last batch; after one more (blank) record per partition, a
/// second run from that checkpoint reads the rest, and the outputs equal
/// the backfill of every record: none lost, none read twice.
#[test]
#[ignore = "needs a Kafka-compatible broker: PRESENCE_TANSU=$(scripts/tansu.sh)"]
fn a_checkpoint_inside_a_batch_resumes_every_record_once_against_tansu() {
    use presence::service::CheckpointSettings;
    let brokers = std::env::var("PRESENCE_TANSU")
        .expect("PRESENCE_TANSU names the broker (scripts/tansu.sh prints it)");
    let topics = fresh_topics("mid", &brokers.as_str().into());
    let config = WorkloadConfig {
        days: 1,
        devices: 400,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(&brokers, &topics, &config, dir.path(), false);
    let run_once = || {
        let job = RunJob {
            stop_at_end: true,
            output_partitions: 2,
            checkpoint: Some(CheckpointSettings {
                dir: dir.path().join("state").as_path().into(),
                interval: std::time::Duration::from_secs(10),
                reset: false,
                kept: presence::checkpoint::store::MANIFESTS_KEPT,
            }),
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        run(
            timely::Config::process(2),
            job,
            Arc::new(AtomicBool::new(false)),
            Metrics::default(),
        )
        .unwrap()
    };
    let first = run_once();
    // A blank record per input partition: nothing in the outputs, but the
    // end of each partition is now a batch of its own.
    let producer: rdkafka::producer::BaseProducer = client(&brokers).create().unwrap();
    let places = (0..PROBE_PARTITIONS)
        .map(|p| (topics.probes.as_str(), p))
        .chain([
            (topics.logins.as_str(), 0),
            (topics.base_counts.as_str(), 0),
        ]);
    for (topic, partition) in places {
        send(&producer, topic, partition, " ");
        rdkafka::producer::Producer::flush(&producer, TIMEOUT).unwrap();
    }
    let second = run_once();
    // Every record produced (the backfill's input files, and the blank
    // ones) read once, by one run or the other.
    let produced: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .map(|path| std::fs::read_to_string(path).unwrap().lines().count() as u64)
        .sum::<u64>()
        + PROBE_PARTITIONS as u64
        + 2;
    assert_eq!(first.lines + second.lines, produced, "{first:?} {second:?}");
    assert!(second.lines > 0, "the first run stopped short: {first:?}");
    check_outputs(
        &brokers,
        &topics,
        &dir.path().join("out"),
        "tansu, resumed inside batches",
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
