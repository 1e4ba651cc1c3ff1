//! `presence bench`: one point of the latency and throughput benchmark.
//!
//! **Open loop.** Record `i` is due at `start + floor(i * 1000 / rate)` ms —
//! the schedule is fixed before the run, and a record sent late is still
//! measured from its due time, so a stalled system cannot hide its backlog
//! (no coordinated omission). Due times are whole milliseconds (the tick is
//! 1 ms): every probe's `ts` *is* its due time.
//!
//! **Three latencies**, each an HDR histogram in microseconds:
//! - *end-to-end*: from a probe's due time to the moment the walk-in it
//!   caused (the probe at which the visit qualified: the walk-in's
//!   `detected_at` is that probe's `ts`, so its due time) is readable in the
//!   walk-ins topic — acknowledged by the broker and fetched by the harness's
//!   own consumer, which is the consumer a downstream user would be.
//! - *in-dataflow*: from a probe entering the dataflow to the frontier of the
//!   dataflow's outputs (before the Kafka sinks) passing its logical time
//!   (recorded by the workers of process 0, see [`crate::service::Instrument`]).
//! - *Kafka floor*: the same records produced and consumed through the same
//!   broker, with the same client settings and no dataflow, before the
//!   pipeline's schedule starts (its workers idle meanwhile): what one Kafka
//!   hop costs here.
//!
//! The end-to-end latency is also reported in two parts, split where the
//! pipeline read the probe (a walk-in's `"time"`, the millisecond its input
//! was read): `e2e_input` (generator, producer, broker, the pipeline's
//! consumer) and `e2e_output` (dataflow, sink, broker, the harness's consumer).
//!
//! Samples count when the record was due in `[warmup, duration)`; the
//! pipeline then gets `drain` to deliver what was due before the end.
//!
//! **Sustainable** means: the generator achieved at least 95% of the offered
//! rate, the consumer lag at the end of the measurement is at most half a
//! second of input, and the end-to-end median of the last third of the
//! measurement is at most 1.5 times that of the first third plus 10 ms
//! (latency does not keep growing; a spike that clears does not count).
//!
//! With `-n 2` and more, every process runs the pipeline; process 0 also
//! runs the generator and the harness, and ends the other processes by a
//! message on the control topic. Several processes need an external broker
//! and a shared `--prefix`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::harness::generator::{LiveConfig, LiveWorkload};
use crate::kafka::{self, Connection, KafkaFailure};
use crate::model::ingest::Kind;
use crate::model::params::Params;
use crate::observe::metrics::{LatencyRecorder, Metrics};
use crate::service::{Instrument, RunError, RunJob, Stall, Topics};

use crate::observe::metrics::{latency_histogram as histogram, MAX_LATENCY_MICROS as MAX_MICROS};

/// The latencies a report holds, and what each measures.
pub const LATENCIES: [(&str, &str); 5] = [
    (
        "e2e",
        "a probe's due time -> the walk-in it triggered is readable in the walk-ins topic (fetched by the harness's consumer)",
    ),
    (
        "e2e_input",
        "the due time -> the pipeline read the probe (generator, producer, broker, the pipeline's consumer)",
    ),
    (
        "e2e_output",
        "the pipeline read the probe -> the walk-in is readable (dataflow, upsert sink, broker, harness's consumer)",
    ),
    (
        "dataflow",
        "a probe given to the dataflow -> the dataflow's outputs pass its time (before the Kafka sinks)",
    ),
    (
        "kafka_floor",
        "the same schedule through one topic of the same broker and client settings, no dataflow",
    ),
];

