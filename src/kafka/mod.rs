//! Kafka: the input partitions each worker reads, and the upsert, rejected
//! and progress topics the outputs are written to (docs/contract.md, section 3).
//!
//! Every librdkafka setting presence changes is set in [`client_config`],
//! [`consumer`] or [`producer`], each with its reason.

pub mod fetch;
pub mod offsets;
pub mod progress;
pub mod settings;
pub mod source;
pub mod upsert;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::model::ingest::Kind;

/// A Kafka failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum KafkaFailure {
    /// A client could not be created or a request failed.
    #[error("Kafka at {brokers}: {action}: {source}{}", hint(.source))]
    Client {
        /// The bootstrap servers.
        brokers: String,
        /// What was being done.
        action: String,
        /// The client's error.
        source: Box<KafkaError>,
    },
    /// An input topic does not exist.
    #[error("input topic {topic:?} does not exist at {brokers}; create it, or name another with --{flag}-topic")]
    MissingTopic {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// The flag that names it.
        flag: &'static str,
    },
    /// The client reported an error it cannot recover from.
    #[error("Kafka at {brokers}: the client cannot go on: {detail}")]
    Fatal {
        /// The bootstrap servers.
        brokers: String,
        /// The client's explanation.
        detail: String,
    },
    /// The broker refused an output record for good.
    #[error("Kafka at {brokers}: could not write to {topic}: {source}")]
    Delivery {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// The client's error.
        source: Box<KafkaError>,
    },
}

impl KafkaFailure {
    /// For `map_err`: a [`KafkaFailure::Client`] of `action` at `brokers`.
    pub fn client(brokers: &str, action: String) -> impl FnOnce(KafkaError) -> Self + use<> {
        let brokers = brokers.to_owned();
        move |source| KafkaFailure::Client {
            brokers,
            action,
            source: Box::new(source),
        }
    }
}

/// What to check when a client could not talk to the brokers at all.
fn hint(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
            " (is the broker up at that address, and does it need TLS or SASL? set security.protocol and its companions with --kafka-config or -X)"
        }
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            " (check sasl.mechanism, sasl.username and sasl.password)"
        }
        Some(RDKafkaErrorCode::SSL) => " (check ssl.ca.location and the broker's certificate)",
        _ => "",
    }
}

/// The consumer's `fetch.wait.max.ms`: see [`consumer`].
pub const FETCH_WAIT_MAX_MS: u64 = 10;
/// The output producer's `linger.ms`: see [`producer`].
pub const PRODUCER_LINGER_MS: u64 = 5;

/// How presence reaches Kafka: the bootstrap servers (`--brokers`), the
/// consumer group it reports its offsets to (`--group-id`) and the
/// operator's client settings (`--kafka-config`, `-X`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The bootstrap servers.
    pub brokers: String,
    /// The consumer group presence commits its offsets to.
    pub group_id: String,
    /// Applied over presence's own settings of every client.
    pub settings: crate::kafka::settings::ClientSettings,
}

/// The default of `--group-id`.
pub const GROUP_ID: &str = "presence";

impl Connection {
    /// `brokers`, the default group and no settings of the operator's.
    pub fn new(brokers: impl Into<String>) -> Self {
        Connection {
            brokers: brokers.into(),
            group_id: GROUP_ID.to_owned(),
            settings: Default::default(),
        }
    }

    /// A client of `config` with the operator's settings applied over it.
    pub fn create<C, T>(
        &self,
        mut config: ClientConfig,
        context: C,
        what: &str,
    ) -> Result<T, KafkaFailure>
    where
        C: ClientContext,
        T: rdkafka::config::FromClientConfigAndContext<C>,
    {
        self.settings.apply(&mut config);
        config
            .create_with_context(context)
            .map_err(|source| KafkaFailure::Client {
                brokers: self.brokers.clone(),
                action: format!("creating {what}"),
                source: Box::new(source),
            })
    }
}

