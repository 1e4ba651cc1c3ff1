//! Durable state (`--checkpoint-dir`): restarts, the backfill hand-off,
//! refusals and fallbacks, against librdkafka's in-process mock broker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::input::{day, Input};
use common::*;

use presence::backfill::{self, Job, Progress};
use presence::model::output::Output;
use presence::model::params::Params;
use presence::model::summary::Summary;
use presence::observe::metrics::Metrics;
use presence::service::{run, CheckpointSettings, RunError, RunJob, Topics};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, Producer};

fn mock_with_inputs() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = mock_inputs();
    create_output_topics(&mock, &Topics::default(), 2);
    mock
}

fn job(brokers: &str, dir: &Path) -> RunJob {
    RunJob {
        stop_at_end: true,
        output_partitions: 2,
        checkpoint: Some(CheckpointSettings {
            dir: dir.into(),
            interval: Duration::from_secs(1),
            reset: false,
            kept: presence::checkpoint::store::MANIFESTS_KEPT,
        }),
        ..RunJob::new(brokers, Topics::default())
    }
}

fn run_job(job: RunJob, workers: usize) -> Result<Summary, RunError> {
    run(
        timely::Config::process(workers),
        job,
        Arc::new(AtomicBool::new(false)),
        Metrics::default(),
    )
}

/// Messages per output topic.
fn counts(brokers: &str, topics: &Topics) -> BTreeMap<String, usize> {
    [
        &topics[Output::Walkins],
        &topics[Output::DeviceContacts],
        &topics[Output::EnrichedWalkins],
        &topics[Output::WalkinCounts],
        &topics[Output::Rejected],
    ]
    .iter()
    .map(|t| (t.to_string(), read_topic(brokers, t).len()))
    .collect()
}

#[test]
fn a_restart_after_a_clean_stop_reads_nothing_twice_and_rewrites_nothing() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let topics = Topics::default();
    let mut input = Input::new(&brokers, dir.path());
    let first = input.add(&day(1, 0));
    let summary = run_job(job(&brokers, &state), 2).unwrap();
    assert_eq!(summary.lines, first);
    check_outputs(&brokers, &topics, &input.backfill("out-1"), "first run");
    let before = counts(&brokers, &topics);
    outputs_read_back_from_their_ends(&brokers, &topics, &state);

    let progress = progress_messages(&brokers, &topics);
    let last = progress.last().unwrap()["frontier"].as_u64().unwrap();

    // Restarted with nothing new: nothing read, nothing written again.
    let summary = run_job(job(&brokers, &state), 1).unwrap();
    assert_eq!(
        summary.lines, 0,
        "a clean stop's checkpoint covers every record"
    );
    assert_eq!(counts(&brokers, &topics), before, "no row written twice");
    // Its first frontier is above its restore epoch (the first run's final
    // frontier + 1): none is published before the restore is through.
    let again = progress_messages(&brokers, &topics);
    assert!(again.len() > progress.len());
    for message in &again[progress.len()..] {
        assert!(
            message["frontier"].as_u64().unwrap() > last + 1,
            "{message} after {last}"
        );
    }
    check_outputs(&brokers, &topics, &input.backfill("out-2"), "restart");

    // New input: read once, on top of the restored state, at another shape.
    let second = input.add(&day(2, 1));
    let summary = run_job(job(&brokers, &state), 2).unwrap();
    assert_eq!(summary.lines, second, "only the new records are read");
    check_outputs(
        &brokers,
        &topics,
        &input.backfill("out-3"),
        "after new input",
    );
}

/// The final checkpoint says where every output partition ends even when
/// the sinks send their last records after the state's final cut (held
/// here by the harness's output delay, longer than the whole run): a
/// restart after a clean stop reads nothing back.
#[test]
fn a_clean_stop_s_checkpoint_knows_the_ends_of_outputs_sent_after_its_cut() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    let mut hooks = presence::harness::hooks::Injected::default();
    hooks.delay_outputs = Duration::from_millis(500);
    let lagging = RunJob {
        hooks: Arc::new(hooks),
        ..job(&brokers, &state)
    };
    run_job(lagging, 2).unwrap();
    outputs_read_back_from_their_ends(&brokers, &Topics::default(), &state);
}

