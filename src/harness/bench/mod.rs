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
//!   (recorded by the workers of process 0, see [`crate::harness::hooks::Injected`]).
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

mod config;
mod floor;
mod queries;
mod report;
mod samples;
mod schedule;
mod watch;

pub use config::{BenchConfig, BenchError};
pub use report::{
    commit, peak_rss_mib, rss_mib, Latency, QueryFigures, Report, Second, LATENCIES, SUSTAINABLE,
};
pub use schedule::Acks;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer};

use crate::harness::hooks::{Injected, Stall};
use crate::kafka::{self, Connection, KafkaFailure};
use crate::model::output::Output;
use crate::observe::metrics::{LatencyRecorder, Metrics};
use crate::service::{RunJob, Topics};
use report::Measured;
use samples::{wall_us, Samples};
use schedule::{generate, producer};
use watch::watch;

/// Runs one point on the cluster `cluster`; process 0 returns its report,
/// the others `None`.
pub fn bench(cluster: timely::Config, config: BenchConfig) -> Result<Option<Report>, BenchError> {
    config.check()?;
    let broker = Broker::start(&config)?;
    let recorder = Arc::new(LatencyRecorder::default());
    // When the schedule starts, for a stall timed from it (process 0 only:
    // the other processes' workers wait for its stalled ones anyway).
    let stall_from = Arc::new(OnceLock::new());
    let job = job(&config, &broker, &recorder, &stall_from);
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::default();
    if config.process != 0 {
        broker.follow(cluster, job, shutdown, metrics)?;
        return Ok(None);
    }

    // The query endpoints, if queries are offered.
    let http = match config.query_rate {
        Some(_) => Some(crate::http::serve(
            ([127, 0, 0, 1], 0).into(),
            metrics.clone(),
            job.queries.clone(),
        )?),
        None => None,
    };
    // The pipeline first, so that the other processes connect at once.
    let pipeline = {
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || crate::service::run(cluster, job, shutdown, metrics))
    };
    // The bare-Kafka floor, while the pipeline idles (its cluster connected).
    if config.floor {
        tracing::info!(
            seconds = config.duration.as_secs(),
            "bench: measuring the bare-Kafka floor first (--no-floor skips it), then the pipeline"
        );
    }
    let floor = floor::measure(&broker.kafka, &broker.floor, &config)?;
    let schedule = Schedule::start(&config, &recorder, &stall_from);
    let query_load = http.zip(config.query_rate).map(|(addr, rate)| {
        queries::QueryLoad::start(
            addr,
            rate,
            schedule.start,
            schedule.start + config.warmup,
            schedule.start + config.duration,
            queries::Keys {
                devices: config.devices,
                businesses: config.businesses,
            },
        )
    });
    let measured = schedule.run(&broker, &config, &metrics)?;
    let queries = query_load.map(queries::QueryLoad::finish);
    // End the other processes, then this one.
    if config.processes > 1 {
        broker.stop_others()?;
    }
    shutdown.store(true, Ordering::Relaxed);
    pipeline.join().expect("the pipeline does not panic")?;
    let dataflow = recorder.histogram();
    let mut report = Report::new(&config, &measured, &dataflow, floor.as_ref(), &metrics);
    report.queries = queries.map(|q| QueryFigures {
        rate_offered: config.query_rate.unwrap_or(0),
        rate_answered: q.answered as f64 / (config.duration - config.warmup).as_secs_f64(),
        offered: q.offered,
        answered: q.answered,
        failed: q.failed,
        latency_ms: Latency::of(&q.latency),
    });
    Ok(Some(report))
}

