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
//! the checkpoint's size on disk and per walk-in, each restore's resident
//! memory at ready, once the rows are written and 15 s later (and per
//! walk-in), and
//! the ratio of the replay to the restores, all measured in the same run.
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
//!   PRESENCE_BENCH_S3       an S3 endpoint, http://HOST:PORT (as
//!                           `scripts/s3.sh PORT` prints it): then also
//!                           restarts from S3 against the local folder (below)
//!   PRESENCE_BENCH_S3_ONLY=1     only those, after one hand-off (not timed)
//!   PRESENCE_BENCH_ROUNDS   rounds of local and S3 restarts (default 3)
//!
//! With `PRESENCE_BENCH_S3`, after the measurements above, the restores'
//! state folder (the backfill's checkpoint and what the hand-off and the
//! restart added) is copied into a new bucket of that server, through the
//! library's store, and restarts (each in a new process, rows already in the
//! topics) alternate between the folder and the bucket, `ROUNDS` of each:
//! like with like, on the same broker and topics. Prints each one's run
//! start to ready and to the outputs reconciled, their medians, the ratio
//! of the medians S3 / local, when the checkpoint had been read (the last
//! store request while the service was starting) and when the start was
//! over (the outputs' tails read back too), and the store requests and
//! bytes by operation of the S3 restarts (until ready, and in the whole run
//! with its clean stop). The AWS variables (test credentials, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`)
//! are set for this process and the restores' from the endpoint.

mod common;
use common::{cpu_model, env_flag, env_u64, median, source_version};
use presence::model::output::Output;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence::backfill::{self, Job, Progress};
use presence::checkpoint::store::{Location, Store};
use presence::harness::generator::{write_files, WorkloadConfig};
use presence::observe::metrics::{Metrics, ServiceState, StoreOpFigures};
use presence::service::{CheckpointSettings, RunJob, Topics};
use rdkafka::mocking::MockCluster;

