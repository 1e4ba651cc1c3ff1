//! The Kafka source: one per worker, owning the input partitions the worker
//! reads — their next offsets, lateness state and idle clocks — and the
//! event-time promise it makes for them.
//!
//! # Idle partitions
//!
//! A probe partition's own promise is its lateness watermark (its largest
//! accepted `ts` minus `allowed-lateness`): it will accept no probe below it.
//! A partition that is silent would hold that promise — and so the freeing
//! of window state everywhere — still forever. So a probe partition is
//! *idle* once it is caught up (the next offset to read is at its end offset,
//! as last fetched) and has delivered nothing for `--idle-timeout`; an idle
//! partition promises the wall clock minus `allowed-lateness` (rounded down
//! to [`IDLE_PROMISE_STEP_MS`]), or its own watermark if that is higher.
//! The worker's promise is the least over its probe partitions (a worker
//! without any promises the wall clock rule); the window operator's
//! event-time frontier is the least over all workers.
//!
//! What becomes late: a promise cannot be taken back, so once a partition
//! delivers again, its probes below what the worker promised meanwhile are
//! rejected as `late`. That promise is never above the wall clock minus
//! `allowed-lateness` at the time it was made, so a probe whose `ts` is
//! within `allowed-lateness` of the wall clock when it is read is never late
//! because its partition (or any other) was idle. Only a probe older than
//! that, delivered after a quiet spell, is: the one case where acceptance
//! depends on timing. A partition with a backlog is never idle, however
//! slowly it is read. With `--stop-at-end` an exhausted partition promises
//! its own watermark, not everything (the end of input is not the passing
//! of time: `present` at the end is who was in the store then), and one
//! that delivered no probe does not hold the frontier back.
//!
//! # Unreadable records
//!
//! librdkafka reports a record batch that fails its CRC check (`check.crcs`
//! is on) or cannot be decoded once per fetch, at the batch's first offset
//! ([`crate::kafka::fetch`]), and would fetch it again from the same position
//! forever. The source rejects the record at its position as `corrupt` and
//! seeks one offset on; the broker returns the same batch until the position
//! leaves it, so each record in it is rejected once, with its own offset,
//! and reading goes on. That costs one fetch of the batch per record in it —
//! nothing, for the rare corrupt batch.
//!
//! # Records skipped or repeated by the broker
//!
//! Every record is read once, in offset order, whatever the broker sends
//! ([`Guard`]). A record below the next offset to read is reflected
//! already and is dropped (tansu 0.6 repeats the batches after a fetch's
//! first one within the same answer, sometimes hundreds of times). A record
//! above it — a gap — where the source has just positioned the partition
//! (opened it at a checkpoint's offset, assigned it again, sought) may be
//! one the broker skipped: tansu 0.6 drops the rest of a batch fetched from
//! its middle, which is where a checkpoint or a `--stop-at-end` run leaves
//! off. The source then seeks back (one offset, then twice as far each
//! time, never below the partition's first offset) until the broker
//! delivers from at or before the next offset, drops what it read already,
//! and reads on. A gap the broker still shows after that overlap (or from
//! the partition's first offset), or once it has delivered the next offset
//! in order, is real — Kafka leaves them where records were compacted away
//! or transaction markers are — and is read past without a fetch more. The
//! first repeat of a partition is logged as a warning; gaps and seeks at
//! debug level. A restore's read-back of the output topics
//! (`service::restore`) guards its reads the same way.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::Offset;

use crate::cluster::responsible_for;
use crate::dataflow::note::Note;
use crate::kafka::connection::Connection;
use crate::kafka::consumer::{
    assign, cached_end_offset, cached_first_offset, consumer, watermarks, InputPartition,
};
use crate::kafka::error::KafkaFailure;
use crate::kafka::fetch::{Fetched, Fetcher};
use crate::model::ingest::PartitionState;
use crate::model::ingest::{self, Ingested, Kind, PartitionIngest};
use crate::model::params::Params;
use crate::model::records::EventTime;
use crate::observe::metrics::PartitionFigures;

/// An idle partition's promise moves in steps this large, so that a quiet
/// worker sends one new promise a second rather than one per epoch; state
/// is freed a second later at most.
pub const IDLE_PROMISE_STEP_MS: u64 = 1_000;

