//! Sinks to Kafka: upsert topics (one message per key and logical time, the
//! row as it stands after that time, or a tombstone) and the rejected topic.
//!
//! Each sink holds a capability for a logical time until the broker has
//! acknowledged every record it sent for that time, so a probe after the
//! sinks passes `T` only when every update before `T`, of every worker, is
//! acknowledged: that is what the progress topic publishes. A sink's output
//! is one [`Note::Written`] per time at which it wrote something (see
//! [`crate::kafka::progress`]).
//!
//! A sink never waits for the producer: records its queue has no room for
//! wait in the sink's `Outbox`, in order, and the worker goes on stepping
//! the dataflow, reading, reporting and checkpointing. The worker holds
//! back reading while the sinks hold too many records of its input (see
//! [`Sender::waiting`]); the rows of a restore epoch are not counted, so a
//! hand-off that writes a whole state to empty topics reads live input
//! while it does.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use differential_dataflow::{Hashable, VecCollection};
use rdkafka::producer::{BaseProducer, Producer};
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Filter;
use timely::dataflow::operators::{Capability, InputCapability, Operator};
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::dataflow::note::Note;
use crate::dataflow::Time;
use crate::kafka::deliveries::DeliveryTracker;
use crate::kafka::producer::{offer_or_fail, serve_outputs};
use crate::model::output::Output;
use crate::model::records::Rejected;
use crate::observe::metrics::Metrics;

/// How often a sink with unacknowledged records polls the producer.
const ACK_POLL: Duration = Duration::from_millis(1);

/// A record of an upsert topic: its key, and its value at a logical time.
pub trait Row {
    /// The fields that identify the row, in the message key's order.
    type Key<'a>: Ord + std::hash::Hash + Serialize
    where
        Self: 'a;

    /// The row's key fields, borrowed: rows are compared by key without
    /// making the message key.
    fn key_fields(&self) -> Self::Key<'_>;

    /// The message key (JSON text) that identifies the row.
    fn key(&self) -> String {
        serde_json::to_string(&self.key_fields()).expect("keys serialize")
    }
}

/// Writes the JSON value of `row` at `time` to `out`: the row's fields, in
/// their order, then `"time"`.
fn write_value<D: Serialize>(row: &D, time: Time, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, row).expect("records serialize");
    debug_assert_eq!(out.last(), Some(&b'}'), "records serialize as objects");
    out.pop();
    if out.len() > 1 {
        out.push(b',');
    }
    use std::io::Write as _;
    write!(out, "\"time\":{time}}}").expect("writing to memory succeeds");
}

/// A message to write: a row at its key, a tombstone at a retracted row's
/// key, or either at a key already made.
#[derive(Debug, PartialEq)]
enum Message<R> {
    /// The row, at its key.
    Row(R),
    /// A tombstone at this row's key.
    Removed(R),
    /// A row (`None`: a tombstone) at this key.
    Keyed(String, Option<R>),
}

impl<R: Row> Message<R> {
    /// The message with its key made: the key and the row (`None`: a
    /// tombstone).
    fn keyed(self) -> (String, Option<R>) {
        match self {
            Message::Row(row) => (row.key(), Some(row)),
            Message::Removed(row) => (row.key(), None),
            Message::Keyed(key, row) => (key, row),
        }
    }

    /// Whether it writes a row, not a tombstone.
    fn is_row(&self) -> bool {
        matches!(self, Message::Row(_) | Message::Keyed(_, Some(_)))
    }
}

