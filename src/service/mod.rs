//! `presence run`: the streaming service, from Kafka input topics to upsert
//! output topics and a progress topic (docs/contract.md, section 3).
//!
//! Each worker of each process reads the input partitions its
//! [`KafkaSource`] is assigned (from the topics' metadata, the same in every
//! process), validates and ingests them exactly as file backfill does, and
//! feeds the one dataflow; its outputs go to the upsert topics through
//! [`crate::kafka::upsert`], and worker 0 publishes progress through
//! [`crate::kafka::progress`]. Logical time is the wall clock in milliseconds
//! at ingestion (strictly increasing per worker), so an output's `"time"`
//! says when its input arrived.
//!
//! A worker's loop is its story: wait while the outputs lag, close the epoch
//! when the millisecond changes (with its event-time promise and the
//! offsets it reflects), read a batch from the source into the pipeline,
//! step the dataflow, serve the producer's acknowledgements, report figures.
//! When told to stop (or, with `--stop-at-end`, once the input is read), it
//! notes its last epoch, closes its inputs and steps until the final
//! frontier is published.
//!
//! With `--checkpoint-dir`, the state is checkpointed every
//! `--checkpoint-interval` of logical time and at a clean stop
//! ([`crate::checkpoint`]), and a start restores the newest complete
//! checkpoint ([`crate::service::restore`]): its rows enter the dataflow at the
//! restore epoch, the sinks reconcile them with what the output topics hold,
//! and the inputs resume at the checkpoint's offsets with its lateness
//! state.
//!
//! Idle partitions, unreadable records and what becomes late: see
//! [`crate::kafka::source`].

pub mod job;
pub mod restore;

pub use job::{
    topic_list, CheckpointSettings, RunError, RunJob, Topics, CHECKPOINT_INTERVAL, IDLE_TIMEOUT,
    PROGRESS_INTERVAL, READY_LAG,
};

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::{AsCollection, VecCollection};
use rdkafka::producer::{BaseProducer, Producer};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Probe as _};
use timely::dataflow::{ProbeHandle, StreamVec};
use timely::worker::Worker;

use crate::checkpoint::store::{self, Origin};
use crate::checkpoint::{self, CheckpointConfig};
use crate::cluster::{responsible_for, Workers};
use crate::dataflow::note::Note;
use crate::dataflow::operators::windows::Snapshots;
use crate::dataflow::Time;
use crate::kafka::offsets::GroupOffsets;
use crate::kafka::progress;
use crate::kafka::source::KafkaSource;
use crate::kafka::upsert;
use crate::kafka::{self, DeliveryTracker, InputPartition, KafkaFailure};
use crate::model::clock::now_ms;
use crate::model::ingest::{Ingested, PartitionState};
use crate::model::output::{Output, PerOutput};
use crate::model::records::EventTime;
use crate::model::summary::Summary;
use crate::observe::metrics::{Metrics, ServiceState, WorkerFigures};
use crate::pipeline::Pipeline;
use restore::Restart;

