//! The output producer: its settings, handing it records (each counted
//! against its logical time in the producer's
//! [`Deliveries`](crate::kafka::deliveries::Deliveries)), and serving its
//! delivery reports.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use crate::kafka::connection::{client_config, Connection};
use crate::kafka::deliveries::{DeliveryTracker, UNTRACKED};
use crate::kafka::error::KafkaFailure;

/// The output producer's `linger.ms`: see [`producer`].
pub const PRODUCER_LINGER_MS: u64 = 5;

/// A producer for the output topics.
pub fn producer(
    kafka: &Connection,
    metrics: crate::observe::metrics::Metrics,
) -> Result<BaseProducer<DeliveryTracker>, KafkaFailure> {
    let mut config = client_config(kafka);
    // No duplicates or reordering on retries: the last value per key must be
    // the current row.
    config.set("enable.idempotence", "true");
    // Latency over batching: a few milliseconds of linger still batches well
    // under load.
    config.set("linger.ms", PRODUCER_LINGER_MS.to_string());
    kafka.create(
        config,
        DeliveryTracker(Arc::default(), metrics),
        "a producer",
    )
}

/// Hands one record to the producer, unless its queue is full
/// (`Ok(false)`: nothing was sent); its acknowledgement is counted against
/// `time` unless that is [`UNTRACKED`].
pub fn offer(
    producer: &BaseProducer<DeliveryTracker>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    value: Option<&str>,
    time: u64,
) -> Result<bool, KafkaError> {
    let mut record = BaseRecord::with_opaque_to(topic, time as usize);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    let tracked = time != UNTRACKED;
    let deliveries = || {
        producer
            .context()
            .0
            .lock()
            .expect("no thread panics holding the lock")
    };
    if tracked {
        // The record's logical time as its Kafka timestamp: tombstones
        // carry their time too (a restart's times are above them all).
        record = record.timestamp(time as i64);
        // Counted before it is handed over, so that its report cannot come
        // first. (A cut crossed here keeps the offsets seen acknowledged
        // now even if the queue is full: earlier is as valid a floor.)
        deliveries().sent(time);
    }
    match producer.send(record) {
        Ok(()) => {
            if tracked {
                deliveries().produced(topic);
            }
            Ok(true)
        }
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
            if tracked {
                deliveries().unsent(time);
            }
            Ok(false)
        }
        // It will never be delivered: its time stays pending for good (the
        // service fails on it, see `send_or_fail`).
        Err((error, _)) => Err(error),
    }
}

/// Sends one record, waiting while the producer's queue is full (see
/// [`offer`]).
pub fn send(
    producer: &BaseProducer<DeliveryTracker>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    value: Option<&str>,
    time: u64,
) -> Result<(), KafkaError> {
    while !offer(producer, topic, partition, key, value, time)? {
        producer.poll(Duration::from_millis(10));
    }
    Ok(())
}

/// Offers an output record (see [`offer`]); a record that cannot even be
/// queued is a failure the service reports (see
/// [`Deliveries::failure`](crate::kafka::deliveries::Deliveries::failure)),
/// never a silent loss. Returns whether the producer took the record or
/// refused it for good: `false` only while its queue is full.
pub fn offer_or_fail(
    producer: &BaseProducer<DeliveryTracker>,
    topic: &str,
    key: Option<&str>,
    value: Option<&str>,
    time: u64,
) -> bool {
    match offer(producer, topic, None, key, value, time) {
        Ok(taken) => taken,
        Err(error) => {
            fail(producer, topic, error);
            true
        }
    }
}

/// Records that a record for `topic` could not be sent at all.
fn fail(producer: &BaseProducer<DeliveryTracker>, topic: &str, error: KafkaError) {
    producer
        .context()
        .0
        .lock()
        .expect("no thread panics holding the lock")
        .fail(topic, error);
}

/// Sends an output record; a record that cannot even be queued is a failure
/// the service reports (see
/// [`Deliveries::failure`](crate::kafka::deliveries::Deliveries::failure)),
/// never a silent loss.
pub fn send_or_fail(
    producer: &BaseProducer<DeliveryTracker>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    value: Option<&str>,
    time: u64,
) {
    if let Err(error) = send(producer, topic, partition, key, value, time) {
        fail(producer, topic, error);
    }
}

/// Flushes the producer (at shutdown).
pub fn flush(
    producer: &BaseProducer<DeliveryTracker>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    producer.flush(timeout)
}

/// Serves every delivery report waiting on `producer`'s queue.
/// `BaseProducer::poll` with a zero timeout serves one event — the reports
/// of one batch — per call, so a loop that polls once per turn falls behind
/// a producer that completes batches faster than that, and acknowledgements
/// are seen late (capabilities held, progress and rates understated).
pub fn serve<C: ProducerContext>(producer: &BaseProducer<C>) {
    // SAFETY: the handle is valid while the producer lives; the queue
    // reference taken here is released below.
    let queue =
        unsafe { rdkafka::bindings::rd_kafka_queue_get_main(producer.client().native_ptr()) };
    if queue.is_null() {
        producer.poll(Duration::ZERO);
        return;
    }
    // Bounded: reports that keep arriving are served by the next call.
    for _ in 0..4096 {
        // SAFETY: `queue` is a live reference.
        if unsafe { rdkafka::bindings::rd_kafka_queue_length(queue) } == 0 {
            break;
        }
        producer.poll(Duration::ZERO);
    }
    // SAFETY: releases the reference taken above, once.
    unsafe { rdkafka::bindings::rd_kafka_queue_destroy(queue) };
}

/// Serves an output producer's delivery reports (see [`serve`]) and adds
/// its counts to the metrics.
pub fn serve_outputs(producer: &BaseProducer<DeliveryTracker>) {
    serve(producer);
    producer.context().publish();
}