/// Per key of `updates`, the message that brings the topic to them: the
/// inserted row if any (a key has at most one row at a time), else a
/// tombstone. In no particular order of keys: the updates are sorted by a
/// hash of their key fields first, so that a sort's comparisons are mostly
/// of two integers, and rows are compared only within one hash (a row's
/// order begins with its key fields, so the rows of a key are adjacent).
fn messages<R: Row + Ord>(updates: Vec<(R, isize)>) -> Vec<Message<R>> {
    use std::hash::BuildHasher as _;
    let hasher = foldhash::fast::FixedState::with_seed(0);
    let mut hashed: Vec<(u64, R, isize)> = updates
        .into_iter()
        .map(|(row, diff)| (hasher.hash_one(row.key_fields()), row, diff))
        .collect();
    hashed.sort_unstable_by(|(h1, r1, _), (h2, r2, _)| h1.cmp(h2).then_with(|| r1.cmp(r2)));
    let mut messages: Vec<Message<R>> = Vec::with_capacity(hashed.len());
    let mut updates = hashed.into_iter().peekable();
    let mut last_hash = None;
    while let Some((hash, row, mut diff)) = updates.next() {
        while let Some((_, _, more)) = updates.next_if(|(h, next, _)| *h == hash && *next == row) {
            diff += more;
        }
        if diff == 0 {
            continue; // the row's updates cancel out
        }
        let same = last_hash == Some(hash)
            && match messages.last() {
                Some(Message::Row(last) | Message::Removed(last)) => {
                    last.key_fields() == row.key_fields()
                }
                _ => false,
            };
        last_hash = Some(hash);
        match (same, diff > 0) {
            (true, true) => *messages.last_mut().expect("a last message") = Message::Row(row),
            (true, false) => {}
            (false, true) => messages.push(Message::Row(row)),
            (false, false) => messages.push(Message::Removed(row)),
        }
    }
    messages
}

/// Updates by logical time, with a capability to send them at that time.
type Pending<D> = BTreeMap<Time, (Capability<Time>, Vec<(D, isize)>)>;

/// A row as an output topic already holds it when a restored run starts:
/// the output, the message key and the last value (`None`: a tombstone).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Existing {
    /// The output whose topic holds it.
    pub output: Output,
    /// The message key.
    pub key: String,
    /// The last value, or `None` for a tombstone.
    pub value: Option<String>,
}

impl Existing {
    /// The exchange key: the same worker as the rows of that key.
    pub fn hashed(&self) -> u64 {
        self.key.hashed()
    }
}

/// What a restored run's sink knows of its topic (see [`upsert`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopicAtRestore {
    /// No restore, or the topic was read back in full: the rows given at
    /// the restore epoch are all it holds.
    #[default]
    Whole,
    /// Only the topic's tail after the checkpoint was read back: a key not
    /// in it is as the checkpoint has it. The restore epoch.
    Tail(Time),
    /// The tail is empty: the topic is as the checkpoint has it, and the
    /// restored rows are dropped before they reach the sink. The restore
    /// epoch.
    Unchanged(Time),
}

impl TopicAtRestore {
    /// The restore epoch, if only the topic's tail was read back at it
    /// ([`TopicAtRestore::Tail`] or [`TopicAtRestore::Unchanged`]).
    fn tail_epoch(self) -> Option<Time> {
        match self {
            TopicAtRestore::Whole => None,
            TopicAtRestore::Tail(epoch) | TopicAtRestore::Unchanged(epoch) => Some(epoch),
        }
    }
}

/// A worker's producer, shared by its sinks, and how many records they hold
/// that its queue had no room for yet.
#[derive(Clone)]
pub struct Sender {
    producer: Rc<BaseProducer<DeliveryTracker>>,
    /// Records waiting, of times after the restore epoch.
    waiting: Rc<Cell<usize>>,
    /// Records waiting, of any time.
    held: Rc<Cell<usize>>,
    restore_epoch: Option<Time>,
    /// The outputs before the sinks, of every worker: the restore epoch's
    /// records go to the producer once it has passed that epoch.
    computed: ProbeHandle<Time>,
    metrics: Metrics,
}

impl Sender {
    /// The sinks' handle on `producer`; the records of `restore_epoch` (the
    /// restored state, bounded by it) are not counted as waiting, and are
    /// handed to the producer only once `computed` (the outputs before the
    /// sinks) has passed the restore epoch: the state is restored first.
    /// Writing a hand-off's rows takes longer than restoring the state it
    /// writes, on the same cores (the producer's threads and, on one
    /// machine, the broker's), and the state is what the live input and
    /// the checkpoints need.
    pub fn new(
        producer: Rc<BaseProducer<DeliveryTracker>>,
        restore_epoch: Option<Time>,
        computed: ProbeHandle<Time>,
        metrics: Metrics,
    ) -> Self {
        Sender {
            producer,
            waiting: Rc::default(),
            held: Rc::default(),
            restore_epoch,
            computed,
            metrics,
        }
    }