/// The least and the most time a checkpoint write retries for (about one
/// `--checkpoint-interval`).
const WRITE_PATIENCE: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(60));
/// How often a worker publishes its figures to the metrics.
const METRICS_EVERY: Duration = Duration::from_millis(250);
/// Messages read per epoch per worker at most (as backfill's epoch lines).
const EPOCH_MESSAGES: usize = 1 << 16;
/// How far (ms of logical time) a worker may read ahead of the acknowledged outputs.
const MAX_MS_IN_FLIGHT: u64 = 2_000;
/// How many records of its input a worker's sinks may hold that the
/// producer's queue (100,000 messages by default) had no room for.
const MAX_RECORDS_WAITING: usize = 100_000;
/// Runs the service on the cluster `config` until `shutdown` is set (or, with
/// `stop_at_end`, until the input is consumed), then flushes.
///
/// The input topics are checked before any output topic is created, so a
/// misnamed input leaves nothing behind.
pub fn run(
    config: timely::Config,
    job: RunJob,
    shutdown: Arc<AtomicBool>,
    metrics: Metrics,
) -> Result<Summary, RunError> {
    refuse_inputs_named_twice(&job)?;
    let consumer = kafka::consumer(&job.kafka)?;
    let inputs = kafka::input_partitions(
        &consumer,
        &job.kafka.brokers,
        &job.inputs(),
        job.connect_timeout,
    )?;
    let restore = match &job.checkpoint {
        Some(settings) => restore::prepare(
            &job,
            settings,
            (Workers::of(&config).process, &metrics),
            &inputs,
            &consumer,
        )?,
        None => Restart::default(),
    };
    if let Some(manifest) = &restore.manifest {
        tracing::info!(
            store = %restore.store.as_ref().map_or(String::new(), |s| s.location().to_string()),
            time = manifest.time,
            rows = manifest.rows(),
            bytes = manifest.bytes(),
            restore_epoch = restore.epoch,
            existing_rows = restore.existing.len(),
            read_back = restore.read_back,
            tails = ?restore.tails.0,
            seconds = restore.began.map_or(0.0, |b| b.elapsed().as_secs_f64()),
            "restoring a checkpoint"
        );
    }
    let t = &job.topics;
    // Row and rejected topics are upserts, compacted; progress has one
    // partition, so that its order is the frontiers' order.
    let mut create: Vec<kafka::NewTopicSpec> = t
        .outputs
        .values()
        .map(|topic| (topic.as_str(), job.output_partitions, true))
        .collect();
    create.push((&t.progress, 1, false));
    kafka::create_missing_topics_with(&consumer, &job.kafka, &create, job.connect_timeout)?;
    // One client asked the brokers everything above; its teardown waits for nobody.
    kafka::drop_in_background(consumer);
    let workers = Workers::of(&config).per_process;
    metrics.update(|f| {
        f.life.workers = workers;
        f.life.ready_lag = job.ready_lag;
        f.enter(match restore.manifest {
            Some(_) => ServiceState::Restoring,
            None => ServiceState::CatchingUp,
        });
    });
    let connect_timeout = job.connect_timeout;
    restore.loading.store(workers, Ordering::Relaxed);
    let job = Arc::new((job, inputs, restore));
    let failed = Arc::new(AtomicBool::new(false));
    let results = crate::cluster::execute(config, connect_timeout, move |worker| {
        let (job, inputs, restore) = &*job;
        let result = run_worker(worker, job, inputs, restore, &shutdown, &failed, &metrics);
        if result.is_err() {
            // The other workers of this process stop too, without waiting
            // for outputs this worker will never acknowledge.
            failed.store(true, Ordering::Relaxed);
            shutdown.store(true, Ordering::Relaxed);
            abandon(worker);
        }
        result
    })
    .map_err(RunError::Timely)?;
    let mut summary = Summary::default();
    let mut failure = None;
    for result in results {
        match result.map_err(RunError::Worker).and_then(|r| r) {
            Ok(part) => summary.merge(part),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    failure.map_or(Ok(summary), Err)
}

/// Drops the worker's dataflows: after a failure they may never complete,
/// and timely would step them forever.
fn abandon(worker: &mut Worker) {
    for dataflow in worker.installed_dataflows() {
        worker.drop_dataflow(dataflow);
    }
}

fn run_worker(
    worker: &mut Worker,
    job: &RunJob,
    inputs: &[InputPartition],
    restore: &Restart,
    shutdown: &AtomicBool,
    failed: &AtomicBool,
    metrics: &Metrics,
) -> Result<Summary, RunError> {
    let mut service = Service::start(worker, job, inputs, restore, metrics)?;
    let stopping = |service: &Service| {
        shutdown.load(Ordering::Relaxed) || (job.stop_at_end && service.source.exhausted())
    };
    while !stopping(&service) {
        if let Some(line) = restore.superseded.get() {
            return Err(RunError::Superseded(line.clone()));
        }
        job.hooks.between_steps(worker.index());
        service.hold_back(worker, shutdown);
        service.tick();
        service.ask_queries();
        let read = service.read()?;
        worker.step_or_park(Some(if read > 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(1)
        }));
        service.serve()?;
        service.report(false);
    }
    let summary = service.drain(worker, failed)?;
    match restore.superseded.get() {
        Some(line) => Err(RunError::Superseded(line.clone())),
        None => Ok(summary),
    }
}

/// One worker's part of the service: its pipeline and sinks, its source, and
/// what it counted.
struct Service<'j> {
    job: &'j RunJob,
    index: usize,
    pipeline: Pipeline,
    source: KafkaSource,
    /// The producer, as the sinks share it: how many records wait for room
    /// in its queue, and the restore epoch.
    sender: upsert::Sender,
    /// The frontier of the outputs before the sinks (in-dataflow latency).
    computed: ProbeHandle<Time>,
    /// Done once the final progress message is handed to the producer.
    published: ProbeHandle<Time>,
    summary: Summary,
    /// For in-dataflow latency, per epoch given probes: the epoch, when its
    /// first probe entered, and how many did.
    entered: VecDeque<(Time, Instant, u64)>,
    metrics: Metrics,
    reported: Instant,
    /// Logical time: the wall clock, but never below where it started (a
    /// restart's epochs are above every earlier time).
    clock: Clock,
    /// The restore epoch and when preparing the restore began, until the
    /// dataflow has passed it.
    restoring: Option<(Time, Instant)>,
    /// The restore epoch, until the outputs have written it (the rows the
    /// sinks held for it are freed then: see [`kafka::give_back_freed`]).
    writing_restored: Option<Time>,
}

