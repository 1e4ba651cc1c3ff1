//! Each worker's [`checkpoint`] operator: stashes the state updates it
//! sees, and once its inputs have passed a cut hands the cut's rows to a
//! writer thread, which writes them as the worker's piece; each piece is
//! noted to the coordinator (see [`super::coordinator`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, StreamVec};
use timely::progress::frontier::MutableAntichain;
use timely::scheduling::{Activator, SyncActivator};

use crate::dataflow::operators::windows::{Cut, WindowSnapshot};
use crate::dataflow::state::{StateRow, StateStreams, StateWalkIn};
use crate::dataflow::Time;
use crate::kafka::{Deliveries, Floors};
use crate::model::records::Id;
use crate::observe::metrics::Metrics;

use super::config::CheckpointConfig;
use super::store::{self, PieceInfo};

/// A worker's piece of a cut, noted to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceNote {
    /// The cut.
    pub cut: Cut,
    /// The worker.
    pub worker: usize,
    /// The worker's run id (its first epoch): its pieces' names carry it.
    pub run: u64,
    /// The piece written (`None`: nothing changed), or why it could not be.
    pub piece: Result<Option<PieceInfo>, String>,
    /// Per output partition, the offset at or above which is every record
    /// the worker writes at or after the cut (`run` only; see
    /// [`crate::kafka::Deliveries::floors`]).
    pub outputs: Vec<(String, i32, i64)>,
}

/// One worker's checkpoint operator: writes its piece of every cut; see the
/// module docs. The returned notes go to the coordinator.
///
/// With `written` (in `run`), each note says where the worker's records at
/// or after its cut are in the output partitions; the final note waits
/// until the sinks have sent every record and the producer has every one
/// acknowledged, so that a restart after a clean stop reads nothing back.
pub fn checkpoint<'scope>(
    state: StateStreams<'scope>,
    config: Arc<CheckpointConfig>,
    metrics: Metrics,
    written: Option<Written>,
) -> StreamVec<'scope, Time, PieceNote> {
    let scope = state.windows.scope();
    let worker = scope.index();
    let mut builder = OperatorBuilder::new("Checkpoint".to_owned(), scope);
    let info = builder.operator_info();
    let mut windows_input = builder.new_input(state.windows, Pipeline);
    let mut walkins_input = builder.new_input(state.walkins.inner, Pipeline);
    let mut logins_input = builder.new_input(state.logins.inner, Pipeline);
    let mut base_input = builder.new_input(state.base_counts.inner, Pipeline);
    let (output, notes) = builder.new_output();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Vec<PieceNote>>>::from(output);
    let activator = scope.worker().sync_activator_for(info.address.to_vec());
    let waiting = scope.activator_for(info.address.clone());
    if let (Some(written), Some(every)) = (&written, config.every) {
        written
            .deliveries
            .lock()
            .expect("no thread panics holding the lock")
            .track_cuts(every);
    }
    builder.build(move |mut capabilities| {
        let mut checkpointer = Checkpointer::new(
            capabilities.pop(),
            config,
            worker,
            activator,
            waiting,
            metrics,
            written,
        );
        move |frontiers| {
            windows_input.for_each(|_, data| checkpointer.stash_snapshots(data));
            // The restore epoch's updates are the restored state, already
            // in the checkpoint: not kept.
            let restored_at = checkpointer.config.restored_at;
            walkins_input.for_each(|_, data| stash(&mut checkpointer.walkins, data, restored_at));
            logins_input.for_each(|_, data| stash(&mut checkpointer.logins, data, restored_at));
            base_input.for_each(|_, data| stash(&mut checkpointer.base, data, restored_at));
            checkpointer.write_passed_cuts(frontiers);
            let mut out = output.activate();
            checkpointer.send_notes(&mut out);
            // A cut waits for the one before it (see `write_passed_cuts`).
            checkpointer.write_passed_cuts(frontiers);
        }
    });
    notes
}

/// Updates to a differential collection, as its stream carries them.
type Updates<D> = Vec<(D, Time, isize)>;

/// The output the notes are sent on.
type NoteOutput<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<PieceNote>>>;

