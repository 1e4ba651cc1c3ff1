//! `presence run --stop-at-end` through librdkafka's in-process mock broker:
//! the last value per key of each upsert topic equals what file backfill
//! computes from the same records, and the progress topic only grows.

use presence::model::output::Output;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;

use presence::harness::generator::{Workload, WorkloadConfig};
use presence::model::ingest::Kind;
use presence::observe::metrics::Metrics;
use presence::service::{run, RunJob, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

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
fn check_metrics(text: &str, summary: &presence::model::summary::Summary, topics: &Topics) {
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(sum("presence_records_read_total{"), summary.lines, "{text}");
    let rejected: u64 = summary.rejected.values().sum();
    assert_eq!(sum("presence_records_rejected_total{"), rejected, "{text}");
    for topic in [
        &topics[Output::Walkins],
        &topics[Output::WalkinCounts],
        &topics[Output::Rejected],
    ] {
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
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence")).args([
            "run",
            "--brokers",
            "127.0.0.1:1",
            "--connect-timeout",
            "1s",
            // Status lines are due while it connects, but there is no
            // status before it is connected: the error is the one line.
            "--status-interval",
            "100ms",
        ]),
    );
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

/// A number after `word` in `line`.
fn number_after(line: &str, word: &str) -> u64 {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))
        + word.len();
    line[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {word:?} in {line:?}"))
}

/// The demo's closing summary, from its stderr: the read records add up,
/// and broken records were mixed in. Returns the walk-ins and the latency
/// samples it reports.
fn demo_summary(text: &str, ending: &str) -> (u64, u64) {
    let summary = text
        .split("demo summary:")
        .nth(1)
        .unwrap_or_else(|| panic!("no closing summary: {text}"));
    assert!(summary.starts_with(ending), "{summary}");
    let walkins = number_after(
        summary.lines().find(|l| l.contains("walk-ins")).unwrap(),
        "walk-ins",
    );
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
    let latency = summary.lines().find(|l| l.contains("latency")).unwrap();
    let samples: u64 = latency
        .rsplit("(n=")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    (walkins, samples)
}

/// A demo that runs its course ends with status 0 and its summary, after
/// showing frames. (What it shows depends on how much the machine did in
/// its 8 s: see the Ctrl-C test for what must appear.)
#[test]
fn the_demo_runs_its_course_and_ends_with_a_summary() {
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence")).args([
            "demo",
            "--duration",
            "8s",
        ]),
    );
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(
        text.lines().any(|line| line.starts_with("in stores now ")),
        "a frame: {text}"
    );
    // The frames are progress (stderr), the summary the result (stdout).
    let result = String::from_utf8_lossy(&output.stdout);
    assert!(!result.contains("in stores now"), "{result}");
    demo_summary(&result, " finished");
    // The closing figures are the panel's: the latency of the last frame
    // (drawn at the stop; walk-ins flushed at shutdown are not timed), and
    // the rate over the 8 s it produced, not over the drain after.
    let last_frame = text
        .lines()
        .rfind(|line| line.starts_with("latency "))
        .unwrap_or_else(|| panic!("a frame's latency: {text}"));
    let closing = result
        .lines()
        .find(|line| line.trim_start().starts_with("latency "))
        .unwrap();
    assert_eq!(closing.trim(), last_frame.trim(), "{text}\n{result}");
    let produced = result.lines().find(|l| l.contains("produced")).unwrap();
    let records = number_after(produced, "produced") as f64;
    let seconds: f64 = produced
        .split(" records in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{produced}"));
    let rate: f64 = produced
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{produced}"));
    assert!(
        (8.0..8.5).contains(&seconds),
        "produced for 8 s: {produced}"
    );
    assert!(
        (rate - records / seconds).abs() <= records / seconds * 0.01 + 1.0,
        "the rate is over the producing time: {produced}"
    );
}

