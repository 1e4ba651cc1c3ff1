//! `presence run`: the streaming service, from Kafka input topics to upsert
//! output topics and a progress topic (SPEC sections 3 and 4).
//!
//! Each worker of each process reads the input partitions
//! [`responsible_for`] assigns it (from the topics' metadata, the same in
//! every process), validates and ingests them exactly as file backfill does,
//! and feeds the one dataflow; its outputs go to the upsert topics through
//! [`crate::io::upsert`]. Logical time is the wall clock in milliseconds at
//! ingestion (strictly increasing per worker), so an output's `"time"` says
//! when its input arrived. Worker 0 publishes `{"frontier": T}` whenever the
//! acknowledged frontier of every worker's sinks advances.
//!
//! Unreadable records: librdkafka reports a record batch that fails its CRC
//! check (`check.crcs` is on) or cannot be decoded once per fetch, at the
//! batch's first offset ([`crate::io::fetch`]), and would fetch it again from
//! the same position forever. The worker rejects the record at its position
//! as `corrupt` and seeks one offset on; the broker returns the same batch
//! until the position leaves it, so each record in it is rejected once,
//! with its own offset, and reading goes on. That costs one fetch of the
//! batch per record in it — nothing, for the rare corrupt batch.
//!
//! Not yet here: resuming from committed offsets (a later issue).
//!
//! Idle partitions: a probe partition that delivered nothing for
//! `--idle-timeout` stops holding back the event-time frontier, which only
//! decides when window state is freed (output is never held back by it). A
//! probe it delivers later below the frontier promised meanwhile is rejected
//! as late — the one case where acceptance depends on timing, and the price
//! of not holding state forever for a silent partition. With `--stop-at-end`
//! an exhausted partition stops holding the frontier at once.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use differential_dataflow::{AsCollection, VecCollection};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::Offset;
use timely::dataflow::operators::Probe as _;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::backfill::Summary;
use crate::dataflow::Time;
use crate::io::fetch::{Fetched, Fetcher};
use crate::io::files::responsible_for;
use crate::io::ingest::{self, Ingested, Kind, PartitionIngest};
use crate::io::kafka::{self, KafkaFailure, UNTRACKED};
use crate::io::upsert;
use crate::metrics::{Metrics, PartitionFigures};
use crate::params::Params;
use crate::pipeline::Pipeline;
use crate::records::EventTime;

/// How often a worker publishes its figures to the metrics.
const METRICS_EVERY: Duration = Duration::from_millis(250);
/// Messages read per epoch per worker at most (as backfill's epoch lines).
const EPOCH_MESSAGES: usize = 1 << 16;
/// How far (ms of logical time) a worker may read ahead of the acknowledged outputs.
const MAX_MS_IN_FLIGHT: u64 = 2_000;

/// The topics, by role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// Input: probes.
    pub probes: String,
    /// Input: logins.
    pub logins: String,
    /// Input: base counts.
    pub base_counts: String,
    /// Output: walk-ins.
    pub walkins: String,
    /// Output: device contacts.
    pub device_contacts: String,
    /// Output: enriched walk-ins.
    pub enriched_walkins: String,
    /// Output: walk-in counts.
    pub walkin_counts: String,
    /// Output: rejected records.
    pub rejected: String,
    /// Output: progress.
    pub progress: String,
}

impl Default for Topics {
    /// The SPEC's names.
    fn default() -> Self {
        Topics::with_output_prefix("")
    }
}

