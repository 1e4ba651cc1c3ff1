//! Restore against replay (`cargo bench --bench restore`).
//!
//! Builds state from generated history by `backfill --checkpoint-dir` (the
//! replay: the history read and computed once), then times `run
//! --checkpoint-dir` restoring it, each time in a new process, on
//! librdkafka's in-process broker (in this process): from the start of that
//! process to the restored state being in the dataflow with no input lag
//! (ready), and to every restored row being written to the (empty) output
//! topics and acknowledged (the first progress frontier above the restore
//! epoch); first the hand-off, then a restart. Then, as a floor for the
//! hand-off, writes the same rows, rendered beforehand, with one producer
//! per worker and nothing else. Prints the history's size, the walk-ins,
//! the checkpoint's size on disk and per walk-in, and the ratio of the
//! replay to the restores, all measured in the same run.
//!
//! Sizing, through the environment:
//!   PRESENCE_BENCH_DAYS     days of history  (default 28)
//!   PRESENCE_BENCH_DEVICES  phones           (default 200000: over 1 M walk-ins)
//!   PRESENCE_BENCH_WORKERS  -w of every run  (default 2)
//!   PRESENCE_BENCH_QUICK=1  3 days, 20000 phones
//!   PRESENCE_BENCH_DIR      keep the history, the checkpoint and the replay
//!                           times there; a later run with the same folder
//!                           measures only the restores (for profiling them)
//!   PRESENCE_BENCH_X        Kafka client settings for the restores and the
//!                           floor, as `-X` takes them ("k=v k=v")
//!   PRESENCE_BENCH_NO_FLOOR=1    skip the floor
//!   PRESENCE_BENCH_FLOOR_ONLY=1  measure only the floor

mod common;
use common::{cpu_model, env_flag, env_u64, source_version};
use presence::model::output::Output;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence::backfill::{self, Job, Progress};
use presence::harness::generator::{write_files, WorkloadConfig};
use presence::observe::metrics::Metrics;
use presence::service::{CheckpointSettings, RunJob, Topics};
use rdkafka::mocking::MockCluster;