/// What a run's sinks have written, for the notes' floors.
#[derive(Clone)]
pub struct Written {
    /// The worker's producer's deliveries.
    pub deliveries: Arc<Mutex<Deliveries>>,
    /// A probe after the worker's sinks: done once they have sent every
    /// record of every time and have them acknowledged.
    pub sinks: ProbeHandle<Time>,
}

/// A worker's checkpoint state between activations: the updates stashed
/// since its last piece, the piece on its way to the writer thread and
/// back, and the capability the next note is sent at.
struct Checkpointer {
    config: Arc<CheckpointConfig>,
    /// The worker's index.
    worker: usize,
    metrics: Metrics,
    /// What the worker's sinks have written (`run` only).
    written: Option<Written>,
    /// Reschedules the operator while the final note waits for acknowledgements.
    waiting: Activator,
    /// Held at the last cut written, so that the next one's note can be sent.
    capability: Option<Capability<Time>>,
    /// To the writer thread.
    jobs: mpsc::Sender<Job>,
    /// From the writer thread.
    results: mpsc::Receiver<Outcome>,
    /// The window operator's changed keys, by cut.
    snapshots: BTreeMap<Cut, Vec<StateRow>>,
    /// Walk-in updates not in a piece yet.
    walkins: Updates<StateWalkIn>,
    /// Latest-login updates not in a piece yet.
    logins: Updates<(String, (u64, String))>,
    /// Base count updates not in a piece yet.
    base: Updates<((String, String), u64)>,
    /// Rows of cuts that could not be written: they go into the next piece.
    carried: Vec<StateRow>,
    /// The cuts handed to the writer thread whose notes are not sent yet.
    in_flight: Vec<Cut>,
    /// Pieces written, in order, whose notes are not sent yet.
    outcomes: VecDeque<Outcome>,
    /// The final cut was handed to the writer: nothing more is written.
    ended: bool,
}

impl Checkpointer {
    /// The state of a worker's operator before its first activation; starts
    /// the writer thread.
    fn new(
        capability: Option<Capability<Time>>,
        config: Arc<CheckpointConfig>,
        worker: usize,
        activator: SyncActivator,
        waiting: Activator,
        metrics: Metrics,
        written: Option<Written>,
    ) -> Checkpointer {
        let (jobs, results) = writer(config.clone(), worker, activator);
        Checkpointer {
            config,
            worker,
            metrics,
            written,
            waiting,
            capability,
            jobs,
            results,
            snapshots: BTreeMap::new(),
            walkins: Vec::new(),
            logins: Vec::new(),
            base: Vec::new(),
            carried: Vec::new(),
            in_flight: Vec::new(),
            outcomes: Default::default(),
            ended: false,
        }
    }

    /// Keeps the window operator's snapshots as rows, by the cut they
    /// belong to.
    fn stash_snapshots(&mut self, data: &mut Vec<WindowSnapshot<(Id, Id)>>) {
        for snapshot in data.drain(..) {
            let rows = snapshot
                .changes
                .into_iter()
                .map(|((business, device), state)| StateRow::Window {
                    business,
                    device,
                    state,
                });
            self.snapshots.entry(snapshot.cut).or_default().extend(rows);
        }
    }

    /// Decides which cuts are written: in order, each one every input has
    /// passed (the final one: once every input has ended), none after the
    /// final one, and each once the one before is back from the writer.
    /// Hands each to the writer thread with its rows.
    fn write_passed_cuts(&mut self, frontiers: &[MutableAntichain<Time>]) {
        let passed = |cut: Cut| {
            frontiers.iter().all(|f| match cut {
                Cut::At(c) => !f.less_than(&c),
                Cut::Final => f.is_empty(),
            })
        };
        while let Some(entry) = self.snapshots.first_entry() {
            let cut = *entry.key();
            // One cut at the writer at a time: if it fails, its rows are
            // carried into the next cut's piece, which must not have been
            // made without them (a checkpoint of that cut would lack them).
            if !passed(cut) || self.ended || !self.in_flight.is_empty() {
                break;
            }
            let windows = entry.remove();
            let rows = self.rows_below(cut, windows);
            self.ended |= cut == Cut::Final;
            self.in_flight.push(cut);
            self.jobs
                .send((cut, rows))
                .expect("the writer outlives the operator");
        }
    }