/// One benchmark point.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Offered input records per second.
    pub rate: u64,
    /// How long the generator runs (warm-up included).
    pub duration: Duration,
    /// Samples due before this are not counted.
    pub warmup: Duration,
    /// After the generator stops, how long the pipeline gets to deliver.
    pub drain: Duration,
    /// An external broker; `None` starts librdkafka's in-process mock broker.
    pub brokers: Option<String>,
    /// The operator's client settings (`--kafka-config`, `-X`).
    pub kafka_settings: crate::kafka::settings::ClientSettings,
    /// Topic name prefix (default: unique per run; required with `-n 2+`).
    pub prefix: Option<String>,
    /// Distinct devices (the window operator's state is one visit per device).
    pub devices: u64,
    /// Businesses.
    pub businesses: u64,
    /// How long a device stays at one business before moving on.
    pub visit: Duration,
    /// Partitions of every topic the bench creates.
    pub partitions: i32,
    /// The producers' `linger.ms`.
    pub linger_ms: u64,
    /// Detection parameters.
    pub params: Params,
    /// Measure the bare-Kafka floor first.
    pub floor: bool,
    /// Synthetic delay of every output (tests the harness).
    pub delay_outputs: Duration,
    /// Synthetic stall of every worker: how long after the load's schedule
    /// starts, for how long (tests the harness).
    pub stall: Option<(Duration, Duration)>,
    /// Workers per process, processes, this process's index.
    pub workers: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// Checkpoint the pipeline's state here (every `checkpoint_interval`).
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// The checkpoint interval.
    pub checkpoint_interval: Duration,
}

impl BenchConfig {
    /// The small point the harness's own checks run (`tests/bench.rs`,
    /// `benches/harness.rs`): 1,000 records/s for `duration` after a 1 s
    /// warm-up on the in-process broker, one worker, 500 phones at 20
    /// stores staying 5 s, with detection parameters in seconds so that
    /// walk-ins come every few milliseconds.
    pub fn harness_check(duration: Duration) -> Self {
        BenchConfig {
            rate: 1_000,
            duration,
            warmup: Duration::from_secs(1),
            drain: Duration::from_millis(1_500),
            brokers: None,
            kafka_settings: Default::default(),
            prefix: None,
            devices: 500,
            businesses: 20,
            visit: Duration::from_secs(5),
            partitions: 4,
            linger_ms: 5,
            params: Params {
                session_gap: 2_000,
                min_dwell: 1_000,
                allowed_lateness: 1_000,
                ..Params::default()
            },
            floor: false,
            delay_outputs: Duration::ZERO,
            stall: None,
            workers: 1,
            processes: 1,
            process: 0,
            checkpoint_dir: None,
            checkpoint_interval: Duration::from_secs(10),
        }
    }
}

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    /// The smallest sample.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest sample.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            min: ms(h.min()),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

/// One second of the run (by due time).
#[derive(Clone, Debug, Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub t_s: u64,
    /// Input records the broker acknowledged in this second.
    pub acked: u64,
    /// End-to-end samples due in this second.
    pub e2e_count: u64,
    /// Their median (ms).
    pub e2e_p50: Option<f64>,
    /// Their 99th percentile (ms).
    pub e2e_p99: Option<f64>,
    /// Their largest (ms).
    pub e2e_max: Option<f64>,
    /// The 99th percentile of the part of those samples before the pipeline read the probe (ms).
    pub input_p99: Option<f64>,
    /// The 99th percentile of the part after (ms).
    pub output_p99: Option<f64>,
    /// This process's resident memory at the end of the second (MiB).
    pub rss_mib: Option<f64>,
    /// Consumer lag of process 0's input partitions (records).
    pub lag: Option<i64>,
}

/// What one point measured: the JSON the `--json` file holds.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Format version.
    pub version: u32,
    /// The git commit of the working directory, if any.
    pub commit: String,
    /// When (UTC, seconds since the epoch).
    pub unix_time: u64,
    /// The machine.
    pub machine: serde_json::Value,
    /// Every parameter of the point.
    pub config: serde_json::Value,
    /// Offered records per second.
    pub rate_offered: u64,
    /// Input records per second the broker acknowledged within the duration.
    pub rate_achieved: f64,
    /// The latencies.
    pub latency_ms: BTreeMap<&'static str, Latency>,
    /// Consumer lag of process 0's input partitions when the generator stopped.
    pub lag_end: i64,
    /// See the module docs.
    pub sustainable: bool,
    /// Peak resident memory of process 0 (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Per second, by due time.
    pub timeline: Vec<Second>,
    /// Per latency: `[ms, fraction of samples above]`, log-spaced.
    pub ccdf: BTreeMap<&'static str, Vec<(f64, f64)>>,
    /// With `--checkpoint-dir`: checkpoints completed, failed, and the bytes
    /// of pieces written by process 0 (per checkpoint, on average), and the
    /// size of the last one.
    pub checkpoints: Option<serde_json::Value>,
}