    /// Whether a sink may take up the records of `time` (consolidate them
    /// and hand them to the producer): any time but the restore epoch, and
    /// that one once the state is restored. A sink that takes up no time
    /// before a refused one sends nothing early: its outbox is in time order.
    fn may_send(&self, time: Time) -> bool {
        self.restore_epoch != Some(time) || !self.computed.less_equal(&time)
    }

    /// The producer.
    pub fn producer(&self) -> &Rc<BaseProducer<DeliveryTracker>> {
        &self.producer
    }

    /// The restore epoch, if the run restored a checkpoint.
    pub fn restore_epoch(&self) -> Option<Time> {
        self.restore_epoch
    }

    /// Records of times after the restore epoch that the sinks hold because
    /// the producer's queue was full: past a bound, reading waits.
    pub fn waiting(&self) -> usize {
        self.waiting.get()
    }

    /// Records the sinks hold, of any time (the restored rows included).
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Counts `records` more (or fewer) of `time` waiting.
    fn add(&self, time: Time, records: isize) {
        let add = |cell: &Cell<usize>| cell.set(cell.get().saturating_add_signed(records));
        add(&self.held);
        if self.restore_epoch != Some(time) {
            add(&self.waiting);
        }
    }
}

/// The records of one sink that the producer has not taken yet, by time in
/// order, with the capability that holds the time until they are
/// acknowledged; and the buffers each record's key and value are rendered
/// in (the producer copies them).
struct Outbox<R> {
    times: VecDeque<(Capability<Time>, VecDeque<Message<R>>)>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl<R: Row> Outbox<R> {
    fn new() -> Self {
        Outbox {
            times: VecDeque::new(),
            key: Vec::new(),
            value: Vec::new(),
        }
    }

    fn push(
        &mut self,
        sender: &Sender,
        capability: Capability<Time>,
        records: VecDeque<Message<R>>,
    ) {
        sender.add(*capability.time(), records.len() as isize);
        self.times.push_back((capability, records));
    }

    /// Hands the producer the records its queue takes, in order, each
    /// rendered by `render` at its time; a time whose records are all taken
    /// goes to `taken`. Returns whether records still wait.
    fn send(
        &mut self,
        sender: &Sender,
        topic: &str,
        render: impl Fn(&R, Time, &mut Vec<u8>),
        mut taken: impl FnMut(Capability<Time>),
    ) -> bool {
        let (key_buffer, value_buffer) = (&mut self.key, &mut self.value);
        while let Some((capability, records)) = self.times.front_mut() {
            let time = *capability.time();
            while let Some(message) = records.front() {
                let (key, row) = match message {
                    Message::Row(row) => (render_key(row, key_buffer), Some(row)),
                    Message::Removed(row) => (render_key(row, key_buffer), None),
                    Message::Keyed(key, row) => (key.as_str(), row.as_ref()),
                };
                let value = row.map(|row| {
                    value_buffer.clear();
                    render(row, time, value_buffer);
                    utf8(value_buffer)
                });
                if !offer_or_fail(&sender.producer, topic, Some(key), value, time) {
                    sender.metrics.update(|f| f.output_queue_full += 1);
                    return true;
                }
                records.pop_front();
                sender.add(time, -1);
            }
            let (capability, _) = self.times.pop_front().expect("the front entry");
            taken(capability);
        }
        false
    }
}

/// The hash of `row`'s message key, as [`Existing::hashed`] has it, made in
/// a buffer the thread keeps (this runs for every update).
fn key_hash<R: Row>(row: &R) -> u64 {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| render_key(row, buffer).hashed())
}

/// Renders `row`'s message key in `buffer`.
fn render_key<'b, R: Row>(row: &R, buffer: &'b mut Vec<u8>) -> &'b str {
    buffer.clear();
    serde_json::to_writer(&mut *buffer, &row.key_fields()).expect("keys serialize");
    utf8(buffer)
}

/// JSON text as rendered by serde_json (always UTF-8).
fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("JSON is UTF-8")
}

/// Capabilities held until the records sent at their times are acknowledged.
struct Unacknowledged {
    held: BTreeMap<Time, Capability<Time>>,
}

impl Unacknowledged {
    fn new() -> Self {
        Unacknowledged {
            held: BTreeMap::new(),
        }
    }