impl From<&str> for Connection {
    fn from(brokers: &str) -> Self {
        Connection::new(brokers)
    }
}

impl From<String> for Connection {
    fn from(brokers: String) -> Self {
        Connection::new(brokers)
    }
}

impl From<&String> for Connection {
    fn from(brokers: &String) -> Self {
        Connection::new(brokers.as_str())
    }
}

/// The settings every client shares (the operator's are applied over them
/// by [`Connection::create`]).
pub fn client_config(kafka: &Connection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    // librdkafka logs through its own callback; presence reports errors itself.
    config.set("log_level", "3");
    config
}

/// A consumer that is assigned partitions explicitly: no consumer group
/// rebalancing among presence's own workers, and no offsets committed by
/// the client itself (presence commits what its state reflects: see
/// [`crate::kafka::offsets`]).
pub fn consumer(kafka: &Connection) -> Result<BaseConsumer<Rebalances>, KafkaFailure> {
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
    kafka.create(config, Rebalances, "a consumer")
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

/// The consumers' context: counts rebalances into [`REBALANCES`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Rebalances;

impl ClientContext for Rebalances {}

impl rdkafka::consumer::ConsumerContext for Rebalances {
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
/// Every process computes the same list, and [`crate::files::input::responsible_for`]
/// maps a position in it to a worker, as for files.
pub fn input_partitions(
    consumer: &BaseConsumer<Rebalances>,
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
    consumer: &BaseConsumer<Rebalances>,
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

/// Per output topic and partition, an offset (see [`Deliveries::floors`]).
pub type Floors = BTreeMap<(String, i32), i64>;

/// Per output topic and partition, one past the greatest offset any
/// producer of the process has seen acknowledged (or the partition's end
/// when the run started, if greater): shared by the workers' producers, so
/// that a worker that has written nothing to a partition yet still knows
/// where the process's records there end.
pub type Acked = Arc<Mutex<HashMap<String, BTreeMap<i32, i64>>>>;

/// Outstanding output records per logical time, shared with the producer's
/// delivery callback; and where the records of later logical times can be
/// in the output partitions, for checkpoints.
#[derive(Debug, Default)]
pub struct Deliveries {
    pending: BTreeMap<u64, usize>,
    failure: Option<(String, KafkaError)>,
    /// What the process's producers have seen acknowledged.
    acked: Acked,
    /// Cuts are multiples of this logical time (with checkpoints).
    every: Option<u64>,
    /// The least cut not yet reached: every record sent so far has a time
    /// below it.
    uncrossed: u64,
    /// Per cut first reached by a record sent (and every cut between it
    /// and the one before), `acked` just before that record was sent.
    at_crossing: BTreeMap<u64, Floors>,
    /// Records produced and acknowledged since the metrics last had them.
    counts: crate::observe::metrics::OutputCounts,
}

impl Deliveries {
    /// Counts one more record of logical time `time` in flight.
    pub fn sent(&mut self, time: u64) {
        *self.pending.entry(time).or_default() += 1;
        if let Some(every) = self.every {
            if time >= self.uncrossed {
                let cut = time / every * every;
                self.at_crossing.insert(cut, self.current());
                self.uncrossed = cut.saturating_add(every);
            }
        }
    }

    /// Takes back one record of `time` counted by [`Deliveries::sent`] that
    /// the producer did not take.
    fn unsent(&mut self, time: u64) {
        if let Some(count) = self.pending.get_mut(&time) {
            *count -= 1;
            if *count == 0 {
                self.pending.remove(&time);
            }
        }
    }

    /// Whether every record of `time` sent so far was acknowledged.
    pub fn acknowledged(&self, time: u64) -> bool {
        !self.pending.contains_key(&time)
    }

    /// Whether every record sent so far was acknowledged.
    pub fn all_acknowledged(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records a record that could not be sent at all.
    pub fn fail(&mut self, topic: &str, error: KafkaError) {
        self.failure
            .get_or_insert_with(|| (topic.to_owned(), error));
    }

    /// The first delivery that failed for good, if any.
    pub fn failure(&self) -> Option<&(String, KafkaError)> {
        self.failure.as_ref()
    }

    /// Notes the cuts (multiples of `every`) that [`Deliveries::floors`]
    /// will be asked for.
    pub fn track_cuts(&mut self, every: u64) {
        self.every = Some(every.max(1));
    }

    /// Shares `acked` with the other producers of the process: where the
    /// output partitions ended when the run started (this run writes
    /// nothing below), then what any of them saw acknowledged.
    pub fn share(&mut self, acked: Acked) {
        self.acked = acked;
    }

    fn delivered(&mut self, topic: &str, partition: i32, offset: i64) {
        let mut acked = self
            .acked
            .lock()
            .expect("no thread panics holding the lock");
        if !acked.contains_key(topic) {
            acked.insert(topic.to_owned(), BTreeMap::new());
        }
        let partitions = acked.get_mut(topic).expect("inserted above");
        let next = partitions.entry(partition).or_default();
        *next = (*next).max(offset + 1);
    }

    fn current(&self) -> Floors {
        let acked = self
            .acked
            .lock()
            .expect("no thread panics holding the lock");
        acked
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |(&partition, &next)| ((topic.clone(), partition), next))
            })
            .collect()
    }

    /// For the cut at `cut` (`None`: the final cut, after which nothing is
    /// sent), per output partition an offset at or above which is every
    /// record this producer sends at a time at or after the cut: what the
    /// process saw acknowledged before the first such record was sent. A
    /// partition missing has no such offset known.
    ///
    /// A broker appends a partition's records in the order it receives
    /// them, so a record sent after an acknowledgement lands above it.
    pub fn floors(&mut self, cut: Option<u64>) -> Floors {
        let Some(cut) = cut else {
            return self.current();
        };
        if self.uncrossed <= cut {
            return self.current(); // nothing at or after the cut sent yet
        }
        let floors = self
            .at_crossing
            .range(cut..)
            .next()
            .map(|(_, floors)| floors.clone())
            .unwrap_or_default();
        self.at_crossing = self.at_crossing.split_off(&cut);
        floors
    }
}

/// The producer's context: acknowledgements decrement [`Deliveries`] and
/// feed the metrics (counted per producer, added to the metrics by
/// [`serve`] and when the producer goes).
#[derive(Clone, Debug, Default)]
pub struct DeliveryTracker(
    pub Arc<Mutex<Deliveries>>,
    pub crate::observe::metrics::Metrics,
);

impl DeliveryTracker {
    /// Adds what was produced and acknowledged since the last call to the
    /// metrics.
    pub fn publish(&self) {
        let mut deliveries = self.0.lock().expect("no thread panics holding the lock");
        self.1.add(&mut deliveries.counts);
    }
}

impl Drop for DeliveryTracker {
    fn drop(&mut self) {
        if let Ok(mut deliveries) = self.0.lock() {
            self.1.add(&mut deliveries.counts);
        }
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, time: usize) {
        use rdkafka::message::Message;
        let time = time as u64;
        match result {
            Err((error, message)) => {
                // The time stays pending for good: a record that was never
                // acknowledged must not let the progress frontier pass it.
                let mut deliveries = self.0.lock().expect("no thread panics holding the lock");
                deliveries
                    .failure
                    .get_or_insert_with(|| (message.topic().to_owned(), error.clone()));
                return;
            }
            Ok(_) if time == UNTRACKED => return,
            Ok(_) => {}
        }
        let mut deliveries = self.0.lock().expect("no thread panics holding the lock");
        if let Ok(message) = result {
            // A record's logical time is the millisecond its input was read.
            let latency = crate::model::clock::now_ms().saturating_sub(time);
            deliveries.counts.acknowledged(message.topic(), latency);
            deliveries.delivered(message.topic(), message.partition(), message.offset());
        }
        let count = deliveries
            .pending
            .get_mut(&time)
            .expect("a delivery of a record that was sent");
        *count -= 1;
        if *count == 0 {
            deliveries.pending.remove(&time);
        }
    }
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

/// Keeps memory that librdkafka frees for its next messages; call it first
/// thing in `main`. librdkafka allocates every message it queues with the C
/// allocator, not Rust's, and frees it once delivered; glibc gives the free
/// top of each thread's heap back to the system at once and grows a heap
/// page by page, so a producer writing a million rows faults the same
/// memory in again and again (70% of a hand-off's page faults in the worker
/// threads; about 12% of its time). With this, glibc keeps up to 1 GiB free
/// at the top of a heap and grows one by 64 MiB of address space (memory is
/// used only where touched). `MALLOC_TRIM_THRESHOLD_` or `MALLOC_TOP_PAD_`
/// in the environment win over it.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        if !set("MALLOC_TRIM_THRESHOLD_") && !set("MALLOC_TOP_PAD_") {
            // SAFETY: mallopt only changes glibc's tunables; called before
            // any thread of ours allocates with the C allocator.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        }
    }
}

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

