//! `presence backfill`: read input files to completion through the dataflow
//! and write the final collections (docs/operations.md).
//!
//! Every worker of every process reads the files [`responsible_for`] assigns
//! it, in epochs of [`EPOCH_LINES`] lines, never more than
//! [`MAX_EPOCHS_IN_FLIGHT`] epochs ahead of the outputs (so memory is bounded
//! by the open state, not by how fast files are read), then writes its part of
//! each collection. A failure anywhere in this process leaves no part of its
//! output published.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::worker::Worker;

use crate::checkpoint::store::{self, Location, Origin, Store};
use crate::checkpoint::CheckpointConfig;
use crate::cluster::{responsible_for, Gathering, Workers};
use crate::dataflow::held::Held;
use crate::dataflow::note::Note;
use crate::files::input::{check_readable, plan, FileError, FileSource, InputFile, LinesRead};
use crate::files::output::{self, FinishedPart, OutputError, PartWriter};
use crate::model::clock::now_ms;
use crate::model::ingest::Kind;
use crate::model::output::Output;
use crate::model::params::Params;
use crate::model::records::{EventTime, Reason};
use crate::model::summary::Summary;
use crate::observe::hooks::{no_hooks, SharedHooks};
use crate::observe::metrics::Metrics;
use crate::pipeline::{Collections, Keep, Pipeline};

/// Lines per epoch per worker. Larger epochs amortise the per-time work of
/// the operators; smaller ones bound what sits buffered in front of them,
/// which is most of a backfill's memory besides the walk-ins: 16 Ki lines
/// (~1.5 MiB of probes) against 64 Ki gave a 28-day backfill a third less
/// peak memory, and took 5% less time (BENCHMARKS.md, section 7).
pub const EPOCH_LINES: u64 = 1 << 14;
/// Lines read from one file before choosing again which file to read.
const CHUNK_LINES: u64 = 1 << 12;
/// How many epochs a worker may read ahead of the completed outputs: two
/// keep a worker reading while the last one is computed (4 took no less
/// time, and at -w 2 half again as much memory: BENCHMARKS.md, section 7).
pub const MAX_EPOCHS_IN_FLIGHT: u64 = 2;

/// What to backfill.
#[derive(Clone, Debug)]
pub struct Job {
    /// Probe files, one partition each.
    pub probes: Vec<PathBuf>,
    /// Login files.
    pub logins: Vec<PathBuf>,
    /// Base-count files.
    pub base_counts: Vec<PathBuf>,
    /// The output folder.
    pub out: PathBuf,
    /// The detection parameters.
    pub params: Params,
    /// Read, parse and validate only: no dataflow and no output (the
    /// benchmark's floor).
    pub parse_only: bool,
    /// Write the final state as a checkpoint here, for `run` to continue
    /// from (the hand-off).
    pub checkpoint_dir: Option<Location>,
    /// Discard the checkpoints already in `checkpoint_dir` first (without
    /// it, a folder holding any is refused: see
    /// [`BackfillError::HoldsCheckpoints`]).
    pub reset_state: bool,
    /// In a cluster, how long another process may show no sign of life
    /// before this one stops (see [`crate::cluster::execute`]).
    pub connect_timeout: Duration,
    /// Where a harness disturbs the run: a test holds a backfill at its end
    /// with a delay before each piece of the final checkpoint.
    pub hooks: SharedHooks,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            probes: Vec::new(),
            logins: Vec::new(),
            base_counts: Vec::new(),
            out: PathBuf::new(),
            params: Params::default(),
            parse_only: false,
            checkpoint_dir: None,
            reset_state: false,
            connect_timeout: Duration::from_secs(10),
            hooks: no_hooks(),
        }
    }
}

/// A backfill that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// No probe, login or base-count file was given.
    #[error("no input files: give at least one of --probes, --logins, --base-counts")]
    NoInput,
    /// An input file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The output could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The checkpoint folder cannot be used.
    #[error("checkpoint store: {0}")]
    Checkpoint(#[from] crate::checkpoint::store::StoreError),
    /// The checkpoint folder already holds checkpoints: the backfill's,
    /// older than a run's, would be pruned at once, and another backfill's
    /// would be replaced without a word.
    #[error("{place} already holds {count} checkpoint(s) (the newest: {newest}); a backfill's checkpoint there would not be the one a restart restores: name an empty folder or prefix, or add --reset-state to discard them first")]
    HoldsCheckpoints {
        /// The folder or prefix.
        place: String,
        /// How many manifests it holds.
        count: usize,
        /// The newest one, described.
        newest: String,
    },
    /// The final checkpoint could not be written.
    #[error("the final checkpoint could not be written to {0} (see the warnings above)")]
    CheckpointFailed(String),
    /// A newer run took the checkpoint store while this one ran.
    #[error("{0}")]
    Superseded(String),
    /// Timely could not start (e.g. the cluster could not connect).
    #[error("cannot start the workers: {0}")]
    Timely(String),
    /// A worker panicked: a bug.
    #[error("a worker failed: {0}")]
    Worker(String),
}