    fn hold(&mut self, capability: &Capability<Time>) {
        self.held
            .entry(*capability.time())
            .or_insert_with(|| capability.clone());
    }

    /// Serves delivery reports and releases the times fully acknowledged.
    /// Returns whether anything is still waiting.
    fn release(&mut self, producer: &BaseProducer<DeliveryTracker>) -> bool {
        serve_outputs(producer);
        let deliveries = producer
            .context()
            .0
            .lock()
            .expect("no thread panics holding the lock");
        self.held.retain(|time, _| !deliveries.acknowledged(*time));
        !self.held.is_empty()
    }
}

/// Writes `collection` to the upsert topic `topic`; the returned stream's
/// frontier passes a time once that time's records are acknowledged. With
/// `inserted`, rows written (not tombstones) count as walk-ins emitted.
///
/// `existing` is what the topic holds when a restored run starts, given at
/// the restore epoch, whose updates are the restored state: at that time
/// the sink writes only what differs — a row the topic lacks or holds with
/// other content, a tombstone for a row the state lacks — and skips what
/// is equal. So a restart repeats no row's current value. With `restored`
/// [`TopicAtRestore::Tail`], `existing` is only what the topic holds from the
/// checkpoint's output offsets on (see [`crate::service::restore`]): a restored row
/// whose key is not among them is in the topic as the checkpoint has it,
/// and is skipped too.
pub fn upsert<'scope, D>(
    collection: VecCollection<'scope, Time, D>,
    existing: StreamVec<'scope, Time, Existing>,
    restored: TopicAtRestore,
    topic: String,
    sender: Sender,
    inserted: Option<Metrics>,
    delay: Duration,
) -> StreamVec<'scope, Time, Note>
where
    D: differential_dataflow::ExchangeData + Row + Serialize + serde::de::DeserializeOwned,
{
    let by_key = Exchange::new(|(row, _, _): &(D, Time, isize)| key_hash(row));
    let existing_by_key = Exchange::new(Existing::hashed);
    let scope = collection.inner.scope();
    let tail_only = restored.tail_epoch();
    let updates = match restored {
        TopicAtRestore::Unchanged(epoch) => {
            collection.inner.filter(move |(_, time, _)| *time != epoch)
        }
        _ => collection.inner,
    };
    updates.binary_frontier::<_, CapacityContainerBuilder<Vec<Note>>, _, _, _, _>(
        existing,
        by_key,
        existing_by_key,
        &format!("Upsert {topic}"),
        move |_capability, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut stash: Pending<D> = BTreeMap::new();
            let mut held: TopicRows = BTreeMap::new();
            let mut unacknowledged = Unacknowledged::new();
            let mut outbox = Outbox::new();
            move |(input, frontier), (existing_input, existing_frontier), output| {
                existing_input.for_each_stamp(|capability, data| {
                    hold_existing(&mut held, &mut stash, capability, data)
                });
                input.for_each_stamp(|capability, data| {
                    for batch in data {
                        for (row, time, diff) in batch.drain(..) {
                            let (_, updates) = stash
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                            updates.push((row, diff));
                        }
                    }
                });
                let mut deferred = false;
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) || existing_frontier.less_equal(entry.key())
                    {
                        break;
                    }
                    let time = *entry.key();
                    // The restored rows wait until the state is restored
                    // (see [`Sender::new`]), and with them the times after.
                    if !sender.may_send(time) {
                        deferred = true;
                        break;
                    }
                    if let Some(wait) = delay_left(time, delay) {
                        activator.activate_after(wait);
                        break;
                    }
                    let (capability, updates) = entry.remove();
                    let tail = tail_only == Some(time);
                    let messages = messages_at(updates, held.remove(&time), tail);
                    if let Some(metrics) = &inserted {
                        let rows = messages.iter().filter(|m| m.is_row()).count() as u64;
                        metrics.update(|f| f.walkins_emitted += rows);
                    }
                    if messages.is_empty() {
                        continue; // the updates cancelled out
                    }
                    output.session(&capability).give(Note::Written);
                    outbox.push(&sender, capability, messages.into());
                }
                let waiting = outbox.send(&sender, &topic, write_value, |capability| {
                    unacknowledged.hold(&capability)
                });
                if unacknowledged.release(&sender.producer) || waiting || deferred {
                    activator.activate_after(ACK_POLL);
                }
            }
        },
    )
}

