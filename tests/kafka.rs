//! `presence run --stop-at-end` through librdkafka's in-process mock broker:
//! the last value per key of each upsert topic equals what file backfill
//! computes from the same records, and the progress topic only grows.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;

use presence::io::generator::{Workload, WorkloadConfig};
use presence::io::ingest::Kind;
use presence::metrics::Metrics;
use presence::run::{run, RunJob, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

const PROBE_PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn stop_at_end_equals_backfill_on_one_and_two_workers() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    let config = WorkloadConfig {
        days: 2,
        devices: 600,
        businesses: 8,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, partitions) in [
        ("probes", PROBE_PARTITIONS),
        ("logins", 1),
        ("base-counts", 1),
    ] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    produce_and_backfill(&brokers, &Topics::default(), &config, dir.path(), false);

    for workers in [1, 2] {
        let topics = Topics::with_output_prefix(&format!("w{workers}-"));
        // The two-process run below exercises run's bounded wait for CreateTopics.
        create_output_topics(&mock, &topics, 3);
        let job = RunJob {
            stop_at_end: true,
            output_partitions: 3,
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        let metrics = Metrics::default();
        let summary = run(
            timely::Config::process(workers),
            job,
            Arc::new(AtomicBool::new(false)),
            metrics.clone(),
        )
        .unwrap();
        assert!(summary.accepted[0] > 5_000, "{summary:?}");
        check_metrics(&metrics.render(), &summary, &topics);
        check_outputs(
            &brokers,
            &topics,
            &dir.path().join("out"),
            &format!("-w {workers}"),
        );
    }

    // Two real processes, connected over loopback, both reading from the
    // broker this test hosts.
    run_two_processes(dir.path(), || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_presence"));
        command.args([
            "run",
            "--stop-at-end",
            "--output-prefix",
            "n2-",
            "--brokers",
            &brokers,
        ]);
        command
    });
    let topics = Topics::with_output_prefix("n2-");
    check_outputs(&brokers, &topics, &dir.path().join("out"), "-n 2");
}

/// The figures `/metrics` would serve agree with what the run did.
fn check_metrics(text: &str, summary: &presence::pipeline::Summary, topics: &Topics) {
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(sum("presence_records_read_total{"), summary.lines, "{text}");
    let rejected: u64 = summary.rejected.values().sum();
    assert_eq!(sum("presence_records_rejected_total{"), rejected, "{text}");
    for topic in [&topics.walkins, &topics.walkin_counts, &topics.rejected] {
        let produced = sum(&format!(
            "presence_output_records_produced_total{{topic=\"{topic}\"}}"
        ));
        let acknowledged = sum(&format!(
            "presence_output_records_acknowledged_total{{topic=\"{topic}\"}}"
        ));
        assert!(
            produced > 0 && produced == acknowledged,
            "{topic}: {produced} produced, {acknowledged} acknowledged\n{text}"
        );
    }
    assert!(sum("presence_walkins_emitted_total") > 0, "{text}");
    assert!(
        sum("presence_end_to_end_latency_seconds_count") > 0,
        "{text}"
    );
    // Every record read is accepted, rejected or blank.
    assert_eq!(
        sum("presence_records_accepted_total{")
            + sum("presence_records_rejected_total{")
            + sum("presence_records_blank_total"),
        summary.lines,
        "{text}"
    );
    assert!(sum("presence_progress_messages_total") > 0, "{text}");
    assert!(
        text.contains("presence_open_visits{worker=\"0\"}"),
        "{text}"
    );
    assert!(
        text.contains("presence_consumer_lag{topic=\"probes\""),
        "{text}"
    );
}

#[test]
fn unreachable_broker_is_one_clear_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["run", "--brokers", "127.0.0.1:1", "--connect-timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("127.0.0.1:1") && !message.contains("panicked"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    // The client's explanation, once.
    assert_eq!(
        message.matches("Broker transport failure").count(),
        1,
        "{message}"
    );
}