/// The logical time of records whose acknowledgement holds nothing back
/// (progress messages).
pub const UNTRACKED: u64 = u64::MAX;

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
                deliveries().counts.produced(topic);
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
/// queued is a failure the service reports (see [`Deliveries::failure`]),
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
/// the service reports (see [`Deliveries::failure`]), never a silent loss.
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

/// How long to wait for a broker to create topics.
const CREATE_TOPICS_TIMEOUT: Duration = Duration::from_secs(3);

/// A topic to create: its name, partitions, and whether it is compacted
/// (`cleanup.policy=compact`: the last value per key is kept, which is what
/// an upsert topic means; topics without keys cannot be compacted).
pub type NewTopicSpec<'a> = (&'a str, i32, bool);

/// Creates those of `topics` that do not exist yet. A broker without the
/// CreateTopics call (librdkafka's mock) auto-creates topics on first use
/// instead, so "unsupported" is not an error.
pub fn create_missing_topics(
    kafka: &Connection,
    topics: &[NewTopicSpec<'_>],
    timeout: Duration,
) -> Result<(), KafkaFailure> {
    let consumer = consumer(kafka)?;
    let created = create_missing_topics_with(&consumer, kafka, topics, timeout);
    drop_in_background(consumer);
    created
}

/// Drops a Kafka client on a thread of its own: librdkafka takes about
/// 100 ms to tear one down, and nothing needs to wait for that (a restart
/// paid it three times before its workers started).
pub fn drop_in_background<T: Send + 'static>(client: T) {
    // If no thread can be made, the closure and the client are dropped here.
    let _ = std::thread::Builder::new()
        .name("presence:drop-client".into())
        .spawn(move || drop(client));
}