/// Records and bytes read so far by this process's workers (for progress).
#[derive(Debug, Default)]
pub struct Progress {
    /// Lines read.
    pub lines: AtomicU64,
    /// Bytes read.
    pub bytes: AtomicU64,
}

/// The input files and total bytes this job reads, checked readable.
pub fn inputs(job: &Job) -> Result<(Vec<InputFile>, u64), BackfillError> {
    let files = plan(&job.probes, &job.logins, &job.base_counts);
    if files.is_empty() {
        return Err(BackfillError::NoInput);
    }
    let bytes = check_readable(&files)?;
    Ok((files, bytes))
}

/// Makes the store at `location` ready for the backfill's checkpoint:
/// usable, and holding no checkpoint (discarded first with `reset`,
/// refused otherwise); process 0 takes a generation (see
/// [`store::claim`]) and returns it. Every process checks the same store
/// before the cluster connects, so all refuse or all go on; only process 0
/// discards.
fn take_checkpoint_store(
    job: &Job,
    location: &Location,
    process: usize,
    metrics: &Metrics,
) -> Result<(Store, u64), BackfillError> {
    let store = Store::open(location, metrics)?.with_patience(job.connect_timeout);
    store.check()?;
    if !job.reset_state {
        refuse_held_checkpoints(&store)?;
    }
    if process != 0 {
        return Ok((store, 0));
    }
    let generation = store::claim(&store, Origin::Backfill, &job.params, None)?;
    if job.reset_state {
        let removed = store::reset(&store, generation)?;
        if removed > 0 {
            tracing::warn!(store = %location, objects = removed, "--reset-state: discarded the checkpoints");
        }
    }
    Ok((store, generation))
}

/// Refuses a store that holds a checkpoint (a claim of a run that wrote
/// none is not one).
fn refuse_held_checkpoints(store: &Store) -> Result<(), BackfillError> {
    let held: Vec<_> = store::manifests(store)?
        .into_iter()
        .filter(|l| l.manifest.as_ref().map_or(true, |m| !m.claim))
        .collect();
    let Some(newest) = held.first() else {
        return Ok(());
    };
    let described = match &newest.manifest {
        Ok(manifest) => format!(
            "time {}, written by {}",
            manifest.time,
            manifest.origin.name()
        ),
        Err(_) => format!("{}, unreadable", newest.place),
    };
    Err(BackfillError::HoldsCheckpoints {
        place: store.location().to_string(),
        count: held.len(),
        newest: described,
    })
}

/// Runs `job` on the cluster `config`, reporting progress into `progress`.
pub fn run(
    config: timely::Config,
    job: Job,
    progress: Arc<Progress>,
) -> Result<Summary, BackfillError> {
    run_with_epochs(config, job, progress, EPOCH_LINES)
}