/// The newest checkpoint in `state` reads every output partition back from
/// its end: after a clean stop, a restart reads nothing back.
fn outputs_read_back_from_their_ends(brokers: &str, topics: &Topics, state: &Path) {
    let manifest = presence::checkpoint::store::newest_complete(&store_at(state), &mut Vec::new())
        .map(|found| found.map(|(m, _)| m))
        .unwrap()
        .unwrap();
    let floors = manifest
        .outputs
        .expect("a run's checkpoint says where its outputs are read back from");
    let listing = presence::checkpoint::store::describe(&store_at(state)).unwrap();
    let walkins = format!(
        "{}/0 {}",
        topics[Output::Walkins],
        end_offset(brokers, &topics[Output::Walkins], 0)
    );
    assert!(
        listing.contains("outputs read back from: ") && listing.contains(&walkins),
        "{listing}"
    );
    for topic in [
        &topics[Output::Walkins],
        &topics[Output::DeviceContacts],
        &topics[Output::EnrichedWalkins],
        &topics[Output::WalkinCounts],
    ] {
        for partition in 0..2 {
            // A partition never written to may have none.
            let floor = floors
                .iter()
                .find(|f| &f.topic == topic && f.partition == partition)
                .map_or(0, |f| f.offset);
            assert_eq!(
                floor,
                end_offset(brokers, topic, partition),
                "{topic}/{partition}: {floors:?}"
            );
        }
    }
}

#[test]
fn output_topics_emptied_since_the_checkpoint_are_written_again_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let topics = Topics::default();
    let first = mock_with_inputs();
    let mut input = Input::new(&first.bootstrap_servers(), dir.path());
    input.add(&day(1, 0));
    run_job(job(&first.bootstrap_servers(), &state), 2).unwrap();
    // The same input, at the same offsets, on a broker whose output topics
    // are empty (as if deleted and created again).
    let second = mock_with_inputs();
    let brokers = second.bootstrap_servers();
    let other = dir.path().join("second");
    std::fs::create_dir_all(&other).unwrap();
    let mut again = Input::new(&brokers, &other);
    again.add(&day(1, 0));
    let summary = run_job(job(&brokers, &state), 1).unwrap();
    assert_eq!(summary.lines, 0, "the checkpoint covers every record");
    check_rows(&brokers, &topics, &again.backfill("out"), "rewritten");
    // Rejected records are not state: those the checkpoint covers are not
    // read, nor written, again.
    assert!(
        read_topic(&brokers, &topics[Output::Rejected]).is_empty(),
        "rejections the checkpoint covers were written again"
    );
}

/// `presence run` with durable state in `state`, as process `p` of two.
fn service(brokers: &str, state: &Path, hosts: &Path, p: usize) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_presence"));
    command
        .args(["run", "--brokers", brokers, "--output-partitions", "2"])
        .arg("--checkpoint-dir")
        .arg(state)
        .args(["--checkpoint-interval", "200ms", "--connect-timeout", "5s"])
        .args(["-n", "2", "-p", &p.to_string(), "-h"])
        .arg(hosts)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Both processes of [`service`] with `--stop-at-end`; both must succeed.
fn cluster_to_end(brokers: &str, state: &Path, hosts: &Path) {
    let children: Vec<_> = (0..2)
        .map(|p| {
            let mut command = service(brokers, state, hosts, p);
            command.arg("--stop-at-end");
            command.spawn().unwrap()
        })
        .collect();
    for child in children {
        let (status, stderr) = finish(child, "a process of a cluster run to the end");
        assert!(status.success(), "{stderr}");
    }
}

#[test]
fn when_a_process_dies_the_other_exits_with_one_line_and_a_restart_resumes() {
    // Its connections break: the survivor stops at once.
    let message = lose_a_process(|victim| victim.kill().unwrap());
    assert!(!message.contains("no sign of life"), "{message}");
}

