//! Before `run` starts its workers with `--checkpoint-dir`: the newest
//! complete checkpoint, the checks that refuse a restore, what the output
//! topics already hold, and the restore epoch.
//!
//! - **Which checkpoint.** The newest manifest whose pieces all pass their
//!   checksums; a damaged one is skipped with a warning, falling back to the
//!   one before. No manifest at all is a first start.
//! - **Refusals** (one line, exit status 1, nothing changed): no checkpoint
//!   left that is complete; other detection parameters; other input topics;
//!   a partition whose checkpointed offset is below the first offset the
//!   broker still holds (retention removed records the state never saw).
//!   `--reset-state` discards the checkpoints instead.
//! - **The outputs.** Each output topic is read back to its end: the last
//!   value (or tombstone) per key, which the sinks reconcile with the
//!   restored state at the restore epoch (rewrite what differs, tombstone
//!   what should not exist, skip what is equal), and the keys of the
//!   rejected records that will be read again. Every process reads them
//!   the same, so all agree on the restore epoch.
//! - **The restore epoch** is above the checkpoint's time, every time in
//!   the output topics (records carry their logical time as Kafka
//!   timestamp, tombstones too) and the last published frontier: a
//!   restart's logical times are above every earlier one, even if the wall
//!   clock went back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::dataflow::Time;
use crate::io::kafka::{self, InputPartition, KafkaFailure, Rebalances};
use crate::io::store::{self, Manifest, Origin, RecordedParams, StoreError};
use crate::io::upsert::Existing;
use crate::run::{RunError, RunJob};

/// How long, past the end offsets a broker reports, a topic being read back
/// must stay quiet to be read: tansu reports a partition's end as its last
/// batch's base offset + 1, short of the batch's later records.
const QUIET: Duration = Duration::from_millis(200);

/// What a restart starts from.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// The checkpoint restored (`None`: a first start).
    pub manifest: Option<Manifest>,
    /// The restore epoch (with a manifest).
    pub epoch: Time,
    /// What the output topics hold, for the sinks to reconcile.
    pub existing: Vec<Existing>,
    /// When preparing began.
    pub began: Option<Instant>,
}

/// A restore `run` refuses.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No complete checkpoint is left.
    #[error("no complete checkpoint in {dir}: {skipped}; repair the folder, or start over with --reset-state")]
    NoneComplete {
        /// The folder.
        dir: PathBuf,
        /// What was skipped and why.
        skipped: String,
    },
    /// Other detection parameters.
    #[error("the checkpoint in {dir} was made with other detection parameters ({differences}); run with the same ones, or start over with --reset-state")]
    Params {
        /// The folder.
        dir: PathBuf,
        /// Which differ.
        differences: String,
    },
    /// Other input topics.
    #[error("the checkpoint in {dir} reads other input topics ({checkpoint}, not {now}); name the same ones, or start over with --reset-state")]
    Topics {
        /// The folder.
        dir: PathBuf,
        /// The checkpoint's.
        checkpoint: String,
        /// This run's.
        now: String,
    },
    /// Retention removed records the checkpoint does not reflect.
    #[error("{topic} partition {partition}: the checkpoint resumes at offset {next}, but the broker's first offset is {first} (retention removed records the state never saw); restore a newer checkpoint, or start over with --reset-state")]
    Retention {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The checkpoint's next offset.
        next: i64,
        /// The broker's first offset.
        first: i64,
    },
}

