//! The input consumer: its settings, the input partitions it is assigned
//! (explicitly: presence's workers never rebalance among themselves), and
//! the partitions' offsets as the broker and the consumer know them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::connection::{client_config, Connection};
use crate::kafka::error::KafkaFailure;
use crate::model::ingest::Kind;

/// The consumer's `fetch.wait.max.ms`: see [`consumer`].
pub const FETCH_WAIT_MAX_MS: u64 = 10;

/// A consumer that is assigned partitions explicitly: no consumer group
/// rebalancing among presence's own workers, and no offsets committed by
/// the client itself (presence commits what its state reflects: see
/// [`crate::kafka::offsets`]).
pub fn consumer(kafka: &Connection) -> Result<BaseConsumer<ConsumerEvents>, KafkaFailure> {
    let mut config = client_config(kafka);
    // The group presence's offsets are committed to; never joined (assign()).
    config.set("group.id", &kafka.group_id);
    config.set("enable.auto.commit", "false");
    config.set("enable.auto.offset.store", "false");
    // A partition whose records were deleted before they were read is an
    // error, not a silent jump to its end (librdkafka's default).
    config.set("auto.offset.reset", "error");
    // Catch-up reads: the defaults (100k messages queued, 1 s backoff after a
    // full queue) throttle backfill from Kafka three to six times.
    config.set("queued.min.messages", "1000000");
    config.set("fetch.queue.backoff.ms", "1");
    // Live reads: the broker answers a fetch as soon as data arrives or after
    // this long, instead of librdkafka's 500 ms, which would be the latency.
    config.set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string());
    // Deliver CRC-failed messages as errors per message instead of stalling.
    config.set("check.crcs", "true");
    kafka.create(config, ConsumerEvents, "a consumer")
}

/// The low and high watermarks of `partitions`, in one request for each
/// (where asking partition by partition takes two round trips apiece: a
/// second per hundred partitions).
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> KafkaResult<BTreeMap<(String, i32), (i64, i64)>> {
    let mut found = BTreeMap::new();
    if partitions.is_empty() {
        return Ok(found);
    }
    // ListOffsets at the special times -2 (earliest) and -1 (latest).
    let ask = |at: Offset| -> KafkaResult<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition_offset(topic, *partition, at)?;
        }
        consumer.offsets_for_times(list, timeout)
    };
    let lows = ask(Offset::Beginning)?;
    let highs = ask(Offset::End)?;
    for (topic, partition) in partitions {
        let offset = |list: &TopicPartitionList| -> KafkaResult<i64> {
            let element = list
                .find_partition(topic, *partition)
                .ok_or(KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition))?;
            element.error()?;
            match element.offset() {
                Offset::Offset(n) => Ok(n),
                _ => Err(KafkaError::OffsetFetch(RDKafkaErrorCode::InvalidArgument)),
            }
        };
        found.insert(
            (topic.clone(), *partition),
            (offset(&lows)?, offset(&highs)?),
        );
    }
    Ok(found)
}

/// Rebalances of presence's consumers, ever: they are assigned partitions
/// and never subscribe, so this stays 0 (a test checks it).
pub static REBALANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The consumers' context: what librdkafka tells presence's consumers. A
/// rebalance, which must never happen, is counted into [`REBALANCES`] and
/// logged; a commit to the group that failed is logged.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsumerEvents;

impl ClientContext for ConsumerEvents {}

impl rdkafka::consumer::ConsumerContext for ConsumerEvents {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        REBALANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            ?rebalance,
            "a consumer group rebalance reached presence's consumer"
        );
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::warn!(%error, "could not commit offsets to the consumer group; the next checkpoint or frontier tries again");
        }
    }
}

/// One input partition: its kind, topic and number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputPartition {
    /// What it holds.
    pub kind: Kind,
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
}