#[test]
fn when_a_process_hangs_the_other_exits_within_the_connect_timeout_and_a_restart_resumes() {
    // Stopped, its connections stay open: only its silence tells. (The
    // stopped process is killed before the restart.)
    let message = lose_a_process(|victim| {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &victim.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    });
    assert!(
        message.contains("no sign of life from it within --connect-timeout (5s)"),
        "{message}"
    );
}

/// Two processes of [`service`]; once a checkpoint is written, `lose` makes
/// process 1 die or hang. Process 0 must exit 1 with one line naming
/// process 1 (returned), and a restart of both must end with whole outputs.
fn lose_a_process(lose: impl FnOnce(&mut std::process::Child)) -> String {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let hosts = hostfile(dir.path());
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    let mut survivor = service(&brokers, &state, &hosts, 0).spawn().unwrap();
    let mut victim = service(&brokers, &state, &hosts, 1).spawn().unwrap();
    wait_until("a checkpoint", || newest_checkpoint(&state).is_some());
    lose(&mut victim);
    let message = common::assert_survivor_reports_process_1(
        &mut survivor,
        &mut victim,
        std::time::Instant::now(),
    );

    // Both restarted, to the end of the input: the outputs are whole.
    cluster_to_end(&brokers, &state, &hosts);
    check_outputs(
        &brokers,
        &Topics::default(),
        &input.backfill("out"),
        "after the restart",
    );
    message
}

/// The last values of the row topics against a backfill's folders.
fn check_rows(brokers: &str, topics: &Topics, out: &Path, what: &str) {
    for (topic, folder) in row_topics(topics) {
        let expected = file_rows(&out.join(folder));
        assert!(!expected.is_empty(), "{what}: {folder}");
        assert_eq!(upsert_rows(brokers, topic), expected, "{what}: {topic}");
    }
}

/// Backfilled by two workers, handed to a run of one: the state moves to
/// another cluster shape.
#[test]
fn a_backfill_hands_its_state_over_to_run_at_another_shape() {
    let (_, first) = hand_off(HandOff {
        backfill_workers: 2,
        run_workers: 1,
        settings: &[],
        slow_broker: false,
    });
    every_row_below_the_first_frontier_was_there(first);
}

/// With room for 16 records in the producer's queue, the sinks keep the
/// rest in order and the worker goes on: the same rows arrive, none lost,
/// none out of order, none repeated. (Each worker's walk-ins sink alone has
/// more than 16 restored rows to write at once, and with every request to
/// the broker taking 50 ms, none is acknowledged while they are handed
/// over: the queue fills.) Rows wait in the sinks for many round trips
/// here, and still no frontier is published before they are written.
#[test]
fn a_hand_off_through_a_full_producer_queue_writes_every_row_once_in_order() {
    let (metrics, first) = hand_off(HandOff {
        backfill_workers: 1,
        run_workers: 2,
        settings: &["queue.buffering.max.messages=16"],
        slow_broker: true,
    });
    let full = metrics.read(|f| f.output_queue_full);
    assert!(full > 0, "the queue was never full");
    let waiting: usize = metrics.read(|f| f.workers.values().map(|w| w.output_waiting).sum());
    assert_eq!(waiting, 0, "nothing waits after a clean stop");
    every_row_below_the_first_frontier_was_there(first);
}

/// No frontier is published before every row below it is acknowledged: a
/// reader who saw the first progress message of a hand-off and then read
/// the row topics found every row below its frontier (the restored state
/// among them) as the topics hold it in the end.
fn every_row_below_the_first_frontier_was_there(first: FirstFrontier) {
    let (frontier, seen, all) = first.expect("a first frontier was seen");
    let expected = state_as_of(&all, frontier);
    assert!(
        !expected.is_empty(),
        "rows below the first frontier {frontier}"
    );
    assert_eq!(
        state_as_of(&seen, frontier),
        expected,
        "read when the first frontier {frontier} was published, the topics lacked rows below it"
    );
}

/// How a hand-off is run.
struct HandOff {
    backfill_workers: usize,
    run_workers: usize,
    /// Client settings of the run.
    settings: &'static [&'static str],
    /// Every request to the broker takes 50 ms.
    slow_broker: bool,
}