/// A failed bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    /// The pipeline failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The mock broker could not start.
    #[error("cannot start the in-process broker: {0}")]
    Mock(#[from] rdkafka::error::KafkaError),
    /// Bad flags.
    #[error("{0}")]
    Usage(String),
}

/// The wall clock in microseconds.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Produces the open-loop schedule to `topics` (probes, logins) until
/// `duration` after `start_ms`.
fn generate(
    producer: &BaseProducer<Acks>,
    topics: [&str; 2],
    config: &BenchConfig,
    start: Instant,
    start_ms: u64,
) -> Result<u64, KafkaFailure> {
    let mut stream = LiveWorkload::new(LiveConfig {
        devices: config.devices,
        businesses: config.businesses,
        visit_ms: config.visit.as_millis() as u64,
        passing_chance: 0.0,
        broken_chance: 0.0,
        probe_partitions: config.partitions.max(1) as u64,
        ..LiveConfig::default()
    });
    let duration_ms = config.duration.as_millis() as u64;
    let rate = config.rate.max(1);
    let mut i: u64 = 0;
    loop {
        let offset_ms = i * 1000 / rate;
        if offset_ms >= duration_ms {
            break;
        }
        let due = start + Duration::from_millis(offset_ms);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            kafka::serve(producer);
            std::thread::sleep(wait);
        }
        let record = stream.record(i, start_ms + offset_ms);
        let topic = match record.kind {
            Kind::Login => topics[1],
            _ => topics[0],
        };
        let partition = record.partition as i32;
        loop {
            let message = BaseRecord::<(), str>::to(topic)
                .partition(partition)
                .payload(&record.line);
            match producer.send(message) {
                Ok(()) => break,
                Err((error, _))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    return Err(KafkaFailure::Client {
                        brokers: String::new(),
                        action: format!("producing to {topic}"),
                        source: Box::new(error),
                    })
                }
            }
        }
        i += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|source| KafkaFailure::Client {
            brokers: String::new(),
            action: "flushing the generator".into(),
            source: Box::new(source),
        })?;
    Ok(i)
}

/// Latency samples by due second, and in total over the measured window.
struct Samples {
    start_ms: u64,
    from_ms: u64,
    until_ms: u64,
    total: Histogram<u64>,
    seconds: Vec<Histogram<u64>>,
    /// The end-to-end latency split at the moment the pipeline read the
    /// probe (the output's logical `"time"`): before, and after.
    input: Histogram<u64>,
    output: Histogram<u64>,
    /// Their 99th percentiles per due second.
    input_seconds: Vec<Histogram<u64>>,
    output_seconds: Vec<Histogram<u64>>,
}

impl Samples {
    fn new(start_ms: u64, config: &BenchConfig) -> Self {
        let seconds = config.duration.as_secs() as usize + 1;
        Samples {
            start_ms,
            from_ms: start_ms + config.warmup.as_millis() as u64,
            until_ms: start_ms + config.duration.as_millis() as u64,
            total: histogram(),
            seconds: (0..seconds).map(|_| histogram()).collect(),
            input: histogram(),
            output: histogram(),
            input_seconds: (0..seconds).map(|_| histogram()).collect(),
            output_seconds: (0..seconds).map(|_| histogram()).collect(),
        }
    }