/// The allocator the `presence` binary uses: both the replay and the
/// restores run in this process, as they would in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As the binary does.
    presence::kafka::keep_freed_memory();
    let quick = env_flag("PRESENCE_BENCH_QUICK") || std::env::args().any(|a| a == "--quick");
    let days = env_u64("PRESENCE_BENCH_DAYS", if quick { 3 } else { 28 });
    let devices = env_u64(
        "PRESENCE_BENCH_DEVICES",
        if quick { 20_000 } else { 200_000 },
    );
    let workers = env_u64("PRESENCE_BENCH_WORKERS", 2) as usize;
    // RUST_LOG=presence=debug shows the restore's steps, timed.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(restore) = std::env::var_os(CHILD) {
        let restore: serde_json::Value = serde_json::from_str(restore.to_str().unwrap()).unwrap();
        return restore_child(&restore, workers);
    }
    let temporary = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("PRESENCE_BENCH_DIR")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temporary.path());
    std::fs::create_dir_all(dir).unwrap();
    println!(
        "restore vs replay: {days} days, {devices} phones, -w {workers}; {}; {}",
        cpu_model(),
        source_version()
    );

    let config = WorkloadConfig {
        days,
        devices,
        ..WorkloadConfig::default()
    };
    let original = dir.join("state-backfill");
    let times = dir.join("replay.json");
    let reused: Option<serde_json::Value> = std::fs::read(&times)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let (records, walkins, plain_s, replay_s) = match reused {
        Some(v) => {
            println!(
                "reusing the history, checkpoint and replay times in {}",
                dir.display()
            );
            let f = |k: &str| v[k].as_f64().unwrap();
            (
                f("records") as u64,
                f("walkins") as u64,
                f("plain_s"),
                f("replay_s"),
            )
        }
        None => {
            let started = Instant::now();
            let written = write_files(&config, &dir.join("input")).unwrap();
            let records: u64 = written.records.iter().sum();
            let input_bytes: u64 = written
                .probes
                .iter()
                .chain(&written.logins)
                .chain(&written.base_counts)
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum();
            println!(
                "generated {records} records ({:.0} MiB) in {:.1} s",
                input_bytes as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64()
            );
            let backfill = |checkpoint: Option<std::path::PathBuf>, out: &str| {
                let job = Job {
                    probes: written.probes.clone(),
                    logins: written.logins.clone(),
                    base_counts: written.base_counts.clone(),
                    out: dir.join(out),
                    checkpoint_dir: checkpoint.map(Into::into),
                    ..Job::default()
                };
                let started = Instant::now();
                let summary = backfill::run(
                    timely::Config::process(workers),
                    job,
                    Arc::new(Progress::default()),
                )
                .unwrap();
                (started.elapsed().as_secs_f64(), summary)
            };
            let (plain_s, _) = backfill(None, "out-plain");
            let (replay_s, summary) = backfill(Some(original.clone()), "out");
            let walkins = summary.written.get("walkins").copied().unwrap_or(0);
            let v = serde_json::json!({
                "records": records, "walkins": walkins, "plain_s": plain_s, "replay_s": replay_s,
            });
            if kept.is_some() {
                std::fs::write(&times, v.to_string()).unwrap();
            }
            (records, walkins, plain_s, replay_s)
        }
    };
    // The restores run on a copy: the backfill's checkpoint stays as it was.
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    for entry in std::fs::read_dir(&original).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, state.join(path.file_name().unwrap())).unwrap();
    }
    let mut skipped = Vec::new();
    let manifest = presence::checkpoint::store::newest_complete(&presence::checkpoint::store::Store::at(&state).unwrap(), &mut skipped).map(|f| f.map(|(m, _)| m))
        .unwrap()
        .expect("the backfill wrote a checkpoint");
    let bytes = manifest.bytes();

    // Restore on an in-process broker with empty input topics; the output
    // topics have many partitions, so that the broker (which keeps about
    // 100k messages or 5 MiB a partition) keeps every row for the restart.
    let mock = MockCluster::new(1).unwrap();
    let topics = Topics::default();
    for name in [&topics.probes, &topics.logins, &topics.base_counts] {
        mock.create_topic(name, 4, 1).unwrap();
    }
    for name in Output::ALL.map(|output| &topics[output]) {
        mock.create_topic(name, 128, 1).unwrap();
    }
    mock.create_topic(&topics.progress, 1, 1).unwrap();
    // One run of the service on the checkpoint, in a new process (as a
    // restart is: a process that ran before has its memory mapped and
    // faulted in already): from its start to ready (restored, no input
    // lag) and to the restored rows being in the output topics (the first
    // frontier above the restore epoch); then a clean stop.
    let restore = || {
        let restoring = presence::checkpoint::store::newest_complete(&presence::checkpoint::store::Store::at(&state).unwrap(), &mut Vec::new()).map(|f| f.map(|(m, _)| m))
            .unwrap()
            .expect("a checkpoint");
        let asked = serde_json::json!({
            "brokers": mock.bootstrap_servers(),
            "state": state,
            "restoring": restoring.time,
        });
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .env(CHILD, asked.to_string())
            .env("PRESENCE_BENCH_WORKERS", workers.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "the restore failed");
        let line = String::from_utf8(output.stdout).unwrap();
        let got: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        let f = |k: &str| got[k].as_f64().unwrap();
        (
            f("ready_s"),
            f("written_s"),
            f("rows") as u64,
            f("produced") as u64,
        )
    };
    if env_flag("PRESENCE_BENCH_FLOOR_ONLY") {
        let floor_s = producer_floor(&dir.join("out"), workers, &topics);
        println!("| writing the same rows alone, {workers} producers (floor) | {floor_s:.2} s |");
        return;
    }
    let (ready_s, written_s, rows, produced) = restore();
    // A restart: the same state, the rows already in the topics.
    let (again_ready_s, again_written_s, _, again_produced) = restore();
    // What writing the hand-off's rows costs by itself on these cores:
    // the backfill's rows, keyed and rendered as the sinks do it before the
    // clock starts, written by one producer per worker (the service's
    // producer settings) to empty topics of a new in-process broker.
    let floor_s = if env_flag("PRESENCE_BENCH_NO_FLOOR") {
        f64::NAN
    } else {
        producer_floor(&dir.join("out"), workers, &topics)
    };
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| history records | {records} |");
    println!("| walk-ins | {walkins} |");
    println!("| backfill (replay), no checkpoint | {plain_s:.2} s |");
    println!("| backfill (replay) with --checkpoint-dir | {replay_s:.2} s |");
    println!(
        "| checkpoint on disk | {:.1} MiB in {} pieces, {} rows |",
        bytes as f64 / (1 << 20) as f64,
        manifest.pieces.len(),
        manifest.rows()
    );
    println!(
        "| bytes per walk-in | {:.1} |",
        bytes as f64 / walkins.max(1) as f64
    );
    println!("| hand-off: run start to ready (restored, no lag) | {ready_s:.2} s ({rows} rows) |");
    println!("| hand-off: run start to every restored row written | {written_s:.2} s ({produced} rows written) |");
    println!("| restart: run start to ready | {again_ready_s:.2} s |");
    println!("| restart: run start to the outputs reconciled | {again_written_s:.2} s ({again_produced} rows rewritten) |");
    println!("| writing the same rows alone, {workers} producers (floor) | {floor_s:.2} s |");
    println!("| replay / hand-off ready | {:.1}x |", replay_s / ready_s);
    println!(
        "| replay / hand-off every row written | {:.1}x |",
        replay_s / written_s
    );
    println!(
        "| replay / restart ready | {:.1}x |",
        replay_s / again_ready_s
    );
}