/// How a source reads.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// How to reach Kafka.
    pub kafka: Connection,
    /// Detection parameters (lateness and the future rule).
    pub params: Params,
    /// Read each partition only up to its end offset at start.
    pub stop_at_end: bool,
    /// A caught-up probe partition silent this long is idle.
    pub idle_timeout: Duration,
    /// How long to wait for the broker's answers.
    pub connect_timeout: Duration,
}

/// One input partition being read.
struct Partition {
    topic: String,
    number: i32,
    ingest: PartitionIngest,
    /// When its last message arrived (or reading started).
    heard: Instant,
    /// Messages read.
    read: u64,
    /// The end offset at start: with `--stop-at-end`, read up to here.
    end: i64,
    /// The next offset to read: every record before it is reflected.
    next: i64,
    /// `next` and the floor as last reported in a [`Note`].
    reported: Option<(i64, EventTime)>,
    /// Whether it is seeking back over a gap (see the module docs).
    guard: Guard,
    /// Records the broker delivered again, dropped.
    repeated: u64,
}

/// Where a partition's reading stands against gaps (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Just positioned (opened at an offset, assigned again, sought): a
    /// record above the next offset is a gap to look into.
    Verifying,
    /// Reading on from a record at the next offset: the broker delivers
    /// from where it was asked, and a gap is one the partition has.
    Reading,
    /// Sought back to `from` over a gap; `overlapped` once a record below
    /// the next offset came again (the broker delivers from before the gap).
    Seeking {
        /// The offset sought.
        from: i64,
        /// Whether the broker has delivered a record below the next offset since.
        overlapped: bool,
    },
}

/// What to do with a delivered record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read it.
    Read,
    /// Read it: the records between the next offset and it do not exist
    /// (a real gap).
    ReadPastGap,
    /// Drop it: the next offset is above it (read already).
    Drop,
    /// Drop it as a record delivered twice.
    DropRepeat,
    /// Drop it and seek back to this offset: the broker may have skipped
    /// records before it.
    SeekBack(i64),
}

impl Guard {
    /// The step for a record at `offset` when the next offset to read is
    /// `next` and the partition's first offset `low` (asked for only when
    /// needed, at a gap).
    pub fn step(&mut self, offset: i64, next: i64, low: impl FnOnce() -> i64) -> Step {
        match *self {
            _ if offset == next => {
                *self = Guard::Reading;
                Step::Read
            }
            Guard::Reading | Guard::Verifying if offset < next => Step::DropRepeat,
            Guard::Reading => Step::ReadPastGap,
            Guard::Seeking { from, .. } if offset < next => {
                *self = Guard::Seeking {
                    from,
                    overlapped: true,
                };
                Step::Drop
            }
            Guard::Seeking {
                overlapped: true, ..
            } => {
                *self = Guard::Reading;
                Step::ReadPastGap
            }
            Guard::Verifying => {
                let from = (next - 1).max(low());
                if from >= next {
                    *self = Guard::Reading;
                    Step::ReadPastGap
                } else {
                    *self = Guard::Seeking {
                        from,
                        overlapped: false,
                    };
                    Step::SeekBack(from)
                }
            }
            Guard::Seeking { from, .. } => {
                let low = low();
                if from <= low {
                    *self = Guard::Reading;
                    Step::ReadPastGap
                } else {
                    let from = next.saturating_sub(2 * (next - from)).max(low);
                    *self = Guard::Seeking {
                        from,
                        overlapped: false,
                    };
                    Step::SeekBack(from)
                }
            }
        }
    }
}

