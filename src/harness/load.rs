//! The load generator: a workload produced to the input topics, open-loop at
//! a fixed rate (record `i` is due at `start + i / rate`, whether or not the
//! broker keeps up) or as fast as the producer goes.
//!
//! Two workloads: the generator's historical week ([`Workload`], event times
//! from 2026-01-01 on, compressed into however long producing takes), or
//! shoppers arriving now ([`LiveWorkload`]: every record stamped with the
//! wall-clock time it is due), for a live `presence run` to keep up with.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::harness::generator::{Generated, LiveConfig, LiveWorkload, Workload, WorkloadConfig};
use crate::kafka::{client_config, consumer, KafkaFailure};
use crate::model::clock::now_ms;
use crate::model::ingest::Kind;

/// Which records to produce.
#[derive(Clone, Debug)]
pub enum Records {
    /// The generated historical workload, in order.
    Historical(WorkloadConfig),
    /// Shoppers arriving now; needs a rate.
    Live(LiveConfig),
}

/// Where and how fast to produce.
#[derive(Clone, Debug)]
pub struct Load {
    /// How to reach Kafka.
    pub kafka: crate::kafka::Connection,
    /// Input topics: probes, logins, base counts.
    pub topics: [String; 3],
    /// Records per second; `None` for as fast as possible (historical only).
    pub rate: Option<u64>,
    /// Stop after this long (`None`: when the workload ends, or never for a live one).
    pub duration: Option<Duration>,
    /// The records.
    pub records: Records,
    /// How long to wait for the brokers before giving up.
    pub connect_timeout: Duration,
}

/// Produces `load`, counting records into `produced`, until the workload
/// ends, the duration passes, or `stop` is set.
pub fn produce(load: &Load, stop: &AtomicBool, produced: &AtomicU64) -> Result<(), KafkaFailure> {
    let failure = |action: &str| {
        let (brokers, action) = (load.kafka.brokers.clone(), action.to_owned());
        move |source| KafkaFailure::Client {
            brokers,
            action,
            source: Box::new(source),
        }
    };
    // Records keep their generated partition, folded onto the topic's.
    let metadata_client = consumer(&load.kafka)?;
    let mut partitions = [1i32; 3];
    for (count, topic) in partitions.iter_mut().zip(&load.topics) {
        let metadata = metadata_client
            .fetch_metadata(Some(topic), load.connect_timeout)
            .map_err(failure(&format!("reading the metadata of {topic}")))?;
        *count = metadata
            .topics()
            .first()
            .map_or(1, |t| t.partitions().len().max(1) as i32);
    }
    let mut config = client_config(&load.kafka);
    // Batches of a few milliseconds: throughput without hiding latency.
    config.set("linger.ms", "5");
    let producer: BaseProducer = load.kafka.create(
        config,
        rdkafka::producer::DefaultProducerContext,
        "a producer",
    )?;
    let start = Instant::now();
    let start_ms = now_ms();
    let records: Box<dyn Iterator<Item = Generated>> = match &load.records {
        Records::Historical(config) => Box::new(Workload::new(config.clone())),
        Records::Live(config) => {
            let rate = load.rate.expect("a live load has a rate").max(1);
            let mut live = LiveWorkload::new(config.clone());
            Box::new((0u64..).map(move |i| live.record(i, start_ms + i * 1000 / rate)))
        }
    };
    for (i, record) in records.enumerate() {
        if stop.load(Ordering::Relaxed) || load.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        if let Some(rate) = load.rate {
            let due = start + Duration::from_millis(i as u64 * 1000 / rate.max(1));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let kind = match record.kind {
            Kind::Probe => 0,
            Kind::Login => 1,
            Kind::BaseCount => 2,
        };
        let partition = (record.partition % partitions[kind] as u64) as i32;
        let send = || {
            let record = BaseRecord::<(), str>::to(&load.topics[kind])
                .partition(partition)
                .payload(&record.line);
            producer.send(record).map_err(|(error, _)| error)
        };
        while let Err(error) = send() {
            if error.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                return Err(failure("producing")(error));
            }
            producer.poll(Duration::from_millis(1));
        }
        crate::kafka::serve(&producer);
        produced.fetch_add(1, Ordering::Relaxed);
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e: KafkaError| failure("flushing")(e))
}