    /// The rows of the piece of `cut`: the rows carried from cuts that
    /// could not be written, the window snapshot's, and those of the
    /// walk-in, login and base count updates below the cut (taken from the
    /// stash; the restore epoch's are left out).
    fn rows_below(&mut self, cut: Cut, windows: Vec<StateRow>) -> Vec<StateRow> {
        let restored_at = self.config.restored_at;
        let mut rows = std::mem::take(&mut self.carried);
        rows.extend(windows);
        rows.extend(walkin_rows(below(&mut self.walkins, cut, restored_at)));
        rows.extend(latest_rows(
            below(&mut self.logins, cut, restored_at),
            |device, (ts, contact)| StateRow::Login {
                device,
                ts,
                contact,
            },
        ));
        rows.extend(latest_rows(
            below(&mut self.base, cut, restored_at),
            |(business, contact), count| StateRow::BaseCount {
                business,
                contact,
                count,
            },
        ));
        rows
    }

    /// Sends the notes of the pieces the writer has finished, in cut
    /// order, each at its cut's last time, and moves the capability to the
    /// cut (drops it after the final one). Decides when a note may go: the
    /// final one waits (rescheduled every millisecond) until the producer
    /// has every record acknowledged or has failed.
    fn send_notes(&mut self, out: &mut NoteOutput<'_>) {
        self.outcomes.extend(self.results.try_iter());
        while let Some(cut) = self.outcomes.front().map(|(cut, _)| *cut) {
            let Some(floors) = self.floors(cut) else {
                self.waiting.activate_after(Duration::from_millis(1));
                break;
            };
            let (cut, result) = self.outcomes.pop_front().expect("a front");
            debug_assert_eq!(
                self.in_flight.first(),
                Some(&cut),
                "pieces complete in order"
            );
            self.in_flight.remove(0);
            let held = self
                .capability
                .as_ref()
                .expect("held until the final piece");
            let time = match cut {
                Cut::At(c) => c - 1,
                Cut::Final => *held.time(),
            };
            let piece = self.piece(cut, result);
            let held = self
                .capability
                .as_mut()
                .expect("held until the final piece");
            out.session(&held.delayed(&time)).give(PieceNote {
                cut,
                worker: self.worker,
                run: self.config.run,
                piece,
                outputs: floors
                    .into_iter()
                    .map(|((topic, partition), offset)| (topic, partition, offset))
                    .collect(),
            });
            match cut {
                Cut::At(c) => held.downgrade(&c),
                Cut::Final => self.capability = None,
            }
        }
    }

    /// Where the worker's records at or after `cut` are in the output
    /// partitions (none without deliveries); `None`: the note of `cut`
    /// cannot go yet, as it is the final one and the sinks still have
    /// records to send or records sent are still unacknowledged (and the
    /// producer has not failed). A floor taken before the sinks' last
    /// records are sent would lack the partitions only they write to, and
    /// a restart would read those topics back in full.
    fn floors(&self, cut: Cut) -> Option<Floors> {
        let Some(written) = &self.written else {
            return Some(Default::default());
        };
        let mut deliveries = written
            .deliveries
            .lock()
            .expect("no thread panics holding the lock");
        let pending = !written.sinks.done() || !deliveries.all_acknowledged();
        if cut == Cut::Final && pending && deliveries.failure().is_none() {
            return None;
        }
        let at = match cut {
            Cut::At(c) => Some(c),
            Cut::Final => None,
        };
        Some(deliveries.floors(at))
    }

    /// What the note of `cut` says of its piece. A piece written counts
    /// its bytes; one that could not be written is logged, and its rows
    /// are carried into the next piece.
    fn piece(
        &mut self,
        cut: Cut,
        result: Result<Option<PieceInfo>, (String, Vec<StateRow>)>,
    ) -> Result<Option<PieceInfo>, String> {
        match result {
            Ok(piece) => {
                let bytes = piece.as_ref().map_or(0, |p| p.bytes);
                self.metrics
                    .update(|f| f.checkpoints.bytes_written += bytes);
                Ok(piece)
            }
            Err((error, rows)) => {
                let worker = self.worker;
                tracing::warn!(worker, ?cut, %error, "could not write a checkpoint piece; its changes go into the next one");
                // Older than anything carried since (nothing, as one cut
                // is at the writer at a time): first, so later rows win.
                let since = std::mem::replace(&mut self.carried, rows);
                self.carried.extend(since);
                Err(error)
            }
        }
    }
}

