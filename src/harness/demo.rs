//! `presence demo`: the whole service in one process, with nothing
//! installed — librdkafka's in-process mock broker, shoppers arriving now
//! (a [`LiveWorkload`](crate::harness::generator::LiveWorkload) produced
//! open-loop, a few broken lines included), and the pipeline of
//! [`crate::service`] — watched through its output topics.
//!
//! Shoppers here stay [`VISIT`] at a store, so that walk-ins form within
//! seconds: the demo's detection parameters ([`params`]) are scaled from
//! minutes to seconds.

use crate::model::output::Output;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};

use crate::dataflow::query::Inbox;
use crate::harness::generator::LiveConfig;
use crate::harness::load::{self, Load, Records};
use crate::kafka::KafkaFailure;
use crate::model::clock::now_ms;
use crate::model::params::Params;
use crate::model::summary::Summary;
use crate::observe::metrics::Metrics;
use crate::service::{RunJob, Topics};

/// Partitions of every demo topic (the mock broker's default).
const PARTITIONS: i32 = 4;
/// How long a demo shopper stays at one store.
pub const VISIT: Duration = Duration::from_secs(15);
/// How long the pipeline gets, once the generator has stopped, to read
/// what it produced.
const DRAIN: Duration = Duration::from_secs(5);
/// The window of "walk-ins in the last minute".
const RECENT_MS: u64 = 60_000;

/// The demo's detection parameters: minutes scaled down to seconds (a 5 s
/// session gap, 3 s minimum dwell, 2 s lateness; 3 probes, -75 dBm).
pub fn params() -> Params {
    Params {
        session_gap: 5_000,
        min_dwell: 3_000,
        allowed_lateness: 2_000,
        ..Params::default()
    }
}

/// What the demo shows, refreshed while it runs.
#[derive(Clone, Debug)]
pub struct Status {
    /// Time since the start.
    pub elapsed: Duration,
    /// Input records produced so far.
    pub produced: u64,
    /// Walk-ins currently in the output (last value per key).
    pub walkins: u64,
    /// Walk-ins detected in the last minute, per store, most first.
    pub recent: Vec<(String, u64)>,
    /// Phones in a store now (rows of the `present` topic), per store, most
    /// first.
    pub present: Vec<(String, u64)>,
    /// Rejected records by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Latency from ingestion to the walk-in being readable in its topic (ms).
    pub latency: Histogram<u64>,
}

impl Status {
    /// Nothing seen yet.
    fn new() -> Self {
        Status {
            elapsed: Duration::ZERO,
            produced: 0,
            walkins: 0,
            recent: Vec::new(),
            present: Vec::new(),
            rejected: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
        }
    }

    /// Walk-ins detected in the last minute, over every store.
    pub fn recent_total(&self) -> u64 {
        self.recent.iter().map(|(_, n)| n).sum()
    }

    /// Phones in a store now, over every store.
    pub fn present_total(&self) -> u64 {
        self.present.iter().map(|(_, n)| n).sum()
    }
}

/// How a demo ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The last figures.
    pub status: Status,
    /// What the pipeline read, accepted and rejected.
    pub pipeline: Summary,
    /// Whether it was stopped before its duration.
    pub interrupted: bool,
    /// How long the load ran (the summary's rate), before the drain.
    pub producing: Duration,
}