/// What a topic holds when a restored run starts, by the time it is given
/// at (the restore epoch): the last value per message key (`None`: a
/// tombstone).
type TopicRows = BTreeMap<Time, BTreeMap<String, Option<String>>>;

/// Keeps the rows of `existing` (what the topic holds, given at the restore
/// epoch) in `held`, and holds their time in `stash`.
fn hold_existing<D>(
    held: &mut TopicRows,
    stash: &mut Pending<D>,
    capability: InputCapability<Time>,
    existing: std::slice::IterMut<'_, Vec<Existing>>,
) {
    let time = *capability.least().expect("a total order has a least time");
    let rows = held.entry(time).or_default();
    for batch in existing {
        for row in batch.drain(..) {
            rows.insert(row.key, row.value);
        }
    }
    // The restore epoch has updates (the restored state) or none at all:
    // hold its time either way.
    stash
        .entry(time)
        .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
}

/// How much longer the rows of `time` are held by a synthetic delay
/// (`presence bench` only: a time's rows wait until `delay` past it on the
/// wall clock); `None` once they are due.
fn delay_left(time: Time, delay: Duration) -> Option<Duration> {
    if delay.is_zero() {
        return None;
    }
    let due = time + delay.as_millis() as u64;
    let now = crate::model::clock::now_ms();
    (now < due).then(|| Duration::from_millis(due - now))
}

/// The messages that bring the topic to a time's `updates` (see
/// [`messages`]). At a restore epoch, `topic_rows` is what the topic holds,
/// and only what differs is written (see [`reconcile`]); with `tail_only`,
/// it is only the topic's tail after the checkpoint.
fn messages_at<D: Row + Ord + serde::de::DeserializeOwned>(
    mut updates: Vec<(D, isize)>,
    topic_rows: Option<BTreeMap<String, Option<String>>>,
    tail_only: bool,
) -> Vec<Message<D>> {
    if tail_only {
        // Only keys in the tail can differ from the restored state: the
        // rest need no work at all.
        match &topic_rows {
            Some(tail) if !tail.is_empty() => {
                let mut key = Vec::new();
                updates.retain(|(row, _)| tail.contains_key(render_key(row, &mut key)))
            }
            _ => updates.clear(),
        }
    }
    let mut messages = messages(updates);
    let reconciling = if tail_only {
        Some((topic_rows.unwrap_or_default(), true))
    } else {
        topic_rows.map(|rows| (rows, false))
    };
    if let Some((topic_rows, tail)) = reconciling {
        let rows = messages.into_iter().map(Message::keyed).collect();
        messages = reconcile(rows, topic_rows, tail)
            .into_iter()
            .map(|(key, row)| Message::Keyed(key, row))
            .collect();
    }
    messages
}

/// A rejected record already in the rejected topic, of an input record a
/// restored run reads again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenRejection {
    /// The input topic.
    pub source: String,
    /// The input partition.
    pub partition: i32,
    /// The input offset.
    pub offset: i64,
    /// The rejected topic's partition it is in.
    pub out_partition: i32,
    /// Its offset there.
    pub out_offset: i64,
}