/// Keeps the updates of a batch in `into`, but those at the restore
/// epoch `restored_at`.
fn stash<D>(into: &mut Updates<D>, data: &mut Updates<D>, restored_at: Option<Time>) {
    into.extend(data.drain(..).filter(|u| Some(u.1) != restored_at))
}

/// The rows of walk-in updates: per key the inserted walk-in, or a removal.
fn walkin_rows(mut updates: Vec<(StateWalkIn, isize)>) -> Vec<StateRow> {
    differential_dataflow::consolidation::consolidate(&mut updates);
    let mut rows: BTreeMap<(Id, Id, u64), Option<u64>> = BTreeMap::new();
    // Removals first, so that a walk-in replaced at the same key is the insertion.
    updates.sort_by_key(|(_, diff)| *diff);
    for (((business, device), window), diff) in updates {
        let key = (business, device, window.start);
        if diff > 0 {
            rows.insert(key, Some(window.detected_at));
        } else {
            rows.entry(key).or_insert(None);
        }
    }
    rows.into_iter()
        .map(
            |((business, device, start), detected_at)| StateRow::WalkIn {
                business,
                device,
                start,
                detected_at,
            },
        )
        .collect()
}

/// The inserted values of updates to a latest-value collection.
fn latest_rows<K: Ord, V: Ord>(
    mut updates: Vec<((K, V), isize)>,
    row: impl Fn(K, V) -> StateRow,
) -> Vec<StateRow> {
    differential_dataflow::consolidation::consolidate(&mut updates);
    updates
        .into_iter()
        .filter(|(_, diff)| *diff > 0)
        .map(|((key, value), _)| row(key, value))
        .collect()
}

/// Splits off the updates with times below `cut` (all of them for the
/// final cut), leaving the rest.
fn below<D>(stash: &mut Updates<D>, cut: Cut, skip: Option<Time>) -> Vec<(D, isize)> {
    let (taken, kept): (Vec<_>, Vec<_>) =
        std::mem::take(stash)
            .into_iter()
            .partition(|(_, time, _)| match cut {
                Cut::At(c) => *time < c,
                Cut::Final => true,
            });
    *stash = kept;
    taken
        .into_iter()
        .filter(|(_, time, _)| Some(*time) != skip)
        .map(|(data, _, diff)| (data, diff))
        .collect()
}

/// A piece writer: the job's rows to a piece file, on its own thread.
type Job = (Cut, Vec<StateRow>);
/// What became of a job: the piece (or none, for no rows), or the error
/// and the rows back.
type Outcome = (Cut, Result<Option<PieceInfo>, (String, Vec<StateRow>)>);

fn writer(
    config: Arc<CheckpointConfig>,
    worker: usize,
    activator: SyncActivator,
) -> (mpsc::Sender<Job>, mpsc::Receiver<Outcome>) {
    let (jobs, queue) = mpsc::channel::<Job>();
    let (done, results) = mpsc::channel::<Outcome>();
    std::thread::Builder::new()
        .name(format!("checkpoint-{worker}"))
        .spawn(move || {
            for (cut, rows) in queue {
                let result = if rows.is_empty() {
                    Ok(None)
                } else {
                    let at = match cut {
                        Cut::At(c) => Some(c),
                        Cut::Final => None,
                    };
                    let name = store::piece_name(at, config.run, worker);
                    config.hooks.before_durable();
                    match store::write_piece(&config.store, &name, rows.clone()) {
                        Ok(piece) => Ok(Some(piece)),
                        Err(error) => Err((error.to_string(), rows)),
                    }
                };
                if done.send((cut, result)).is_err() {
                    break;
                }
                let _ = activator.activate();
            }
        })
        .expect("a thread can be started");
    (jobs, results)
}