/// The first progress message's frontier, the row topics' messages read
/// as soon as it was seen, and all of them after the run.
type FirstFrontier = Option<(u64, Vec<TopicMessage>, Vec<TopicMessage>)>;

/// The messages of the row topics, tagged with their topic.
fn row_messages(brokers: &str, topics: &Topics) -> Vec<TopicMessage> {
    row_topics(topics)
        .into_iter()
        .flat_map(|(topic, _)| {
            read_messages(brokers, topic).into_iter().map(move |mut m| {
                // Keys are unique per topic, not across topics.
                m.key = m.key.map(|k| format!("{topic} {k}"));
                m
            })
        })
        .collect()
}

/// Backfills a day of history into a checkpoint, runs the service on it
/// with the next day in the input topics, and checks the output topics
/// against one backfill of both days. Meanwhile a reader waits for the
/// first progress message and reads the row topics when it sees it.
fn hand_off(how: HandOff) -> (Metrics, FirstFrontier) {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // History as files, backfilled into a checkpoint.
    let history = dir.path().join("history");
    std::fs::create_dir_all(&history).unwrap();
    let written = presence::harness::generator::write_files(&day(1, 0), &history).unwrap();
    let history_job = Job {
        probes: written.probes.clone(),
        logins: written.logins.clone(),
        base_counts: written.base_counts.clone(),
        out: dir.path().join("history-out"),
        checkpoint_dir: Some(state.clone().into()),
        ..Job::default()
    };
    backfill::run(
        timely::Config::process(how.backfill_workers),
        history_job,
        Arc::new(Progress::default()),
    )
    .unwrap();
    // Live input in the topics, the next day.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let mut input = Input::new(&brokers, &live);
    let read = input.add(&day(2, 1));
    let mut run_job = job(&brokers, &state);
    for setting in how.settings {
        run_job
            .kafka
            .settings
            .add_pair(setting, "the test".into())
            .unwrap();
    }
    if how.slow_broker {
        mock.broker_round_trip_time(1, Duration::from_millis(50))
            .unwrap();
    }
    let watcher = {
        let brokers = brokers.clone();
        std::thread::spawn(move || -> FirstFrontier {
            let topics = Topics::default();
            let consumer: rdkafka::consumer::BaseConsumer = client(&brokers)
                .set("group.id", "presence-test")
                .create()
                .unwrap();
            let mut list = rdkafka::TopicPartitionList::new();
            list.add_partition_offset(&topics.progress, 0, rdkafka::Offset::Beginning)
                .unwrap();
            rdkafka::consumer::Consumer::assign(&consumer, &list).unwrap();
            let message = wait_for("the first progress message", PATIENCE, || {
                match consumer.poll(Duration::from_millis(100))? {
                    Ok(m) => Some(rdkafka::Message::payload(&m).map(<[u8]>::to_vec)),
                    Err(e) => panic!("reading the progress topic: {e}"),
                }
            });
            let seen = row_messages(&brokers, &topics);
            let value: serde_json::Value = serde_json::from_slice(&message?).unwrap();
            Some((value["frontier"].as_u64().unwrap(), seen, Vec::new()))
        })
    };
    let metrics = Metrics::default();
    let summary = run(
        timely::Config::process(how.run_workers),
        run_job,
        Arc::new(AtomicBool::new(false)),
        metrics.clone(),
    )
    .unwrap();
    let first = watcher
        .join()
        .unwrap()
        .map(|(frontier, seen, _)| (frontier, seen, row_messages(&brokers, &Topics::default())));
    assert_eq!(summary.lines, read, "the topics are read from their start");
    assert_no_repeats(&brokers, &Topics::default());
    // One backfill over the history files and the live records.
    let both = input.backfill_after(
        [&written.probes, &written.logins, &written.base_counts],
        "both",
    );
    check_rows(&brokers, &Topics::default(), &both, "after the hand-off");
    (metrics, first)
}