/// The service's logical clock: the wall clock in milliseconds, or, while
/// the wall clock is behind where the run started, that start plus the time
/// since (strictly increasing across restarts either way).
struct Clock {
    floor: Time,
    since: Instant,
}

impl Clock {
    fn now(&self) -> Time {
        now_ms().max(self.floor + self.since.elapsed().as_millis() as u64)
    }
}

/// Refuses a job that names an input topic twice (as two kinds, or twice
/// in one list): each input topic holds one kind of record.
fn refuse_inputs_named_twice(job: &RunJob) -> Result<(), RunError> {
    let mut named = std::collections::BTreeSet::new();
    for (_, topic) in job.inputs() {
        if !named.insert(topic.clone()) {
            return Err(RunError::Usage(format!(
                "input topic {topic} is named twice: each input topic holds one kind of record"
            )));
        }
    }
    Ok(())
}

/// What the checkpoint operators of a run that starts at logical time
/// `first` write, and from what (`None` without `--checkpoint-dir`).
fn checkpoint_config(
    job: &RunJob,
    restore: &Restart,
    first: Time,
) -> Option<Arc<CheckpointConfig>> {
    job.checkpoint.as_ref().map(|settings| {
        let store = restore
            .store
            .as_ref()
            .expect("a run with --checkpoint-dir prepared its store");
        Arc::new(CheckpointConfig {
            // Writes retry within about one interval; a cut that cannot be
            // written by then is a failure, carried into the next.
            store: store.with_patience(settings.interval.clamp(WRITE_PATIENCE.0, WRITE_PATIENCE.1)),
            generation: restore.generation,
            superseded: Arc::clone(&restore.superseded),
            every: Some((settings.interval.as_millis() as u64).max(1)),
            kept: settings.kept,
            origin: Origin::Run,
            params: job.params,
            inputs: Some(job.recorded_inputs()),
            base: restore.manifest.clone(),
            run: first,
            restored_at: restore.manifest.as_ref().map(|_| restore.epoch),
            rejections: Some((
                job.topics[Output::Rejected].clone(),
                restore.rejections.clone(),
            )),
            hooks: Arc::clone(&job.hooks),
        })
    })
}