    /// A record due at `due_ms` became visible now; the pipeline read it
    /// at `read_ms`, if known.
    fn record(&mut self, due_ms: u64, read_ms: Option<u64>) {
        let now = wall_us();
        let us =
            |from_ms: u64, to_us: u64| to_us.saturating_sub(from_ms * 1000).clamp(1, MAX_MICROS);
        let second = (due_ms.saturating_sub(self.start_ms) / 1000) as usize;
        let measured = due_ms >= self.from_ms && due_ms < self.until_ms;
        let add = |total: &mut Histogram<u64>, seconds: &mut Vec<Histogram<u64>>, value: u64| {
            if let Some(h) = seconds.get_mut(second) {
                let _ = h.record(value);
            }
            if measured {
                let _ = total.record(value);
            }
        };
        add(&mut self.total, &mut self.seconds, us(due_ms, now));
        if let Some(read_ms) = read_ms {
            add(
                &mut self.input,
                &mut self.input_seconds,
                us(due_ms, read_ms * 1000),
            );
            add(&mut self.output, &mut self.output_seconds, us(read_ms, now));
        }
    }
}

/// Reads `topic` from its start until `stop`, handing each value to `seen`.
fn watch(
    kafka: &Connection,
    topic: &str,
    stop: &AtomicBool,
    mut seen: impl FnMut(&[u8]),
) -> Result<(), KafkaFailure> {
    let consumer = kafka::consumer(kafka)?;
    let failure = |action: String| {
        move |source| KafkaFailure::Client {
            brokers: kafka.brokers.clone(),
            action,
            source: Box::new(source),
        }
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(failure(format!("reading the metadata of {topic}")))?;
    let mut list = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        list.add_partition_offset(topic, partition.id(), Offset::Beginning)
            .map_err(failure(format!("assigning {topic}")))?;
    }
    consumer
        .assign(&list)
        .map_err(failure(format!("assigning {topic}")))?;
    while !stop.load(Ordering::Relaxed) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(10)) {
            if let Some(value) = message.payload() {
                seen(value);
            }
        }
    }
    Ok(())
}

/// A field of a JSON object.
fn field(value: &[u8], name: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    v.get(name)?.as_u64()
}

fn rss_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

/// This process's peak resident memory (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Counts the broker's acknowledgements per second since `start`.
pub struct Acks {
    start: Instant,
    per_second: Arc<Vec<AtomicU64>>,
}

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let second = self.start.elapsed().as_secs() as usize;
        if let (Ok(_), Some(count)) = (result, self.per_second.get(second)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn producer(
    kafka: &Connection,
    linger_ms: u64,
    start: Instant,
    per_second: Arc<Vec<AtomicU64>>,
) -> Result<BaseProducer<Acks>, KafkaFailure> {
    let mut config = kafka::client_config(kafka);
    config.set("linger.ms", linger_ms.to_string());
    kafka.create(
        config,
        Acks { start, per_second },
        "the generator's producer",
    )
}

/// The bare-Kafka floor: the same schedule produced to `topic` and consumed
/// back, with the pipeline's consumer settings.
fn floor(
    kafka: &Connection,
    topic: &str,
    config: &BenchConfig,
) -> Result<Histogram<u64>, BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(200);
    let start_ms = wall_us() / 1000 + 200;
    let samples = Arc::new(Mutex::new(Samples::new(start_ms, config)));
    let consumer = {
        let (kafka, topic, stop, samples) = (
            kafka.clone(),
            topic.to_owned(),
            Arc::clone(&stop),
            Arc::clone(&samples),
        );
        std::thread::spawn(move || {
            watch(&kafka, &topic, &stop, |value| {
                if let Some(ts) = field(value, "ts") {
                    samples.lock().expect("no panics").record(ts, None);
                }
            })
        })
    };
    let acked = Arc::new(
        (0..config.duration.as_secs() + 2)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let producer = producer(kafka, config.linger_ms, start, acked)?;
    // Probes and logins alike go to the one floor topic.
    generate(&producer, [topic, topic], config, start, start_ms)?;
    std::thread::sleep(config.drain.min(Duration::from_secs(2)));
    stop.store(true, Ordering::Relaxed);
    consumer
        .join()
        .expect("the floor consumer does not panic")?;
    let total = samples.lock().expect("no panics").total.clone();
    Ok(total)
}

fn ccdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    if h.is_empty() {
        return points;
    }
    let total = h.len() as f64;
    // 20 points per decade from 10 µs to the maximum.
    let mut us = 10.0f64;
    while us <= h.max() as f64 * 1.1 {
        let at = us as u64;
        let above = h.len() - h.count_between(0, at);
        points.push((at as f64 / 1000.0, above as f64 / total));
        us *= 10f64.powf(1.0 / 20.0);
    }
    points
}