/// As [`run`], with `epoch_lines` lines per epoch per worker instead of
/// [`EPOCH_LINES`] (tests use small epochs to observe the state bound).
pub fn run_with_epochs(
    config: timely::Config,
    job: Job,
    progress: Arc<Progress>,
    epoch_lines: u64,
) -> Result<Summary, BackfillError> {
    let (files, _bytes) = inputs(&job)?;
    let metrics = Metrics::default();
    let workers = Workers::of(&config);
    let taken = match &job.checkpoint_dir {
        Some(location) => Some(take_checkpoint_store(
            &job,
            location,
            workers.process,
            &metrics,
        )?),
        None => None,
    };
    if !job.parse_only {
        output::prepare(&job.out)?;
    }
    let checkpoint = taken.map(|(store, generation)| {
        Arc::new(CheckpointConfig {
            store: store.with_patience(store::PATIENCE),
            generation,
            superseded: Default::default(),
            every: None,
            kept: store::MANIFESTS_KEPT,
            origin: Origin::Backfill,
            params: job.params,
            inputs: None,
            base: None,
            run: now_ms(),
            restored_at: None,
            rejections: None,
            hooks: Arc::clone(&job.hooks),
        })
    });
    let peers = workers.total;
    let processes = workers.total / workers.per_process.max(1);
    let job_out = (!job.parse_only).then(|| job.out.clone());
    let connect_timeout = job.connect_timeout;
    let job = Arc::new((job, files, checkpoint.clone()));
    let worker_metrics = metrics.clone();
    let mut results: Vec<_> = crate::cluster::execute(config, connect_timeout, move |worker| {
        let (job, files, checkpoint) = &*job;
        run_worker(
            worker,
            job,
            files,
            checkpoint.clone(),
            &worker_metrics,
            &progress,
            epoch_lines.max(1),
        )
    })
    .map_err(BackfillError::Timely)?
    .into_iter()
    .map(|result| result.map_err(BackfillError::Worker).and_then(|r| r))
    .collect();
    if let Some(position) = results.iter().position(Result::is_err) {
        for (_, parts) in results.iter_mut().filter_map(|r| r.as_mut().ok()) {
            std::mem::take(parts)
                .into_iter()
                .for_each(FinishedPart::discard);
        }
        return Err(results.swap_remove(position).expect_err("found an error"));
    }
    if let Some(config) = &checkpoint {
        // Process 0 writes the manifest; the others only their pieces.
        if let Some(line) = config.superseded.get() {
            return Err(BackfillError::Superseded(line.clone()));
        }
        if metrics.read(|f| f.checkpoints.failures) > 0 {
            return Err(BackfillError::CheckpointFailed(
                config.store.location().to_string(),
            ));
        }
    }
    // Every part is complete: replace the previous run's output.
    if let Some(out) = job_out {
        for folder in output::FOLDERS {
            output::remove_stale_parts(&out.join(folder), peers)?;
        }
    }
    let mut summary = Summary::default();
    for (worker_summary, parts) in results.into_iter().map(|r| r.expect("no errors")) {
        summary.merge(worker_summary);
        for part in parts {
            part.publish()?;
        }
    }
    if processes == 1 {
        // The process's summary is the whole.
        summary.cluster = None;
    }
    Ok(summary)
}

/// The event-time promise of a worker's probe files: the least of theirs,
/// `None` while one has not started, `u64::MAX` if there are none.
///
/// A file that has ended promises its own watermark, not everything: the
/// end of input is not the passing of time (docs/contract.md, "Who is in
/// the store now"), so `present` is who was in the store when the input
/// ended, and a checkpoint keeps the visits that data after the backfill
/// (from `run`) may still continue, as one run over all of it would —
/// whatever the order in which files end. An ended file without an
/// accepted probe promises nothing of its own (it does not hold the
/// frontier back).
fn promise(sources: &[FileSource]) -> Option<EventTime> {
    let mut least = EventTime::MAX;
    for source in sources.iter().filter(|source| source.kind() == Kind::Probe) {
        let watermark = match (source.watermark(), source.finished()) {
            (Some(own), _) => own,
            (None, true) => continue,
            (None, false) => return None,
        };
        least = least.min(watermark);
    }
    Some(least)
}

