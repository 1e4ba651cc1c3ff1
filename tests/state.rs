//! Durable state (`--checkpoint-dir`): restarts, the backfill hand-off,
//! refusals and fallbacks, against librdkafka's in-process mock broker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;

use presence::backfill::{self, Job, Progress};
use presence::io::generator::{Workload, WorkloadConfig};
use presence::io::ingest::Kind;
use presence::metrics::Metrics;
use presence::pipeline::Summary;
use presence::run::{run, CheckpointSettings, RunError, RunJob, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Input produced to the topics and kept as files, partition by partition.
struct Input {
    brokers: String,
    files: BTreeMap<(Kind, u64), String>,
    dir: PathBuf,
}

impl Input {
    fn new(brokers: &str, dir: &Path) -> Self {
        Input {
            brokers: brokers.to_owned(),
            files: BTreeMap::new(),
            dir: dir.to_owned(),
        }
    }

    /// Produces `config`'s workload and appends it to the files.
    fn add(&mut self, config: &WorkloadConfig) -> u64 {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        let mut n = 0;
        for record in Workload::new(config.clone()) {
            let topic = match record.kind {
                Kind::Probe => "probes",
                Kind::Login => "logins",
                Kind::BaseCount => "base-counts",
            };
            let partition = record.partition as i32;
            while producer
                .send(
                    BaseRecord::<(), str>::to(topic)
                        .partition(partition)
                        .payload(&record.line),
                )
                .is_err()
            {
                producer.poll(Duration::from_millis(10));
            }
            let file = self
                .files
                .entry((record.kind, record.partition))
                .or_default();
            file.push_str(&record.line);
            file.push('\n');
            n += 1;
        }
        producer.flush(TIMEOUT).unwrap();
        n
    }

    /// Backfills the files into `out`; returns the folder.
    fn backfill(&self, name: &str) -> PathBuf {
        let path = |kind: Kind, p: u64| self.dir.join(format!("{kind:?}-{p}.jsonl"));
        for ((kind, p), text) in &self.files {
            std::fs::write(path(*kind, *p), text).unwrap();
        }
        let of = |kind: Kind| -> Vec<PathBuf> {
            self.files
                .keys()
                .filter(|(k, _)| *k == kind)
                .map(|(k, p)| path(*k, *p))
                .collect()
        };
        let out = self.dir.join(name);
        let job = Job {
            probes: of(Kind::Probe),
            logins: of(Kind::Login),
            base_counts: of(Kind::BaseCount),
            out: out.clone(),
            ..Job::default()
        };
        backfill::run(timely::Config::thread(), job, Arc::new(Progress::default())).unwrap();
        out
    }
}

fn mock_with_inputs() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    for (name, partitions) in [
        ("probes", PROBE_PARTITIONS),
        ("logins", 1),
        ("base-counts", 1),
    ] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    create_output_topics(&mock, &Topics::default(), 2);
    mock
}

fn day(seed: u64, day: u64) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        days: 1,
        devices: 400,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        start_ms: WorkloadConfig::default().start_ms + day * 86_400_000,
        ..WorkloadConfig::default()
    }
}

fn job(brokers: &str, dir: &Path) -> RunJob {
    RunJob {
        stop_at_end: true,
        output_partitions: 2,
        checkpoint: Some(CheckpointSettings {
            dir: dir.to_owned(),
            interval: Duration::from_secs(1),
            reset: false,
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
        &topics.walkins,
        &topics.device_contacts,
        &topics.enriched_walkins,
        &topics.walkin_counts,
        &topics.rejected,
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

    // Restarted with nothing new: nothing read, nothing written again.
    let summary = run_job(job(&brokers, &state), 1).unwrap();
    assert_eq!(
        summary.lines, 0,
        "a clean stop's checkpoint covers every record"
    );
    assert_eq!(counts(&brokers, &topics), before, "no row written twice");
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

/// A loopback hostfile for two processes in `dir`.
fn hostfile(dir: &Path) -> PathBuf {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let path = dir.join("hosts");
    std::fs::write(
        &path,
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    path
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// Whether `dir` holds a complete checkpoint.
fn has_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("manifest-"))
    })
}

#[test]
fn when_a_process_dies_the_other_exits_with_one_line_and_a_restart_resumes() {
    let mock = mock_with_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let hosts = hostfile(dir.path());
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));
    let mut survivor = service(&brokers, &state, &hosts, 0).spawn().unwrap();
    let mut victim = service(&brokers, &state, &hosts, 1).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !has_checkpoint(&state) {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint was written"
        );
        std::thread::yield_now();
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed = std::time::Instant::now();
    let status = loop {
        if let Some(status) = survivor.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the survivor did not stop"
        );
        std::thread::yield_now();
    };
    let within = killed.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(survivor.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        within < Duration::from_secs(5),
        "it took {within:?}: {stderr}"
    );
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("presence: error: lost process 1 (127.0.0.1:"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("lost process").count(), 1, "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );

    // Both restarted, to the end of the input: the outputs are whole.
    let children: Vec<_> = (0..2)
        .map(|p| {
            let mut command = service(&brokers, &state, &hosts, p);
            command.arg("--stop-at-end");
            command.spawn().unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    check_outputs(
        &brokers,
        &Topics::default(),
        &input.backfill("out"),
        "after the restart",
    );
}