/// Seconds to write every row of a backfill's `out` folders to a new
/// in-process broker's output topics (as the bench creates them), from
/// `workers` threads with one producer each, each writing the keys that hash
/// to it; rendering happens before the clock starts.
fn producer_floor(out: &std::path::Path, workers: usize, topics: &Topics) -> f64 {
    use presence::kafka::upsert::Row;
    use presence::model::records::{DeviceContact, EnrichedWalkIn, WalkIn, WalkinCount};
    fn rendered<R: Row + serde::de::DeserializeOwned>(
        folder: &std::path::Path,
        topic: &str,
        into: &mut [Vec<(String, String, String)>],
    ) {
        use std::hash::BuildHasher as _;
        // Splits the rows among the producers by key.
        let split = foldhash::fast::FixedState::with_seed(0);
        for entry in std::fs::read_dir(folder).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines() {
                let row: R = serde_json::from_str(line).unwrap();
                let key = row.key();
                let value = format!("{},\"time\":1796226671846}}", &line[..line.len() - 1]);
                let worker = (split.hash_one(&key) % into.len() as u64) as usize;
                into[worker].push((topic.to_owned(), key, value));
            }
        }
    }
    let mut parts: Vec<Vec<(String, String, String)>> = vec![Vec::new(); workers];
    rendered::<WalkIn>(&out.join("walkins"), &topics[Output::Walkins], &mut parts);
    rendered::<DeviceContact>(
        &out.join("device-contacts"),
        &topics[Output::DeviceContacts],
        &mut parts,
    );
    rendered::<EnrichedWalkIn>(
        &out.join("enriched-walkins"),
        &topics[Output::EnrichedWalkins],
        &mut parts,
    );
    rendered::<WalkinCount>(
        &out.join("walkin-counts"),
        &topics[Output::WalkinCounts],
        &mut parts,
    );
    let mock = MockCluster::new(1).unwrap();
    for name in Output::UPSERTS.map(|output| &topics[output]) {
        mock.create_topic(name, 128, 1).unwrap();
    }
    let mut connection = RunJob::new(mock.bootstrap_servers(), topics.clone()).kafka;
    connection.settings = client_settings();
    let producers: Vec<_> = (0..workers)
        .map(|_| presence::kafka::producer(&connection, Metrics::default()).unwrap())
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (producer, part) in producers.iter().zip(&parts) {
            scope.spawn(move || {
                for (i, (topic, key, value)) in part.iter().enumerate() {
                    presence::kafka::send(producer, topic, None, Some(key), Some(value), 1)
                        .unwrap();
                    if i % 1024 == 0 {
                        presence::kafka::serve_outputs(producer);
                    }
                }
                presence::kafka::flush(producer, Duration::from_secs(600)).unwrap();
            });
        }
    });
    started.elapsed().as_secs_f64()
}

/// Client settings for every Kafka client of the restores and the floor, as
/// `-X` gives them: `PRESENCE_BENCH_X="key=value key=value"`.
fn client_settings() -> presence::kafka::settings::ClientSettings {
    let given = std::env::var("PRESENCE_BENCH_X").unwrap_or_default();
    let pairs: Vec<String> = given.split_whitespace().map(str::to_owned).collect();
    presence::kafka::settings::ClientSettings::load(None, &pairs).expect("valid PRESENCE_BENCH_X")
}

/// The environment variable that makes this bench a restore's process.
const CHILD: &str = "PRESENCE_BENCH_RESTORE";

/// A restore's process: runs the service on the checkpoint in `asked`
/// until the first frontier above the restore epoch, then stops it, and
/// prints its times (from the process's start) as JSON.
fn restore_child(asked: &serde_json::Value, workers: usize) {
    let started = Instant::now();
    let state = std::path::PathBuf::from(asked["state"].as_str().unwrap());
    let restoring = asked["restoring"].as_u64().unwrap();
    let metrics = Metrics::default();
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut job = RunJob {
        checkpoint: Some(CheckpointSettings {
            dir: state.into(),
            interval: Duration::from_secs(10),
            reset: false,
            kept: presence::checkpoint::store::MANIFESTS_KEPT,
        }),
        ..RunJob::new(
            asked["brokers"].as_str().unwrap().to_owned(),
            Topics::default(),
        )
    };
    job.kafka.settings = client_settings();
    let service = {
        let (metrics, shutdown) = (metrics.clone(), Arc::clone(&shutdown));
        std::thread::spawn(move || {
            presence::service::run(timely::Config::process(workers), job, shutdown, metrics)
        })
    };
    let (mut ready, mut written_s) = (None, None);
    while written_s.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "the restore did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
        let (restored, lag, frontier, rows) = metrics.read(|f| {
            (
                f.checkpoints.restore_seconds.is_some(),
                f.lag(),
                f.progress.frontier,
                f.checkpoints.restored_rows,
            )
        });
        if ready.is_none() && restored && lag == 0 {
            ready = Some((started.elapsed().as_secs_f64(), rows));
        }
        if ready.is_some() && frontier > restoring + 1 {
            written_s = Some(started.elapsed().as_secs_f64());
        }
    }
    let produced: u64 = metrics.read(|f| f.produced.values().sum());
    shutdown.store(true, Ordering::Relaxed);
    service.join().unwrap().unwrap();
    let (ready_s, rows) = ready.unwrap();
    println!(
        "{}",
        serde_json::json!({
            "ready_s": ready_s, "written_s": written_s.unwrap(), "rows": rows, "produced": produced,
        })
    );
}
