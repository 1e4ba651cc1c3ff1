//! The progress topic: `{"frontier": T, "event_time": W, "offsets": {TOPIC:
//! {PARTITION: N}}}` (docs/contract.md, section 3), published by worker 0 from
//! facts that flow to it through the dataflow as [`Note`]s.
//!
//! Every sink notes the logical times at which it wrote something, and holds
//! each time until the broker has acknowledged it; every worker notes, at
//! each epoch, the next offset of each of its input partitions that moved,
//! and its last epoch when it stops. All notes go to worker 0, so when the
//! frontier of its input passes `T`, every update below `T` of every worker
//! is acknowledged, and the offsets noted below `T` say which input that
//! state reflects. No coordination message is needed beyond the dataflow's
//! own progress tracking.
//!
//! # Volume
//!
//! The frontier advances every millisecond (the service's epochs), so it is
//! published at most once per `interval` while outputs change (a time below
//! the new frontier was written), and at most once per [`QUIET_INTERVAL`]
//! while they do not: downstream readers see the frontier move through a
//! quiet night without a message per epoch. The first frontier of a run
//! goes at once: after a restart, it is the sign that the outputs are
//! reconciled.
//!
//! # The final frontier
//!
//! When every worker has stopped (the input frontier is empty, and every
//! worker noted its last epoch), the last message carries the least time
//! above every worker's last epoch: a real logical time, which a restart's
//! times are above. A worker that failed notes no last epoch, so a failed
//! run publishes no final frontier.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rdkafka::producer::BaseProducer;

use crate::kafka::offsets::GroupOffsets;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;
use timely::scheduling::Activator;

use crate::dataflow::note::Note;
use crate::dataflow::Time;
use crate::kafka::{send_or_fail, DeliveryTracker, UNTRACKED};
use crate::observe::metrics::Metrics;
use crate::observe::metrics::Published;

/// How often the frontier is published while no output changes.
pub const QUIET_INTERVAL: Duration = Duration::from_secs(1);

/// The progress message for `frontier`, the event-time frontier then, and
/// `offsets`.
pub fn message(
    frontier: Time,
    event_time: u64,
    offsets: &BTreeMap<String, BTreeMap<i32, i64>>,
) -> String {
    #[derive(serde::Serialize)]
    struct Progress<'a> {
        frontier: Time,
        event_time: u64,
        offsets: &'a BTreeMap<String, BTreeMap<i32, i64>>,
    }
    serde_json::to_string(&Progress {
        frontier,
        event_time,
        offsets,
    })
    .expect("progress serializes")
}

/// Publishes progress to `topic` (partition 0, so that the topic's order is
/// the frontiers' order) from the notes of every worker; see the module
/// docs. The returned stream's frontier is empty once the final frontier
/// has been handed to the producer.
pub fn publish<'scope>(
    notes: StreamVec<'scope, Time, Note>,
    topic: String,
    producer: Rc<BaseProducer<DeliveryTracker>>,
    interval: Duration,
    metrics: Metrics,
    group: Option<GroupOffsets>,
    restore_epoch: Option<Time>,
) -> StreamVec<'scope, Time, ()> {
    let scope = notes.scope();
    let publisher = scope.index() == 0;
    notes.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Exchange::new(|_: &Note| 0),
        "Progress",
        move |capability, info| {
            let activator = scope.activator_for(info.address.clone());
            // Held until the final frontier is sent, so that a probe on the
            // output is done only then.
            let mut held = publisher.then_some(capability);
            let mut pending: BTreeMap<Time, Vec<Note>> = BTreeMap::new();
            let peers = scope.peers();
            let mut noted = Noted {
                promised: vec![0; peers],
                ..Noted::default()
            };
            let mut pace = Pace {
                interval,
                last_sent: None,
                wake_at: None,
            };
            let mut sender = Sender {
                producer,
                topic,
                group,
                metrics,
                // After a restart, frontiers up to the restore epoch say
                // nothing new, and the outputs of times below it are
                // reconciled only at it: the first frontier published is
                // above it.
                published: restore_epoch.unwrap_or(0),
                messages: 0,
            };
            move |(input, frontier), _output| {
                input.for_each_stamp(|stamp, data| {
                    let time = *stamp.least().expect("a total order has a least time");
                    let notes = pending.entry(time).or_default();
                    for batch in data {
                        notes.append(batch);
                    }
                });
                if held.is_none() {
                    return;
                }
                let bound = frontier.frontier().first().copied();
                noted.absorb(&mut pending, bound);
                let published = sender.published;
                let target = match bound {
                    Some(bound) if bound > published => {
                        if !pace.due(noted.changed, &activator) {
                            return;
                        }
                        bound
                    }
                    Some(_) => return,
                    None if noted.closed == peers => {
                        noted.last_epoch.map_or(published, |e| e + 1).max(published)
                    }
                    None => published, // a worker failed: no final frontier
                };
                if target > published {
                    noted.changed = false;
                    pace.last_sent = Some(Instant::now());
                    sender.send(target, noted.event_time(), &noted.offsets, bound.is_none());
                }
                if bound.is_none() {
                    held = None;
                }
            }
        },
    )
}