fn describe(params: &RecordedParams, ours: &RecordedParams) -> String {
    let ms = |v: u64| format!("{v}ms");
    let pairs = [
        (
            "--rssi-min",
            params.rssi_min.to_string(),
            ours.rssi_min.to_string(),
        ),
        (
            "--session-gap",
            ms(params.session_gap),
            ms(ours.session_gap),
        ),
        ("--min-dwell", ms(params.min_dwell), ms(ours.min_dwell)),
        (
            "--min-probes",
            params.min_probes.to_string(),
            ours.min_probes.to_string(),
        ),
        (
            "--allowed-lateness",
            ms(params.allowed_lateness),
            ms(ours.allowed_lateness),
        ),
        ("--max-future", ms(params.max_future), ms(ours.max_future)),
    ];
    pairs
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(flag, a, b)| format!("{flag} {a}, now {b}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Prepares `job`'s restart from its checkpoint folder (see the module docs).
pub fn prepare(
    job: &RunJob,
    dir: &std::path::Path,
    reset: bool,
    inputs: &[InputPartition],
) -> Result<Restore, RunError> {
    let began = Instant::now();
    store::prepare(dir)?;
    if reset {
        let removed = store::reset(dir)?;
        tracing::warn!(dir = %dir.display(), files = removed, "--reset-state: discarded the checkpoints; reading every input from its earliest offset");
    }
    let mut skipped = Vec::new();
    let manifest = store::newest_complete(dir, &mut skipped)?;
    for what in &skipped {
        tracing::warn!(%what, "skipped a checkpoint that is not complete");
    }
    let Some(manifest) = manifest else {
        if !skipped.is_empty() {
            return Err(Refusal::NoneComplete {
                dir: dir.to_owned(),
                skipped: skipped.join("; "),
            }
            .into());
        }
        return Ok(Restore {
            dir: dir.to_owned(),
            began: Some(began),
            ..Restore::default()
        });
    };
    let ours = RecordedParams::from(&job.params);
    if manifest.params != ours {
        return Err(Refusal::Params {
            dir: dir.to_owned(),
            differences: describe(&manifest.params, &ours),
        }
        .into());
    }
    let t = &job.topics;
    let topics = job.recorded_inputs();
    if manifest.origin == Origin::Run && manifest.inputs.as_ref() != Some(&topics) {
        return Err(Refusal::Topics {
            dir: dir.to_owned(),
            checkpoint: manifest
                .inputs
                .as_ref()
                .map_or("none".to_owned(), |i| i.join(", ")),
            now: topics.join(", "),
        }
        .into());
    }
    let consumer = kafka::consumer(&job.kafka)?;
    let mut next_of: BTreeMap<(String, i32), i64> = BTreeMap::new();
    if manifest.origin == Origin::Run {
        for state in &manifest.partitions {
            if !inputs
                .iter()
                .any(|p| p.topic == state.topic && p.partition == state.partition)
            {
                continue; // a partition gone: nothing to read
            }
            let (first, _) = consumer
                .fetch_watermarks(&state.topic, state.partition, job.connect_timeout)
                .map_err(|source| KafkaFailure::Client {
                    brokers: job.kafka.brokers.clone(),
                    action: format!(
                        "reading the offsets of {} partition {}",
                        state.topic, state.partition
                    ),
                    source: Box::new(source),
                })?;
            if state.next < first {
                return Err(Refusal::Retention {
                    topic: state.topic.clone(),
                    partition: state.partition,
                    next: state.next,
                    first,
                }
                .into());
            }
            next_of.insert((state.topic.clone(), state.partition), state.next);
        }
    }
    // What the outputs hold, and the times written so far.
    let rows = [
        &t.walkins,
        &t.device_contacts,
        &t.enriched_walkins,
        &t.walkin_counts,
        &t.rejected,
    ];
    let (read, max_time) = read_back(&consumer, job, &rows)?;
    let mut latest = manifest.time.max(max_time);
    let mut existing = Vec::new();
    for (index, values) in read.into_iter().enumerate() {
        let rejected = index == rows.len() - 1;
        existing.extend(values.into_iter().filter_map(|(key, value)| {
            if rejected {
                // Only records read again matter: at or after their
                // partition's next offset.
                let (source, partition, offset): (String, i32, i64) =
                    serde_json::from_str(&key).ok()?;
                let next = next_of.get(&(source, partition)).copied().unwrap_or(0);
                if offset < next {
                    return None;
                }
            }
            Some(Existing {
                topic: index as u8,
                key,
                value,
            })
        }));
    }
    latest = latest.max(last_frontier(&consumer, job)?);
    Ok(Restore {
        dir: dir.to_owned(),
        epoch: latest + 1,
        existing,
        manifest: Some(manifest),
        began: Some(began),
    })
}

impl From<Refusal> for RunError {
    fn from(refusal: Refusal) -> Self {
        RunError::Refused(refusal.to_string())
    }
}

impl From<StoreError> for RunError {
    fn from(error: StoreError) -> Self {
        RunError::Checkpoint(error)
    }
}

/// The last value (or tombstone) per key of each of `topics` (empty for a
/// topic that does not exist), and the greatest record timestamp in them:
/// all read at once, to their end offsets.
fn read_back(
    consumer: &BaseConsumer<Rebalances>,
    job: &RunJob,
    topics: &[&String],
) -> Result<(Vec<BTreeMap<String, Option<String>>>, u64), RunError> {
    let failure = |action: String| {
        let brokers = job.kafka.brokers.clone();
        move |source| KafkaFailure::Client {
            brokers,
            action,
            source: Box::new(source),
        }
    };
    // All topics' metadata: asking for one by name may create it.
    let metadata = consumer
        .fetch_metadata(None, job.connect_timeout)
        .map_err(failure("reading the topic list".to_owned()))?;
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let Some(found) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic.as_str())
        else {
            continue;
        };
        for partition in found.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition.id(), job.connect_timeout)
                .map_err(failure(format!("reading the offsets of {topic}")))?;
            if high > low {
                ends.insert((topic.to_string(), partition.id()), high);
                list.add_partition_offset(topic, partition.id(), Offset::Beginning)
                    .map_err(failure(format!("assigning {topic}")))?;
            }
        }
    }
    let mut values: Vec<BTreeMap<String, Option<String>>> = vec![BTreeMap::new(); topics.len()];
    let mut max_time = 0;
    if ends.is_empty() {
        return Ok((values, max_time));
    }
    consumer
        .assign(&list)
        .map_err(failure("assigning the output topics".to_owned()))?;
    let mut next: BTreeMap<(String, i32), i64> = ends.keys().map(|p| (p.clone(), 0)).collect();
    let limit = job.connect_timeout.max(Duration::from_secs(30));
    let deadline = Instant::now() + limit;
    loop {
        let past_ends = next.iter().all(|(p, n)| *n >= ends[p]);
        let wait = if past_ends {
            QUIET
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                next.insert(
                    (message.topic().to_owned(), message.partition()),
                    message.offset() + 1,
                );
                if let Some(ms) = message.timestamp().to_millis() {
                    max_time = max_time.max(ms.max(0) as u64);
                }
                let index = topics.iter().position(|t| t.as_str() == message.topic());
                if let (Some(index), Some(key)) = (index, message.key()) {
                    let key = String::from_utf8_lossy(key).into_owned();
                    let value = message
                        .payload()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    values[index].insert(key, value);
                }
            }
            Some(Err(error)) => {
                return Err(failure("reading back the output topics".to_owned())(error).into())
            }
            None if past_ends => break,
            None if Instant::now() > deadline => {
                return Err(RunError::Refused(format!(
                    "could not read the output topics back to their end offsets within {limit:?}"
                )))
            }
            None => {}
        }
    }
    consumer
        .unassign()
        .map_err(failure("releasing the output topics".to_owned()))?;
    Ok((values, max_time))
}

