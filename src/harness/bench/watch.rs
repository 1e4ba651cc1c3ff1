//! Reading a topic back: the harness's own consumer, which is the consumer
//! a downstream user would be.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{self, Connection, KafkaFailure};

/// Reads `topic` from its start until `stop`, handing each value to `seen`.
pub(super) fn watch(
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
pub(super) fn field(value: &[u8], name: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    v.get(name)?.as_u64()
}