/// The input topics' partitions in assignment order (probes, logins, base
/// counts; each topic's partitions in order), from the broker's metadata.
/// Every process computes the same list, and [`crate::cluster::responsible_for`]
/// maps a position in it to a worker, as for files.
pub fn input_partitions(
    consumer: &BaseConsumer<ConsumerEvents>,
    brokers: &str,
    topics: &[(Kind, String)],
    timeout: Duration,
) -> Result<Vec<InputPartition>, KafkaFailure> {
    let mut partitions = Vec::new();
    for (kind, topic) in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|source| KafkaFailure::Client {
                brokers: brokers.to_owned(),
                action: format!("reading the metadata of {topic}"),
                source: Box::new(source),
            })?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let Some(found) = found.filter(|t| t.error().is_none() && !t.partitions().is_empty())
        else {
            return Err(KafkaFailure::MissingTopic {
                brokers: brokers.to_owned(),
                topic: topic.clone(),
                flag: crate::files::input::kind_name(*kind),
            });
        };
        let mut numbers: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        numbers.sort_unstable();
        partitions.extend(numbers.into_iter().map(|partition| InputPartition {
            kind: *kind,
            topic: topic.clone(),
            partition,
        }));
    }
    Ok(partitions)
}

/// Assigns `partitions` to `consumer`, each from its offset in `starts`
/// (`None`: its earliest), and returns each one's first and end offsets as
/// seen now (for `--stop-at-end`).
pub fn assign(
    consumer: &BaseConsumer<ConsumerEvents>,
    brokers: &str,
    partitions: &[InputPartition],
    starts: &[Option<i64>],
    timeout: Duration,
) -> Result<Vec<(i64, i64)>, KafkaFailure> {
    let failure = |action: String| KafkaFailure::client(brokers, action);
    // Watermarks first: fetching them after assign() delayed the first
    // message by about half a second.
    let asked: Vec<(String, i32)> = partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition))
        .collect();
    let found = watermarks(consumer, &asked, timeout).map_err(failure(
        "reading the offsets of the input partitions".to_owned(),
    ))?;
    let ends: Vec<(i64, i64)> = asked.iter().map(|p| found[p]).collect();
    let mut list = TopicPartitionList::new();
    for (p, start) in partitions.iter().zip(starts) {
        let offset = start.map_or(Offset::Beginning, Offset::Offset);
        list.add_partition_offset(&p.topic, p.partition, offset)
            .map_err(failure(format!(
                "assigning {} partition {}",
                p.topic, p.partition
            )))?;
    }
    consumer
        .assign(&list)
        .map_err(failure("assigning partitions".to_owned()))?;
    Ok(ends)
}

/// The end offset of a partition as the consumer last learned it from its
/// fetches: a cached, non-blocking look-up (`None` before the first fetch).
pub fn cached_end_offset(
    consumer: &BaseConsumer<ConsumerEvents>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    cached_watermarks(consumer, topic, partition).map(|(_, high)| high)
}

/// The first offset of a partition as the consumer last learned it from its
/// fetches (brokers that report it), without asking: `None` if not known.
pub fn cached_first_offset(
    consumer: &BaseConsumer<ConsumerEvents>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    cached_watermarks(consumer, topic, partition)
        .map(|(low, _)| low)
        .filter(|&low| low >= 0)
}

/// A partition's first and end offsets as the consumer last learned them
/// (`None` before its first fetch).
fn cached_watermarks(
    consumer: &BaseConsumer<ConsumerEvents>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the consumer's handle is valid while it lives; the topic is a
    // NUL-terminated string; the out-pointers point to live locals.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::{BaseProducer, Producer};

    #[test]
    fn watermarks_in_one_request_are_those_asked_one_by_one() {
        use rdkafka::producer::BaseRecord;
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 3, 1).unwrap();
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        for (partition, n) in [(0, 3), (2, 5)] {
            for _ in 0..n {
                producer
                    .send(
                        BaseRecord::<(), str>::to("t")
                            .partition(partition)
                            .payload("x"),
                    )
                    .unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let consumer = consumer(&Connection::from(mock.bootstrap_servers())).unwrap();
        let asked: Vec<(String, i32)> = (0..3).map(|p| ("t".to_owned(), p)).collect();
        let found = watermarks(&consumer, &asked, Duration::from_secs(10)).unwrap();
        for (topic, partition) in &asked {
            let one = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .unwrap();
            assert_eq!(
                found[&(topic.clone(), *partition)],
                one,
                "{topic}/{partition}"
            );
        }
        assert_eq!(found[&("t".to_owned(), 2)], (0, 5));
    }
}