#[test]
fn sigterm_then_restart_reads_no_record_twice_at_any_shape() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let hosts = hostfile(dir.path());
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    // Two processes run until SIGTERM...
    let children: Vec<_> = (0..2)
        .map(|p| service(&brokers, &state, &hosts, p).spawn().unwrap())
        .collect();
    let topics = Topics::default();
    wait_until("walk-ins and a checkpoint", || {
        !read_topic(&brokers, &topics[Output::Walkins]).is_empty()
            && newest_checkpoint(&state).is_some()
    });
    for child in &children {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut read_before = 0;
    for child in children {
        let output = collect(child, "a process told to stop");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        let summary = String::from_utf8_lossy(&output.stdout);
        let summary = summary
            .lines()
            .find(|l| l.starts_with("stopped after"))
            .unwrap();
        read_before += summary_numbers(summary)["read"];
    }
    // ...then one worker to the end: the final checkpoint covered every
    // record it had read, so what it reads now is only what was left.
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
            .args([
                "run",
                "--brokers",
                &brokers,
                "--stop-at-end",
                "--output-partitions",
                "2",
            ])
            .arg("--checkpoint-dir")
            .arg(&state),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("stopped after"))
        .unwrap();
    let total: u64 = input.files.values().map(|f| f.lines().count() as u64).sum();
    let read = summary_numbers(summary)["read"];
    assert_eq!(read + read_before, total, "no record read twice: {summary}");
    check_outputs(
        &brokers,
        &topics,
        &input.backfill("out"),
        "after SIGTERM and a restart",
    );
    // Nothing it had written before was written again: no message
    // repeats its key's value, no rejection is written twice.
    assert_no_repeats(&brokers, &topics);
    let twice = rejected_twice(&brokers, &topics[Output::Rejected]);
    assert!(twice.is_empty(), "rejected twice: {twice:?}");
}

#[test]
fn checkpoints_move_across_cluster_shapes() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let topics = Topics::default();
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    run_job(job(&brokers, &state), 2).unwrap();
    input.add(&day(2, 1));
    run_job(job(&brokers, &state), 1).unwrap();
    check_outputs(
        &brokers,
        &topics,
        &input.backfill("out-1"),
        "-w 2 then -w 1",
    );
    input.add(&day(3, 2));
    let hosts = hostfile(dir.path());
    cluster_to_end(&brokers, &state, &hosts);
    check_outputs(
        &brokers,
        &topics,
        &input.backfill("out-2"),
        "then two processes",
    );
}