/// Gives `pipeline` this worker's key groups of the checkpoint's state and
/// its share of what the output topics hold, at the restore epoch; returns
/// where a `run` checkpoint says each input partition resumes.
///
/// The state goes in a key group at a time, the worker stepping between
/// groups, so that rows move on into the operators as they are decoded:
/// the state is never held decoded whole, nor queued whole in front of
/// the dataflow.
fn load_restored(
    worker: &mut Worker,
    pipeline: &mut Pipeline,
    restore: &Restart,
    manifest: &store::Manifest,
    (index, peers): (usize, usize),
    metrics: &Metrics,
) -> Result<BTreeMap<(String, i32), PartitionState>, RunError> {
    let loading = Instant::now();
    let (Some(store), Some(pieces)) = (&restore.store, restore.pieces()) else {
        unreachable!("a restored checkpoint's store and pieces are prepared")
    };
    let mut count = 0;
    let read = store::restore_groups(
        store,
        manifest,
        &pieces,
        |group| responsible_for(group as usize, peers) == index,
        |rows| {
            count += rows.len() as u64;
            for row in rows {
                pipeline.restore(row);
            }
            pipeline.flush();
            worker.step();
        },
    );
    drop(pieces);
    restore.loaded();
    read?;
    tracing::debug!(
        worker = index,
        rows = count,
        seconds = loading.elapsed().as_secs_f64(),
        "read this worker's part of the checkpoint"
    );
    for (i, existing) in restore.existing.iter().enumerate() {
        if responsible_for(i, peers) == index {
            pipeline.existing(existing.clone());
        }
    }
    metrics.update(|f| f.checkpoints.restored_rows += count);
    Ok(match manifest.origin {
        Origin::Run => manifest
            .partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.clone()))
            .collect(),
        Origin::Backfill => BTreeMap::new(),
    })
}

impl<'j> Service<'j> {
    /// Builds the dataflow, gives it the restored state (if any) at the
    /// restore epoch, and opens the source.
    fn start(
        worker: &mut Worker,
        job: &'j RunJob,
        inputs: &[InputPartition],
        restore: &Restart,
        metrics: &Metrics,
    ) -> Result<Self, RunError> {
        let (index, peers) = (worker.index(), worker.peers());
        let producer = Rc::new(kafka::producer(&job.kafka, metrics.clone())?);
        {
            let mut deliveries = producer
                .context()
                .0
                .lock()
                .expect("no thread panics holding the lock");
            deliveries.share(Arc::clone(&restore.outputs));
        }
        let computed = ProbeHandle::new();
        let published = ProbeHandle::new();
        let first = match &restore.manifest {
            Some(_) => restore.epoch,
            None => now_ms(),
        };
        let checkpoint = checkpoint_config(job, restore, first);
        // Worker 0 commits the offsets its outputs reflect to the group.
        let group = (index == 0)
            .then(|| GroupOffsets::new(&job.kafka))
            .transpose()?;
        let sender = upsert::Sender::new(
            Rc::clone(&producer),
            restore.manifest.as_ref().map(|_| first),
            computed.clone(),
            metrics.clone(),
        );
        let mut pipeline = build(
            worker,
            job,
            &sender,
            metrics,
            &computed,
            &published,
            checkpoint,
            group,
            restore.sinks(),
        );
        pipeline.advance_to(first);
        let mut restored = BTreeMap::new();
        let mut restoring = None;
        if let Some(manifest) = &restore.manifest {
            // Until the restored rows are written (`serve`).
            kafka::purge_freed_at_once();
            restored = load_restored(
                worker,
                &mut pipeline,
                restore,
                manifest,
                (index, peers),
                metrics,
            )?;
            pipeline.advance_to(first + 1);
            restoring = restore.began.map(|began| (first, began));
        }
        let source = KafkaSource::open(job.source_options(), inputs, index, peers, &restored)?;
        let clock = Clock {
            floor: pipeline.epoch(),
            since: Instant::now(),
        };
        Ok(Service {
            job,
            index: worker.index(),
            pipeline,
            source,
            sender,
            computed,
            published,
            summary: Summary::default(),
            entered: VecDeque::new(),
            metrics: metrics.clone(),
            reported: Instant::now(),
            clock,
            restoring,
            writing_restored: restoring.map(|(epoch, _)| epoch),
        })
    }

    /// Steps the dataflow without reading while [`Service::held_back`]:
    /// memory stays bounded however fast the input arrives.
    fn hold_back(&mut self, worker: &mut Worker, shutdown: &AtomicBool) {
        while self.held_back() && !shutdown.load(Ordering::Relaxed) {
            worker.step_or_park(Some(Duration::from_millis(1)));
            kafka::serve_outputs(self.sender.producer());
        }
    }