/// [`create_missing_topics`], reading the topic list with `consumer`.
pub fn create_missing_topics_with(
    consumer: &BaseConsumer<Rebalances>,
    kafka: &Connection,
    topics: &[NewTopicSpec<'_>],
    timeout: Duration,
) -> Result<(), KafkaFailure> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let failure = |action: &str| KafkaFailure::client(&kafka.brokers, action.to_owned());
    // All topics' metadata: asking for one by name would auto-create it.
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(failure("reading the topic list"))?;
    let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<NewTopic> = topics
        .iter()
        .filter(|(name, _, _)| !existing.contains(name))
        .map(|&(name, partitions, compacted)| {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            if compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = kafka.create(
        client_config(kafka),
        DefaultClientContext,
        "an admin client",
    )?;
    // A broker without CreateTopics (librdkafka's mock) never answers it, so
    // the attempt is bounded and a time-out is not fatal: such brokers create
    // topics on first use, and a broker that does not will fail the first
    // write with a clear message.
    let attempt = timeout.min(CREATE_TOPICS_TIMEOUT);
    let options = AdminOptions::new()
        .request_timeout(Some(attempt))
        .operation_timeout(Some(attempt));
    let results = match block_on(admin.create_topics(&missing, &options)) {
        Err(KafkaError::AdminOp(
            code @ (RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut),
        )) => {
            tracing::warn!(%code, "the broker did not create the output topics; assuming it creates them on first use");
            return Ok(());
        }
        other => other.map_err(failure("creating the output topics"))?,
    };
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created an output topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {} // another process was first
            Err((_, RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::InvalidRequest)) => {}
            Err((topic, code)) => {
                return Err(KafkaFailure::Client {
                    brokers: kafka.brokers.clone(),
                    action: format!("creating output topic {topic}"),
                    source: Box::new(KafkaError::AdminOp(code)),
                })
            }
        }
    }
    Ok(())
}