fn refused(result: Result<Summary, RunError>) -> String {
    match result {
        Err(RunError::Refused(line)) => line,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `presence run` on the mock broker's default topics with durable state
/// in `state`, to the end of its input, with `args` besides.
fn service_to_end(brokers: &str, state: &Path, args: &[&str]) -> std::process::Output {
    output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
            .args(["run", "--brokers", brokers, "--stop-at-end"])
            .args(["--output-partitions", "2", "--checkpoint-dir"])
            .arg(state)
            .args(args),
    )
}

/// A refusal by the binary: exit status 1, one error line, its last (the
/// lines before it are logs, such as warnings about checkpoints skipped),
/// no panic. Returns that line.
fn refused_by_the_binary(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.matches("presence: error:").count(), 1, "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("presence: error:"), "{stderr}");
    last.to_owned()
}

#[test]
fn restarts_are_refused_with_other_parameters_topics_or_lost_offsets() {
    let mock = mock_with_inputs();
    mock.create_topic("probes-2", PROBE_PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    run_job(job(&brokers, &state), 1).unwrap();
    let listing = |state: &Path| presence::checkpoint::store::describe(&store_at(state)).unwrap();
    let before = listing(&state);

    // Each detection parameter, by itself: the line names it, with the
    // checkpoint's value and this run's.
    type Change = fn(&mut Params);
    let changes: [(Change, &str); 6] = [
        (|p| p.rssi_min = -60, "--rssi-min -75, now -60"),
        (|p| p.session_gap = 600_000, "--session-gap 15m, now 10m"),
        (|p| p.min_dwell = 60_000, "--min-dwell 5m, now 1m"),
        (|p| p.min_probes = 4, "--min-probes 3, now 4"),
        (
            |p| p.allowed_lateness = 1_000,
            "--allowed-lateness 5m, now 1s",
        ),
        (|p| p.max_future = 3_600_000, "--max-future 1d, now 1h"),
    ];
    for (change, expected) in changes {
        let mut other = job(&brokers, &state);
        change(&mut other.params);
        let line = refused(run_job(other, 1));
        assert!(
            line.contains(expected)
                && line.matches(", now ").count() == 1
                && line.contains("--reset-state"),
            "{line}"
        );
    }
    // The binary says it in one line, with exit status 1.
    let output = service_to_end(&brokers, &state, &["--min-probes", "5"]);
    let line = refused_by_the_binary(&output);
    assert!(line.contains("--min-probes 3, now 5"), "{line}");

    let mut other = job(&brokers, &state);
    other.topics.probes = "probes-2".into();
    let line = refused(run_job(other, 1));
    assert!(
        line.contains("other input topics") && line.contains("probes-2"),
        "{line}"
    );
    assert_eq!(listing(&state), before, "refusals change nothing");

    // --reset-state discards the checkpoints: everything is read again.
    let mut reset = job(&brokers, &state);
    reset.checkpoint.as_mut().unwrap().reset = true;
    let summary = run_job(reset, 1).unwrap();
    let total: u64 = input.files.values().map(|f| f.lines().count() as u64).sum();
    assert_eq!(summary.lines, total);

    // Retention: the broker no longer holds the checkpoint's next offset.
    // The mock broker keeps about 5 MiB a partition: 7 MiB more removes
    // the records the checkpoint resumes at.
    let manifest = newest_checkpoint(&state).expect("the reset run's checkpoint");
    let next = manifest
        .partitions
        .iter()
        .find(|p| p.topic == "probes" && p.partition == 0)
        .expect("probes/0 was read")
        .next;
    let producer: BaseProducer = client(&brokers).create().unwrap();
    let filler = "x".repeat(60_000);
    for _ in 0..120 {
        send(&producer, "probes", 0, &filler);
    }
    producer.flush(TIMEOUT).unwrap();
    let first = first_offset(&brokers, "probes", 0);
    assert!(
        first > next,
        "retention kept offset {next}: the first offset is {first}"
    );
    let before = listing(&state);
    let line = refused(run_job(job(&brokers, &state), 1));
    assert!(
        line.contains(&format!(
            "probes partition 0: the checkpoint resumes at offset {next}, but the broker's first offset is {first}"
        )),
        "{line}"
    );
    assert_eq!(listing(&state), before, "refusals change nothing");
}

/// The first offset the broker holds of `topic`/`partition`.
fn first_offset(brokers: &str, topic: &str, partition: i32) -> i64 {
    let consumer: rdkafka::consumer::BaseConsumer = client(brokers).create().unwrap();
    rdkafka::consumer::Consumer::fetch_watermarks(&consumer, topic, partition, TIMEOUT)
        .unwrap()
        .0
}

#[test]
fn a_damaged_checkpoint_is_skipped_for_the_one_before() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let topics = Topics::default();
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    run_job(job(&brokers, &state), 1).unwrap();
    input.add(&day(2, 1));
    run_job(job(&brokers, &state), 2).unwrap();
    // Damage a piece only the newest checkpoint names.
    let manifests: Vec<_> = presence::checkpoint::store::manifests(&store_at(&state))
        .unwrap()
        .into_iter()
        .filter_map(|l| l.checkpoint().cloned())
        .collect();
    let (newest, older) = (&manifests[0], &manifests[1]);
    let piece = newest
        .pieces
        .iter()
        .find(|p| !older.pieces.contains(p))
        .expect("the newest checkpoint has a piece of its own");
    let path = state.join(&piece.name);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert!(presence::checkpoint::store::describe(&store_at(&state))
        .unwrap()
        .contains("NOT usable"));
    // The restart falls back and re-reads what the damaged one covered.
    let summary = run_job(job(&brokers, &state), 1).unwrap();
    assert!(summary.lines > 0, "{summary:?}");
    check_outputs(
        &brokers,
        &topics,
        &input.backfill("out"),
        "after falling back",
    );

    // With every checkpoint damaged, none is left: a refusal, changing nothing.
    let manifests: Vec<_> = presence::checkpoint::store::manifests(&store_at(&state))
        .unwrap()
        .into_iter()
        .filter_map(|l| l.checkpoint().cloned())
        .collect();
    assert!(!manifests.is_empty());
    for manifest in &manifests {
        let piece = manifest.pieces.last().expect("a checkpoint has pieces");
        std::fs::write(state.join(&piece.name), "damaged").unwrap();
    }
    let before = presence::checkpoint::store::describe(&store_at(&state)).unwrap();
    let output = service_to_end(&brokers, &state, &[]);
    let line = refused_by_the_binary(&output);
    assert!(
        line.contains("no complete checkpoint in") && line.contains("--reset-state"),
        "{line}"
    );
    assert_eq!(
        presence::checkpoint::store::describe(&store_at(&state)).unwrap(),
        before
    );
}

#[test]
fn an_unusable_checkpoint_folder_fails_at_start_and_one_made_unwritable_later_is_survived() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    // A path below a regular file can be no folder, even for root.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
            .args(["run", "--brokers", &brokers, "--checkpoint-dir"])
            .arg(blocker.join("state")),
    );
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("checkpoint store") && !message.contains("panicked"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");

    // Made unusable while running: failures are counted, the service goes
    // on, and checkpoints complete again once it is back.
    let state = dir.path().join("state");
    let away = dir.path().join("state-away");
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    let metrics = Metrics::default();
    let shutdown = Arc::new(AtomicBool::new(false));
    let service = {
        let mut job = job(&brokers, &state);
        job.stop_at_end = false;
        job.checkpoint.as_mut().unwrap().interval = Duration::from_millis(200);
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    let completed = || metrics.read(|f| f.checkpoints.completed);
    wait_until("a checkpoint", || completed() > 0);
    std::fs::rename(&state, &away).unwrap();
    std::fs::write(&state, "not a folder").unwrap();
    input.add(&day(2, 1)); // changes to write
    wait_until("a failure", || metrics.read(|f| f.checkpoints.failures) > 0);
    let done_before = completed();
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(&away, &state).unwrap();
    wait_until("a checkpoint after it", || completed() > done_before);
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    service.join().unwrap().unwrap();
    // What it checkpointed then is whole: a restart to the end gives it all.
    run_job(job(&brokers, &state), 1).unwrap();
    check_outputs(
        &brokers,
        &Topics::default(),
        &input.backfill("out"),
        "after the folder came back",
    );
}

/// A backfill that ends in a checkpoint reads ahead of its outputs by
/// epochs like any other (the final checkpoint holds its time until the
/// end, but must not hold reading back: with many small epochs it once
/// waited forever); its checkpoint does not depend on the epoch size.
#[test]
fn a_backfill_of_many_epochs_ends_in_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    std::fs::create_dir_all(&history).unwrap();
    let written = presence::harness::generator::write_files(&day(1, 0), &history).unwrap();
    let rows = |epoch_lines: u64, name: &str| {
        let state = dir.path().join(format!("state-{name}"));
        let job = Job {
            probes: written.probes.clone(),
            logins: written.logins.clone(),
            base_counts: written.base_counts.clone(),
            out: dir.path().join(format!("out-{name}")),
            checkpoint_dir: Some(state.clone().into()),
            ..Job::default()
        };
        backfill::run_with_epochs(
            timely::Config::process(2),
            job,
            Arc::new(Progress::default()),
            epoch_lines,
        )
        .unwrap();
        let manifest =
            presence::checkpoint::store::newest_complete(&store_at(&state), &mut Vec::new())
                .map(|found| found.map(|(m, _)| m))
                .unwrap()
                .expect("a checkpoint");
        let mut rows: Vec<String> = presence::checkpoint::store::restore_rows(
            &store_at(&state),
            &manifest,
            &presence::checkpoint::store::fetch(&store_at(&state), &manifest).unwrap(),
            |_| true,
        )
        .unwrap()
        .iter()
        .map(|row| format!("{row:?}"))
        .collect();
        rows.sort();
        (rows, manifest.partitions.len())
    };
    let (small, partitions) = rows(50, "small-epochs");
    let epochs = written.records.iter().sum::<u64>() / 50;
    assert!(
        epochs > 4 * backfill::MAX_EPOCHS_IN_FLIGHT,
        "{epochs} epochs"
    );
    let (large, _) = rows(1 << 16, "large-epochs");
    assert!(!small.is_empty(), "{partitions} partitions");
    let only_small: Vec<_> = small.iter().filter(|r| !large.contains(r)).collect();
    let only_large: Vec<_> = large.iter().filter(|r| !small.contains(r)).collect();
    assert!(
        only_small.is_empty() && only_large.is_empty(),
        "small epochs only: {only_small:?}\nlarge epochs only: {only_large:?}"
    );
}