    /// Whether reading must wait: the sinks hold more than
    /// [`MAX_RECORDS_WAITING`] records of the input that the producer had no
    /// room for, or the acknowledged outputs are more than
    /// [`MAX_MS_IN_FLIGHT`] behind. While the restored rows are being
    /// written (seconds, for a hand-off to empty topics), the outputs cannot
    /// pass the restore epoch; then it is the outputs before the sinks that
    /// must keep up, and the records after them wait in the sinks, counted.
    fn held_back(&self) -> bool {
        if self.sender.waiting() > MAX_RECORDS_WAITING {
            return true;
        }
        let behind = self.pipeline.epoch().saturating_sub(MAX_MS_IN_FLIGHT);
        match self.sender.restore_epoch() {
            Some(epoch) if self.pipeline.probe().less_equal(&epoch) => {
                self.computed.less_than(&behind)
            }
            _ => self.pipeline.lagging(MAX_MS_IN_FLIGHT),
        }
    }

    /// The logical time of a record is the millisecond it was read in: a new
    /// millisecond closes the previous epoch, with the source's event-time
    /// promise and the offsets it reflects. The epoch advances even when
    /// nothing was read: every worker's input frontier holds back every
    /// output, so a worker with idle (or no) partitions must not hold an old
    /// epoch open.
    fn tick(&mut self) {
        let now = self.clock.now();
        if now > self.pipeline.epoch() {
            self.close_epoch();
            self.pipeline.advance_to(now);
        }
    }

    fn close_epoch(&mut self) {
        if let Some(promise) = self.source.promise(Instant::now(), now_ms()) {
            self.pipeline.promise(promise);
        }
        for note in self.source.offsets() {
            self.pipeline.note(note);
        }
    }

    /// Asks the queries waiting in the process's inbox at the current epoch,
    /// once the first frontier of this run is complete (after a restore:
    /// once the restore epoch is), and opens the inbox then.
    fn ask_queries(&mut self) {
        let queries = &self.job.queries;
        if !queries.answering() {
            let first = self.sender.restore_epoch().map_or(1, |epoch| epoch + 1);
            if self.pipeline.probe().less_than(&first) {
                return;
            }
            queries.set_answering(true);
        }
        for (query, reply) in queries.take() {
            self.pipeline.ask(query, reply);
        }
    }

    /// Reads a batch from the source into the pipeline.
    fn read(&mut self) -> Result<usize, RunError> {
        let (pipeline, summary, entered) =
            (&mut self.pipeline, &mut self.summary, &mut self.entered);
        let timed = self.job.hooks.dataflow_latency().is_some();
        let read = self.source.read(EPOCH_MESSAGES, now_ms(), |ingested| {
            summary.count(&ingested);
            if timed && matches!(ingested, Ingested::Probe(_)) {
                match entered.back_mut() {
                    Some((epoch, _, n)) if *epoch == pipeline.epoch() => *n += 1,
                    _ => entered.push_back((pipeline.epoch(), Instant::now(), 1)),
                }
            }
            pipeline.give(ingested);
        })?;
        summary.bytes += read.bytes;
        Ok(read.records)
    }

    /// Serves the producer's acknowledgements; fails if a record could not
    /// be delivered.
    fn serve(&mut self) -> Result<(), RunError> {
        note_restored(
            &mut self.restoring,
            &self.computed,
            self.index,
            &self.metrics,
        );
        if let Some(epoch) = self.writing_restored {
            if !self.published.less_equal(&epoch) {
                self.writing_restored = None;
                kafka::purge_freed_later();
                kafka::give_back_freed();
            }
        }
        serve(
            self.job,
            self.sender.producer(),
            &self.computed,
            &mut self.entered,
        )
    }

    /// Publishes this worker's figures, at most every [`METRICS_EVERY`]
    /// unless `now`.
    fn report(&mut self, now: bool) {
        if !now && self.reported.elapsed() < METRICS_EVERY {
            return;
        }
        self.reported = Instant::now();
        let partitions: Vec<_> = self.source.figures().collect();
        let promised = self.pipeline.promised().filter(|&p| p < EventTime::MAX);
        let figures = WorkerFigures {
            summary: self.summary.clone(),
            frontier_delay_ms: promised.map(|p| now_ms().saturating_sub(p)),
            window: self.pipeline.window_stats().get(),
            output_frontier: self.pipeline.probe().with_frontier(|f| f.first().copied()),
            output_waiting: self.sender.held(),
        };
        let index = self.index;
        self.metrics.update(|f| {
            f.partitions.extend(partitions);
            f.workers.insert(index, figures);
            f.refresh_state();
        });
    }