/// The commit the binary was built from (`build.rs` asks git at build
/// time, so the report names the code that ran wherever it runs), with
/// `-dirty` for uncommitted changes; `unknown` outside a git checkout.
pub fn commit() -> String {
    option_env!("PRESENCE_COMMIT")
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

/// The topics of a bench run: every name under `prefix`.
fn topics(prefix: &str) -> Topics {
    Topics {
        probes: format!("{prefix}probes"),
        logins: format!("{prefix}logins"),
        base_counts: format!("{prefix}base-counts"),
        ..Topics::with_output_prefix(prefix)
    }
}

/// Runs one point on the cluster `cluster`; process 0 returns its report,
/// the others `None`.
pub fn bench(cluster: timely::Config, config: BenchConfig) -> Result<Option<Report>, BenchError> {
    if config.processes > 1 && (config.brokers.is_none() || config.prefix.is_none()) {
        return Err(BenchError::Usage(
            "several processes need an external broker (--brokers; scripts/tansu.sh starts one) \
             and the same --prefix in every process"
                .into(),
        ));
    }
    if config.rate == 0 || config.duration <= config.warmup {
        return Err(BenchError::Usage(
            "--rate must be positive and --duration longer than --warmup".into(),
        ));
    }
    let prefix = config
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench-{}-{}-", std::process::id(), wall_us() / 1000));
    let topics = topics(&prefix);
    let control = format!("{prefix}bench-control");
    let floor_topic = format!("{prefix}floor");
    let mock = match &config.brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1)?),
    };
    let kafka = Connection {
        settings: config.kafka_settings.clone(),
        ..Connection::new(match (&config.brokers, &mock) {
            (Some(brokers), _) => brokers.clone(),
            (None, Some(mock)) => mock.bootstrap_servers(),
            (None, None) => unreachable!("a mock broker when no broker is given"),
        })
    };
    let mut create: Vec<kafka::NewTopicSpec> = [
        &topics.probes,
        &topics.logins,
        &topics.base_counts,
        &topics.walkins,
        &topics.device_contacts,
        &topics.enriched_walkins,
        &topics.walkin_counts,
        &topics.rejected,
        &floor_topic,
    ]
    .into_iter()
    .map(|t| (t.as_str(), config.partitions, false))
    .collect();
    create.push((&topics.progress, 1, false));
    create.push((&control, 1, false));
    match &mock {
        // The mock broker has no CreateTopics call.
        Some(mock) => {
            for (topic, partitions, _) in &create {
                mock.create_topic(topic, *partitions, 1)?;
            }
        }
        None => kafka::create_missing_topics(&kafka, &create, Duration::from_secs(10))?,
    }

    let recorder = Arc::new(LatencyRecorder::default());
    // When the schedule starts, for a stall timed from it (process 0 only:
    // the other processes' workers wait for its stalled ones anyway).
    let stall_from = Arc::new(std::sync::OnceLock::new());
    let job = RunJob {
        params: config.params,
        output_partitions: config.partitions,
        instrument: Instrument {
            dataflow_latency: Some(Arc::clone(&recorder)),
            delay_outputs: config.delay_outputs,
            stall: config.stall.map(|(after, length)| Stall {
                after,
                length,
                from: Arc::clone(&stall_from),
            }),
            checkpoint_write_delay: Duration::ZERO,
        },
        checkpoint: config
            .checkpoint_dir
            .clone()
            .map(|dir| crate::service::CheckpointSettings {
                dir,
                interval: config.checkpoint_interval,
                reset: true,
            }),
        ..RunJob::new(kafka.clone(), topics.clone())
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::default();

    if config.process != 0 {
        // Run until process 0 says stop on the control topic.
        let watcher = {
            let (kafka, control, shutdown) =
                (kafka.clone(), control.clone(), Arc::clone(&shutdown));
            std::thread::spawn(move || {
                watch(&kafka, &control, &shutdown, |_| {
                    shutdown.store(true, Ordering::Relaxed)
                })
            })
        };
        crate::service::run(cluster, job, shutdown, metrics)?;
        watcher.join().expect("the watcher does not panic")?;
        return Ok(None);
    }

    // The pipeline first, so that the other processes connect at once.
    let pipeline = {
        let (job, shutdown, metrics) = (job.clone(), Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || crate::service::run(cluster, job, shutdown, metrics))
    };
    // The bare-Kafka floor, while the pipeline idles (its cluster connected).
    let floor = if config.floor {
        tracing::info!(
            seconds = config.duration.as_secs_f64(),
            "bench: measuring the bare-Kafka floor (the same schedule, no dataflow)"
        );
        Some(floor(&kafka, &floor_topic, &config)?)
    } else {
        None
    };

    // Give the workers a moment to assign their partitions before the schedule starts.
    std::thread::sleep(Duration::from_millis(500));
    let lead = Duration::from_millis(200);
    let start = Instant::now() + lead;
    let _ = stall_from.set(start);
    let start_ms = wall_us() / 1000 + lead.as_millis() as u64;
    recorder.set_window(start + config.warmup, start + config.duration);
    let samples = Arc::new(Mutex::new(Samples::new(start_ms, &config)));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let harness = {
        let (kafka, topic, stop, samples) = (
            kafka.clone(),
            topics.walkins.clone(),
            Arc::clone(&stop_watch),
            Arc::clone(&samples),
        );
        std::thread::spawn(move || {
            watch(&kafka, &topic, &stop, |value| {
                let row: Option<serde_json::Value> = serde_json::from_slice(value).ok();
                let field = |name: &str| row.as_ref()?.get(name)?.as_u64();
                if let Some(due) = field("detected_at") {
                    samples
                        .lock()
                        .expect("no panics")
                        .record(due, field("time"));
                }
            })
        })
    };
    let seconds = config.duration.as_secs() as usize + 2;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    let generator = {
        let (kafka, topics, config, acked) = (
            kafka.clone(),
            [topics.probes.clone(), topics.logins.clone()],
            config.clone(),
            Arc::clone(&acked),
        );
        std::thread::spawn(move || -> Result<u64, KafkaFailure> {
            let producer = producer(&kafka, config.linger_ms, start, acked)?;
            generate(
                &producer,
                [&topics[0], &topics[1]],
                &config,
                start,
                start_ms,
            )
        })
    };
    // Once a second: memory and lag.
    let lag = |metrics: &Metrics| -> i64 {
        let mut total = 0;
        metrics.update(|f| {
            total = f.partitions.values().filter_map(|p| p.lag).sum::<i64>();
        });
        total
    };
    tracing::info!(
        rate = config.rate,
        seconds = config.duration.as_secs_f64(),
        warmup_seconds = config.warmup.as_secs_f64(),
        "bench: running the open-loop schedule through the pipeline"
    );
    let mut per_second: Vec<(Option<f64>, i64)> = Vec::new();
    let end = start + config.duration;
    while Instant::now() < end {
        let next = start + Duration::from_secs(per_second.len() as u64 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        per_second.push((rss_mib(), lag(&metrics)));
        let second = per_second.len();
        if second.is_multiple_of(5) {
            let acked = acked
                .get(second - 1)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            let samples = samples.lock().expect("no panics").total.len();
            tracing::info!(
                elapsed_seconds = second,
                of = config.duration.as_secs(),
                acknowledged_per_second = acked,
                consumer_lag = lag(&metrics),
                e2e_samples = samples,
                "bench: running"
            );
        }
    }
    let lag_end = lag(&metrics);
    let produced = generator.join().expect("the generator does not panic")?;
    let achieved = acked
        .iter()
        .take(config.duration.as_secs() as usize)
        .map(|s| s.load(Ordering::Relaxed))
        .sum::<u64>() as f64
        / config.duration.as_secs_f64().floor().max(1.0);
    tracing::info!(
        produced,
        drain_seconds = config.drain.as_secs_f64(),
        "bench: generator done; draining"
    );
    std::thread::sleep(config.drain);
    stop_watch.store(true, Ordering::Relaxed);
    harness.join().expect("the harness does not panic")?;
    // End the other processes, then this one.
    if config.processes > 1 {
        let producer = producer(&kafka, 0, Instant::now(), Arc::default())?;
        producer
            .send(BaseRecord::<(), str>::to(&control).payload("stop"))
            .map_err(|(error, _)| error)
            .and_then(|()| producer.flush(Duration::from_secs(10)))
            .map_err(|source| KafkaFailure::Client {
                brokers: kafka.brokers.clone(),
                action: "stopping the other processes".into(),
                source: Box::new(source),
            })?;
    }
    shutdown.store(true, Ordering::Relaxed);
    pipeline.join().expect("the pipeline does not panic")?;

    let samples = Arc::try_unwrap(samples)
        .map_err(|_| ())
        .expect("the harness is done")
        .into_inner()
        .expect("no panics");
    let e2e = samples.total.clone();
    let dataflow = recorder.histogram();
    let mut latency_ms = BTreeMap::from([
        ("e2e", Latency::of(&e2e)),
        ("dataflow", Latency::of(&dataflow)),
    ]);
    let mut ccdfs = BTreeMap::from([("e2e", ccdf(&e2e)), ("dataflow", ccdf(&dataflow))]);
    latency_ms.insert("e2e_input", Latency::of(&samples.input));
    latency_ms.insert("e2e_output", Latency::of(&samples.output));
    if let Some(floor) = &floor {
        latency_ms.insert("kafka_floor", Latency::of(floor));
        ccdfs.insert("kafka_floor", ccdf(floor));
    }
    let p99 =
        |h: &Histogram<u64>| (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
    let timeline: Vec<Second> = (0..config.duration.as_secs() as usize)
        .map(|s| {
            let h = &samples.seconds[s];
            let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
            Second {
                t_s: s as u64,
                acked: acked[s].load(Ordering::Relaxed),
                e2e_count: h.len(),
                e2e_p50: q(0.5),
                e2e_p99: q(0.99),
                e2e_max: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
                input_p99: p99(&samples.input_seconds[s]),
                output_p99: p99(&samples.output_seconds[s]),
                rss_mib: per_second.get(s).and_then(|p| p.0),
                lag: per_second.get(s).map(|p| p.1),
            }
        })
        .collect();
    // Latency must not keep growing: compare the medians of the first and
    // last thirds of the measurement (medians: a one-off spike that clears
    // is not a growing backlog).
    let warm = config.warmup.as_secs() as usize;
    let measured = samples.seconds.len().saturating_sub(1);
    let third = measured.saturating_sub(warm) / 3;
    let median_of = |range: std::ops::Range<usize>| {
        let mut h = histogram();
        for s in range {
            if let Some(second) = samples.seconds.get(s) {
                h.add(second).expect("same bounds");
            }
        }
        (!h.is_empty()).then(|| h.value_at_quantile(0.5) as f64 / 1000.0)
    };
    let growing = match (
        median_of(warm..warm + third.max(1)),
        median_of(measured - third.max(1)..measured),
    ) {
        (Some(first), Some(last)) => last > 1.5 * first + 10.0,
        _ => true, // no samples: nothing shown sustainable
    };
    let sustainable = achieved >= 0.95 * config.rate as f64
        && (lag_end as f64) <= config.rate as f64 / 2.0
        && !growing;

    let p = &config.params;
    Ok(Some(Report {
        version: 1,
        commit: commit(),
        unix_time: wall_us() / 1_000_000,
        machine: serde_json::json!({
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "os": std::env::consts::OS,
        }),
        config: serde_json::json!({
            "rate_offered": config.rate,
            "duration_s": config.duration.as_secs_f64(),
            "warmup_s": config.warmup.as_secs_f64(),
            "drain_s": config.drain.as_secs_f64(),
            "workers": config.workers,
            "processes": config.processes,
            "broker": config.brokers.clone().unwrap_or_else(|| "in-process".into()),
            "devices": config.devices,
            "businesses": config.businesses,
            "visit_s": config.visit.as_secs_f64(),
            "probe_partitions": config.partitions,
            "linger_ms": config.linger_ms,
            "pipeline_linger_ms": kafka::PRODUCER_LINGER_MS,
            // Not set by presence: librdkafka's defaults for every producer.
            "batch_num_messages": 10_000,
            "batch_size_bytes": 1_000_000,
            "fetch_wait_max_ms": kafka::FETCH_WAIT_MAX_MS,
            "tick_ms": 1,
            "floor": config.floor,
            "checkpoint_dir": config.checkpoint_dir.as_ref().map(|d| d.display().to_string()),
            "checkpoint_interval_s": config.checkpoint_interval.as_secs_f64(),
            "delay_outputs_ms": config.delay_outputs.as_millis() as u64,
            "stall": config.stall.map(|(a, l)| [a.as_secs_f64(), l.as_secs_f64()]),
            "params": {
                "rssi_min": p.rssi_min,
                "session_gap_ms": p.session_gap,
                "min_dwell_ms": p.min_dwell,
                "min_probes": p.min_probes,
                "allowed_lateness_ms": p.allowed_lateness,
                "max_future_ms": p.max_future,
            },
        }),
        rate_offered: config.rate,
        rate_achieved: achieved,
        latency_ms,
        lag_end,
        sustainable,
        peak_rss_mib: peak_rss_mib(),
        timeline,
        ccdf: ccdfs,
        checkpoints: config.checkpoint_dir.as_ref().map(|_| {
            let c = metrics.read(|f| f.checkpoints.clone());
            serde_json::json!({
                "completed": c.completed,
                "failures": c.failures,
                "bytes_written": c.bytes_written,
                "bytes_per_checkpoint": c.bytes_written as f64 / c.completed.max(1) as f64,
                "last_size_bytes": c.bytes,
                "last_duration_s": c.last_duration_seconds,
            })
        }),
    }))
}

impl Report {
    /// One CSV header line and one row: every parameter and percentile.
    pub fn csv(&self) -> String {
        let c = &self.config;
        let mut header = vec![
            "commit",
            "rate_offered",
            "rate_achieved",
            "workers",
            "processes",
            "broker",
            "devices",
            "duration_s",
            "warmup_s",
            "linger_ms",
            "tick_ms",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        let mut row = vec![
            self.commit.clone(),
            self.rate_offered.to_string(),
            format!("{:.1}", self.rate_achieved),
            c["workers"].to_string(),
            c["processes"].to_string(),
            c["broker"].as_str().unwrap_or("").to_owned(),
            c["devices"].to_string(),
            c["duration_s"].to_string(),
            c["warmup_s"].to_string(),
            c["linger_ms"].to_string(),
            c["tick_ms"].to_string(),
        ];
        for name in ["e2e", "dataflow", "kafka_floor"] {
            let l = self.latency_ms.get(name).cloned().unwrap_or_default();
            for (field, value) in [
                ("min", l.min),
                ("p50", l.p50),
                ("p90", l.p90),
                ("p99", l.p99),
                ("p999", l.p999),
                ("max", l.max),
                ("count", l.count as f64),
            ] {
                header.push(format!("{name}_{field}"));
                row.push(format!("{value}"));
            }
        }
        header.extend(["lag_end", "sustainable", "peak_rss_mib"].map(String::from));
        row.push(self.lag_end.to_string());
        row.push(self.sustainable.to_string());
        row.push(
            self.peak_rss_mib
                .map_or(String::new(), |m| format!("{m:.1}")),
        );
        format!("{}\n{}\n", header.join(","), row.join(","))
    }
}
