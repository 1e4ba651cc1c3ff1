//! `presence demo`: the whole service in one process, with nothing
//! installed — librdkafka's in-process mock broker, an open-loop generated
//! workload (a few broken lines included), and the pipeline of
//! [`crate::run`] — watched through its output topics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};

use crate::io::generator::WorkloadConfig;
use crate::io::load::{self, Load};
use crate::params::Params;
use crate::run::{RunJob, Topics};

/// Partitions of every demo topic (the mock broker's default).
const PARTITIONS: i32 = 4;

/// What the demo shows, refreshed while it runs.
#[derive(Clone, Debug)]
pub struct Status {
    /// Time since the start.
    pub elapsed: Duration,
    /// Input records produced so far.
    pub produced: u64,
    /// Walk-ins currently in the output (last value per key).
    pub walkins: u64,
    /// The largest walk-in counts: (business, contact, count).
    pub top_counts: Vec<(String, String, u64)>,
    /// Rejected records by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Latency from ingestion to the walk-in being readable in its topic (ms).
    pub latency: Histogram<u64>,
}

/// A demo that could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The mock broker or a client failed.
    #[error("demo broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The load generator failed.
    #[error(transparent)]
    Load(#[from] crate::io::kafka::KafkaFailure),
    /// The pipeline failed.
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
}

/// Runs the demo for `duration` at `rate` input records per second on
/// `cluster`, calling `show` about once a second and once at the end.
pub fn run(
    duration: Duration,
    rate: u64,
    cluster: timely::Config,
    mut show: impl FnMut(&Status),
) -> Result<Status, DemoError> {
    let mock = MockCluster::new(1)?;
    let brokers = mock.bootstrap_servers();
    let topics = Topics::default();
    // The mock broker has no CreateTopics call: create every topic here.
    for topic in [
        &topics.probes,
        &topics.logins,
        &topics.base_counts,
        &topics.walkins,
        &topics.device_contacts,
        &topics.enriched_walkins,
        &topics.walkin_counts,
        &topics.rejected,
    ] {
        mock.create_topic(topic, PARTITIONS, 1)?;
    }
    mock.create_topic(&topics.progress, 1, 1)?;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let generator = {
        let (brokers, stop, produced) = (brokers.clone(), Arc::clone(&stop), Arc::clone(&produced));
        let load = Load {
            brokers,
            topics: [
                topics.probes.clone(),
                topics.logins.clone(),
                topics.base_counts.clone(),
            ],
            rate: Some(rate),
            duration: None,
            workload: WorkloadConfig {
                days: 365,
                devices: 5_000,
                businesses: 12,
                probe_partitions: PARTITIONS as u64,
                broken_chance: 0.002,
                ..WorkloadConfig::default()
            },
        };
        std::thread::spawn(move || load::produce(&load, &stop, &produced))
    };
    let pipeline = {
        let job = RunJob {
            brokers: brokers.clone(),
            topics: topics.clone(),
            params: Params::default(),
            stop_at_end: false,
            connect_timeout: Duration::from_secs(10),
            output_partitions: PARTITIONS,
            idle_timeout: Duration::from_secs(60),
            instrument: Default::default(),
        };
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            crate::run::run(cluster, job, stop, crate::metrics::Metrics::default())
        })
    };

    let mut watch = Watch::new(&brokers, &topics)?;
    let mut status = Status {
        elapsed: Duration::ZERO,
        produced: 0,
        walkins: 0,
        top_counts: Vec::new(),
        rejected: BTreeMap::new(),
        latency: Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
    };
    let mut next_show = Instant::now() + Duration::from_secs(1);
    while started.elapsed() < duration {
        watch.poll(&mut status, Duration::from_millis(50));
        if Instant::now() >= next_show {
            status.elapsed = started.elapsed();
            status.produced = produced.load(Ordering::Relaxed);
            show(&status);
            next_show += Duration::from_secs(1);
        }
    }
    stop.store(true, Ordering::Relaxed);
    generator.join().expect("the generator does not panic")?;
    pipeline
        .join()
        .expect("the pipeline thread does not panic")?;
    // What the pipeline flushed at shutdown.
    let drained = Instant::now();
    while drained.elapsed() < Duration::from_millis(500) {
        watch.poll(&mut status, Duration::from_millis(50));
    }
    status.elapsed = started.elapsed();
    status.produced = produced.load(Ordering::Relaxed);
    show(&status);
    drop(mock);
    Ok(status)
}

/// A consumer of the output topics that keeps the demo's status.
struct Watch {
    consumer: BaseConsumer,
    topics: Topics,
    walkins: BTreeMap<Vec<u8>, ()>,
    counts: BTreeMap<Vec<u8>, (String, String, u64)>,
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
        for topic in [&topics.walkins, &topics.walkin_counts, &topics.rejected] {
            for partition in 0..PARTITIONS {
                list.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        consumer.assign(&list)?;
        Ok(Watch {
            consumer,
            topics: topics.clone(),
            walkins: BTreeMap::new(),
            counts: BTreeMap::new(),
        })
    }

    fn poll(&mut self, status: &mut Status, timeout: Duration) {
        let mut wait = timeout;
        while let Some(Ok(message)) = self.consumer.poll(wait) {
            wait = Duration::ZERO;
            let key = message.key().unwrap_or_default().to_vec();
            let value: Option<serde_json::Value> = message
                .payload()
                .and_then(|p| serde_json::from_slice(p).ok());
            let topic = message.topic();
            if topic == self.topics.walkins {
                match value {
                    Some(value) => {
                        if let Some(time) = value["time"].as_u64() {
                            let _ = status
                                .latency
                                .record(crate::run::now_ms().saturating_sub(time).max(1));
                        }
                        self.walkins.insert(key, ());
                    }
                    None => {
                        self.walkins.remove(&key);
                    }
                }
                status.walkins = self.walkins.len() as u64;
            } else if topic == self.topics.walkin_counts {
                match value {
                    Some(v) => {
                        let text = |f: &str| v[f].as_str().unwrap_or_default().to_owned();
                        self.counts.insert(
                            key,
                            (
                                text("business"),
                                text("contact"),
                                v["count"].as_u64().unwrap_or(0),
                            ),
                        );
                    }
                    None => {
                        self.counts.remove(&key);
                    }
                }
                let mut top: Vec<_> = self.counts.values().cloned().collect();
                top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.cmp(b)));
                top.truncate(5);
                status.top_counts = top;
            } else if let Some(value) = value {
                let reason = value["reason"].as_str().unwrap_or("unknown").to_owned();
                *status.rejected.entry(reason).or_default() += 1;
            }
        }
    }
}