/// Writes rejected records to `topic`, keyed by where they were read
/// (`["source",partition,offset]`): a record rejected again after a restart
/// replaces itself under compaction. `existing` names the keys the topic
/// already holds for records a restored run reads again: those are not
/// written twice.
pub fn rejected<'scope>(
    rejected: StreamVec<'scope, Time, Rejected>,
    existing: StreamVec<'scope, Time, Existing>,
    topic: String,
    sender: Sender,
) -> StreamVec<'scope, Time, Note> {
    let scope = rejected.scope();
    let by_key = Exchange::new(|record: &Rejected| record.key().hashed());
    rejected.binary_frontier::<_, CapacityContainerBuilder<Vec<Note>>, _, _, _, _>(
        existing,
        by_key,
        Exchange::new(Existing::hashed),
        &format!("Rejected {topic}"),
        move |_capability, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut unacknowledged = Unacknowledged::new();
            let mut written: std::collections::HashSet<String> = Default::default();
            let mut waiting: BTreeMap<Time, (Capability<Time>, Vec<Rejected>)> = BTreeMap::new();
            let mut outbox = Outbox::new();
            move |(input, _frontier), (existing_input, existing_frontier), output| {
                existing_input.for_each(|_, data| {
                    written.extend(data.drain(..).map(|row| row.key));
                });
                input.for_each_stamp(|capability, data| {
                    let time = *capability.least().expect("a total order has a least time");
                    let (_, records) = waiting
                        .entry(time)
                        .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                    for batch in data {
                        records.append(batch);
                    }
                });
                // Records wait until every key already written is known,
                // and a restore epoch's until the state is restored.
                let mut deferred = false;
                while let Some(entry) = waiting.first_entry() {
                    let time = *entry.key();
                    if existing_frontier.less_equal(&time) {
                        break;
                    }
                    if !sender.may_send(time) {
                        deferred = true;
                        break;
                    }
                    let (capability, records) = entry.remove();
                    let records: VecDeque<_> = records
                        .into_iter()
                        .filter_map(|record| {
                            let key = record.key();
                            // Those in the topic since before the restart are not written again.
                            (!written.contains(&key)).then_some(Message::Keyed(key, Some(record)))
                        })
                        .collect();
                    if !records.is_empty() {
                        output.session(&capability).give(Note::Written);
                        outbox.push(&sender, capability, records);
                    }
                }
                let render = |record: &Rejected, _, out: &mut Vec<u8>| {
                    serde_json::to_writer(out, record).expect("records serialize")
                };
                let waiting = outbox.send(&sender, &topic, render, |capability| {
                    unacknowledged.hold(&capability)
                });
                if unacknowledged.release(&sender.producer) || waiting || deferred {
                    activator.activate_after(ACK_POLL);
                }
            }
        },
    )
}

/// What to write at a restore epoch: of the restored state's `rows`, those
/// the topic (`existing`, last value per key) lacks or holds otherwise, and
/// a tombstone for each row the topic holds that the state lacks. With
/// `tail_only`, a key `existing` lacks is as the state has it.
fn reconcile<D: Row + PartialEq + serde::de::DeserializeOwned>(
    rows: BTreeMap<String, Option<D>>,
    mut existing: BTreeMap<String, Option<String>>,
    tail_only: bool,
) -> BTreeMap<String, Option<D>> {
    let mut out = BTreeMap::new();
    for (key, row) in rows {
        let held = match existing.remove(&key) {
            Some(held) => held,
            None if tail_only => continue,
            None => None,
        };
        // A value the topic holds, read as a row (its "time" is ignored).
        let same = match (&row, &held) {
            (Some(row), Some(value)) => serde_json::from_str::<D>(value).is_ok_and(|v| v == *row),
            (None, None) => true,
            _ => false,
        };
        if !same {
            out.insert(key, row);
        }
    }
    for (key, value) in existing {
        if value.is_some() {
            out.insert(key, None);
        }
    }
    out
}

impl Row for crate::model::records::WalkIn {
    type Key<'a> = (&'a str, &'a str, u64);
    fn key_fields(&self) -> Self::Key<'_> {
        (&self.business, &self.device, self.start)
    }
}

impl Row for crate::model::records::EnrichedWalkIn {
    type Key<'a> = (&'a str, &'a str, u64);
    fn key_fields(&self) -> Self::Key<'_> {
        (&self.business, &self.device, self.start)
    }
}

impl Row for crate::model::records::DeviceContact {
    type Key<'a> = &'a str;
    fn key_fields(&self) -> Self::Key<'_> {
        &self.device
    }
}

impl Row for crate::model::records::Present {
    type Key<'a> = (&'a str, &'a str);
    fn key_fields(&self) -> Self::Key<'_> {
        (&self.business, &self.device)
    }
}

impl Row for Rejected {
    type Key<'a> = (&'a str, u64, u64);
    fn key_fields(&self) -> Self::Key<'_> {
        (&self.source, self.partition, self.offset)
    }
}

impl Row for crate::model::records::WalkinCount {
    type Key<'a> = (&'a str, &'a str);
    fn key_fields(&self) -> Self::Key<'_> {
        (&self.business, &self.contact)
    }
}

#[cfg(test)]
mod tests;