fn run_worker(
    worker: &mut Worker,
    job: &Job,
    files: &[InputFile],
    checkpoint: Option<Arc<CheckpointConfig>>,
    metrics: &Metrics,
    progress: &Progress,
    epoch_lines: u64,
) -> Result<(Summary, Vec<FinishedPart>), BackfillError> {
    let (index, peers) = (worker.index(), worker.peers());
    let open = || {
        files
            .iter()
            .enumerate()
            .filter(|(position, _)| responsible_for(*position, peers) == index)
            .map(|(_, file)| FileSource::open(file, &job.params))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut summary = Summary::default();
    // A cluster's totals, gathered on worker 0 at the end (each process
    // reports its own share; process 0 also the whole).
    let gathering = Gathering::new(worker);
    let with_totals = |worker: &mut Worker, mut summary: Summary| {
        let gathered = gathering.finish(worker, summary.counts());
        summary.cluster = gathered.map(|all| {
            let mut total = Summary::default();
            all.iter()
                .for_each(|counts| total.merge(Summary::of_counts(counts)));
            Box::new(total)
        });
        summary
    };

    if job.parse_only {
        let summary = parse_only(open()?, progress, epoch_lines)?;
        return Ok((with_totals(worker, summary), Vec::new()));
    }

    // Every worker builds the dataflow before anything can fail: the other
    // workers would wait forever on one that never built it, whereas one that
    // returns early drops its inputs and lets them finish.
    let collections = Arc::new(Mutex::new(Collections::default()));
    let mut pipeline = Pipeline::new(
        worker,
        &job.params,
        Arc::clone(&collections),
        Keep::State,
        checkpoint,
        metrics.clone(),
    );
    let mut sources = open()?;
    let mut rejected = PartWriter::create(&job.out.join(Output::Rejected.folder()), index, peers)?;
    let drain_rejected = |rejected: &mut PartWriter| -> Result<(), OutputError> {
        let batch = std::mem::take(
            &mut collections
                .lock()
                .expect("no worker panics holding the lock")
                .rejected,
        );
        batch.iter().try_for_each(|record| rejected.write(record))
    };

    while next_source(&sources).is_some() {
        while pipeline.lagging(MAX_EPOCHS_IN_FLIGHT) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        let now = now_ms();
        let mut budget = epoch_lines;
        while let (true, Some(next)) = (budget > 0, next_source(&sources)) {
            let read = sources[next].read(budget.min(CHUNK_LINES), now, |ingested| {
                summary.count(&ingested);
                pipeline.give(ingested);
            })?;
            budget = budget.saturating_sub(read.lines.max(1));
            note(&mut summary, progress, read);
        }
        if let Some(frontier) = promise(&sources) {
            pipeline.promise(frontier);
        }
        pipeline.advance();
        worker.step();
        drain_rejected(&mut rejected)?;
    }
    // The last epoch: the checkpoint's time is above it. A worker without
    // files promises here (everything: it has no probe to send), so that
    // it does not hold the event-time frontier back.
    if let Some(frontier) = promise(&sources) {
        pipeline.promise(frontier);
    }
    pipeline.note(Note::Closed);
    let stats = pipeline.window_stats().clone();
    let held = pipeline
        .take_held()
        .expect("a pipeline keeping its state holds it");
    let probe = pipeline.close();
    while !probe.done() {
        worker.step_or_park(None);
    }
    drain_rejected(&mut rejected)?;

    let size = stats.get();
    summary.peak_window_keys = size.peak_keys;
    summary.peak_window_timestamps = size.peak_timestamps;
    let held_size = held.size();
    summary.held_devices = held_size.devices;
    summary.held_walkins = held_size.walkins;
    summary.held_counts = held_size.counts;
    let parts = write_parts(job, (index, peers), rejected, &held, &mut summary)?;
    Ok((with_totals(worker, summary), parts))
}

/// `--parse-only`: reads this worker's `sources` and counts what ingestion
/// makes of them, without a dataflow.
fn parse_only(
    mut sources: Vec<FileSource>,
    progress: &Progress,
    epoch_lines: u64,
) -> Result<Summary, BackfillError> {
    let mut summary = Summary::default();
    while let Some(next) = next_source(&sources) {
        let read =
            sources[next].read(epoch_lines, now_ms(), |ingested| summary.count(&ingested))?;
        note(&mut summary, progress, read);
    }
    Ok(summary)
}

/// Writes this worker's part of each collection, read from the state the
/// dataflow holds (under a temporary name), counting the records per folder
/// in `summary`.
fn write_parts(
    job: &Job,
    (index, peers): (usize, usize),
    rejected: PartWriter,
    held: &Held,
    summary: &mut Summary,
) -> Result<Vec<FinishedPart>, BackfillError> {
    summary
        .written
        .insert(Output::Rejected.folder(), rejected.records());
    let mut parts = vec![rejected.finish()?];
    let mut publish = |output: Output, part: (u64, FinishedPart)| {
        summary.written.insert(output.folder(), part.0);
        parts.push(part.1);
    };
    let dir = |output: Output| job.out.join(output.folder());
    let w = Output::Walkins;
    publish(
        w,
        output::write_part(&dir(w), index, peers, |each| held.walkins(each))?,
    );
    let w = Output::DeviceContacts;
    publish(
        w,
        output::write_part(&dir(w), index, peers, |each| held.device_contacts(each))?,
    );
    let w = Output::EnrichedWalkins;
    publish(
        w,
        output::write_part(&dir(w), index, peers, |each| held.enriched_walkins(each))?,
    );
    let w = Output::WalkinCounts;
    publish(
        w,
        output::write_part(&dir(w), index, peers, |each| held.walkin_counts(each))?,
    );
    let w = Output::Present;
    publish(
        w,
        output::write_part(&dir(w), index, peers, |each| held.present(each))?,
    );
    Ok(parts)
}

/// The next file a worker reads (see [`FileSource::read_order`]).
fn next_source(sources: &[FileSource]) -> Option<usize> {
    (0..sources.len())
        .filter(|&i| !sources[i].finished())
        .min_by_key(|&i| sources[i].read_order())
}

/// Counts bytes read (records are counted one by one, by [`Summary::count`])
/// and shows both in `progress`.
fn note(summary: &mut Summary, progress: &Progress, read: LinesRead) {
    summary.bytes += read.bytes;
    progress.lines.fetch_add(read.lines, Ordering::Relaxed);
    progress.bytes.fetch_add(read.bytes, Ordering::Relaxed);
}

/// Every reason's name, so summaries list zeros too.
pub fn reasons() -> impl Iterator<Item = &'static str> {
    Reason::ALL.into_iter().map(Reason::as_str)
}
