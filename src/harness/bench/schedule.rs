//! The open-loop schedule produced to Kafka, with the broker's
//! acknowledgements counted per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::config::BenchConfig;
use crate::harness::generator::{LiveConfig, LiveWorkload};
use crate::kafka::{self, Connection, KafkaFailure};
use crate::model::ingest::Kind;

/// Produces the open-loop schedule to `topics` (probes, logins) until
/// `duration` after `start_ms`.
pub(super) fn generate(
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

/// A producer for the schedule, whose acknowledgements are counted in
/// `per_second` from `start`.
pub(super) fn producer(
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
