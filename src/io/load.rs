//! The load generator: the generated workload produced to the input topics,
//! open-loop at a fixed rate (record `i` is due at `start + i / rate`,
//! whether or not the broker keeps up) or as fast as the producer goes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::io::generator::{Workload, WorkloadConfig};
use crate::io::ingest::Kind;
use crate::io::kafka::{client_config, consumer, KafkaFailure};

/// Where and how fast to produce.
#[derive(Clone, Debug)]
pub struct Load {
    /// Bootstrap servers.
    pub brokers: String,
    /// Input topics: probes, logins, base counts.
    pub topics: [String; 3],
    /// Records per second; `None` for as fast as possible.
    pub rate: Option<u64>,
    /// Stop after this long (`None`: when the workload ends).
    pub duration: Option<Duration>,
    /// The workload.
    pub workload: WorkloadConfig,
}

/// Produces `load`, counting records into `produced`, until the workload
/// ends, the duration passes, or `stop` is set.
pub fn produce(load: &Load, stop: &AtomicBool, produced: &AtomicU64) -> Result<(), KafkaFailure> {
    let failure = |action: &str| {
        let (brokers, action) = (load.brokers.clone(), action.to_owned());
        move |source| KafkaFailure::Client {
            brokers,
            action,
            source: Box::new(source),
        }
    };
    // Records keep their generated partition, folded onto the topic's.
    let metadata_client = consumer(&load.brokers)?;
    let mut partitions = [1i32; 3];
    for (count, topic) in partitions.iter_mut().zip(&load.topics) {
        let metadata = metadata_client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(failure(&format!("reading the metadata of {topic}")))?;
        *count = metadata
            .topics()
            .first()
            .map_or(1, |t| t.partitions().len().max(1) as i32);
    }
    let mut config = client_config(&load.brokers);
    // Batches of a few milliseconds: throughput without hiding latency.
    config.set("linger.ms", "5");
    let producer: BaseProducer = config.create().map_err(failure("creating a producer"))?;
    let start = Instant::now();
    for (i, record) in Workload::new(load.workload.clone()).enumerate() {
        if stop.load(Ordering::Relaxed) || load.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        if let Some(rate) = load.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
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
        crate::io::kafka::serve(&producer);
        produced.fetch_add(1, Ordering::Relaxed);
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e: KafkaError| failure("flushing")(e))
}