impl Partition {
    /// Whether the record at `offset` is to be read: not one read already,
    /// nor one after records the broker may have skipped (then it seeks
    /// back; see the module docs).
    fn guard(
        &mut self,
        fetcher: &Fetcher,
        options: &SourceOptions,
        offset: i64,
    ) -> Result<bool, KafkaFailure> {
        let failure = |action: String| KafkaFailure::client(&options.kafka.brokers, action);
        let (topic, number, next) = (self.topic.as_str(), self.number, self.next);
        let mut unknown = None;
        let step = self.guard.step(offset, next, || {
            // As the last fetch reported it, if the broker does; else asked.
            if let Some(low) = cached_first_offset(fetcher.consumer(), topic, number) {
                return low;
            }
            let place = (topic.to_owned(), number);
            match watermarks(
                fetcher.consumer(),
                std::slice::from_ref(&place),
                options.connect_timeout,
            ) {
                Ok(found) => found[&place].0,
                Err(error) => {
                    unknown = Some(error);
                    next
                }
            }
        });
        if let Some(error) = unknown {
            return Err(failure(format!("reading the offsets of {topic}/{number}"))(
                error,
            ));
        }
        match step {
            Step::Read => Ok(true),
            Step::Drop => Ok(false),
            Step::DropRepeat => {
                self.repeated += 1;
                if self.repeated == 1 {
                    tracing::warn!(
                        topic,
                        partition = number,
                        offset,
                        next,
                        "the broker delivered a record read already; dropping repeats"
                    );
                }
                Ok(false)
            }
            Step::ReadPastGap => {
                tracing::debug!(
                    topic,
                    partition = number,
                    next,
                    offset,
                    "the partition holds no records from the next offset to this one"
                );
                Ok(true)
            }
            Step::SeekBack(from) => {
                tracing::debug!(
                    topic,
                    partition = number,
                    next,
                    offset,
                    from,
                    "the broker delivered a record past the next offset; seeking back"
                );
                fetcher
                    .consumer()
                    .seek(topic, number, Offset::Offset(from), Duration::ZERO)
                    .map_err(failure(format!("seeking {topic}/{number} back to {from}")))?;
                Ok(false)
            }
        }
    }

    /// Rejects the record at `offset` of a record batch the client could
    /// not read, as `corrupt`, and seeks one offset past it (see the module
    /// docs): the rejection to hand on, or `None` with `--stop-at-end` for
    /// a record after the partition's end at start.
    fn reject_unreadable(
        &mut self,
        fetcher: &Fetcher,
        options: &SourceOptions,
        offset: i64,
        detail: &str,
    ) -> Result<Option<Ingested>, KafkaFailure> {
        // The batch holds the record at `next` (or starts after it, past a
        // gap): reject that one record and seek past it.
        let offset = offset.max(self.next);
        if options.stop_at_end && offset >= self.end {
            self.next = self.next.max(self.end);
            return Ok(None);
        }
        let (topic, number) = (self.topic.as_str(), self.number);
        tracing::warn!(topic, partition = number, offset, %detail,
            "rejected a record the Kafka client could not read");
        self.next = self.next.max(offset + 1);
        self.heard = Instant::now();
        self.read += 1;
        self.guard = Guard::Verifying;
        fetcher
            .consumer()
            .seek(topic, number, Offset::Offset(offset + 1), Duration::ZERO)
            .map_err(KafkaFailure::client(
                &options.kafka.brokers,
                format!("skipping offset {offset} of {topic}/{number}"),
            ))?;
        Ok(Some(Ingested::Rejected(ingest::corrupt(
            topic,
            number as u64,
            offset as u64,
            format!("record at offset {offset}: {detail}"),
        ))))
    }
}

/// What one [`KafkaSource::read`] call consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordsRead {
    /// Records handed on (messages and unreadable records).
    pub records: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// One worker's input partitions and the consumer that reads them.
pub struct KafkaSource {
    fetcher: Fetcher,
    options: SourceOptions,
    partitions: Vec<Partition>,
    by_name: HashMap<(String, i32), usize>,
    /// The look-up key of a message's partition, reused: no allocation per message.
    key: (String, i32),
    /// The largest event-time promise made (see the module docs).
    promised: Option<EventTime>,
}