#[test]
fn demo_shows_walkins_and_latency_and_ends_with_a_summary() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["demo", "--duration", "8s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let frames: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("walk-ins "))
        .collect();
    let number = |line: &str, word: &str| -> u64 {
        let at = line.find(word).unwrap() + word.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let recent: Vec<u64> = frames
        .iter()
        .map(|line| number(line, "in the last minute"))
        .collect();
    assert!(recent.len() >= 5, "a frame a second: {text}");
    // The panel moves while you watch: walk-ins of the last minute grow.
    assert!(
        recent.windows(2).filter(|w| w[1] != w[0]).count() >= 2 && recent.last() > recent.first(),
        "{recent:?}: {text}"
    );
    let summary = text
        .split("demo summary:")
        .nth(1)
        .unwrap_or_else(|| panic!("no closing summary: {text}"));
    assert!(summary.starts_with(" finished"), "{summary}");
    let walkins = number(
        summary.lines().find(|l| l.contains("walk-ins")).unwrap(),
        "walk-ins",
    );
    assert!(walkins > 0, "{summary}");
    let pipeline = summary
        .lines()
        .find(|l| l.contains("the pipeline"))
        .unwrap();
    let numbers = summary_numbers(pipeline);
    assert_eq!(
        numbers["read"],
        numbers["accepted"] + numbers["rejected"] + numbers["blank"],
        "{pipeline}"
    );
    assert!(
        numbers["rejected"] > 0,
        "the demo mixes in broken records: {pipeline}"
    );
    let latency = summary.lines().find(|l| l.contains("latency")).unwrap();
    let samples: u64 = latency
        .rsplit("(n=")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert!(samples > 0, "{latency}");
}

#[test]
fn ctrl_c_ends_the_demo_with_its_summary_and_status_zero() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["demo", "--duration", "5m"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Once a frame shows walk-ins, interrupt it.
    let mut text = String::new();
    loop {
        let line = seen
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo shows frames");
        text += &line;
        text.push('\n');
        if line.starts_with("walk-ins ") && !line.starts_with("walk-ins 0,") {
            break;
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while let Ok(line) = seen.recv_timeout(Duration::from_secs(30)) {
        text += &line;
        text.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("demo summary: stopped by Ctrl-C after"),
        "{text}"
    );
}

#[test]
fn load_generator_produces_every_record_it_counts() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for (name, partitions) in [("probes", 4), ("logins", 1), ("base-counts", 1)] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args([
            "produce",
            "--brokers",
            &brokers,
            "--rate",
            "0",
            "--days",
            "1",
            "--devices",
            "300",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let produced: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect(&text);
    let delivered: usize = ["probes", "logins", "base-counts"]
        .iter()
        .map(|topic| read_topic(&brokers, topic).len())
        .sum();
    assert!(produced > 1_000, "{text}");
    assert_eq!(delivered, produced, "{text}");
}

#[test]
fn an_idle_partition_does_not_stall_progress_and_shutdown_flushes() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    // Probe partition 1 never receives anything.
    for (name, partitions) in [("probes", 2), ("logins", 1), ("base-counts", 1)] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let topics = Topics::with_output_prefix("idle-");
    create_output_topics(&mock, &topics, 2);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let config = WorkloadConfig {
        days: 1,
        devices: 200,
        businesses: 4,
        probe_partitions: 1,
        ..WorkloadConfig::default()
    };
    for record in Workload::new(config).filter(|r| r.kind == Kind::Probe) {
        while producer
            .send(
                BaseRecord::<(), str>::to("probes")
                    .partition(0)
                    .payload(&record.line),
            )
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(TIMEOUT).unwrap();

    let shutdown = Arc::new(AtomicBool::new(false));
    let service = {
        let job = RunJob {
            output_partitions: 2,
            idle_timeout: Duration::from_millis(200),
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        let shutdown = Arc::clone(&shutdown);
        std::thread::spawn(move || {
            run(
                timely::Config::process(2),
                job,
                shutdown,
                Metrics::default(),
            )
        })
    };
    // The service runs until told to stop; progress must cover the walk-ins
    // while it runs, although partition 1 is silent.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let covered = loop {
        let walkins = read_topic(&brokers, &topics.walkins);
        let latest = walkins
            .iter()
            .filter_map(|(_, _, _, v)| v.as_ref())
            .map(|v| {
                serde_json::from_str::<Value>(v).unwrap()["time"]
                    .as_u64()
                    .unwrap()
            })
            .max();
        let frontier = read_topic(&brokers, &topics.progress)
            .last()
            .map(|(_, _, _, v)| {
                serde_json::from_str::<Value>(v.as_ref().unwrap()).unwrap()["frontier"]
                    .as_u64()
                    .unwrap()
            });
        if let (Some(latest), Some(frontier)) = (latest, frontier) {
            if frontier > latest {
                break frontier;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "progress never passed the walk-ins: {frontier:?} vs {latest:?}"
        );
        std::thread::yield_now();
    };
    assert!(covered < u64::MAX, "the service is still running");
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = service.join().unwrap().unwrap();
    assert!(summary.accepted[0] > 1_000, "{summary:?}");
    let last = progress_messages(&brokers, &topics).pop().unwrap();
    let last = last["frontier"].as_u64().unwrap();
    assert!(last > covered && last < u64::MAX, "{last} after {covered}");
}

#[test]
fn sigterm_stops_reading_flushes_and_exits_zero() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for (name, partitions) in [("probes", 2), ("logins", 1), ("base-counts", 1)] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let topics = Topics::with_output_prefix("term-");
    create_output_topics(&mock, &topics, 2);
    let config = WorkloadConfig {
        days: 1,
        devices: 200,
        businesses: 4,
        probe_partitions: 2,
        ..WorkloadConfig::default()
    };
    produce_and_backfill(
        &brokers,
        &Topics::default(),
        &config,
        tempfile::tempdir().unwrap().path(),
        false,
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["run", "--output-prefix", "term-", "--brokers", &brokers])
        .args(["--status-interval", "100ms"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Running, not stopping at the end: wait until it has published progress.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read_topic(&brokers, &topics.progress).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress from the service"
        );
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let last = progress_messages(&brokers, &topics).pop().unwrap();
    let frontier = last["frontier"].as_u64().unwrap();
    assert!(frontier < u64::MAX, "a real final frontier: {stderr}");
    // The summary adds up, and a status line was logged while it ran.
    let summary = stderr
        .lines()
        .find(|line| line.starts_with("stopped after"))
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let numbers = summary_numbers(summary);
    assert_eq!(
        numbers["read"],
        numbers["accepted"] + numbers["rejected"] + numbers["blank"],
        "{summary}"
    );
    assert!(
        stderr.contains("presence::status") && stderr.contains("records_per_second="),
        "{stderr}"
    );
    assert!(
        !read_topic(&brokers, &topics.walkins).is_empty(),
        "it wrote walk-ins before stopping"
    );
}

/// Each record of a batch the client cannot read (here: a wrong CRC) is
/// rejected as `corrupt` with its topic, partition and offset, exactly once,
/// and reading goes on past the batch — in the middle of a partition, at its end, and
/// as a partition's only batch. The readable records give what backfill of
/// the same records gives.
#[test]
fn corrupt_batches_are_rejected_once_and_reading_goes_on() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for (name, partitions) in [("probes", 2), ("logins", 1), ("base-counts", 1)] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let topics = Topics::default();
    create_output_topics(&mock, &topics, 2);
    let probe = |device: &str, minute: u64| {
        format!(
            r#"{{"device":"{device}","business":"shop","ts":{},"rssi":-50}}"#,
            1_700_000_000_000 + minute * 60_000
        )
    };
    let visit = |device: &str, from: u64| {
        (from..from + 8)
            .map(|m| probe(device, m))
            .collect::<Vec<_>>()
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let produce = |lines: &[String]| {
        for line in lines {
            producer
                .send(
                    BaseRecord::<(), str>::to("probes")
                        .partition(0)
                        .payload(line),
                )
                .unwrap();
        }
        producer.flush(TIMEOUT).unwrap();
    };
    let (first, second) = (visit("d1", 0), visit("d2", 10));
    let d3 = visit("d3", 10);
    let d3: Vec<&str> = d3.iter().map(String::as_str).collect();
    produce(&first);
    let middle = produce_corrupt_batch(&brokers, "probes", 0, &d3);
    produce(&second);
    let tail = produce_corrupt_batch(&brokers, "probes", 0, &d3[..2]);
    let alone = produce_corrupt_batch(&brokers, "probes", 1, &d3[..1]);
    assert_eq!((middle, tail, alone), (8, 8 + 8 + 8, 0));

    let job = RunJob {
        stop_at_end: true,
        output_partitions: 2,
        ..RunJob::new(brokers.clone(), topics.clone())
    };
    // A consumer stuck on a corrupt batch would never finish: fail instead.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let summary = run(
            timely::Config::process(2),
            job,
            Arc::new(AtomicBool::new(false)),
            Metrics::default(),
        );
        done.send(summary.map_err(|e| e.to_string())).unwrap();
    });
    let summary = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("run --stop-at-end finishes past corrupt batches")
        .unwrap();
    assert_eq!(summary.rejected.get("corrupt"), Some(&11), "{summary:?}");
    assert_eq!(summary.accepted[0], 16, "{summary:?}");

    let rejected: Vec<(String, u64, u64, String, String)> = read_topic(&brokers, &topics.rejected)
        .into_iter()
        .map(|(_, _, _, value)| {
            let v: Value = serde_json::from_str(&value.unwrap()).unwrap();
            (
                v["source"].as_str().unwrap().to_owned(),
                v["partition"].as_u64().unwrap(),
                v["offset"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
                v["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut places: Vec<_> = rejected
        .iter()
        .map(|(topic, partition, offset, reason, _)| {
            (topic.as_str(), *partition, *offset, reason.as_str())
        })
        .collect();
    places.sort();
    // Every record of every unreadable batch, once, by its own offset.
    let expected: Vec<_> = (8..16)
        .chain(24..26)
        .map(|offset| ("probes", 0, offset, "corrupt"))
        .chain([("probes", 1, 0, "corrupt")])
        .collect();
    assert_eq!(places, expected);
    assert!(
        rejected.iter().all(|r| r.4.contains("CRC")),
        "the detail says why: {rejected:?}"
    );

    // The readable records, backfilled from a file, give the same walk-ins.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probes.jsonl");
    std::fs::write(&file, [first, second].concat().join("\n")).unwrap();
    let out = dir.path().join("out");
    presence::backfill::run(
        timely::Config::thread(),
        presence::backfill::Job {
            probes: vec![file],
            out: out.clone(),
            ..Default::default()
        },
        Default::default(),
    )
    .unwrap();
    let expected = file_rows(&out.join("walkins"));
    assert_eq!(expected.len(), 2, "{expected:?}");
    assert_eq!(upsert_rows(&brokers, &topics.walkins), expected);
}

/// Every worker's input frontier holds back every output, so a worker with
/// no partition at all (more workers than partitions) must still let time
/// pass: a walk-in becomes visible while the service runs.
#[test]
fn a_worker_without_partitions_does_not_hold_back_outputs() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for name in ["probes", "logins", "base-counts"] {
        mock.create_topic(name, 1, 1).unwrap();
    }
    let topics = Topics::with_output_prefix("spare-");
    create_output_topics(&mock, &topics, 1);
    let shutdown = Arc::new(AtomicBool::new(false));
    let service = {
        let job = RunJob {
            output_partitions: 1,
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        let shutdown = Arc::clone(&shutdown);
        // Four workers, three partitions: worker 3 reads nothing.
        std::thread::spawn(move || {
            run(
                timely::Config::process(4),
                job,
                shutdown,
                Metrics::default(),
            )
        })
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "presence-test")
        .create()
        .unwrap();
    let first_message = |topic: &str| {
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .unwrap();
        rdkafka::consumer::Consumer::assign(&consumer, &list).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                break rdkafka::Message::payload(&message).unwrap().to_vec();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nothing was written to {topic} while the service ran"
            );
        }
    };
    // First a bad record: rejections are written at once, so once it is
    // visible the service runs and the spare worker has taken its first steps.
    producer
        .send(BaseRecord::<(), str>::to("probes").payload("not json"))
        .unwrap();
    producer.flush(TIMEOUT).unwrap();
    first_message(&topics.rejected);
    for minute in 0..8u64 {
        let line = format!(
            r#"{{"device":"d","business":"b","ts":{},"rssi":-50}}"#,
            1_700_000_000_000 + minute * 60_000
        );
        producer
            .send(BaseRecord::<(), str>::to("probes").payload(&line))
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();

    let walkin = first_message(&topics.walkins);
    let walkin: Value = serde_json::from_slice(&walkin).unwrap();
    assert_eq!(walkin["device"], "d");
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    service.join().unwrap().unwrap();
}

/// Probes stamped with the wall clock, `ts` spread over a second: a visit
/// that qualifies at once under `quick_params`.
fn fresh_visit(device: &str) -> Vec<String> {
    let now = presence::clock::now_ms();
    (0..5)
        .map(|i| {
            format!(
                r#"{{"device":"{device}","business":"shop","ts":{},"rssi":-50}}"#,
                now + i * 250
            )
        })
        .collect()
}

/// Detection parameters in seconds: visits qualify and end within a test.
fn quick_params() -> presence::params::Params {
    presence::params::Params {
        session_gap: 1_000,
        min_dwell: 1_000,
        min_probes: 3,
        allowed_lateness: 500,
        ..Default::default()
    }
}

fn send_all(producer: &BaseProducer, topic: &str, partition: i32, lines: &[String]) {
    for line in lines {
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(partition)
                    .payload(line),
            )
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
}

/// The walk-ins of `device` in the walk-ins topic.
fn walkins_of(brokers: &str, topics: &Topics, device: &str) -> usize {
    upsert_rows(brokers, &topics.walkins)
        .iter()
        .filter(|row| row.contains(&format!("\"device\":\"{device}\"")))
        .count()
}

/// Waits (bounded) until `done` holds, re-checking as fast as it can.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// A quiet spell longer than the idle timeout on every probe partition
/// frees the window state (the event-time frontier follows the wall clock,
/// never jumping to infinity), and probes that arrive afterwards, stamped
/// with the wall clock, are accepted — not late — and make walk-ins.
#[test]
fn after_every_partition_was_idle_fresh_probes_are_not_late() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for (name, partitions) in [("probes", 2), ("logins", 1), ("base-counts", 1)] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let topics = Topics::with_output_prefix("quiet-");
    create_output_topics(&mock, &topics, 2);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::default();
    let service = {
        let job = RunJob {
            params: quick_params(),
            output_partitions: 2,
            idle_timeout: Duration::from_millis(300),
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    send_all(&producer, "probes", 0, &fresh_visit("before-0"));
    send_all(&producer, "probes", 1, &fresh_visit("before-1"));
    wait_until("the first walk-ins", || {
        walkins_of(&brokers, &topics, "before-0") == 1
            && walkins_of(&brokers, &topics, "before-1") == 1
    });
    // Silence on every partition: the visits end and their state is freed,
    // while every worker's promise stays a real event time.
    wait_until("the window state to be freed", || {
        metrics.read(|f| {
            f.workers.len() == 2
                && f.workers
                    .values()
                    .all(|w| w.window.keys == 0 && w.window.timestamps == 0)
        })
    });
    let delays: Vec<Option<u64>> =
        metrics.read(|f| f.workers.values().map(|w| w.frontier_delay_ms).collect());
    assert!(
        delays.iter().all(|d| d.is_some_and(|d| d < 60_000)),
        "the event-time frontier follows the wall clock: delays {delays:?}"
    );
    // Shoppers arrive again, on both partitions.
    send_all(&producer, "probes", 0, &fresh_visit("after-0"));
    send_all(&producer, "probes", 1, &fresh_visit("after-1"));
    wait_until("walk-ins after the quiet spell", || {
        walkins_of(&brokers, &topics, "after-0") == 1
            && walkins_of(&brokers, &topics, "after-1") == 1
    });
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = service.join().unwrap().unwrap();
    assert_eq!(summary.accepted[0], 20, "{summary:?}");
    assert_eq!(summary.rejected_total(), 0, "none late: {summary:?}");
    assert!(read_topic(&brokers, &topics.rejected).is_empty());
}

/// While outputs change, progress is published at most once per
/// --progress-interval; while nothing changes, at most once a second — and
/// still, so readers see the frontier move. The final frontier is a real
/// time above every output's.
#[test]
fn progress_is_published_by_interval_when_busy_and_once_a_second_when_quiet() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for (name, partitions) in [("probes", 2), ("logins", 1), ("base-counts", 1)] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let topics = Topics::with_output_prefix("volume-");
    create_output_topics(&mock, &topics, 2);
    let shutdown = Arc::new(AtomicBool::new(false));
    let interval = 100;
    let service = {
        let job = RunJob {
            params: quick_params(),
            output_partitions: 2,
            progress_interval: Duration::from_millis(interval),
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        let shutdown = Arc::clone(&shutdown);
        std::thread::spawn(move || {
            run(
                timely::Config::process(2),
                job,
                shutdown,
                Metrics::default(),
            )
        })
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let frontier = || {
        progress_messages(&brokers, &topics)
            .last()
            .map_or(0, |p| p["frontier"].as_u64().unwrap())
    };
    wait_until("the service to publish progress", || frontier() > 0);
    // Busy: a broken record (an output: a rejection) every 5 ms for 2 s.
    let busy_from = presence::clock::now_ms();
    let mut sent = 0;
    while presence::clock::now_ms() < busy_from + 2_000 {
        let due = busy_from + sent * 5;
        while presence::clock::now_ms() < due {
            std::thread::yield_now();
        }
        producer
            .send(
                BaseRecord::<(), str>::to("probes")
                    .partition((sent % 2) as i32)
                    .payload("{broken"),
            )
            .unwrap();
        producer.poll(Duration::ZERO);
        sent += 1;
    }
    producer.flush(TIMEOUT).unwrap();
    let busy_until = presence::clock::now_ms();
    // Quiet: nothing for 3.5 s of logical time after the last rejection is out.
    wait_until("the rejections to be written", || {
        read_topic(&brokers, &topics.rejected).len() as u64 == sent
    });
    let quiet_from = frontier().max(busy_until) + 500;
    let quiet_until = quiet_from + 3_500;
    wait_until("the frontier to pass the quiet stretch", || {
        frontier() > quiet_until
    });
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    service.join().unwrap().unwrap();

    let frontiers: Vec<u64> = progress_messages(&brokers, &topics)
        .iter()
        .map(|p| p["frontier"].as_u64().unwrap())
        .collect();
    let within = |from: u64, until: u64| {
        frontiers
            .iter()
            .filter(|&&f| f > from && f <= until)
            .count() as u64
    };
    let busy = within(busy_from + 200, busy_until);
    let busy_span = busy_until - busy_from - 200;
    assert!(
        busy <= busy_span / interval + 1,
        "{busy} messages in {busy_span} ms busy: {frontiers:?}"
    );
    assert!(
        busy > busy_span / 1_000 + 1,
        "more than the quiet rate while busy: {busy} in {busy_span} ms"
    );
    let quiet = within(quiet_from, quiet_until);
    assert!(
        (2..=4).contains(&quiet),
        "{quiet} messages in 3.5 s quiet: {frontiers:?}"
    );
    let last = *frontiers.last().unwrap();
    let latest_output = read_topic(&brokers, &topics.rejected).len();
    assert_eq!(latest_output as u64, sent);
    assert!(
        last < u64::MAX && last > quiet_until,
        "final frontier {last}"
    );
}

/// A misnamed input topic ends the run with one line naming it — before
/// any output topic is created, so a typo leaves nothing behind.
#[test]
fn a_missing_input_topic_fails_before_any_output_topic_is_created() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for name in ["probes", "logins", "base-counts"] {
        mock.create_topic(name, 1, 1).unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["run", "--brokers", &brokers, "--logins-topic", "logns"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("\"logns\" does not exist") && message.contains("--logins-topic"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, TIMEOUT).unwrap();
    let mut names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    names.sort();
    assert_eq!(
        names,
        ["base-counts", "logins", "probes"],
        "only the inputs exist"
    );
}

/// `produce --live` stamps every record with the wall clock when it is due:
/// shoppers arriving now, which a live `run` accepts.
#[test]
fn live_load_is_stamped_with_the_wall_clock() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for (name, partitions) in [("probes", 2), ("logins", 1), ("base-counts", 1)] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let from = presence::clock::now_ms();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args([
            "produce",
            "--brokers",
            &brokers,
            "--live",
            "--rate",
            "400",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    let until = presence::clock::now_ms();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let records: Vec<Value> = ["probes", "logins"]
        .iter()
        .flat_map(|topic| read_topic(&brokers, topic))
        .filter_map(|(_, _, _, value)| serde_json::from_str(&value?).ok())
        .collect();
    assert!(records.len() > 300, "{} records: {text}", records.len());
    for record in &records {
        let ts = record["ts"].as_u64().unwrap();
        assert!(
            ts >= from && ts <= until,
            "ts {ts} outside [{from}, {until}]"
        );
    }
}