impl Topics {
    /// The SPEC's input topics, and its output topics with `prefix` before each name.
    pub fn with_output_prefix(prefix: &str) -> Self {
        Topics {
            probes: "probes".into(),
            logins: "logins".into(),
            base_counts: "base-counts".into(),
            walkins: format!("{prefix}walkins"),
            device_contacts: format!("{prefix}device-contacts"),
            enriched_walkins: format!("{prefix}enriched-walkins"),
            walkin_counts: format!("{prefix}walkin-counts"),
            rejected: format!("{prefix}presence-rejected"),
            progress: format!("{prefix}presence-progress"),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunJob {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topic names.
    pub topics: Topics,
    /// Detection parameters.
    pub params: Params,
    /// Stop once every input partition is read up to its end offset at start.
    pub stop_at_end: bool,
    /// How long to wait for the broker's metadata before giving up.
    pub connect_timeout: Duration,
    /// Partitions of the output topics `run` creates (the progress topic has one).
    pub output_partitions: i32,
    /// A probe partition with no message for this long stops holding back
    /// the event-time frontier (and so the freeing of window state); a probe
    /// it delivers later below the frontier promised meanwhile is late.
    pub idle_timeout: Duration,
    /// Measurement hooks and injected faults, for `presence bench`.
    pub instrument: Instrument,
}

/// Measurement hooks and synthetic faults for `presence bench`; all off by
/// default.
#[derive(Clone, Debug, Default)]
pub struct Instrument {
    /// Where to record in-dataflow latency: from a probe entering the
    /// dataflow (given to its input) to the frontier of the dataflow's
    /// outputs, before the sinks, passing its logical time.
    pub dataflow_latency: Option<Arc<crate::bench::Recorder>>,
    /// Hold every upsert output this long past its logical time before
    /// writing it: a synthetic delay, to show that the harness sees it.
    pub delay_outputs: Duration,
    /// Once this long after the start, stop every worker for this long: a
    /// synthetic stall, to show that the harness sees it as growing latency.
    pub stall: Option<(Duration, Duration)>,
}

/// A run that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    /// Timely could not start.
    #[error("cannot start the workers: {0}")]
    Timely(String),
    /// A worker panicked: a bug.
    #[error("a worker failed: {0}")]
    Worker(String),
}

/// The wall clock in milliseconds: the unit of the service's logical time.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the service on the cluster `config` until `shutdown` is set (or, with
/// `stop_at_end`, until the input is consumed), then flushes.
pub fn run(
    config: timely::Config,
    job: RunJob,
    shutdown: Arc<AtomicBool>,
    metrics: Metrics,
) -> Result<Summary, RunError> {
    let t = &job.topics;
    let outputs = [
        &t.walkins,
        &t.device_contacts,
        &t.enriched_walkins,
        &t.walkin_counts,
        &t.rejected,
    ];
    let mut create: Vec<(&str, i32)> = outputs
        .iter()
        .map(|topic| (topic.as_str(), job.output_partitions))
        .collect();
    // One partition, so that the progress topic's order is the frontiers' order.
    create.push((&t.progress, 1));
    kafka::create_missing_topics(&job.brokers, &create, job.connect_timeout)?;
    let job = Arc::new(job);
    let guards = timely::execute(config, move |worker| {
        run_worker(worker, &job, &shutdown, &metrics)
    })
    .map_err(RunError::Timely)?;
    let mut summary = Summary::default();
    for result in guards.join() {
        summary.merge(result.map_err(RunError::Worker)??);
    }
    Ok(summary)
}

/// One assigned input partition being read.
struct Reading {
    ingest: PartitionIngest,
    /// When its last message arrived (or reading started).
    heard: Instant,
    /// Messages read.
    read: u64,
    /// The end offset at start: with `--stop-at-end`, read up to here.
    end: i64,
    /// The next offset to read.
    next: i64,
}

impl Reading {
    fn exhausted(&self) -> bool {
        self.next >= self.end
    }
}

fn run_worker(
    worker: &mut Worker,
    job: &RunJob,
    shutdown: &AtomicBool,
    metrics: &Metrics,
) -> Result<Summary, RunError> {
    let (index, peers) = (worker.index(), worker.peers());
    let topics = &job.topics;
    let producer = Rc::new(kafka::producer(&job.brokers, metrics.clone())?);
    let sinks = Rc::clone(&producer);
    let sink_topics = topics.clone();
    let walkins_metrics = metrics.clone();
    let delay = job.instrument.delay_outputs;
    // The frontier of the outputs before the sinks: in-dataflow latency.
    let computed = ProbeHandle::new();
    let computed_in = computed.clone();
    let mut pipeline =
        Pipeline::with_sinks(worker, &job.params, move |outputs, rejected, probe| {
            let t = sink_topics;
            // An output, probed before its sink (`computed`) and after (`probe`).
            #[allow(clippy::too_many_arguments)]
            fn sink<'s, D>(
                collection: VecCollection<'s, Time, D>,
                topic: String,
                producer: &Rc<rdkafka::producer::BaseProducer<kafka::DeliveryTracker>>,
                metrics: Option<Metrics>,
                delay: Duration,
                computed: &ProbeHandle<Time>,
                probe: &ProbeHandle<Time>,
            ) where
                D: differential_dataflow::ExchangeData + upsert::Row + serde::Serialize,
            {
                let collection = collection.inner.probe_with(computed).as_collection();
                upsert::upsert(collection, topic, Rc::clone(producer), metrics, delay)
                    .probe_with(probe);
            }
            let c = &computed_in;
            sink(
                outputs.walkins,
                t.walkins,
                &sinks,
                Some(walkins_metrics),
                delay,
                c,
                probe,
            );
            sink(
                outputs.device_contacts,
                t.device_contacts,
                &sinks,
                None,
                delay,
                c,
                probe,
            );
            sink(
                outputs.enriched_walkins,
                t.enriched_walkins,
                &sinks,
                None,
                delay,
                c,
                probe,
            );
            sink(
                outputs.walkin_counts,
                t.walkin_counts,
                &sinks,
                None,
                delay,
                c,
                probe,
            );
            upsert::rejected(rejected, t.rejected, sinks).probe_with(probe);
        });

    let consumer: BaseConsumer = kafka::consumer(&job.brokers)?;
    let inputs = [
        (Kind::Probe, topics.probes.clone()),
        (Kind::Login, topics.logins.clone()),
        (Kind::BaseCount, topics.base_counts.clone()),
    ];
    let all = kafka::input_partitions(&consumer, &job.brokers, &inputs, job.connect_timeout)?;
    let mine: Vec<_> = all
        .into_iter()
        .enumerate()
        .filter(|(position, _)| responsible_for(*position, peers) == index)
        .map(|(_, partition)| partition)
        .collect();
    let ends = kafka::assign_from_start(&consumer, &job.brokers, &mine, job.connect_timeout)?;
    let mut reading: HashMap<(String, i32), Reading> = mine
        .iter()
        .zip(ends)
        .map(|(p, (first, end))| {
            let ingest =
                PartitionIngest::new(p.kind, p.topic.clone(), p.partition as u64, &job.params);
            (
                (p.topic.clone(), p.partition),
                Reading {
                    ingest,
                    heard: Instant::now(),
                    read: 0,
                    end,
                    // Retention may have removed offsets below `first`.
                    next: first,
                },
            )
        })
        .collect();

    let fetcher = Fetcher::new(&consumer);
    // The look-up key of a message's partition, reused: no allocation per message.
    let mut key = (String::new(), 0);
    let mut summary = Summary::default();
    let mut published: u64 = 0;
    let publish = |frontier: u64, published: &mut u64| -> Result<(), RunError> {
        // One partition, so that the topic's order is the frontiers' order.
        if index == 0 && frontier > *published {
            *published = frontier;
            let value = serde_json::json!({ "frontier": frontier }).to_string();
            kafka::send(
                &producer,
                &topics.progress,
                Some(0),
                None,
                Some(&value),
                UNTRACKED,
            )
            .map_err(|source| KafkaFailure::Delivery {
                brokers: job.brokers.clone(),
                topic: topics.progress.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    };
    let failed = |producer: &rdkafka::producer::BaseProducer<kafka::DeliveryTracker>| {
        let deliveries = producer
            .context()
            .0
            .lock()
            .expect("no thread panics holding the lock");
        deliveries
            .failure()
            .map(|(topic, source)| KafkaFailure::Delivery {
                brokers: job.brokers.clone(),
                topic: topic.clone(),
                source: Box::new(source.clone()),
            })
    };
    let sink_probe = pipeline.probe().clone();
    let mut last_published = Instant::now();
    // Whether the current epoch holds records (or a new promise) to close.
    let mut given = false;
    let mut promised = None;
    let instrument = &job.instrument;
    let started = Instant::now();
    let mut stalled = false;
    // Logical time is the wall clock from the first record on.
    pipeline.advance_to(now_ms());
    // For in-dataflow latency, per epoch given probes: the epoch, when its
    // first probe entered, and how many did.
    let mut entered: VecDeque<(u64, Instant, u64)> = VecDeque::new();

    loop {
        if let Some((after, length)) = instrument.stall {
            if !stalled && started.elapsed() >= after {
                stalled = true;
                std::thread::sleep(length);
            }
        }
        if shutdown.load(Ordering::Relaxed)
            || (job.stop_at_end && reading.values().all(Reading::exhausted))
        {
            break;
        }
        if let Some(failure) = failed(&producer) {
            return Err(failure.into());
        }
        while pipeline.lagging(MAX_MS_IN_FLIGHT) && !shutdown.load(Ordering::Relaxed) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        // The logical time of a record is the millisecond it was read in: a
        // new millisecond closes the previous epoch (after its promise). The
        // epoch advances even when nothing was read: every worker's input
        // frontier holds back every output, so a worker with idle (or no)
        // partitions must not hold an old epoch open.
        let now = now_ms();
        if now > pipeline.epoch() {
            // Computed after the epoch's last read, so it covers every record
            // given; only raises are sent.
            if let Some(frontier) = promised.filter(|_| given) {
                pipeline.promise(frontier);
            }
            pipeline.advance_to(now);
            given = false;
        }
        let mut read = 0;
        while read < EPOCH_MESSAGES {
            let Some(mut event) = fetcher.poll(Duration::ZERO) else {
                break;
            };
            match event.read() {
                Fetched::Message {
                    topic,
                    partition,
                    offset,
                    payload,
                } => {
                    read += 1;
                    key.0.clear();
                    key.0.push_str(topic);
                    key.1 = partition;
                    let Some(partition) = reading.get_mut(&key) else {
                        continue;
                    };
                    partition.next = offset + 1;
                    if partition.heard.elapsed() > job.idle_timeout {
                        // It was left out of the promises while idle.
                        partition
                            .ingest
                            .raise_floor(pipeline.promised().unwrap_or(0));
                    }
                    partition.heard = Instant::now();
                    partition.read += 1;
                    if job.stop_at_end && offset >= partition.end {
                        continue; // arrived after the run started
                    }
                    let ingested = partition.ingest.ingest(payload, offset as u64, now);
                    count(&ingested, &mut summary);
                    summary.lines += 1;
                    summary.bytes += payload.len() as u64;
                    if instrument.dataflow_latency.is_some()
                        && matches!(ingested, Ingested::Probe(_))
                    {
                        match entered.back_mut() {
                            Some((epoch, _, n)) if *epoch == pipeline.epoch() => *n += 1,
                            _ => entered.push_back((pipeline.epoch(), Instant::now(), 1)),
                        }
                    }
                    pipeline.give(ingested);
                }
                Fetched::Unreadable {
                    topic,
                    partition,
                    offset,
                    detail,
                } => {
                    let place = (topic, partition);
                    let Some(reading) = reading.get_mut(&place) else {
                        continue;
                    };
                    let topic = place.0;
                    // The batch holds the record at `next` (or starts after
                    // it, past a gap): reject that one record and seek past it.
                    // librdkafka would fetch the batch again from the same
                    // position forever; from the next offset the broker
                    // returns the same batch until the position leaves it,
                    // so every record in it is rejected once, by offset.
                    let at = offset.max(reading.next);
                    if job.stop_at_end && at >= reading.end {
                        continue;
                    }
                    tracing::warn!(topic, partition, offset = at, %detail,
                        "rejected a record the Kafka client could not read");
                    reading.next = at + 1;
                    reading.heard = Instant::now();
                    if let Err(error) =
                        consumer.seek(&topic, partition, Offset::Offset(at + 1), Duration::ZERO)
                    {
                        return Err(KafkaFailure::Client {
                            brokers: job.brokers.clone(),
                            action: format!("skipping offset {at} of {topic}/{partition}"),
                            source: Box::new(error),
                        }
                        .into());
                    }
                    let rejected = Ingested::Rejected(ingest::corrupt(
                        &topic,
                        partition as u64,
                        at as u64,
                        format!("record at offset {at}: {detail}"),
                    ));
                    count(&rejected, &mut summary);
                    pipeline.give(rejected);
                    read += 1;
                }
                Fetched::Error { detail, fatal } => {
                    if fatal {
                        return Err(KafkaFailure::Fatal {
                            brokers: job.brokers.clone(),
                            detail,
                        }
                        .into());
                    }
                    tracing::warn!(%detail, "the Kafka consumer reported an error; it retries");
                }
                Fetched::Nothing => {}
            }
        }
        // Exhausted partitions change the promise without any record.
        let current = promise(&reading, job, Instant::now());
        given |= read > 0 || current != promised;
        promised = current;
        if last_published.elapsed() >= METRICS_EVERY {
            last_published = Instant::now();
            publish_metrics(metrics, index, &consumer, &reading, &pipeline, &summary);
        }
        worker.step_or_park(Some(if read > 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(1)
        }));
        kafka::serve(&producer);
        if let Some(frontier) = sink_probe.with_frontier(|f| f.first().copied()) {
            publish(frontier, &mut published)?;
        }
        record_computed(instrument, &computed, &mut entered);
    }

    publish_metrics(metrics, index, &consumer, &reading, &pipeline, &summary);
    pipeline.promise(EventTime::MAX);
    drop(pipeline);
    while !sink_probe.done() {
        if let Some(failure) = failed(&producer) {
            return Err(failure.into());
        }
        worker.step_or_park(Some(Duration::from_millis(1)));
        kafka::serve(&producer);
        if let Some(frontier) = sink_probe.with_frontier(|f| f.first().copied()) {
            publish(frontier, &mut published)?;
        }
        record_computed(instrument, &computed, &mut entered);
    }
    // Every update of every worker is acknowledged.
    publish(u64::MAX, &mut published)?;
    kafka::flush(&producer, job.connect_timeout).map_err(|source| KafkaFailure::Delivery {
        brokers: job.brokers.clone(),
        topic: topics.progress.clone(),
        source: Box::new(source),
    })?;
    Ok(summary)
}

/// Records the in-dataflow latency of the epochs in `entered` that the
/// outputs' frontier (before the sinks) has passed.
fn record_computed(
    instrument: &Instrument,
    computed: &ProbeHandle<Time>,
    entered: &mut VecDeque<(u64, Instant, u64)>,
) {
    let Some(recorder) = &instrument.dataflow_latency else {
        return;
    };
    let frontier = computed.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
    while let Some(&(epoch, at, n)) = entered.front() {
        if epoch >= frontier {
            break;
        }
        recorder.record(at, at.elapsed(), n);
        entered.pop_front();
    }
}

/// Publishes a worker's figures (its partitions, promise and window state).
fn publish_metrics(
    metrics: &Metrics,
    index: usize,
    consumer: &BaseConsumer,
    reading: &HashMap<(String, i32), Reading>,
    pipeline: &Pipeline,
    summary: &Summary,
) {
    let figures: Vec<_> = reading
        .iter()
        .map(|((topic, partition), r)| {
            let lag = kafka::cached_end_offset(consumer, topic, *partition)
                .map(|end| (end - r.next).max(0));
            let figures = PartitionFigures {
                read: r.read,
                lag,
                high_water: r.ingest.high_water(),
            };
            ((topic.clone(), *partition), figures)
        })
        .collect();
    let open_visits = pipeline.window_stats().get().keys as u64;
    let delay = pipeline
        .promised()
        .filter(|&p| p < EventTime::MAX)
        .map(|p| now_ms().saturating_sub(p));
    metrics.update(|f| {
        f.partitions.extend(figures);
        f.open_visits.insert(index, open_visits);
        if let Some(delay) = delay {
            f.frontier_delay_ms.insert(index, delay);
        }
        f.rejected_by_worker.insert(index, summary.rejected.clone());
    });
}

fn count(ingested: &Ingested, summary: &mut Summary) {
    match ingested {
        Ingested::Probe(_) => summary.accepted[0] += 1,
        Ingested::Login(_) => summary.accepted[1] += 1,
        Ingested::BaseCount(_) => summary.accepted[2] += 1,
        Ingested::Rejected(r) => *summary.rejected.entry(r.reason.as_str()).or_default() += 1,
        Ingested::Blank => {}
    }
}

/// The event-time promise of a worker's probe partitions (see
/// `backfill::promise`): with `--stop-at-end` an exhausted partition, and
/// otherwise an idle one, promises everything.
fn promise(
    reading: &HashMap<(String, i32), Reading>,
    job: &RunJob,
    now: Instant,
) -> Option<EventTime> {
    reading
        .values()
        .filter(|r| r.ingest.kind() == Kind::Probe)
        .try_fold(EventTime::MAX, |least, r| {
            let idle = now.saturating_duration_since(r.heard) > job.idle_timeout;
            if (job.stop_at_end && r.exhausted()) || idle {
                Some(least)
            } else {
                r.ingest.watermark().map(|w| least.min(w))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(stop_at_end: bool) -> RunJob {
        RunJob {
            brokers: String::new(),
            topics: Topics::default(),
            params: Params::default(),
            stop_at_end,
            connect_timeout: Duration::from_secs(1),
            output_partitions: 1,
            idle_timeout: Duration::from_secs(60),
            instrument: Instrument::default(),
        }
    }

    fn partition(ts: Option<u64>, heard: Instant, end: i64, next: i64) -> Reading {
        let mut ingest = PartitionIngest::new(Kind::Probe, "probes", 0, &Params::default());
        if let Some(ts) = ts {
            let line = format!(r#"{{"device":"d","business":"b","ts":{ts},"rssi":-60}}"#);
            assert!(matches!(
                ingest.ingest(line.as_bytes(), 0, 0),
                Ingested::Probe(_)
            ));
        }
        Reading {
            ingest,
            heard,
            read: 0,
            end,
            next,
        }
    }

    #[test]
    fn silent_and_exhausted_partitions_stop_holding_the_promise() {
        let start = Instant::now();
        let lateness = Params::default().allowed_lateness;
        let mut reading = HashMap::new();
        reading.insert(
            ("probes".to_owned(), 0),
            partition(Some(10 * lateness), start, 5, 0),
        );
        reading.insert(("probes".to_owned(), 1), partition(None, start, 0, 0));
        // A partition that has not delivered a probe holds everything back...
        assert_eq!(promise(&reading, &job(false), start), None);
        // ...until it has been silent for the idle timeout,
        let later = start + Duration::from_secs(61);
        reading.get_mut(&("probes".to_owned(), 0)).unwrap().heard = later;
        assert_eq!(promise(&reading, &job(false), later), Some(9 * lateness));
        // or, with --stop-at-end, at once if it is exhausted.
        assert_eq!(promise(&reading, &job(true), start), Some(9 * lateness));
    }
}