impl KafkaSource {
    /// Opens the partitions of `all` (every input partition, in assignment
    /// order) that [`responsible_for`] gives worker `index` of `peers`: a
    /// partition of `restored` from its checkpointed offset, with its
    /// lateness state; any other from its earliest offset.
    pub fn open(
        options: SourceOptions,
        all: &[InputPartition],
        index: usize,
        peers: usize,
        restored: &BTreeMap<(String, i32), PartitionState>,
    ) -> Result<Self, KafkaFailure> {
        let mine: Vec<InputPartition> = all
            .iter()
            .enumerate()
            .filter(|(position, _)| responsible_for(*position, peers) == index)
            .map(|(_, partition)| partition.clone())
            .collect();
        let consumer = consumer(&options.kafka)?;
        let state_of = |p: &InputPartition| restored.get(&(p.topic.clone(), p.partition));
        let starts: Vec<Option<i64>> = mine.iter().map(|p| state_of(p).map(|s| s.next)).collect();
        let ends = assign(
            &consumer,
            &options.kafka.brokers,
            &mine,
            &starts,
            options.connect_timeout,
        )?;
        let now = Instant::now();
        let partitions: Vec<Partition> = mine
            .iter()
            .zip(ends)
            .map(|(p, (first, end))| {
                let mut ingest = PartitionIngest::new(
                    p.kind,
                    p.topic.clone(),
                    p.partition as u64,
                    &options.params,
                );
                // Retention may have removed offsets below `first`.
                let mut next = first;
                if let Some(state) = state_of(p) {
                    ingest.restore(state.high_water, state.floor);
                    next = state.next;
                }
                Partition {
                    ingest,
                    topic: p.topic.clone(),
                    number: p.partition,
                    heard: now,
                    read: 0,
                    end,
                    next,
                    reported: None,
                    guard: Guard::Verifying,
                    repeated: 0,
                }
            })
            .collect();
        let resumed: Vec<String> = mine
            .iter()
            .filter_map(|p| state_of(p).map(|s| format!("{}/{}@{}", p.topic, p.partition, s.next)))
            .collect();
        if !resumed.is_empty() {
            tracing::info!(
                worker = index,
                partitions = %resumed.join(","),
                "resuming input partitions at the checkpoint's offsets"
            );
        }
        let by_name = partitions
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.topic.clone(), p.number), i))
            .collect();
        Ok(KafkaSource {
            fetcher: Fetcher::new(consumer),
            options,
            partitions,
            by_name,
            key: (String::new(), 0),
            promised: None,
        })
    }

    /// Reads up to `budget` records, ingesting each with the wall clock
    /// `now_ms` and handing the result to `give`.
    pub fn read(
        &mut self,
        budget: usize,
        now_ms: u64,
        mut give: impl FnMut(Ingested),
    ) -> Result<RecordsRead, KafkaFailure> {
        let mut read = RecordsRead::default();
        let stop_at_end = self.options.stop_at_end;
        while read.records < budget {
            let Some(mut event) = self.fetcher.poll(Duration::ZERO) else {
                break;
            };
            match event.read() {
                Fetched::Message {
                    topic,
                    partition,
                    offset,
                    payload,
                } => {
                    self.key.0.clear();
                    self.key.0.push_str(topic);
                    self.key.1 = partition;
                    let Some(&at) = self.by_name.get(&self.key) else {
                        continue;
                    };
                    let partition = &mut self.partitions[at];
                    // A partition read to its end (with --stop-at-end)
                    // reads nothing more, gap or not (below).
                    let reading = !(stop_at_end && partition.next >= partition.end);
                    if reading && !partition.guard(&self.fetcher, &self.options, offset)? {
                        continue;
                    }
                    partition.heard = Instant::now();
                    if stop_at_end && offset >= partition.end {
                        // Arrived after the run started: not read.
                        partition.next = partition.next.max(partition.end);
                        continue;
                    }
                    partition.next = partition.next.max(offset + 1);
                    partition.read += 1;
                    read.records += 1;
                    read.bytes += payload.len() as u64;
                    give(partition.ingest.ingest(payload, offset as u64, now_ms));
                }
                Fetched::Unreadable {
                    topic,
                    partition,
                    offset,
                    detail,
                } => {
                    let Some(&at) = self.by_name.get(&(topic, partition)) else {
                        continue;
                    };
                    let partition = &mut self.partitions[at];
                    let rejected = partition.reject_unreadable(
                        &self.fetcher,
                        &self.options,
                        offset,
                        &detail,
                    )?;
                    if let Some(rejected) = rejected {
                        read.records += 1;
                        give(rejected);
                    }
                }
                Fetched::OutOfRange {
                    topic,
                    partition,
                    offset,
                    detail,
                } => {
                    let Some(&at) = self.by_name.get(&(topic, partition)) else {
                        continue;
                    };
                    self.reposition(at, offset, &detail)?;
                    for partition in &mut self.partitions {
                        partition.guard = Guard::Verifying;
                    }
                }
                Fetched::Error { detail, fatal } => {
                    if fatal {
                        return Err(KafkaFailure::Fatal {
                            brokers: self.options.kafka.brokers.clone(),
                            detail,
                        });
                    }
                    tracing::warn!(%detail, "the Kafka consumer reported an error; it retries");
                }
                Fetched::Nothing => {}
            }
        }
        Ok(read)
    }

    /// The client stopped fetching partition `at` because it fetched at
    /// `fetched`, an offset the partition does not hold. If the partition
    /// still holds the next offset the source needs, the client lost its
    /// place (see [`Fetched::OutOfRange`]): every partition is assigned again
    /// at its next offset, and reading goes on as if nothing happened.
    /// Otherwise records were deleted before they were read, or the topic
    /// was recreated: the service cannot go on without losing them.
    fn reposition(&self, at: usize, fetched: i64, detail: &str) -> Result<(), KafkaFailure> {
        let brokers = &self.options.kafka.brokers;
        let failure = |action: String| KafkaFailure::client(brokers, action);
        let partition = &self.partitions[at];
        let (topic, number, next) = (&partition.topic, partition.number, partition.next);
        let place = (topic.clone(), number);
        let found = watermarks(
            self.fetcher.consumer(),
            std::slice::from_ref(&place),
            self.options.connect_timeout,
        )
        .map_err(failure(format!("reading the offsets of {topic}/{number}")))?;
        let (low, high) = found[&place];
        if !(low..=high).contains(&next) {
            return Err(KafkaFailure::Fatal {
                brokers: brokers.clone(),
                detail: format!(
                    "{topic}/{number}: the next offset to read, {next}, is outside the partition's offsets {low} to {high} (retention deleted records presence had not read, or the topic was recreated; see docs/operations.md): {detail}"
                ),
            });
        }
        tracing::warn!(topic = %topic, partition = number, fetched, next, low, high,
            "the Kafka client fetched an offset the partition does not hold; reading on from the next offset");
        let mut list = rdkafka::TopicPartitionList::new();
        for p in &self.partitions {
            list.add_partition_offset(&p.topic, p.number, Offset::Offset(p.next))
                .map_err(failure(format!("assigning {}/{} again", p.topic, p.number)))?;
        }
        self.fetcher
            .consumer()
            .assign(&list)
            .map_err(failure("assigning the input partitions again".to_owned()))
    }

    /// The event-time promise for every probe this source hands on from now
    /// on (see the module docs): `None` while a busy probe partition has no
    /// promise of its own yet. Only grows. Whatever it promises binds every
    /// partition from now on, idle or not (their floors are raised to it).
    pub fn promise(&mut self, now: Instant, now_ms: u64) -> Option<EventTime> {
        let lateness = self.options.params.allowed_lateness;
        let wall = now_ms.saturating_sub(lateness) / IDLE_PROMISE_STEP_MS * IDLE_PROMISE_STEP_MS;
        let mut least = None;
        for p in self
            .partitions
            .iter()
            .filter(|p| p.ingest.kind() == Kind::Probe)
        {
            let own = p.ingest.promise();
            let promise = if self.options.stop_at_end && p.next >= p.end {
                // The end of input is not the passing of time: a partition
                // read to its end promises its own watermark (one that
                // delivered no probe does not hold the frontier back).
                own.unwrap_or(EventTime::MAX)
            } else if self.idle(p, now) {
                own.map_or(wall, |own| own.max(wall))
            } else {
                own?
            };
            least = Some(least.map_or(promise, |least: EventTime| least.min(promise)));
        }
        let promise = least.unwrap_or(wall);
        let promised = self.promised.map_or(promise, |p| p.max(promise));
        self.promised = Some(promised);
        for p in &mut self.partitions {
            p.ingest.raise_floor(promised);
        }
        self.promised
    }

    /// Whether `partition` is caught up and has been silent for the idle timeout.
    fn idle(&self, partition: &Partition, now: Instant) -> bool {
        now.saturating_duration_since(partition.heard) > self.options.idle_timeout
            && self.lag(partition) <= 0
    }

    /// The partition's end offset as last fetched (or as at start, if later)
    /// minus the next offset to read.
    fn lag(&self, partition: &Partition) -> i64 {
        let cached = cached_end_offset(self.fetcher.consumer(), &partition.topic, partition.number);
        cached.unwrap_or(partition.end).max(partition.end) - partition.next
    }

    /// With `--stop-at-end`: whether every partition is read up to its end
    /// offset at start.
    pub fn exhausted(&self) -> bool {
        self.partitions.iter().all(|p| p.next >= p.end)
    }

    /// Notes of the partitions whose state changed since the last call (all
    /// of them on the first): what the state at the current epoch reflects.
    pub fn offsets(&mut self) -> impl Iterator<Item = Note> + '_ {
        self.partitions
            .iter_mut()
            .filter(|p| p.reported != Some((p.next, p.ingest.floor())))
            .map(|p| {
                p.reported = Some((p.next, p.ingest.floor()));
                Note::Read {
                    topic: p.topic.clone(),
                    partition: p.number,
                    next: p.next,
                    high_water: p.ingest.high_water(),
                    floor: p.ingest.floor(),
                }
            })
    }

    /// Each partition's figures, for the metrics.
    pub fn figures(&self) -> impl Iterator<Item = ((String, i32), PartitionFigures)> + '_ {
        self.partitions.iter().map(|p| {
            let figures = PartitionFigures {
                read: p.read,
                lag: Some(self.lag(p).max(0)),
                high_water: p.ingest.high_water(),
            };
            ((p.topic.clone(), p.number), figures)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    const NOW: u64 = 1_800_000_000_000;

    fn options(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> SourceOptions {
        SourceOptions {
            kafka: mock.bootstrap_servers().into(),
            params: Params::default(),
            stop_at_end: false,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn source(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> KafkaSource {
        let all: Vec<InputPartition> = (0..2)
            .map(|partition| InputPartition {
                kind: Kind::Probe,
                topic: "probes".into(),
                partition,
            })
            .collect();
        KafkaSource::open(options(mock), &all, 0, 1, &BTreeMap::new()).unwrap()
    }

    fn accept(source: &mut KafkaSource, partition: usize, ts: u64) {
        let line = format!(r#"{{"device":"d","business":"b","ts":{ts},"rssi":-60}}"#);
        let ingested = source.partitions[partition]
            .ingest
            .ingest(line.as_bytes(), 0, NOW);
        assert!(matches!(ingested, Ingested::Probe(_)), "{ingested:?}");
    }

    #[test]
    fn an_idle_partition_promises_the_wall_clock_less_the_lateness_never_everything() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("probes", 2, 1).unwrap();
        let mut source = source(&mock);
        let lateness = Params::default().allowed_lateness;
        let start = Instant::now();
        // A busy partition that has not accepted a probe holds everything back.
        accept(&mut source, 0, NOW - 3_600_000);
        assert_eq!(source.promise(start, NOW), None);
        // Once both are caught up and silent past the timeout, partition 1
        // promises the wall clock rule, partition 0 the higher of its own
        // watermark and that rule.
        let later = start + Duration::from_secs(61);
        let wall = (NOW - lateness) / IDLE_PROMISE_STEP_MS * IDLE_PROMISE_STEP_MS;
        assert_eq!(source.promise(later, NOW), Some(wall));
        // Hours of silence move it with the clock, never to infinity.
        let hour = 3_600_000;
        assert_eq!(
            source.promise(later + Duration::from_secs(3600), NOW + hour),
            Some(wall + hour)
        );
        // A partition whose own watermark is above the rule keeps it.
        accept(&mut source, 0, NOW + 2 * hour);
        accept(&mut source, 1, NOW + 2 * hour);
        assert_eq!(
            source.promise(later + Duration::from_secs(3600), NOW + hour),
            Some(NOW + 2 * hour - lateness)
        );
        // What was promised binds every partition: earlier probes are late,
        // blamed on the partition's own lateness rule when that is why.
        let probe = |ts: u64| format!(r#"{{"device":"d","business":"b","ts":{ts},"rssi":-60}}"#);
        match source.partitions[0]
            .ingest
            .ingest(probe(NOW).as_bytes(), 1, NOW)
        {
            Ingested::Rejected(r) => assert!(r.detail.contains("high-water mark"), "{r:?}"),
            other => panic!("{other:?}"),
        }
        // A partition idle since before its first probe: only the promise binds.
        let mut fresh = PartitionIngest::new(Kind::Probe, "probes", 2, &Params::default());
        fresh.raise_floor(NOW);
        match fresh.ingest(probe(NOW - 1).as_bytes(), 1, NOW) {
            Ingested::Rejected(r) => assert!(r.detail.contains("idle"), "{r:?}"),
            other => panic!("{other:?}"),
        }
    }

    /// Writes `lines` to partition 0 of `probes`.
    fn produce(
        mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        lines: &[String],
    ) {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        for line in lines {
            producer
                .send(
                    BaseRecord::<(), str>::to("probes")
                        .partition(0)
                        .payload(line),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// Reads until `count` records arrived, giving the offsets of the
    /// rejected ones (the records here are all not JSON), or the failure.
    fn read_offsets(source: &mut KafkaSource, count: usize) -> Result<Vec<u64>, KafkaFailure> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut offsets = Vec::new();
        while offsets.len() < count {
            assert!(Instant::now() < deadline, "read only {offsets:?}");
            source.read(count - offsets.len(), NOW, |ingested| match ingested {
                Ingested::Rejected(r) => offsets.push(r.offset),
                other => panic!("{other:?}"),
            })?;
        }
        Ok(offsets)
    }

    /// The in-process broker with ten records (none of them JSON) in
    /// partition 0 of `probes`, offsets 0 to 9.
    fn ten_records() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("probes", 2, 1).unwrap();
        produce(
            &mock,
            &(0..10).map(|i| format!("not json {i}")).collect::<Vec<_>>(),
        );
        mock
    }

    /// A source reading partition 0 of `mock`'s `probes` from `next`, as a
    /// checkpoint resumes it.
    fn resumed_at(
        mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        next: i64,
    ) -> KafkaSource {
        let restored = BTreeMap::from([(
            ("probes".to_owned(), 0),
            PartitionState {
                topic: "probes".into(),
                partition: 0,
                next,
                high_water: None,
                floor: 0,
            },
        )]);
        let all = [InputPartition {
            kind: Kind::Probe,
            topic: "probes".into(),
            partition: 0,
        }];
        KafkaSource::open(options(mock), &all, 0, 1, &restored).unwrap()
    }

    /// Records delivered again (here: the client sent back to offset 1
    /// after reading 0 to 3, as tansu 0.6 repeats batches) are read once.
    #[test]
    fn records_delivered_again_are_read_once() {
        let mock = ten_records();
        let mut source = source(&mock);
        assert_eq!(read_offsets(&mut source, 4).unwrap(), vec![0, 1, 2, 3]);
        source
            .fetcher
            .consumer()
            .seek("probes", 0, Offset::Offset(1), Duration::ZERO)
            .unwrap();
        let rest = read_offsets(&mut source, 6).unwrap();
        assert_eq!(rest, (4..10).collect::<Vec<_>>());
        assert_eq!(source.partitions[0].repeated, 3);
    }

    /// A partition resumed at a checkpoint's offset 4 whose broker answers
    /// from 7 (here: the client moved there, as tansu 0.6 answers a fetch
    /// from the middle of a batch from the next batch) is read from 4 after
    /// all: the source seeks back over the gap.
    #[test]
    fn records_the_broker_skipped_at_a_resume_are_read_after_all() {
        let mock = ten_records();
        let mut source = resumed_at(&mock, 4);
        source
            .fetcher
            .consumer()
            .seek("probes", 0, Offset::Offset(7), Duration::ZERO)
            .unwrap();
        let read = read_offsets(&mut source, 6).unwrap();
        assert_eq!(read, (4..10).collect::<Vec<_>>());
        assert_eq!(source.partitions[0].repeated, 0);
        assert_eq!(source.partitions[0].guard, Guard::Reading);
    }

    /// The guard's steps: after a positioning, seeking back one, then twice
    /// as far, never below the partition's first offset; a gap the broker
    /// shows again after an overlap, or from the first offset, or once it
    /// delivered the next offset, is real.
    #[test]
    fn a_gap_is_sought_back_over_until_it_is_known_to_be_real() {
        let low = || 0;
        let mut guard = Guard::Verifying;
        assert_eq!(guard.step(10, 10, low), Step::Read);
        assert_eq!(guard, Guard::Reading);
        assert_eq!(guard.step(9, 11, low), Step::DropRepeat);
        // Reading on from the next offset, a gap is the partition's.
        assert_eq!(guard.step(13, 11, low), Step::ReadPastGap);
        assert_eq!(guard, Guard::Reading);
        // Just positioned at 11, the broker answers from 15: one back, then
        // 2, 4, 8 ... down to the first offset.
        guard = Guard::Verifying;
        assert_eq!(guard.step(15, 11, low), Step::SeekBack(10));
        assert_eq!(guard.step(15, 11, low), Step::SeekBack(9));
        assert_eq!(guard.step(16, 11, low), Step::SeekBack(7));
        assert_eq!(guard.step(15, 11, low), Step::SeekBack(3));
        assert_eq!(guard.step(15, 11, low), Step::SeekBack(0));
        assert_eq!(guard.step(15, 11, low), Step::ReadPastGap);
        assert_eq!(guard, Guard::Reading);
        // Delivered from before the gap, then past it: the gap is real.
        guard = Guard::Verifying;
        assert_eq!(guard.step(30, 20, low), Step::SeekBack(19));
        assert_eq!(guard.step(19, 20, low), Step::Drop);
        assert_eq!(guard.step(30, 20, low), Step::ReadPastGap);
        // Delivered from before the gap, then the next offset: no gap.
        guard = Guard::Verifying;
        assert_eq!(guard.step(40, 31, low), Step::SeekBack(30));
        assert_eq!(guard.step(30, 31, low), Step::Drop);
        assert_eq!(guard.step(31, 31, low), Step::Read);
        // At the partition's first offset there is nothing to seek back to.
        let mut guard = Guard::Verifying;
        assert_eq!(guard.step(8, 5, || 5), Step::ReadPastGap);
    }

    /// A client that fetched an offset the partition does not hold (as
    /// librdkafka does after misreading a corrupt batch) has not lost a
    /// record: the source reads on from its next offset, nothing twice.
    #[test]
    fn a_client_that_lost_its_place_reads_on_from_the_next_offset() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("probes", 2, 1).unwrap();
        let lines = |range: std::ops::Range<u64>| {
            range.map(|i| format!("not json {i}")).collect::<Vec<_>>()
        };
        produce(&mock, &lines(0..10));
        let mut source = source(&mock);
        let first = read_offsets(&mut source, 4).unwrap();
        assert_eq!(first, vec![0, 1, 2, 3]);
        // The client's own position jumps somewhere the partition never
        // held (this one is "00000004" read as an offset, as librdkafka did).
        source
            .fetcher
            .consumer()
            .seek(
                "probes",
                0,
                Offset::Offset(3_472_328_278_817_272_692),
                Duration::ZERO,
            )
            .unwrap();
        produce(&mock, &lines(10..11));
        let rest = read_offsets(&mut source, 7).unwrap();
        assert_eq!(rest, (4..11).collect::<Vec<_>>());
        assert_eq!(source.partitions[0].next, 11);
    }

    /// A partition that no longer holds the next offset the source needs
    /// (here: a checkpoint's offset past a recreated topic's end) stops the
    /// source with a line naming the partition and both offsets.
    #[test]
    fn a_partition_without_the_next_offset_stops_the_source_saying_where() {
        let mock = ten_records();
        let mut source = resumed_at(&mock, 100);
        let failure = read_offsets(&mut source, 1).unwrap_err().to_string();
        assert!(
            failure.contains("probes/0: the next offset to read, 100, is outside the partition's offsets 0 to 10"),
            "{failure}"
        );
    }

    #[test]
    fn with_stop_at_end_an_exhausted_partition_promises_everything() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("probes", 2, 1).unwrap();
        let mut source = source(&mock);
        source.options.stop_at_end = true;
        let start = Instant::now();
        // Both partitions are empty: read to their end at once.
        assert!(source.exhausted());
        assert_eq!(source.promise(start, NOW), Some(EventTime::MAX));
    }
}