/// The allocator the `presence` binary uses: both the replay and the
/// restores run in this process, as they would in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As the binary does.
    presence::kafka::keep_freed_memory();
    presence::kafka::no_huge_pages();
    let quick = env_flag("PRESENCE_BENCH_QUICK") || std::env::args().any(|a| a == "--quick");
    let days = env_u64("PRESENCE_BENCH_DAYS", if quick { 3 } else { 28 });
    let devices = env_u64(
        "PRESENCE_BENCH_DEVICES",
        if quick { 20_000 } else { 200_000 },
    );
    let workers = env_u64("PRESENCE_BENCH_WORKERS", 2) as usize;
    let s3 = std::env::var("PRESENCE_BENCH_S3")
        .ok()
        .map(|endpoint| endpoint.trim().trim_end_matches('/').to_owned())
        .filter(|endpoint| !endpoint.is_empty());
    let s3_only = env_flag("PRESENCE_BENCH_S3_ONLY");
    assert!(
        s3.is_some() || !s3_only,
        "PRESENCE_BENCH_S3_ONLY=1 needs PRESENCE_BENCH_S3 (the endpoint)"
    );
    if let Some(endpoint) = &s3 {
        // Before any thread starts; the restores' processes inherit them.
        for (key, value) in common::s3::env(endpoint) {
            std::env::set_var(key, value);
        }
    }
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
    let manifest = presence::checkpoint::store::newest_complete(
        &presence::checkpoint::store::Store::at(&state).unwrap(),
        &mut skipped,
    )
    .map(|f| f.map(|(m, _)| m))
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
    // The state is in `location`: the local folder or an S3 prefix.
    let restore = |location: &Location| -> Restored {
        let restoring = newest_time(&Store::at(location.clone()).unwrap());
        let asked = serde_json::json!({
            "brokers": mock.bootstrap_servers(),
            "state": location.to_string(),
            "restoring": restoring,
        });
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .env(CHILD, asked.to_string())
            .env("PRESENCE_BENCH_WORKERS", workers.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "the restore failed");
        let line = String::from_utf8(output.stdout).unwrap();
        serde_json::from_str(line.trim()).unwrap()
    };
    let local = Location::from(&state);
    if env_flag("PRESENCE_BENCH_FLOOR_ONLY") {
        let floor_s = producer_floor(&dir.join("out"), workers, &topics);
        println!("| writing the same rows alone, {workers} producers (floor) | {floor_s:.2} s |");
        return;
    }
    if !s3_only {
        let handoff = restore(&local);
        let (ready_s, written_s, rows, produced) = (
            handoff.ready_s,
            handoff.written_s,
            handoff.rows,
            handoff.produced,
        );
        // A restart: the same state, the rows already in the topics.
        let again = restore(&local);
        let (again_ready_s, again_written_s, again_produced) =
            (again.ready_s, again.written_s, again.produced);
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
        println!(
            "| hand-off: run start to ready (restored, no lag) | {ready_s:.2} s ({rows} rows) |"
        );
        println!("| hand-off: run start to every restored row written | {written_s:.2} s ({produced} rows written) |");
        println!("| restart: run start to ready | {again_ready_s:.2} s |");
        println!("| restart: run start to the outputs reconciled | {again_written_s:.2} s ({again_produced} rows rewritten) |");
        println!("| writing the same rows alone, {workers} producers (floor) | {floor_s:.2} s |");
        // Memory: the whole process's resident set over the walk-ins it
        // holds (its fixed part included).
        let per_walkin = |mib: f64| mib * (1 << 20) as f64 / walkins.max(1) as f64;
        for (what, run) in [("hand-off", &handoff), ("restart", &again)] {
            println!(
                "| {what}: resident memory at ready, after the rows are written, {} s later, peak | {:.1} / {:.1} / {:.1} / {:.1} MiB |",
                SETTLE.as_secs(),
                run.rss_ready_mib, run.rss_written_mib, run.rss_settled_mib, run.peak_rss_mib
            );
            println!(
                "| {what}: resident bytes per walk-in at ready, after the rows are written, {} s later | {:.0} / {:.0} / {:.0} |",
                SETTLE.as_secs(),
                per_walkin(run.rss_ready_mib),
                per_walkin(run.rss_written_mib),
                per_walkin(run.rss_settled_mib)
            );
        }
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
    if let Some(endpoint) = &s3 {
        if s3_only {
            println!(
                "{records} history records, {walkins} walk-ins; checkpoint {:.1} MiB in {} pieces, {} rows",
                bytes as f64 / (1 << 20) as f64,
                manifest.pieces.len(),
                manifest.rows()
            );
            // The hand-off, so that the restarts below find the rows in
            // the topics, as after the measurements above.
            let handoff = restore(&local);
            println!(
                "hand-off (warm-up, not compared): ready {:.2} s, every restored row written {:.2} s ({} rows written)",
                handoff.ready_s, handoff.written_s, handoff.produced
            );
        }
        let rounds = env_u64("PRESENCE_BENCH_ROUNDS", 3).max(1) as usize;
        s3_against_local(endpoint, &local, rounds, restore);
    }
}

/// How long a restore's service idles once its rows are written, before
/// its resident memory is read again.
const SETTLE: Duration = Duration::from_secs(15);

/// What a restore's process measured (its JSON line).
#[derive(serde::Deserialize)]
struct Restored {
    /// From the process's start to ready (restored, no input lag).
    ready_s: f64,
    /// ... to the first progress frontier above the restore epoch.
    written_s: f64,
    /// Rows restored.
    rows: u64,
    /// Rows written to the output topics.
    produced: u64,
    /// When the last checkpoint store request while starting finished (the
    /// checkpoint read, the generation taken).
    store_done_s: Option<f64>,
    /// When the service left its start (the checkpoint read, the outputs'
    /// tails read back) for restoring the rows into the dataflow.
    prepared_s: Option<f64>,
    /// The checkpoint store's requests by operation, until ready.
    store_ready: BTreeMap<String, OpFigures>,
    /// The process's resident memory at ready, in MiB.
    rss_ready_mib: f64,
    /// ... once every restored row was written (or found in the topics).
    rss_written_mib: f64,
    /// ... `SETTLE` later, the service idle.
    rss_settled_mib: f64,
    /// The process's peak resident memory (VmHWM), in MiB.
    peak_rss_mib: f64,
    /// ... and in the whole run, its clean stop included.
    store: BTreeMap<String, OpFigures>,
}

