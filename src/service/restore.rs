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
//! - **The outputs.** Each output topic is read back from the offsets the
//!   checkpoint records for its partitions (at or above them is every
//!   record written at or after its cut) to its end: the last value (or
//!   tombstone) per key of that tail, which the sinks reconcile with the
//!   restored state at the restore epoch (rewrite what differs, tombstone
//!   what should not exist, skip what is equal; a key not in the tail is
//!   as the checkpoint has it), and the keys of the rejected records that
//!   will be read again. A topic the checkpoint has no offsets for (after
//!   a backfill hand-off), or that is shorter than it knew (deleted or
//!   truncated since), is read in full, and every row it lacks is written.
//!   Every process reads them the same, so all agree on the restore epoch.
//! - **The restore epoch** is above the checkpoint's time, every time in
//!   the output topics (records carry their logical time as Kafka
//!   timestamp, tombstones too) and the last published frontier: a
//!   restart's logical times are above every earlier one, even if the wall
//!   clock went back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::checkpoint::store::{self, Fetched, Manifest, Origin, Store, StoreError};
use crate::dataflow::Time;
use crate::kafka::source::{Guard, Step};
use crate::kafka::upsert::{Existing, TopicAtRestore, WrittenRejection};
use crate::kafka::{self, ConsumerEvents, InputPartition, KafkaFailure};
use crate::model::output::{Output, PerOutput};
use crate::observe::metrics::Metrics;
use crate::service::job::{CheckpointSettings, RunError, RunJob};

/// Reading a partition to the end a broker reports needs no waiting for
/// records it did not report: the read starts one record before that end at
/// the latest, so it fetches the batch holding the record at `end - 1`, and
/// a broker returns that batch whole and the client hands over a fetched
/// batch's records together. tansu reports a partition's end as its last
/// batch's base offset + 1, short of the batch's later records: they come
/// with the record at `end - 1`, and once every partition is past its end,
/// what is left in the client's queue is all there is.
fn fetch_from(start: i64, end: i64) -> i64 {
    start.min(end - 1)
}

/// How long a read that only looks for a partition's end (nothing to read
/// before it) waits for the record before that end: one a compacted topic
/// no longer holds (a tombstone removed, an empty batch) never comes, and
/// then nothing past the end is there either.
const LOOKING: Duration = Duration::from_millis(200);

/// What a restart starts from.
#[derive(Clone, Debug, Default)]
pub struct Restart {
    /// The checkpoint store (`None` without `--checkpoint-dir`).
    pub store: Option<Store>,
    /// The generation this run took (process 0; 0 elsewhere).
    pub generation: u64,
    /// The checkpoint restored (`None`: a first start).
    pub manifest: Option<Manifest>,
    /// Its pieces, read and verified, until this process's workers have
    /// taken their key groups (see [`Restart::pieces`]).
    pub fetched: Arc<Mutex<Option<Arc<Fetched>>>>,
    /// This process's workers still to take their key groups from `fetched`.
    pub loading: Arc<std::sync::atomic::AtomicUsize>,
    /// Set when a newer run takes the store (see [`crate::checkpoint::Superseded`]).
    pub superseded: crate::checkpoint::Superseded,
    /// The restore epoch (with a manifest).
    pub epoch: Time,
    /// What the output topics hold, for the sinks to reconcile.
    pub existing: Vec<Existing>,
    /// The rejected records in `existing` (of input this run reads again)
    /// and where they are in the rejected topic: this run does not write
    /// them again, so its checkpoints read that topic back from no higher
    /// while their input is still to be read again after them.
    pub rejections: Vec<WrittenRejection>,
    /// Per output topic, whether `existing` is only its tail after the
    /// checkpoint's output offsets (rows not in it are as the checkpoint
    /// has them), not all it holds.
    pub tails: PerOutput<bool>,
    /// Records read back from the output topics.
    pub read_back: u64,
    /// Where each output partition ends: what was read back, then what the
    /// process's producers see acknowledged (shared by its workers).
    pub outputs: kafka::Acked,
    /// When preparing began.
    pub began: Option<Instant>,
}