/// Runs a future to completion on this thread (librdkafka's own threads do
/// the work; the admin API only hands back a future).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// The end offset of a partition as the consumer last learned it from its
/// fetches: a cached, non-blocking look-up (`None` before the first fetch).
pub fn cached_end_offset(
    consumer: &BaseConsumer<Rebalances>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
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
        .then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(floors: &Floors, partition: i32) -> Option<i64> {
        floors.get(&("walkins".to_owned(), partition)).copied()
    }

    #[test]
    fn a_cut_s_floor_is_what_was_acknowledged_before_its_first_record_was_sent() {
        let mut d = Deliveries::default();
        d.track_cuts(10);
        d.share(Arc::new(Mutex::new(
            [("walkins".to_owned(), [(0, 5), (1, 0)].into())].into(),
        )));
        d.sent(3);
        d.delivered("walkins", 0, 5);
        d.sent(7);
        d.delivered("walkins", 0, 6);
        // Nothing at or after 10 sent yet: everything acknowledged so far.
        assert_eq!(floor(&d.floors(Some(10)), 0), Some(7));
        // The first record of time >= 20 comes now (crossing 10 and 20);
        // acknowledgements after it do not move those cuts' floors.
        d.sent(25);
        d.delivered("walkins", 0, 7);
        d.delivered("walkins", 1, 0);
        d.sent(15); // a later record of an earlier time crosses nothing
        d.sent(31);
        d.delivered("walkins", 0, 8);
        assert_eq!(floor(&d.floors(Some(20)), 0), Some(7));
        assert_eq!(floor(&d.floors(Some(20)), 1), Some(0), "the seed");
        assert_eq!(floor(&d.floors(Some(30)), 0), Some(8));
        assert_eq!(floor(&d.floors(Some(30)), 1), Some(1));
        // The final cut: everything acknowledged.
        assert_eq!(floor(&d.floors(None), 0), Some(9));
        assert!(!d.all_acknowledged());
    }

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

    #[test]
    fn a_producer_knows_what_the_process_s_others_saw_acknowledged() {
        let acked = Acked::default();
        let (mut a, mut b) = (Deliveries::default(), Deliveries::default());
        a.share(Arc::clone(&acked));
        b.share(Arc::clone(&acked));
        a.delivered("walkins", 0, 10);
        assert_eq!(floor(&b.floors(None), 0), Some(11));
    }

    #[test]
    fn a_cut_skipped_by_one_crossing_shares_its_floor() {
        let mut d = Deliveries::default();
        d.track_cuts(10);
        d.delivered("walkins", 0, 0);
        d.sent(35); // the first record at or after 10, 20 and 30
        d.delivered("walkins", 0, 1);
        assert_eq!(floor(&d.floors(Some(10)), 0), Some(1));
        assert_eq!(floor(&d.floors(Some(30)), 0), Some(1));
        assert_eq!(floor(&d.floors(Some(40)), 0), Some(2), "not reached yet");
    }
}