/// A demo that could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The mock broker or a client failed.
    #[error("demo broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The load generator failed.
    #[error(transparent)]
    Load(#[from] crate::kafka::KafkaFailure),
    /// The pipeline failed.
    #[error(transparent)]
    Run(#[from] crate::service::RunError),
    /// `--http-addr` could not be served.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the demo for `duration` (or until `stop` is set) at `rate` input
/// records per second on `cluster`, calling `show` about once a second;
/// with `http_addr`, serves the queries and metrics there.
pub fn run(
    duration: Duration,
    rate: u64,
    cluster: timely::Config,
    http_addr: Option<std::net::SocketAddr>,
    stop: &AtomicBool,
    mut show: impl FnMut(&Status),
) -> Result<Outcome, DemoError> {
    let topics = Topics::default();
    let mock = mock_broker(&topics)?;
    let brokers = mock.bootstrap_servers();

    let started = Instant::now();
    // The generator stops first; the pipeline once it has read what was produced.
    let (finish, finish_pipeline) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let produced = Arc::new(AtomicU64::new(0));
    let metrics = Metrics::default();
    let queries = Inbox::default();
    if let Some(addr) = http_addr {
        let bound = crate::http::serve(addr, metrics.clone(), queries.clone())
            .map_err(|source| DemoError::Http { addr, source })?;
        tracing::info!(%bound, "serving queries and metrics at http://{bound}/");
    }
    let generator = spawn_generator(&brokers, &topics, rate, &finish, &produced);
    let pipeline = {
        let job = RunJob {
            params: params(),
            output_partitions: PARTITIONS,
            queries: queries.clone(),
            ..RunJob::new(brokers.clone(), topics.clone())
        };
        let (finish, metrics) = (Arc::clone(&finish_pipeline), metrics.clone());
        std::thread::spawn(move || crate::service::run(cluster, job, finish, metrics))
    };

    let mut watch = Watch::new(&brokers, &topics)?;
    let mut status = Status::new();
    let refresh = |status: &mut Status, watch: &Watch| {
        status.elapsed = started.elapsed();
        status.produced = produced.load(Ordering::Relaxed);
        status.present = watch.present();
        status.recent = watch.recent();
    };
    let mut next_show = Instant::now() + Duration::from_secs(1);
    while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        watch.poll(&mut status, Duration::from_millis(50));
        if Instant::now() >= next_show {
            refresh(&mut status, &watch);
            show(&status);
            next_show += Duration::from_secs(1);
        }
    }
    let producing = started.elapsed();
    let interrupted = producing < duration;
    // The panel's last frame, at the stop; the closing summary's latency is
    // this frame's: walk-ins the pipeline flushes at shutdown (their visits
    // closed by the end, not by time) are counted below but not timed.
    refresh(&mut status, &watch);
    status.elapsed = producing;
    show(&status);
    let live_latency = status.latency.clone();
    finish.store(true, Ordering::Relaxed);
    if let Err(error) = generator.join().expect("the generator does not panic") {
        finish_pipeline.store(true, Ordering::Relaxed);
        let _ = pipeline.join();
        return Err(error.into());
    }
    let total = produced.load(Ordering::Relaxed);
    let deadline = Instant::now() + DRAIN;
    while metrics.read(|f| f.summary().lines) < total && Instant::now() < deadline {
        watch.poll(&mut status, Duration::from_millis(20));
    }
    finish_pipeline.store(true, Ordering::Relaxed);
    let summary = pipeline
        .join()
        .expect("the pipeline thread does not panic")?;
    // What the pipeline flushed at shutdown.
    let drained = Instant::now();
    while drained.elapsed() < Duration::from_millis(500) {
        watch.poll(&mut status, Duration::from_millis(50));
    }
    refresh(&mut status, &watch);
    status.latency = live_latency;
    drop(mock);
    Ok(Outcome {
        status,
        pipeline: summary,
        interrupted,
        producing,
    })
}

/// Starts librdkafka's in-process broker with every one of `topics`.
fn mock_broker(topics: &Topics) -> Result<MockCluster<'static, DefaultProducerContext>, DemoError> {
    let mock = MockCluster::new(1)?;
    // The mock broker has no CreateTopics call: create every topic here.
    let inputs = [&topics.probes, &topics.logins, &topics.base_counts];
    for topic in inputs.into_iter().chain(topics.outputs.values()) {
        mock.create_topic(topic, PARTITIONS, 1)?;
    }
    mock.create_topic(&topics.progress, 1, 1)?;
    Ok(mock)
}