/// The greatest frontier in the progress topic (its last messages).
fn last_frontier(consumer: &BaseConsumer<Rebalances>, job: &RunJob) -> Result<u64, RunError> {
    let topic = &job.topics.progress;
    let failure = |source| KafkaFailure::Client {
        brokers: job.kafka.brokers.clone(),
        action: format!("reading {topic}"),
        source: Box::new(source),
    };
    let metadata = consumer
        .fetch_metadata(None, job.connect_timeout)
        .map_err(failure)?;
    if !metadata.topics().iter().any(|t| t.name() == topic.as_str()) {
        return Ok(0);
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, job.connect_timeout)
        .map_err(failure)?;
    if high <= low {
        return Ok(0);
    }
    // The last few messages: frontiers only grow, and a broker that reports
    // the end short of a batch (tansu) still has it after this offset.
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset((high - 64).max(low)))
        .map_err(failure)?;
    consumer.assign(&list).map_err(failure)?;
    let mut frontier = 0;
    let mut next = 0;
    let deadline = Instant::now() + job.connect_timeout.max(Duration::from_secs(30));
    loop {
        let wait = if next >= high {
            QUIET
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                next = message.offset() + 1;
                let value: Option<serde_json::Value> = message
                    .payload()
                    .and_then(|p| serde_json::from_slice(p).ok());
                if let Some(f) = value.and_then(|v| v["frontier"].as_u64()) {
                    frontier = frontier.max(f);
                }
            }
            Some(Err(error)) => return Err(failure(error).into()),
            None if next >= high || Instant::now() > deadline => break,
            None => {}
        }
    }
    consumer.unassign().map_err(failure)?;
    Ok(frontier)
}