impl Restart {
    /// The checkpoint's pieces, for a worker to take its key groups from.
    pub fn pieces(&self) -> Option<Arc<Fetched>> {
        self.fetched
            .lock()
            .expect("no thread panics holding it")
            .clone()
    }

    /// A worker has taken its key groups; after the last of the process's
    /// workers, the pieces are let go.
    pub fn loaded(&self) {
        use std::sync::atomic::Ordering;
        if self.loading.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.fetched.lock().expect("no thread panics holding it") = None;
        }
    }
}

/// A restore `run` refuses.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No complete checkpoint is left.
    #[error(
        "no complete checkpoint in {dir}: {skipped}; repair it, or start over with --reset-state"
    )]
    NoneComplete {
        /// The folder or prefix.
        dir: String,
        /// What was skipped and why.
        skipped: String,
    },
    /// Other detection parameters.
    #[error("the checkpoint in {dir} was made with other detection parameters ({differences}); run with the same ones, or start over with --reset-state")]
    Params {
        /// The folder or prefix.
        dir: String,
        /// Which differ.
        differences: String,
    },
    /// Other input topics.
    #[error("the checkpoint in {dir} reads other input topics ({checkpoint}, not {now}); name the same ones, or start over with --reset-state")]
    Topics {
        /// The folder or prefix.
        dir: String,
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

/// Prepares `job`'s restart from its checkpoint store (see the module
/// docs), asking the brokers with `consumer`. Process 0 (`process`) takes
/// the run's generation.
pub fn prepare(
    job: &RunJob,
    settings: &CheckpointSettings,
    (process, metrics): (usize, &Metrics),
    inputs: &[InputPartition],
    consumer: &BaseConsumer<ConsumerEvents>,
) -> Result<Restart, RunError> {
    let began = Instant::now();
    // Requests retry for up to --connect-timeout, then the run stops.
    let store = Store::open(&settings.dir, metrics)?.with_patience(job.connect_timeout);
    store.check()?;
    let newest = match settings.reset {
        true => None,
        false => newest_checkpoint(&store)?,
    };
    // Process 0 takes the run's generation once nothing is refused: a
    // refused run changes nothing.
    let generation = |job: &RunJob| match process {
        0 => take_generation(job, &store, settings.reset),
        _ => Ok(0),
    };
    let Some((manifest, fetched)) = newest else {
        let generation = generation(job)?;
        return Ok(Restart {
            store: Some(store),
            generation,
            began: Some(began),
            ..Restart::default()
        });
    };
    let dir = store.location().to_string();
    let dir = dir.as_str();
    refuse_other_job(job, dir, &manifest)?;
    let next_of = match manifest.origin {
        Origin::Run => resume_offsets(job, &manifest, inputs, consumer)?,
        Origin::Backfill => BTreeMap::new(),
    };
    let generation = generation(job)?;
    // What the outputs hold, and the times written so far.
    let t = &job.topics;
    let rows = Output::ALL.map(|output| &t[output]);
    let floors: Option<BTreeMap<(String, i32), i64>> = manifest
        .outputs
        .as_ref()
        .filter(|_| manifest.origin == Origin::Run)
        .map(|floors| {
            floors
                .iter()
                .map(|f| ((f.topic.clone(), f.partition), f.offset))
                .collect()
        });
    let back = read_back(consumer, job, &rows, floors.as_ref())?;
    let latest = manifest
        .time
        .max(back.max_time)
        .max(last_frontier(consumer, job)?);
    let tails = PerOutput::from_fn(|output| back.tails[output.index()]);
    let (existing, rejections) = existing_rows(back.values, &back.placed, &next_of);
    Ok(Restart {
        store: Some(store),
        generation,
        fetched: Arc::new(Mutex::new(Some(Arc::new(fetched)))),
        superseded: Default::default(),
        loading: Default::default(),
        epoch: latest + 1,
        existing,
        rejections,
        tails,
        read_back: back.records,
        outputs: acked_ends(back.ends),
        manifest: Some(manifest),
        began: Some(began),
    })
}

/// Takes the run's generation (process 0), after discarding every
/// checkpoint with `reset` (the claim first, so that no older writer's
/// number is free again).
fn take_generation(job: &RunJob, store: &Store, reset: bool) -> Result<u64, RunError> {
    let inputs = Some(job.recorded_inputs());
    let generation = store::claim(store, Origin::Run, &job.params, inputs)?;
    if reset {
        let removed = store::reset(store, generation)?;
        tracing::warn!(store = %store.location(), objects = removed, "--reset-state: discarded the checkpoints; reading every input from its earliest offset");
    }
    tracing::info!(store = %store.location(), generation, "took a checkpoint generation");
    Ok(generation)
}

/// The newest complete checkpoint in `store` with its pieces, warning of
/// each one skipped; `None` for a first start, and a refusal if there are
/// checkpoints but none is complete.
fn newest_checkpoint(store: &Store) -> Result<Option<(Manifest, Fetched)>, RunError> {
    let mut skipped = Vec::new();
    let newest = store::newest_complete(store, &mut skipped)?;
    for what in &skipped {
        tracing::warn!(%what, "skipped a checkpoint that is not complete");
    }
    if newest.is_none() && !skipped.is_empty() {
        return Err(Refusal::NoneComplete {
            dir: store.location().to_string(),
            skipped: skipped.join("; "),
        }
        .into());
    }
    Ok(newest)
}

/// Refuses a checkpoint made with other detection parameters, or (by `run`)
/// from other input topics.
fn refuse_other_job(job: &RunJob, dir: &str, manifest: &Manifest) -> Result<(), RunError> {
    if manifest.params != job.params {
        return Err(Refusal::Params {
            dir: dir.to_owned(),
            differences: manifest.params.differences(&job.params),
        }
        .into());
    }
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
    Ok(())
}

/// Where each input partition of a `run` checkpoint resumes (partitions
/// gone have nothing to read), refusing one whose records below the
/// broker's first offset the state never saw (retention removed them).
fn resume_offsets(
    job: &RunJob,
    manifest: &Manifest,
    inputs: &[InputPartition],
    consumer: &BaseConsumer<ConsumerEvents>,
) -> Result<BTreeMap<(String, i32), i64>, RunError> {
    let known: Vec<_> = manifest
        .partitions
        .iter()
        .filter(|state| {
            inputs
                .iter()
                .any(|p| p.topic == state.topic && p.partition == state.partition)
        })
        .collect();
    let asked: Vec<(String, i32)> = known
        .iter()
        .map(|state| (state.topic.clone(), state.partition))
        .collect();
    let watermarks =
        kafka::watermarks(consumer, &asked, job.connect_timeout).map_err(client_failure(
            job,
            "reading the offsets of the input partitions".to_owned(),
        ))?;
    let mut next_of = BTreeMap::new();
    for state in known {
        let (first, _) = watermarks[&(state.topic.clone(), state.partition)];
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
    Ok(next_of)
}

/// The rows the output topics hold (`values`, per output), for the sinks to
/// reconcile: of the rejected records only those of input read again (at or
/// after their partition's next offset in `next_of`), which are also the
/// rejections already written (where `placed` says they are).
fn existing_rows(
    values: Vec<BTreeMap<String, Option<String>>>,
    placed: &BTreeMap<String, (i32, i64)>,
    next_of: &BTreeMap<(String, i32), i64>,
) -> (Vec<Existing>, Vec<WrittenRejection>) {
    let mut existing = Vec::new();
    let mut rejections = Vec::new();
    for (output, values) in Output::ALL.into_iter().zip(values) {
        existing.extend(values.into_iter().filter_map(|(key, value)| {
            if output == Output::Rejected {
                let (source, partition, offset): (String, i32, i64) =
                    serde_json::from_str(&key).ok()?;
                let next = next_of
                    .get(&(source.clone(), partition))
                    .copied()
                    .unwrap_or(0);
                if offset < next {
                    return None;
                }
                if let Some(&(out_partition, out_offset)) = placed.get(&key) {
                    rejections.push(WrittenRejection {
                        source,
                        partition,
                        offset,
                        out_partition,
                        out_offset,
                    });
                }
            }
            Some(Existing { output, key, value })
        }));
    }
    (existing, rejections)
}

/// Where each output partition ended when read back, as the producers'
/// shared record of what is acknowledged.
fn acked_ends(ends: BTreeMap<(String, i32), i64>) -> kafka::Acked {
    let mut by_topic: std::collections::HashMap<String, BTreeMap<i32, i64>> = Default::default();
    for ((topic, partition), end) in ends {
        by_topic.entry(topic).or_default().insert(partition, end);
    }
    std::sync::Arc::new(std::sync::Mutex::new(by_topic))
}

impl Restart {
    /// What each upsert sink knows of its topic at the restore epoch.
    pub fn sinks(&self) -> PerOutput<TopicAtRestore> {
        let mut sinks = PerOutput::<TopicAtRestore>::default();
        if self.manifest.is_none() {
            return sinks;
        }
        for output in Output::UPSERTS {
            if self.tails[output] {
                let read = self.existing.iter().any(|e| e.output == output);
                let sink = &mut sinks[output];
                *sink = match read {
                    true => TopicAtRestore::Tail(self.epoch),
                    false => TopicAtRestore::Unchanged(self.epoch),
                };
            }
        }
        sinks
    }
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

/// What the output topics hold, as far as a restore needs to know.
#[derive(Debug, Default)]
struct ReadBack {
    /// Per topic (in the order asked), the last value (or tombstone) per
    /// key of the records read.
    values: Vec<BTreeMap<String, Option<String>>>,
    /// Per topic, whether only its tail was read (from the checkpoint's
    /// output offsets on).
    tails: Vec<bool>,
    /// The greatest record timestamp read.
    max_time: u64,
    /// Per partition, where it ends (nothing of this run is below).
    ends: BTreeMap<(String, i32), i64>,
    /// Records read.
    records: u64,
    /// Per key of the last topic asked (the rejected records), where its
    /// last record is: (partition, offset).
    placed: BTreeMap<String, (i32, i64)>,
}

/// A Kafka client's failure while `job` was `action`.
fn client_failure(
    job: &RunJob,
    action: String,
) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaFailure {
    KafkaFailure::client(&job.kafka.brokers, action)
}

/// A partition to read: from `start` to (at least) `end`; `low` is its
/// first offset.
struct Span {
    topic: usize,
    partition: i32,
    low: i64,
    start: i64,
    end: i64,
}

/// What `topics` hold: each topic with an offset in `floors` for every
/// partition that has records is read from those offsets on (its tail
/// after the checkpoint); any other, or one that turns out shorter than the
/// checkpoint knew it (deleted or truncated since), in full. Every record
/// at or after the checkpoint's cut is at or above its partition's floor,
/// so a key not in the tail is in the topic as the checkpoint has it.
fn read_back(
    consumer: &BaseConsumer<ConsumerEvents>,
    job: &RunJob,
    topics: &[&String],
    floors: Option<&BTreeMap<(String, i32), i64>>,
) -> Result<ReadBack, RunError> {
    let mut back = ReadBack {
        values: vec![BTreeMap::new(); topics.len()],
        tails: vec![false; topics.len()],
        ..ReadBack::default()
    };
    let watermarks = output_watermarks(consumer, job, topics)?;
    for (topic, partitions) in topics.iter().zip(&watermarks) {
        for &(partition, _, high) in partitions {
            back.ends.insert((topic.to_string(), partition), high);
        }
    }
    // The checkpoint's offset for topic `index`, partition `p`.
    let floor =
        |index: usize, p: i32| floors.and_then(|f| f.get(&(topics[index].to_string(), p)).copied());
    for (index, partitions) in watermarks.iter().enumerate() {
        let floor = |p: i32| floor(index, p);
        // A tail read only where it skips something: from floors at a
        // partition's beginning it is a full read, and a topic emptied
        // since would not show as shorter than the checkpoint knew it.
        back.tails[index] = floors.is_some()
            && partitions
                .iter()
                .all(|&(p, _, high)| high == 0 || floor(p).is_some())
            && partitions
                .iter()
                .any(|&(p, low, _)| floor(p).is_some_and(|floor| floor > low));
    }
    let spans = |back: &ReadBack, which: &[usize]| -> Vec<Span> {
        let mut spans = Vec::new();
        for &index in which {
            for &(partition, low, high) in &watermarks[index] {
                let start = match (back.tails[index], floor(index, partition)) {
                    // A broker may report an end short of its last batch
                    // (tansu): from there, the rest is read.
                    (true, Some(floor)) => floor.min(high).max(low),
                    _ => low,
                };
                if high > low {
                    spans.push(Span {
                        topic: index,
                        partition,
                        low,
                        start,
                        end: high,
                    });
                }
            }
        }
        spans
    };
    let all: Vec<usize> = (0..topics.len()).collect();
    let first = spans(&back, &all);
    let next = read_spans(consumer, job, topics, &first, &mut back)?;
    // A tail read must reach the floor: a topic that ends below it was
    // deleted or truncated since the checkpoint, and is read again in full.
    let short: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&index| back.tails[index])
        .filter(|&index| {
            watermarks[index].iter().any(|&(partition, low, _)| {
                let key = (topics[index].to_string(), partition);
                next.get(&key).copied().unwrap_or(low) < floor(index, partition).unwrap_or(0)
            })
        })
        .collect();
    for &index in &short {
        tracing::warn!(topic = %topics[index], "the output topic holds less than the checkpoint knew it did (deleted or truncated?): reading it in full, and writing every row it lacks");
        back.tails[index] = false;
        back.values[index].clear();
    }
    if !short.is_empty() {
        let spans = spans(&back, &short);
        read_spans(consumer, job, topics, &spans, &mut back)?;
    }
    Ok(back)
}

/// A partition's (partition, low, high) watermarks.
type Watermarks = (i32, i64, i64);

/// Per topic of `topics` (in that order), its partitions' watermarks; a topic that does not exist has none.
fn output_watermarks(
    consumer: &BaseConsumer<ConsumerEvents>,
    job: &RunJob,
    topics: &[&String],
) -> Result<Vec<Vec<Watermarks>>, RunError> {
    let failure = |action: String| client_failure(job, action);
    // All topics' metadata: asking for one by name may create it.
    let metadata = consumer
        .fetch_metadata(None, job.connect_timeout)
        .map_err(failure("reading the topic list".to_owned()))?;
    let mut watermarks: Vec<Vec<Watermarks>> = vec![Vec::new(); topics.len()];
    let mut asked = Vec::new();
    for topic in topics {
        if let Some(found) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic.as_str())
        {
            asked.extend(
                found
                    .partitions()
                    .iter()
                    .map(|p| (topic.to_string(), p.id())),
            );
        }
    }
    let found = kafka::watermarks(consumer, &asked, job.connect_timeout).map_err(failure(
        "reading the offsets of the output topics".to_owned(),
    ))?;
    for ((topic, partition), (low, high)) in found {
        let index = topics
            .iter()
            .position(|t| **t == topic)
            .expect("asked for these topics");
        watermarks[index].push((partition, low, high));
    }
    Ok(watermarks)
}

/// Reads `spans` into `back`: their records from `start`, to their ends and
/// past them while the client has more (see [`fetch_from`]); returns each
/// partition's next offset.
fn read_spans(
    consumer: &BaseConsumer<ConsumerEvents>,
    job: &RunJob,
    topics: &[&String],
    spans: &[Span],
    back: &mut ReadBack,
) -> Result<BTreeMap<(String, i32), i64>, RunError> {
    let failure = |action: String| client_failure(job, action);
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    // Per partition, where its span starts and ends.
    let mut bounds: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    // Per partition, its first offset and what it read of what the broker
    // sent: repeats dropped, a gap at the start sought back over
    // (`kafka::source`'s module docs: tansu answers a fetch from the middle
    // of a batch from the next batch, and repeats batches).
    let mut guards: BTreeMap<(String, i32), (i64, Guard)> = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for span in spans {
        let topic = topics[span.topic];
        let from = fetch_from(span.start, span.end);
        list.add_partition_offset(topic, span.partition, Offset::Offset(from))
            .map_err(failure(format!("assigning {topic}")))?;
        next.insert((topic.to_string(), span.partition), from);
        bounds.insert((topic.to_string(), span.partition), (span.start, span.end));
        guards.insert(
            (topic.to_string(), span.partition),
            (span.low, Guard::Verifying),
        );
    }
    if spans.is_empty() {
        return Ok(next);
    }
    consumer
        .assign(&list)
        .map_err(failure("assigning the output topics".to_owned()))?;
    let limit = job.connect_timeout.max(Duration::from_secs(30));
    let deadline = Instant::now() + limit;
    let mut heard = Instant::now();
    loop {
        let past_ends = next.iter().all(|(p, n)| *n >= bounds[p].1);
        // Only partitions with nothing to read are short of their ends.
        let looking = next.iter().all(|(p, n)| {
            let (start, end) = bounds[p];
            *n >= end || start >= end
        });
        let wait = if past_ends {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                heard = Instant::now();
                let at = (message.topic().to_owned(), message.partition());
                if let (Some(&expected), Some((low, guard))) = (next.get(&at), guards.get_mut(&at))
                {
                    match guard.step(message.offset(), expected, || *low) {
                        Step::Read | Step::ReadPastGap => {}
                        Step::Drop | Step::DropRepeat => continue,
                        Step::SeekBack(from) => {
                            consumer
                                .seek(&at.0, at.1, Offset::Offset(from), Duration::ZERO)
                                .map_err(failure(format!("seeking {}/{} back", at.0, at.1)))?;
                            continue;
                        }
                    }
                }
                let end = back.ends.entry(at.clone()).or_default();
                *end = (*end).max(message.offset() + 1);
                next.insert(at.clone(), message.offset() + 1);
                if bounds
                    .get(&at)
                    .is_some_and(|&(start, _)| message.offset() < start)
                {
                    continue; // before the span: read only to find the end
                }
                back.records += 1;
                if let Some(ms) = message.timestamp().to_millis() {
                    back.max_time = back.max_time.max(ms.max(0) as u64);
                }
                let index = topics.iter().position(|t| t.as_str() == message.topic());
                if let (Some(index), Some(key)) = (index, message.key()) {
                    let key = String::from_utf8_lossy(key).into_owned();
                    if index == topics.len() - 1 {
                        back.placed
                            .insert(key.clone(), (message.partition(), message.offset()));
                    }
                    let value = message
                        .payload()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    back.values[index].insert(key, value);
                }
            }
            Some(Err(error)) => {
                return Err(failure("reading back the output topics".to_owned())(error).into())
            }
            None if past_ends || (looking && heard.elapsed() > LOOKING) => break,
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
    Ok(next)
}

/// The greatest frontier in the progress topic (its last messages).
fn last_frontier(consumer: &BaseConsumer<ConsumerEvents>, job: &RunJob) -> Result<u64, RunError> {
    let topic = &job.topics.progress;
    let failure = |source| client_failure(job, format!("reading {topic}"))(source);
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
    // The last few messages: frontiers only grow, and what a broker that
    // reports the end short of a batch (tansu) holds past it comes with the
    // record before that end (see `fetch_from`).
    let from = (high - 64).max(low);
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(from))
        .map_err(failure)?;
    consumer.assign(&list).map_err(failure)?;
    let mut frontier = 0;
    let mut next = from;
    let deadline = Instant::now() + job.connect_timeout.max(Duration::from_secs(30));
    loop {
        let wait = if next >= high {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            Some(Ok(message)) if message.topic() != topic.as_str() => {}
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