/// Starts the generator: shoppers arriving now, produced open-loop at
/// `rate` to the input topics (counted in `produced`) until `finish`.
fn spawn_generator(
    brokers: &str,
    topics: &Topics,
    rate: u64,
    finish: &Arc<AtomicBool>,
    produced: &Arc<AtomicU64>,
) -> JoinHandle<Result<(), KafkaFailure>> {
    let (finish, produced) = (Arc::clone(finish), Arc::clone(produced));
    let load = Load {
        kafka: brokers.to_owned().into(),
        topics: [
            topics.probes.clone(),
            topics.logins.clone(),
            topics.base_counts.clone(),
        ],
        rate: Some(rate.max(1)),
        duration: None,
        // The broker is in this process.
        connect_timeout: Duration::from_secs(10),
        records: Records::Live(LiveConfig {
            devices: 5_000,
            businesses: 12,
            visit_ms: VISIT.as_millis() as u64,
            broken_chance: 0.002,
            probe_partitions: PARTITIONS as u64,
            ..LiveConfig::default()
        }),
    };
    std::thread::spawn(move || load::produce(&load, &finish, &produced))
}

/// A consumer of the output topics that keeps the demo's status.
struct Watch {
    consumer: BaseConsumer,
    topics: Topics,
    /// Every walk-in in the topic: its store and when it was detected.
    walkins: HashMap<Vec<u8>, (String, u64)>,
    /// Every present row in the topic: its store.
    present: HashMap<Vec<u8>, String>,
}

impl Watch {
    fn new(brokers: &str, topics: &Topics) -> Result<Self, DemoError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "presence-demo")
            .set("enable.auto.commit", "false")
            // See outputs as soon as they are written (the default waits 500 ms).
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut list = TopicPartitionList::new();
        for topic in [
            &topics[Output::Walkins],
            &topics[Output::Present],
            &topics[Output::Rejected],
        ] {
            for partition in 0..PARTITIONS {
                list.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        consumer.assign(&list)?;
        Ok(Watch {
            consumer,
            topics: topics.clone(),
            walkins: HashMap::new(),
            present: HashMap::new(),
        })
    }

    /// Phones in a store now, per store, most first.
    fn present(&self) -> Vec<(String, u64)> {
        let mut per_store: BTreeMap<&str, u64> = BTreeMap::new();
        for business in self.present.values() {
            *per_store.entry(business).or_default() += 1;
        }
        let mut present: Vec<(String, u64)> = per_store
            .into_iter()
            .map(|(store, n)| (store.to_owned(), n))
            .collect();
        present.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        present
    }

    /// Walk-ins detected in the last minute of the wall clock, per store.
    fn recent(&self) -> Vec<(String, u64)> {
        let since = now_ms().saturating_sub(RECENT_MS);
        let mut per_store: BTreeMap<&str, u64> = BTreeMap::new();
        for (business, detected_at) in self.walkins.values() {
            if *detected_at >= since {
                *per_store.entry(business).or_default() += 1;
            }
        }
        let mut recent: Vec<(String, u64)> = per_store
            .into_iter()
            .map(|(store, n)| (store.to_owned(), n))
            .collect();
        recent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        recent
    }

    fn poll(&mut self, status: &mut Status, timeout: Duration) {
        let mut wait = timeout;
        while let Some(Ok(message)) = self.consumer.poll(wait) {
            wait = Duration::ZERO;
            let key = message.key().unwrap_or_default().to_vec();
            let value: Option<serde_json::Value> = message
                .payload()
                .and_then(|p| serde_json::from_slice(p).ok());
            if message.topic() == self.topics[Output::Walkins] {
                match value {
                    Some(value) => {
                        if let Some(time) = value["time"].as_u64() {
                            let _ = status.latency.record(now_ms().saturating_sub(time).max(1));
                        }
                        let business = value["business"].as_str().unwrap_or_default();
                        let detected_at = value["detected_at"].as_u64().unwrap_or(0);
                        self.walkins.insert(key, (business.to_owned(), detected_at));
                    }
                    None => {
                        self.walkins.remove(&key);
                    }
                }
                status.walkins = self.walkins.len() as u64;
            } else if message.topic() == self.topics[Output::Present] {
                match value {
                    Some(value) => {
                        let business = value["business"].as_str().unwrap_or_default();
                        self.present.insert(key, business.to_owned());
                    }
                    None => {
                        self.present.remove(&key);
                    }
                }
            } else if let Some(value) = value {
                let reason = value["reason"].as_str().unwrap_or("unknown").to_owned();
                *status.rejected.entry(reason).or_default() += 1;
            }
        }
    }
}