/// One operation's requests to the checkpoint store, as a restore's
/// process prints them (see [`StoreOpFigures`]).
#[derive(Clone, Copy, Default, serde::Deserialize)]
struct OpFigures {
    requests: u64,
    bytes: u64,
    errors: u64,
    retries: u64,
}

/// `store`'s figures by operation, as JSON.
fn store_json(store: &BTreeMap<&'static str, StoreOpFigures>) -> serde_json::Value {
    store
        .iter()
        .map(|(op, s)| {
            let figures = serde_json::json!({
                "requests": s.requests, "bytes": s.bytes, "errors": s.errors, "retries": s.retries,
            });
            (op.to_string(), figures)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The logical time of the newest checkpoint in `store` that a restore
/// takes (not a claim, nor a superseded writer's), from its manifests
/// alone: the pieces stay where they are.
fn newest_time(store: &Store) -> u64 {
    let listed = presence::checkpoint::store::manifests(store).unwrap();
    let fenced = presence::checkpoint::store::fenced(&listed);
    listed
        .iter()
        .filter(|l| !fenced.contains(&l.number))
        .find_map(|l| l.checkpoint().map(|m| m.time))
        .expect("a checkpoint")
}

/// Copies every object of the folder `from` into `to`, manifests last;
/// returns the objects and their bytes.
fn copy_store(from: &Store, to: &Store) -> (usize, u64) {
    let mut objects = from.list().unwrap();
    objects.sort_by_key(|o| o.name.starts_with("manifest-"));
    for object in &objects {
        let bytes = from.get(&object.name).unwrap();
        to.put(&object.name, bytes, false).unwrap();
    }
    (objects.len(), objects.iter().map(|o| o.bytes).sum())
}

/// Restarts from the folder `local` against restarts from a copy of it in
/// a new bucket on the S3 server at `endpoint`, alternated, `rounds` each,
/// each by `restore`; prints their times and the S3 restarts' requests.
fn s3_against_local(
    endpoint: &str,
    local: &Location,
    rounds: usize,
    restore: impl Fn(&Location) -> Restored,
) {
    let bucket = common::s3::bucket(endpoint, "restore");
    let remote: Location = format!("s3://{bucket}/state").parse().unwrap();
    let started = Instant::now();
    let (objects, bytes) = copy_store(
        &Store::at(local.clone()).unwrap(),
        &Store::at(remote.clone()).unwrap(),
    );
    let copy_s = started.elapsed().as_secs_f64();
    println!();
    println!(
        "restarts from S3 ({endpoint}, {remote}) against the local folder: copied {objects} objects, {:.1} MiB, in {copy_s:.2} s; {rounds} rounds, local then S3",
        bytes as f64 / (1 << 20) as f64
    );
    let (mut from_local, mut from_s3) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        from_local.push(restore(local));
        from_s3.push(restore(&remote));
    }
    let seconds = |x: Option<f64>| x.map_or("-".to_owned(), |s| format!("{s:.2} s"));
    println!();
    println!("| restart | store | run start to ready | to the outputs reconciled | checkpoint read (last store request while starting) | start over (restoring) | rows rewritten |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (round, (l, r)) in from_local.iter().zip(&from_s3).enumerate() {
        for (side, x) in [("local", l), ("S3", r)] {
            println!(
                "| {} | {side} | {:.2} s | {:.2} s | {} | {} | {} |",
                round + 1,
                x.ready_s,
                x.written_s,
                seconds(x.store_done_s),
                seconds(x.prepared_s),
                x.produced
            );
        }
    }
    let med = |side: &[Restored], f: fn(&Restored) -> f64| median(side.iter().map(f).collect());
    let (ready_l, ready_r) = (
        med(&from_local, |x| x.ready_s),
        med(&from_s3, |x| x.ready_s),
    );
    let (written_l, written_r) = (
        med(&from_local, |x| x.written_s),
        med(&from_s3, |x| x.written_s),
    );
    for (side, xs) in [("local", &from_local), ("S3", &from_s3)] {
        println!(
            "| median | {side} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | |",
            med(xs, |x| x.ready_s),
            med(xs, |x| x.written_s),
            med(xs, |x| x.store_done_s.unwrap_or(f64::NAN)),
            med(xs, |x| x.prepared_s.unwrap_or(f64::NAN)),
        );
    }
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| S3 / local, median run start to ready | {:.2}x |",
        ready_r / ready_l
    );
    println!(
        "| S3 / local, median run start to the outputs reconciled | {:.2}x |",
        written_r / written_l
    );
    println!();
    println!("| S3 restart | op | requests to ready | bytes to ready | requests, whole run | bytes, whole run | errors | retries |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (round, r) in from_s3.iter().enumerate() {
        for op in presence::observe::metrics::STORE_OPS {
            let to_ready = r.store_ready.get(op).copied().unwrap_or_default();
            let whole = r.store.get(op).copied().unwrap_or_default();
            println!(
                "| round {} | {op} | {} | {} | {} | {} | {} | {} |",
                round + 1,
                to_ready.requests,
                to_ready.bytes,
                whole.requests,
                whole.bytes,
                whole.errors,
                whole.retries
            );
        }
    }
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
    // A folder or s3://BUCKET/PREFIX.
    let state: Location = asked["state"].as_str().unwrap().parse().unwrap();
    let restoring = asked["restoring"].as_u64().unwrap();
    let metrics = Metrics::default();
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut job = RunJob {
        checkpoint: Some(CheckpointSettings {
            dir: state,
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
    // The store's requests so far, when the last one while starting
    // finished, when the start was over, and the figures at ready.
    let (mut requests, mut store_done_s, mut store_ready) = (0, None, serde_json::json!({}));
    let mut prepared_s = None;
    let (mut rss_ready_mib, mut rss_written_mib) = (f64::NAN, f64::NAN);
    while written_s.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "the restore did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
        let (restored, lag, frontier, rows, made, starting) = metrics.read(|f| {
            (
                f.checkpoints.restore_seconds.is_some(),
                f.lag(),
                f.progress.frontier,
                f.checkpoints.restored_rows,
                f.checkpoints
                    .store
                    .values()
                    .map(|s| s.requests)
                    .sum::<u64>(),
                f.life.state == ServiceState::Starting,
            )
        });
        if prepared_s.is_none() && made != requests {
            requests = made;
            store_done_s = Some(started.elapsed().as_secs_f64());
        }
        if prepared_s.is_none() && !starting {
            prepared_s = Some(started.elapsed().as_secs_f64());
        }
        if ready.is_none() && restored && lag == 0 {
            ready = Some((started.elapsed().as_secs_f64(), rows));
            rss_ready_mib = presence::harness::bench::rss_mib().unwrap_or(f64::NAN);
            store_ready = metrics.read(|f| store_json(&f.checkpoints.store));
        }
        if ready.is_some() && frontier > restoring + 1 {
            written_s = Some(started.elapsed().as_secs_f64());
            rss_written_mib = presence::harness::bench::rss_mib().unwrap_or(f64::NAN);
        }
    }
    let produced: u64 = metrics.read(|f| f.produced.values().sum());
    // The service idles with its state: what stays resident once the
    // restore's transient memory is given back (mimalloc returns freed
    // arena memory after about 10 s).
    std::thread::sleep(SETTLE);
    let rss_settled_mib = presence::harness::bench::rss_mib().unwrap_or(f64::NAN);
    shutdown.store(true, Ordering::Relaxed);
    service.join().unwrap().unwrap();
    let (ready_s, rows) = ready.unwrap();
    let store = metrics.read(|f| store_json(&f.checkpoints.store));
    println!(
        "{}",
        serde_json::json!({
            "ready_s": ready_s, "written_s": written_s.unwrap(), "rows": rows, "produced": produced,
            "store_done_s": store_done_s, "prepared_s": prepared_s, "store_ready": store_ready, "store": store,
            "rss_ready_mib": rss_ready_mib, "rss_written_mib": rss_written_mib, "rss_settled_mib": rss_settled_mib,
            "peak_rss_mib": presence::harness::bench::peak_rss_mib().unwrap_or(f64::NAN),
        })
    );
}