/// The pipeline's job: the run's topics, the point's detection parameters
/// and checkpoints, and the harness's instruments (the in-dataflow latency
/// into `recorder`, the synthetic output delay, the stall timed from
/// `stall_from`).
fn job(
    config: &BenchConfig,
    broker: &Broker,
    recorder: &Arc<LatencyRecorder>,
    stall_from: &Arc<OnceLock<Instant>>,
) -> RunJob {
    let mut injected = Injected::default();
    injected.dataflow_latency = Some(Arc::clone(recorder));
    injected.delay_outputs = config.delay_outputs;
    injected.stall = config.stall.map(|(after, length)| Stall {
        after,
        length,
        from: Arc::clone(stall_from),
    });
    RunJob {
        params: config.params,
        output_partitions: config.partitions,
        hooks: Arc::new(injected),
        checkpoint: config
            .checkpoint_dir
            .clone()
            .map(|dir| crate::service::CheckpointSettings {
                dir,
                interval: config.checkpoint_interval,
                reset: true,
                kept: crate::checkpoint::store::MANIFESTS_KEPT,
            }),
        connect_timeout: config.connect_timeout,
        ..RunJob::new(broker.kafka.clone(), broker.topics.clone())
    }
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

/// Where a run's records go: the broker (librdkafka's in-process one
/// unless `--brokers` names one), a connection to it, and the run's topics.
struct Broker {
    /// The in-process broker, kept as long as the run.
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    kafka: Connection,
    topics: Topics,
    /// Process 0 ends the other processes by a message here.
    control: String,
    /// The bare-Kafka floor's topic.
    floor: String,
}

impl Broker {
    /// Names the run's topics (under `--prefix`, or one unique to this
    /// run), starts the in-process broker if no broker is given, and
    /// creates the topics.
    fn start(config: &BenchConfig) -> Result<Self, BenchError> {
        let prefix = config
            .prefix
            .clone()
            .unwrap_or_else(|| format!("bench-{}-{}-", std::process::id(), wall_us() / 1000));
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
        let broker = Broker {
            mock,
            kafka,
            topics: topics(&prefix),
            control: format!("{prefix}bench-control"),
            floor: format!("{prefix}floor"),
        };
        broker.create_topics(config.partitions, config.connect_timeout)?;
        Ok(broker)
    }

    /// Creates every topic of the run with `partitions` partitions (the
    /// progress and control topics with one).
    fn create_topics(&self, partitions: i32, timeout: Duration) -> Result<(), BenchError> {
        let topics = &self.topics;
        let mut create: Vec<kafka::NewTopicSpec> =
            [&topics.probes, &topics.logins, &topics.base_counts]
                .into_iter()
                .chain(topics.outputs.values())
                .chain([&self.floor])
                .map(|t| (t.as_str(), partitions, false))
                .collect();
        create.push((&topics.progress, 1, false));
        create.push((&self.control, 1, false));
        match &self.mock {
            // The mock broker has no CreateTopics call.
            Some(mock) => {
                for (topic, partitions, _) in &create {
                    mock.create_topic(topic, *partitions, 1)?;
                }
            }
            None => kafka::create_missing_topics(&self.kafka, &create, timeout)?,
        }
        Ok(())
    }

    /// Runs the pipeline of a process other than 0 until process 0 says
    /// stop on the control topic.
    fn follow(
        &self,
        cluster: timely::Config,
        job: RunJob,
        shutdown: Arc<AtomicBool>,
        metrics: Metrics,
    ) -> Result<(), BenchError> {
        let watcher = {
            let (kafka, control, shutdown) = (
                self.kafka.clone(),
                self.control.clone(),
                Arc::clone(&shutdown),
            );
            std::thread::spawn(move || {
                watch(&kafka, &control, &shutdown, |_| {
                    shutdown.store(true, Ordering::Relaxed)
                })
            })
        };
        crate::service::run(cluster, job, shutdown, metrics)?;
        watcher.join().expect("the watcher does not panic")?;
        Ok(())
    }

    /// Ends the other processes: "stop" on the control topic.
    fn stop_others(&self) -> Result<(), BenchError> {
        let producer = producer(&self.kafka, 0, Instant::now(), Arc::default())?;
        producer
            .send(BaseRecord::<(), str>::to(&self.control).payload("stop"))
            .map_err(|(error, _)| error)
            .and_then(|()| producer.flush(Duration::from_secs(10)))
            .map_err(|source| KafkaFailure::Client {
                brokers: self.kafka.brokers.clone(),
                action: "stopping the other processes".into(),
                source: Box::new(source),
            })?;
        Ok(())
    }
}

/// The open-loop schedule through the running pipeline: when it starts,
/// and what the harness gathers while it runs.
struct Schedule {
    /// When record 0 is due.
    start: Instant,
    /// The same moment on the wall clock (ms): a probe's `ts` is its due time.
    start_ms: u64,
    /// End-to-end samples, taken by the harness's consumer.
    samples: Arc<Mutex<Samples>>,
    /// Input records the broker acknowledged, per second since `start`.
    acked: Arc<Vec<AtomicU64>>,
    /// Tells the harness's consumer to stop.
    stop_watch: Arc<AtomicBool>,
}

impl Schedule {
    /// Sets the schedule's start, once the workers have had a moment; the
    /// stall (`stall_from`) and the window of the in-dataflow latency
    /// (`recorder`) are timed from it.
    fn start(
        config: &BenchConfig,
        recorder: &LatencyRecorder,
        stall_from: &OnceLock<Instant>,
    ) -> Self {
        // Give the workers a moment to assign their partitions before the schedule starts.
        std::thread::sleep(Duration::from_millis(500));
        let lead = Duration::from_millis(200);
        let start = Instant::now() + lead;
        let _ = stall_from.set(start);
        let start_ms = wall_us() / 1000 + lead.as_millis() as u64;
        recorder.set_window(start + config.warmup, start + config.duration);
        let seconds = config.duration.as_secs() as usize + 2;
        Schedule {
            start,
            start_ms,
            samples: Arc::new(Mutex::new(Samples::new(start_ms, config))),
            acked: Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect()),
            stop_watch: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs the schedule through the pipeline, and gives the pipeline
    /// `drain` to deliver what was due before the end: what the harness
    /// measured.
    fn run(
        self,
        broker: &Broker,
        config: &BenchConfig,
        metrics: &Metrics,
    ) -> Result<Measured, BenchError> {
        let harness = self.spawn_harness(broker);
        let generator = self.spawn_generator(broker, config);
        tracing::info!(
            rate = config.rate,
            seconds = config.duration.as_secs_f64(),
            warmup_seconds = config.warmup.as_secs_f64(),
            "bench: running the open-loop schedule through the pipeline"
        );
        let per_second = self.each_second(config, metrics);
        let lag_end = lag(metrics);
        let produced = generator.join().expect("the generator does not panic")?;
        let achieved = self.achieved(config);
        tracing::info!(
            produced,
            drain_seconds = config.drain.as_secs_f64(),
            "bench: generator done; draining"
        );
        std::thread::sleep(config.drain);
        self.stop_watch.store(true, Ordering::Relaxed);
        harness.join().expect("the harness does not panic")?;
        let samples = Arc::try_unwrap(self.samples)
            .map_err(|_| ())
            .expect("the harness is done")
            .into_inner()
            .expect("no panics");
        Ok(Measured {
            samples,
            acked: self.acked,
            per_second,
            achieved,
            lag_end,
        })
    }

    /// Starts the harness's consumer of the walk-ins topic: a walk-in is a
    /// sample of the probe at which its visit qualified (its `detected_at`
    /// is that probe's due time), split where the pipeline read the probe
    /// (its `time`).
    fn spawn_harness(&self, broker: &Broker) -> JoinHandle<Result<(), KafkaFailure>> {
        let (kafka, topic, stop, samples) = (
            broker.kafka.clone(),
            broker.topics[Output::Walkins].clone(),
            Arc::clone(&self.stop_watch),
            Arc::clone(&self.samples),
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
    }

    /// Starts the generator: the schedule produced to the input topics,
    /// its acknowledgements counted in `acked`.
    fn spawn_generator(
        &self,
        broker: &Broker,
        config: &BenchConfig,
    ) -> JoinHandle<Result<u64, KafkaFailure>> {
        let (kafka, topics, config, acked) = (
            broker.kafka.clone(),
            [broker.topics.probes.clone(), broker.topics.logins.clone()],
            config.clone(),
            Arc::clone(&self.acked),
        );
        let (start, start_ms) = (self.start, self.start_ms);
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
    }

    /// Once a second until the schedule ends: memory and lag (with a
    /// progress line every 5 s).
    fn each_second(&self, config: &BenchConfig, metrics: &Metrics) -> Vec<(Option<f64>, i64)> {
        let mut per_second: Vec<(Option<f64>, i64)> = Vec::new();
        let end = self.start + config.duration;
        while Instant::now() < end {
            let next = self.start + Duration::from_secs(per_second.len() as u64 + 1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            per_second.push((rss_mib(), lag(metrics)));
            let second = per_second.len();
            if second.is_multiple_of(5) {
                let acked = self
                    .acked
                    .get(second - 1)
                    .map_or(0, |a| a.load(Ordering::Relaxed));
                let samples = self.samples.lock().expect("no panics").total.len();
                tracing::info!(
                    elapsed_seconds = second,
                    of = config.duration.as_secs(),
                    acknowledged_per_second = acked,
                    consumer_lag = lag(metrics),
                    e2e_samples = samples,
                    "bench: running"
                );
            }
        }
        per_second
    }

    /// Input records per second the broker acknowledged within the
    /// duration (its whole seconds).
    fn achieved(&self, config: &BenchConfig) -> f64 {
        self.acked
            .iter()
            .take(config.duration.as_secs() as usize)
            .map(|s| s.load(Ordering::Relaxed))
            .sum::<u64>() as f64
            / config.duration.as_secs_f64().floor().max(1.0)
    }
}

/// Consumer lag of this process's input partitions (records).
fn lag(metrics: &Metrics) -> i64 {
    let mut total = 0;
    metrics.update(|f| {
        total = f.partitions.values().filter_map(|p| p.lag).sum::<i64>();
    });
    total
}