/// What the notes below the input frontier said so far.
#[derive(Debug, Default)]
struct Noted {
    /// The next offset of each input partition, by topic.
    offsets: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Whether an output was written since the last message.
    changed: bool,
    /// Workers that stopped.
    closed: usize,
    /// The latest of their last epochs.
    last_epoch: Option<Time>,
    /// Each worker's largest event-time promise (0: none yet).
    promised: Vec<u64>,
}

impl Noted {
    /// The event-time frontier the notes so far promise: the least of the
    /// workers' promises.
    fn event_time(&self) -> u64 {
        self.promised.iter().copied().min().unwrap_or(u64::MAX)
    }

    /// Takes in the notes of `pending` at times below `bound` (all of them
    /// when the input frontier is empty).
    fn absorb(&mut self, pending: &mut BTreeMap<Time, Vec<Note>>, bound: Option<Time>) {
        while let Some(entry) = pending.first_entry() {
            if bound.is_some_and(|bound| *entry.key() >= bound) {
                break;
            }
            let (time, notes) = entry.remove_entry();
            for note in notes {
                match note {
                    Note::Written => self.changed = true,
                    Note::Read {
                        topic,
                        partition,
                        next,
                        ..
                    } => {
                        self.offsets
                            .entry(topic)
                            .or_default()
                            .insert(partition, next);
                    }
                    Note::Promised { worker, frontier } => {
                        self.promised[worker] = self.promised[worker].max(frontier);
                    }
                    Note::Closed => {
                        self.closed += 1;
                        self.last_epoch = Some(self.last_epoch.map_or(time, |e| e.max(time)));
                    }
                }
            }
        }
    }
}

/// When the next message is due: at most once per `interval` while outputs
/// change, at most once per [`QUIET_INTERVAL`] while they do not.
#[derive(Debug)]
struct Pace {
    interval: Duration,
    /// None until the first frontier, which goes at once: after a restart,
    /// it says that the outputs are reconciled.
    last_sent: Option<Instant>,
    /// When the operator last asked to be woken.
    wake_at: Option<Instant>,
}

impl Pace {
    /// Whether a message is due now (`changed`: an output was written since
    /// the last); if not, makes sure `activator` wakes the operator when it
    /// is.
    fn due(&mut self, changed: bool, activator: &Activator) -> bool {
        let due = if changed {
            self.interval
        } else {
            self.interval.max(QUIET_INTERVAL)
        };
        let since = self.last_sent.map_or(due, |sent| sent.elapsed());
        if let (Some(sent), true) = (self.last_sent, since < due) {
            let wake = sent + due;
            if self
                .wake_at
                .is_none_or(|at| at <= Instant::now() || wake < at)
            {
                activator.activate_after(due - since);
                self.wake_at = Some(wake);
            }
            return false;
        }
        true
    }
}

/// Writes the progress messages, commits the offsets they carry to the
/// consumer group (if any) and counts them in the metrics.
struct Sender {
    producer: Rc<BaseProducer<DeliveryTracker>>,
    topic: String,
    group: Option<GroupOffsets>,
    metrics: Metrics,
    /// The last frontier published.
    published: Time,
    /// Messages published so far.
    messages: u64,
}

impl Sender {
    /// Publishes `frontier` with `offsets`; `last`: the final message.
    fn send(
        &mut self,
        frontier: Time,
        event_time: u64,
        offsets: &BTreeMap<String, BTreeMap<i32, i64>>,
        last: bool,
    ) {
        self.published = frontier;
        self.messages += 1;
        let value = message(frontier, event_time, offsets);
        send_or_fail(
            &self.producer,
            &self.topic,
            Some(0),
            None,
            Some(&value),
            UNTRACKED,
        );
        if let Some(group) = &mut self.group {
            group.commit(
                offsets.iter().flat_map(|(topic, partitions)| {
                    partitions
                        .iter()
                        .map(move |(&partition, &next)| (topic.clone(), partition, next))
                }),
                last,
            );
        }
        let (frontier, messages) = (self.published, self.messages);
        self.metrics
            .update(|f| f.progress = Published { frontier, messages });
    }
}