    /// Notes the last epoch's offsets and that this worker stops, closes the
    /// inputs, and steps until every output is acknowledged and the final
    /// frontier is published; then flushes. Gives up at once if another
    /// worker of this process `failed` (the process reports its error).
    fn drain(mut self, worker: &mut Worker, failed: &AtomicBool) -> Result<Summary, RunError> {
        self.job.queries.set_answering(false);
        self.report(true);
        self.metrics.update(|f| f.enter(ServiceState::Stopping));
        // The last epoch's promise and offsets, as at every epoch's end: the
        // final event-time frontier covers everything read (with
        // `--stop-at-end`, every partition's own watermark, as backfill's).
        self.close_epoch();
        self.pipeline.note(Note::Closed);
        let Service {
            job,
            pipeline,
            computed,
            published,
            mut entered,
            summary,
            sender,
            metrics,
            index,
            mut restoring,
            ..
        } = self;
        drop(pipeline);
        let producer = sender.producer();
        while !published.done() {
            if failed.load(Ordering::Relaxed) {
                abandon(worker);
                return Ok(summary);
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
            // A restart with nothing to read restores while it drains.
            note_restored(&mut restoring, &computed, index, &metrics);
            serve(job, producer, &computed, &mut entered)?;
        }
        // The figures reported above were taken before the sinks drained.
        metrics.update(|f| {
            if let Some(figures) = f.workers.get_mut(&index) {
                figures.output_waiting = sender.held();
            }
        });
        kafka::flush(producer, job.connect_timeout).map_err(|source| KafkaFailure::Delivery {
            brokers: job.kafka.brokers.clone(),
            topic: job.topics.progress.clone(),
            source: Box::new(source),
        })?;
        Ok(summary)
    }
}

/// Once the outputs before the sinks (`computed`) have passed the restore
/// epoch in `restoring`, logs and counts that the state is restored (and
/// forgets the epoch), and gives back the memory the restore freed.
fn note_restored(
    restoring: &mut Option<(Time, Instant)>,
    computed: &ProbeHandle<Time>,
    index: usize,
    metrics: &Metrics,
) {
    let Some((epoch, began)) = *restoring else {
        return;
    };
    if computed.less_equal(&epoch) {
        return;
    }
    *restoring = None;
    // What the restore freed goes back to the system now, not when this
    // thread next allocates much.
    kafka::give_back_freed();
    let seconds = began.elapsed().as_secs_f64();
    if index == 0 {
        tracing::info!(seconds, "state restored");
    }
    metrics.update(|f| {
        f.life.restored += 1;
        f.checkpoints.restore_seconds = Some(seconds);
    });
}

/// Serves `producer`'s acknowledgements and fails if a record could not be
/// delivered; records the in-dataflow latency of the epochs in `entered`
/// that the outputs' frontier before the sinks (`computed`) has passed.
fn serve(
    job: &RunJob,
    producer: &BaseProducer<DeliveryTracker>,
    computed: &ProbeHandle<Time>,
    entered: &mut VecDeque<(Time, Instant, u64)>,
) -> Result<(), RunError> {
    kafka::serve_outputs(producer);
    if let Some((topic, source)) = producer
        .context()
        .0
        .lock()
        .expect("no thread panics holding the lock")
        .failure()
    {
        return Err(KafkaFailure::Delivery {
            brokers: job.kafka.brokers.clone(),
            topic: topic.clone(),
            source: Box::new(source.clone()),
        }
        .into());
    }
    if let Some(recorder) = job.hooks.dataflow_latency() {
        let frontier = computed.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
        while let Some(&(epoch, at, n)) = entered.front() {
            if epoch >= frontier {
                break;
            }
            recorder.record(at, at.elapsed(), n);
            entered.pop_front();
        }
    }
    Ok(())
}

/// Builds the dataflow on `worker` with Kafka sinks: the four upsert topics,
/// the rejected topic and, on worker 0, the progress topic. `computed`
/// probes the outputs before the sinks; `published` is done once the final
/// frontier is handed to the producer.
#[allow(clippy::too_many_arguments)]
fn build(
    worker: &mut Worker,
    job: &RunJob,
    sender: &upsert::Sender,
    metrics: &Metrics,
    computed: &ProbeHandle<Time>,
    published: &ProbeHandle<Time>,
    checkpoint: Option<Arc<CheckpointConfig>>,
    group: Option<GroupOffsets>,
    tails: PerOutput<upsert::TopicAtRestore>,
) -> Pipeline {
    let t = job.topics.clone();
    let (producer, metrics) = (Rc::clone(sender.producer()), metrics.clone());
    let sender = sender.clone();
    let (computed, published) = (computed.clone(), published.clone());
    let delay = job.hooks.output_delay();
    let interval = job.progress_interval;
    let snapshots = checkpoint.as_ref().map(|c| Snapshots { every: c.every });
    Pipeline::with_sinks(
        worker,
        &job.params,
        snapshots,
        move |outputs, sides, probe| {
            let sinks = Sinks {
                existing: sides.existing,
                restored: &tails,
                topics: &t,
                sender: &sender,
                delay,
                computed: &computed,
                probe,
            };
            let written = vec![
                sinks.upsert(outputs.walkins, Output::Walkins, Some(metrics.clone())),
                sinks.upsert(outputs.device_contacts, Output::DeviceContacts, None),
                sinks.upsert(outputs.enriched_walkins, Output::EnrichedWalkins, None),
                sinks.upsert(outputs.walkin_counts, Output::WalkinCounts, None),
                sinks.upsert(outputs.present, Output::Present, None),
                upsert::rejected(
                    sides.rejected,
                    sinks.existing(Output::Rejected),
                    t[Output::Rejected].clone(),
                    sender.clone(),
                )
                .probe_with(probe),
                sides.notes,
            ];
            let scope = written[0].scope();
            let notes = scope.concatenate(written);
            // With checkpoints, the group gets the checkpoints' offsets
            // (where a restart resumes); without, the frontiers'.
            let (frontier_group, checkpoint_group) = match checkpoint {
                Some(_) => (None, group),
                None => (group, None),
            };
            progress::publish(
                notes.clone(),
                t.progress,
                Rc::clone(&producer),
                interval,
                metrics.clone(),
                frontier_group,
                sender.restore_epoch(),
            )
            .probe_with(&published);
            if let Some(config) = checkpoint {
                let written = checkpoint::Written {
                    deliveries: Arc::clone(&producer.context().0),
                    sinks: probe.clone(),
                };
                let pieces = checkpoint::checkpoint(
                    outputs.state,
                    Arc::clone(&config),
                    metrics.clone(),
                    Some(written),
                );
                checkpoint::coordinate(pieces, notes, config, metrics, checkpoint_group)
                    .probe_with(&published);
            }
        },
    )
}

/// What every output's sink is wired to: what the topics held at a
/// restore, what each sink knows of its topic, the topics, the producer,
/// the harness's output delay, and the probes before (`computed`) and
/// after (`probe`) the sinks.
struct Sinks<'a, 's> {
    existing: StreamVec<'s, Time, upsert::Existing>,
    restored: &'a PerOutput<upsert::TopicAtRestore>,
    topics: &'a Topics,
    sender: &'a upsert::Sender,
    delay: Duration,
    computed: &'a ProbeHandle<Time>,
    probe: &'a ProbeHandle<Time>,
}

impl<'s> Sinks<'_, 's> {
    /// What `output`'s topic held at a restore.
    fn existing(&self, output: Output) -> StreamVec<'s, Time, upsert::Existing> {
        self.existing
            .clone()
            .flat_map(move |row| (row.output == output).then_some(row))
    }

    /// Writes `collection` to `output`'s upsert topic (counting its rows in
    /// `counted`); returns the sink's notes.
    fn upsert<D>(
        &self,
        collection: VecCollection<'s, Time, D>,
        output: Output,
        counted: Option<Metrics>,
    ) -> StreamVec<'s, Time, Note>
    where
        D: differential_dataflow::ExchangeData
            + upsert::Row
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let collection = collection.inner.probe_with(self.computed).as_collection();
        upsert::upsert(
            collection,
            self.existing(output),
            self.restored[output],
            self.topics[output].clone(),
            self.sender.clone(),
            counted,
            self.delay,
        )
        .probe_with(self.probe)
    }
}