/// The demo's panel moves while you watch: walk-ins appear and their count
/// changes from frame to frame, and it shows phones in stores now. Ctrl-C then ends it with its summary
/// (walk-ins, latency samples, broken records rejected) and status 0.
#[test]
fn ctrl_c_ends_the_demo_with_its_summary_and_status_zero() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["demo", "--duration", "5m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = stderr_lines(&mut child);
    // Once two frames have shown different numbers of walk-ins (not 0),
    // and phones in stores now (read from the `present` topic), interrupt it.
    let mut text = String::new();
    let mut counts = BTreeSet::new();
    let mut present = 0;
    let deadline = std::time::Instant::now() + PATIENCE;
    while counts.len() < 2 {
        let line = seen
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_else(|_| panic!("no two frames with walk-ins in {PATIENCE:?}: {text}"));
        text += &line;
        text.push('\n');
        if line.starts_with("in stores now ") {
            present = present.max(number_after(&line, "in stores now"));
            let walkins = number_after(&line, "walk-ins");
            if walkins > 0 && present > 0 {
                counts.insert(walkins);
            }
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_child(&mut child, "the demo after Ctrl-C");
    // The pipe is closed once it exited: the rest of its lines are there.
    text.extend(seen.iter().map(|line| line + "\n"));
    assert_eq!(status.code(), Some(0), "{text}");
    let mut result = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut result).unwrap();
    let text = result;
    let (walkins, samples) = demo_summary(&text, " stopped by Ctrl-C after");
    assert!(
        walkins >= *counts.last().unwrap(),
        "the summary has the walk-ins the frames showed: {text}"
    );
    assert!(samples > 0, "walk-ins read back have latencies: {text}");
    let pipeline = text.lines().find(|l| l.contains("the pipeline")).unwrap();
    assert!(
        summary_numbers(pipeline)["rejected"] > 0,
        "the demo mixes in broken records: {pipeline}"
    );
}

#[test]
fn load_generator_produces_every_record_it_counts() {
    let mock = mock_with(&[("probes", 4), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence")).args([
            "produce",
            "--brokers",
            &brokers,
            "--rate",
            "0",
            "--days",
            "1",
            "--devices",
            "300",
        ]),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // What it produced is its result: on stdout.
    let text = String::from_utf8_lossy(&output.stdout);
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

/// The latest `time` of the rows in `topic`, if any.
fn latest_time(brokers: &str, topic: &str) -> Option<u64> {
    read_topic(brokers, topic)
        .iter()
        .filter_map(|(_, _, _, v)| v.as_ref())
        .map(|v| {
            serde_json::from_str::<Value>(v).unwrap()["time"]
                .as_u64()
                .unwrap()
        })
        .max()
}

/// The last frontier in the progress topic, if any.
fn last_frontier(brokers: &str, topics: &Topics) -> Option<u64> {
    progress_messages(brokers, topics)
        .last()
        .map(|p| p["frontier"].as_u64().unwrap())
}

/// Probe partition 1 never delivers anything; its worker (of two) reads
/// nothing else that promises event time. Only once it counts as idle
/// (caught up and silent for `--idle-timeout`) does it promise the wall
/// clock less the lateness, so that the event-time frontier passes the
/// history read from partition 0 and the window state is freed while the
/// service runs. Progress passes the walk-ins meanwhile (its frontier is
/// logical time), and a shutdown flushes and publishes a real final
/// frontier.
#[test]
fn a_silent_partition_becomes_idle_so_state_is_freed_and_shutdown_flushes() {
    // Probe partition 1 never receives anything.
    let mock = mock_with(&[("probes", 2), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("idle-");
    create_output_topics(&mock, &topics, 2);
    let producer: BaseProducer = client(&brokers).create().unwrap();
    let config = WorkloadConfig {
        days: 1,
        devices: 200,
        businesses: 4,
        probe_partitions: 1,
        ..WorkloadConfig::default()
    };
    let mut produced = 0;
    for record in Workload::new(config).filter(|r| r.kind == Kind::Probe) {
        send(&producer, "probes", 0, &record.line);
        produced += 1;
    }
    producer.flush(TIMEOUT).unwrap();

    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::default();
    let job = RunJob {
        output_partitions: 2,
        idle_timeout: Duration::from_millis(200),
        ..RunJob::new(brokers.clone(), topics.clone())
    };
    let lateness = job.params.allowed_lateness;
    let service = {
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    // Walk-ins were found, and the state that found them is gone: the
    // event-time frontier passed them while the service runs, promised by
    // both workers from the wall clock less the lateness (never more).
    wait_until("walk-ins, then the window state freed", || {
        latest_time(&brokers, &topics[Output::Walkins]).is_some()
            && metrics.read(|f| {
                f.workers.len() == 2
                    && f.workers
                        .values()
                        .all(|w| w.window.keys == 0 && w.window.timestamps == 0)
            })
    });
    let delays: Vec<Option<u64>> =
        metrics.read(|f| f.workers.values().map(|w| w.frontier_delay_ms).collect());
    assert!(
        delays.iter().all(|d| d.is_some_and(|d| d >= lateness)),
        "each worker promises at most the wall clock less {lateness} ms: delays {delays:?}"
    );
    // Progress covers the walk-ins while it runs.
    let latest = latest_time(&brokers, &topics[Output::Walkins]).unwrap();
    wait_until("progress past the walk-ins", || {
        last_frontier(&brokers, &topics).is_some_and(|f| f > latest)
    });
    let covered = last_frontier(&brokers, &topics).unwrap();
    assert!(covered < u64::MAX, "the service is still running");
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = service.join().unwrap().unwrap();
    assert_eq!(summary.lines, produced, "{summary:?}");
    let last = last_frontier(&brokers, &topics).unwrap();
    assert!(last > covered && last < u64::MAX, "{last} after {covered}");
}

/// SIGTERM while the service runs and input keeps arriving: it stops
/// reading, writes and flushes what it read (the state as of its final
/// frontier is backfill of the records before its final offsets, although
/// more records followed them), publishes a real final frontier, prints a
/// summary that adds up, and exits 0.
#[test]
fn sigterm_stops_reading_flushes_and_exits_zero() {
    let mock = mock_with(&[("probes", 2), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("term-");
    create_output_topics(&mock, &topics, 2);
    // Two days of records, sent over about a minute (or until the test is
    // done with them), kept as the files of a reference backfill.
    let records: Vec<_> = Workload::new(WorkloadConfig {
        days: 2,
        devices: 300,
        businesses: 4,
        probe_partitions: 2,
        ..WorkloadConfig::default()
    })
    .collect();
    let feeder = Feeder::start(
        &brokers,
        &Topics::default(),
        records,
        Duration::from_secs(60),
        false,
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["run", "--output-prefix", "term-", "--brokers", &brokers])
        .args(["--status-interval", "100ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = stderr_lines(&mut child);
    // Running, not stopping at the end: once it has logged its status and
    // written walk-ins, stop it while records keep coming.
    let mut stderr = String::new();
    wait_until("a status line and walk-ins", || {
        stderr.extend(seen.try_iter().map(|line| line + "\n"));
        stderr.contains("presence::observe::status")
            && stderr.contains("records_per_second=")
            && !read_topic(&brokers, &topics[Output::Walkins]).is_empty()
    });
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_child(&mut child, "the service after SIGTERM");
    let files = feeder.stop();
    stderr.extend(seen.iter().map(|line| line + "\n"));
    assert_eq!(status.code(), Some(0), "{stderr}");
    let last = progress_messages(&brokers, &topics).pop().unwrap();
    let frontier = last["frontier"].as_u64().unwrap();
    assert!(frontier < u64::MAX, "a real final frontier: {stderr}");
    // What it read is what it wrote.
    let dir = tempfile::tempdir().unwrap();
    let reference = backfill_prefix(
        &files,
        &reflected(&last, &Topics::default()),
        &dir.path().join("reflected"),
    );
    for (topic, folder) in row_topics(&topics) {
        assert_eq!(
            upsert_rows(&brokers, topic),
            file_rows(&reference.join(folder)),
            "{topic} against backfill of the records its final offsets name: {last}"
        );
    }
    // The summary (a result: stdout) adds up to the records the final
    // offsets name.
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("stopped after"))
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let numbers = summary_numbers(summary);
    assert_eq!(
        numbers["read"],
        numbers["accepted"] + numbers["rejected"] + numbers["blank"],
        "{summary}"
    );
    let named: usize = reflected(&last, &Topics::default()).values().sum();
    assert_eq!(numbers["read"], named as u64, "{summary}: {last}");
}

/// Each record of a batch the client cannot read (here: a wrong CRC) is
/// rejected as `corrupt` with its topic, partition and offset, exactly once,
/// and reading goes on past the batch — in the middle of a partition, at its end, and
/// as a partition's only batch. The readable records give what backfill of
/// the same records gives.
#[test]
fn corrupt_batches_are_rejected_once_and_reading_goes_on() {
    let mock = mock_with(&[("probes", 2), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
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

    let rejected: Vec<(String, u64, u64, String, String)> =
        read_topic(&brokers, &topics[Output::Rejected])
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
    assert_eq!(upsert_rows(&brokers, &topics[Output::Walkins]), expected);
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
        let deadline = std::time::Instant::now() + PATIENCE;
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
    first_message(&topics[Output::Rejected]);
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

    let walkin = first_message(&topics[Output::Walkins]);
    let walkin: Value = serde_json::from_slice(&walkin).unwrap();
    assert_eq!(walkin["device"], "d");
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    service.join().unwrap().unwrap();
}

/// Five probes of `device`, `ts` from `from` to `from` + 1 s: a visit
/// that qualifies at once under `quick_params`.
fn visit_at(device: &str, from: u64) -> Vec<String> {
    (0..5)
        .map(|i| {
            format!(
                r#"{{"device":"{device}","business":"shop","ts":{},"rssi":-50}}"#,
                from + i * 250
            )
        })
        .collect()
}

/// Detection parameters in seconds: visits qualify and end within a test.
fn quick_params() -> presence::model::params::Params {
    presence::model::params::Params {
        session_gap: 1_000,
        min_dwell: 1_000,
        min_probes: 3,
        allowed_lateness: 500,
        ..Default::default()
    }
}

fn send_all(producer: &BaseProducer, topic: &str, partition: i32, lines: &[String]) {
    for line in lines {
        send(producer, topic, partition, line);
    }
    producer.flush(TIMEOUT).unwrap();
}

/// The walk-ins of `device` in the walk-ins topic.
fn walkins_of(brokers: &str, topics: &Topics, device: &str) -> usize {
    upsert_rows(brokers, &topics[Output::Walkins])
        .iter()
        .filter(|row| row.contains(&format!("\"device\":\"{device}\"")))
        .count()
}

/// Whether each of `workers` workers has reported, since every output
/// below `time` was acknowledged (so after the window operator made them),
/// an empty window state and an event-time promise.
fn state_freed_after(metrics: &Metrics, workers: usize, time: u64) -> bool {
    metrics.read(|f| {
        f.workers.len() == workers
            && f.workers.values().all(|w| {
                w.output_frontier.is_some_and(|f| f > time)
                    && w.window.keys == 0
                    && w.window.timestamps == 0
                    && w.frontier_delay_ms.is_some()
            })
    })
}

/// The reason and detail of the rejection of `topic`/`partition` at
/// `offset`, once written.
fn rejection_at(
    brokers: &str,
    topic: &str,
    partition: u64,
    offset: u64,
) -> Option<(String, String)> {
    read_topic(brokers, topic)
        .into_iter()
        .find_map(|(_, _, _, value)| {
            let v: Value = serde_json::from_str(&value?).unwrap();
            (v["partition"] == partition && v["offset"] == offset).then(|| {
                (
                    v["reason"].as_str().unwrap().to_owned(),
                    v["detail"].as_str().unwrap().to_owned(),
                )
            })
        })
}

/// A quiet spell longer than the idle timeout on every probe partition
/// frees the window state: each worker promises the wall clock less the
/// lateness (never more, never everything). Then old data is late: a probe
/// above its partition's high-water mark, but below what was promised
/// meanwhile, is rejected as `late` for that reason. Probes stamped ahead
/// of the wall clock (as clocks of routers may be, by less than
/// max-future) are never late because of it, and make walk-ins.
#[test]
fn after_a_quiet_spell_old_probes_are_late_and_probes_ahead_of_the_clock_are_not() {
    let mock = mock_with(&[("probes", 2), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("quiet-");
    create_output_topics(&mock, &topics, 2);
    let producer: BaseProducer = client(&brokers).create().unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::default();
    let params = quick_params();
    let service = {
        let job = RunJob {
            params,
            output_partitions: 2,
            idle_timeout: Duration::from_millis(300),
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    let start = presence::model::clock::now_ms();
    send_all(&producer, "probes", 0, &visit_at("before-0", start));
    send_all(&producer, "probes", 1, &visit_at("before-1", start));
    wait_until("the first walk-ins", || {
        walkins_of(&brokers, &topics, "before-0") == 1
            && walkins_of(&brokers, &topics, "before-1") == 1
    });
    // Silence on every partition: the visits end and their state is freed.
    let made = latest_time(&brokers, &topics[Output::Walkins]).unwrap();
    wait_until("the window state to be freed", || {
        state_freed_after(&metrics, 2, made)
    });
    let delays: Vec<Option<u64>> =
        metrics.read(|f| f.workers.values().map(|w| w.frontier_delay_ms).collect());
    assert!(
        delays
            .iter()
            .all(|d| d.is_some_and(|d| d >= params.allowed_lateness)),
        "each worker promises at most the wall clock less the lateness: delays {delays:?}"
    );
    // Old data, 0.5 s after the partition's last probe (within the
    // lateness of its high-water mark), arriving after the state of visits
    // ending then was freed: once its worker's promise has passed it (the
    // promise follows the wall clock), it is late.
    let old = start + 1_000 + 500;
    let mut offset = 5;
    let (reason, detail) = wait_for("an old probe to be rejected", PATIENCE, || {
        send_all(
            &producer,
            "probes",
            0,
            &[format!(
                r#"{{"device":"old","business":"shop","ts":{old},"rssi":-50}}"#
            )],
        );
        let read = |m: &Metrics| {
            m.read(|f| {
                f.partitions
                    .get(&("probes".to_owned(), 0))
                    .map_or(0, |p| p.read)
            })
        };
        wait_until("the old probe to be read", || read(&metrics) > offset);
        let verdict = wait_for("the old probe's verdict", PATIENCE, || {
            match rejection_at(&brokers, &topics[Output::Rejected], 0, offset) {
                Some(rejection) => Some(Some(rejection)),
                // Accepted: no rejection once every output of its time is out.
                None => {
                    state_freed_after(&metrics, 2, presence::model::clock::now_ms()).then_some(None)
                }
            }
        });
        offset += 1;
        verdict
    });
    assert_eq!(reason, "late", "{detail}");
    assert!(detail.contains("idle"), "{detail}");
    // Shoppers arrive again, stamped a minute ahead of the wall clock.
    let ahead = presence::model::clock::now_ms() + 60_000;
    send_all(&producer, "probes", 0, &visit_at("after-0", ahead));
    send_all(&producer, "probes", 1, &visit_at("after-1", ahead));
    wait_until("walk-ins after the quiet spell", || {
        walkins_of(&brokers, &topics, "after-0") == 1
            && walkins_of(&brokers, &topics, "after-1") == 1
    });
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = service.join().unwrap().unwrap();
    let late = summary.rejected.get("late").copied().unwrap_or(0);
    assert_eq!(late, 1, "only the last old probe: {summary:?}");
    assert_eq!(summary.rejected_total(), 1, "{summary:?}");
    assert_eq!(
        summary.lines,
        20 + offset - 5,
        "two visits a partition and the old probes: {summary:?}"
    );
}

/// A partition with a backlog is never idle, however slowly it is read:
/// with `--idle-timeout 0` and every request to the broker taking 50 ms,
/// a day of history is read in many small fetches with silences between
/// them, yet none of it is rejected as late (an idle partition would have
/// promised the wall clock), and the outputs are backfill's.
#[test]
fn a_partition_with_a_backlog_is_never_idle() {
    let mock = mock_with(&[("probes", 1), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("backlog-");
    create_output_topics(&mock, &topics, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = WorkloadConfig {
        days: 1,
        devices: 200,
        businesses: 4,
        probe_partitions: 1,
        login_chance: 0.5,
        broken_chance: 0.01,
        ..WorkloadConfig::default()
    };
    produce_and_backfill(&brokers, &Topics::default(), &config, dir.path(), false);
    mock.broker_round_trip_time(1, Duration::from_millis(50))
        .unwrap();
    let mut job = RunJob {
        stop_at_end: true,
        output_partitions: 1,
        idle_timeout: Duration::ZERO,
        ..RunJob::new(brokers.clone(), topics.clone())
    };
    job.kafka
        .settings
        .add_pair("max.partition.fetch.bytes=4096", "the test".into())
        .unwrap();
    let metrics = Metrics::default();
    let summary = run(
        timely::Config::process(1),
        job,
        Arc::new(AtomicBool::new(false)),
        metrics.clone(),
    )
    .unwrap();
    assert!(summary.accepted[0] > 1_000, "{summary:?}");
    check_outputs(&brokers, &topics, &dir.path().join("out"), "a slow backlog");
}

/// While outputs change, progress is published at most once per
/// --progress-interval; while nothing changes, at most once a second — and
/// still, so readers see the frontier move. (Spacing is judged by the
/// messages' timestamps, which the publisher's clock sets: a slow machine
/// publishes less often, never more.) The final frontier is a real time
/// above every output's.
#[test]
fn progress_is_published_by_interval_when_busy_and_once_a_second_when_quiet() {
    let mock = mock_with(&[("probes", 2), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
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
    let producer: BaseProducer = client(&brokers).set("linger.ms", "1").create().unwrap();
    // (frontier, timestamp) of each progress message.
    let progress = || -> Vec<(u64, i64)> {
        read_messages(&brokers, &topics.progress)
            .into_iter()
            .map(|m| {
                let v: Value = serde_json::from_str(m.value.as_deref().unwrap()).unwrap();
                (v["frontier"].as_u64().unwrap(), m.timestamp)
            })
            .collect()
    };
    wait_until("the service to publish progress", || !progress().is_empty());
    // Busy: a broken record (an output: a rejection) every 5 ms, until two
    // progress messages published less than a second apart have seen it.
    let busy_from = progress().len();
    let mut sent = 0;
    wait_until(
        "progress faster than once a second while outputs change",
        || {
            for _ in 0..10 {
                send(&producer, "probes", (sent % 2) as i32, "{broken");
                producer.poll(Duration::from_millis(5));
                sent += 1;
            }
            progress()[busy_from..]
                .windows(2)
                .any(|w| w[1].1 - w[0].1 < 1_000)
        },
    );
    producer.flush(TIMEOUT).unwrap();
    wait_until("the rejections to be written", || {
        read_topic(&brokers, &topics[Output::Rejected]).len() as u64 == sent
    });
    // Quiet: once a message's frontier is above the last rejection's time
    // (its Kafka timestamp), no output changes: messages still come.
    let last_output = read_messages(&brokers, &topics[Output::Rejected])
        .iter()
        .map(|m| m.timestamp)
        .max()
        .unwrap();
    let quiet_messages = || {
        progress()
            .iter()
            .filter(|(frontier, _)| *frontier as i64 > last_output)
            .count()
    };
    wait_until("three messages while nothing changes", || {
        quiet_messages() >= 3
    });
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    service.join().unwrap().unwrap();

    let all = progress();
    let final_frontier = all.last().unwrap().0;
    let published = &all[..all.len() - 1]; // the final message is not paced
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "frontiers grow: {all:?}"
    );
    // Every message after the first waits out the interval.
    let spacing: Vec<i64> = published.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(
        spacing.iter().all(|&ms| ms >= interval as i64 - 1),
        "at most one message per {interval} ms: spacing {spacing:?}"
    );
    // After a message whose frontier passed every output, nothing changed
    // until the next: a second apart at least.
    let quiet: Vec<i64> = published
        .windows(2)
        .filter(|w| w[0].0 as i64 > last_output)
        .map(|w| w[1].1 - w[0].1)
        .collect();
    assert!(quiet.len() >= 2, "{all:?}");
    assert!(
        quiet.iter().all(|&ms| ms >= 999),
        "at most one message a second while quiet: spacing {quiet:?}"
    );
    let latest_output = read_topic(&brokers, &topics[Output::Rejected]).len();
    assert_eq!(latest_output as u64, sent);
    assert!(final_frontier < u64::MAX, "final frontier {final_frontier}");
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
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence")).args([
            "run",
            "--brokers",
            &brokers,
            "--logins-topic",
            "logns",
        ]),
    );
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
    let mock = mock_with(&[("probes", 2), ("logins", 1), ("base-counts", 1)]);
    let brokers = mock.bootstrap_servers();
    let from = presence::model::clock::now_ms();
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence")).args([
            "produce",
            "--brokers",
            &brokers,
            "--live",
            "--rate",
            "400",
            "--duration",
            "1s",
        ]),
    );
    let until = presence::model::clock::now_ms();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // As many as it says (on stdout) it produced (how many fit in 1 s is
    // the machine's business), each stamped while it ran.
    let text = String::from_utf8_lossy(&output.stdout);
    let produced: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect(&text);
    let messages: Vec<Option<String>> = ["probes", "logins", "base-counts"]
        .iter()
        .flat_map(|topic| read_topic(&brokers, topic))
        .map(|(_, _, _, value)| value)
        .collect();
    assert_eq!(messages.len(), produced, "{text}");
    let records: Vec<Value> = messages
        .into_iter()
        .filter_map(|value| serde_json::from_str(&value?).ok())
        .filter(|record: &Value| record.get("ts").is_some())
        .collect();
    assert!(!records.is_empty(), "{text}");
    for record in &records {
        let ts = record["ts"].as_u64().unwrap();
        assert!(
            ts >= from && ts <= until,
            "ts {ts} outside [{from}, {until}]"
        );
    }
}