/// Without `--checkpoint-dir`, every start reads every input from its
/// earliest offset and writes every row again, with a newer time; every
/// rejection is written again under its own key; frontiers still only grow.
#[test]
fn without_a_checkpoint_folder_a_restart_reads_and_rewrites_everything() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::default();
    let mut input = Input::new(&brokers, dir.path());
    let total = input.add(&day(1, 0));
    let plain = |workers: usize| {
        let job = RunJob {
            checkpoint: None,
            ..job(&brokers, &dir.path().join("unused"))
        };
        run_job(job, workers).unwrap()
    };
    assert_eq!(plain(2).lines, total);
    let rows = row_topics(&topics);
    let first: Vec<Vec<TopicMessage>> = rows
        .iter()
        .map(|(t, _)| read_messages(&brokers, t))
        .collect();
    let first_rejected = read_topic(&brokers, &topics[Output::Rejected]).len();

    assert_eq!(plain(1).lines, total, "every record is read again");
    let out = input.backfill("out");
    check_rows(&brokers, &topics, &out, "after the restart");
    for ((topic, _), before) in rows.iter().zip(&first) {
        let latest = before.iter().map(|m| m.timestamp).max().unwrap();
        // The second run's messages: its last value per key is every row.
        let mut again: BTreeMap<(i32, String), Option<String>> = BTreeMap::new();
        for m in read_messages(&brokers, topic) {
            if before
                .iter()
                .any(|b| b.partition == m.partition && b.offset == m.offset)
            {
                continue;
            }
            assert!(
                m.timestamp > latest,
                "{topic}: a time not above the first run's"
            );
            again.insert(
                (m.partition, m.key.unwrap()),
                m.value.as_deref().map(content),
            );
        }
        let again: BTreeSet<String> = again.into_values().flatten().collect();
        assert_eq!(
            again,
            upsert_rows(&brokers, topic),
            "{topic}: every row is written again"
        );
    }
    let twice = rejected_twice(&brokers, &topics[Output::Rejected]);
    assert!(first_rejected > 0);
    assert_eq!(
        twice.len(),
        first_rejected,
        "every rejection is written again"
    );
    growing_frontiers(&brokers, &topics, "across the restart");
}

/// `--checkpoints-kept`: however many checkpoints runs make, the folder
/// keeps that many complete ones (here one, after three runs), and a
/// restart restores from what is kept.
#[test]
fn only_the_checkpoints_asked_for_are_kept() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut input = Input::new(&brokers, dir.path());
    let keeping_one = || {
        let mut job = job(&brokers, &state);
        job.checkpoint.as_mut().unwrap().kept = 1;
        job
    };
    let manifests = || {
        presence::checkpoint::store::manifests(&store_at(&state))
            .unwrap()
            .iter()
            .filter(|l| l.checkpoint().is_some())
            .count()
    };
    input.add(&day(1, 0));
    run_job(keeping_one(), 2).unwrap();
    input.add(&day(2, 1));
    run_job(keeping_one(), 1).unwrap();
    assert_eq!(manifests(), 1, "two runs, each with a final checkpoint");
    let summary = run_job(keeping_one(), 2).unwrap();
    assert_eq!(summary.lines, 0, "restored from the one kept");
    assert_eq!(manifests(), 1);
    check_outputs(
        &brokers,
        &Topics::default(),
        &input.backfill("out"),
        "kept one",
    );
}
