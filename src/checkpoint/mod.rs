//! Checkpoints: one consistent cut of every worker's state, written while
//! the dataflow runs (see [`crate::checkpoint::store`] for the files).
//!
//! State is data. The window operator snapshots its changed keys at every
//! cut ([`crate::dataflow::operators::windows::WindowSnapshot`]); the walk-ins, the
//! latest login per device and the base counts are differential
//! collections. Each worker's [`checkpoint`] operator sees all four, and
//! once its inputs have passed a cut `c` it has exactly the changes of
//! every logical time below `c`: it hands them to a writer thread (off the
//! worker's thread), which writes them as a piece. Cuts are multiples of
//! `--checkpoint-interval` in logical time, which every worker computes by
//! itself: no coordination message is needed to agree on them.
//!
//! Each piece is noted to worker 0's [`coordinate`] operator. When every
//! worker's piece of a cut is durable, the outputs below the cut are
//! acknowledged by the broker and the input notes below it have arrived
//! (the offsets and lateness state of every partition as of the cut), it
//! writes the cut's manifest: the checkpoint counts. A cut a worker could
//! not write counts as a failure; that worker carries the changes into its
//! next piece, and the next manifest names every piece written since the
//! last one that counted.
//!
//! At the end of the input (a clean stop), every worker writes a final
//! piece and the coordinator a final manifest at the least time above
//! every worker's last epoch.

pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::dataflow::note::Note;
use crate::dataflow::operators::windows::Cut;
use crate::dataflow::state::{StateRow, StateStreams, StateWalkIn};
use crate::dataflow::Time;
use crate::kafka::Deliveries;
use crate::model::params::Params;
use crate::model::records::Id;
use crate::observe::metrics::Metrics;
use store::{Manifest, Origin, PartitionState, PieceInfo};

/// Where and how checkpoints are written.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// The checkpoint folder (every process of a cluster names the same).
    pub dir: PathBuf,
    /// A cut every multiple of this logical time; `None`: only the final one.
    pub every: Option<u64>,
    /// What writes it.
    pub origin: Origin,
    /// The detection parameters (recorded, and checked on restore).
    pub params: Params,
    /// The input topics (probes, logins, base counts), for `run`.
    pub inputs: Option<[String; 3]>,
    /// The checkpoint this run restored, whose pieces the next ones extend.
    pub base: Option<Manifest>,
    /// The run's first epoch: file names of different runs never collide.
    pub run: u64,
    /// The restore epoch: its updates are the restored state, already in
    /// `base`, not changes to write again.
    pub restored_at: Option<Time>,
    /// The rejected topic, and the rejected records in it that this run
    /// does not write again (see `crate::service::restore::Restore::rejections`).
    pub rejections: Option<(String, Vec<crate::kafka::upsert::WrittenRejection>)>,
    /// A synthetic delay before each piece is made durable (crash tests
    /// widen the window in which a kill lands inside a write).
    pub write_delay: Duration,
}

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
fn below<D>(stash: &mut Vec<(D, Time, isize)>, cut: Cut, skip: Option<Time>) -> Vec<(D, isize)> {
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

/// One worker's checkpoint operator: writes its piece of every cut; see the
/// module docs. The returned notes go to the coordinator.
///
/// With `deliveries` (the worker's producer's, in `run`), each note says
/// where the worker's records at or after its cut are in the output
/// partitions; the final note waits until every record sent is
/// acknowledged, so that a restart after a clean stop reads nothing back.
pub fn checkpoint<'scope>(
    state: StateStreams<'scope>,
    config: Arc<CheckpointConfig>,
    metrics: Metrics,
    deliveries: Option<Arc<Mutex<Deliveries>>>,
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
    if let (Some(deliveries), Some(every)) = (&deliveries, config.every) {
        deliveries
            .lock()
            .expect("no thread panics holding the lock")
            .track_cuts(every);
    }
    builder.build(move |mut capabilities| {
        // Held at the last cut written, so that the next one's note can be sent.
        let mut capability = capabilities.pop();
        let (jobs, results) = writer(config.clone(), worker, activator);
        let mut snapshots: BTreeMap<Cut, Vec<StateRow>> = BTreeMap::new();
        let mut walkins = Vec::new();
        let mut logins = Vec::new();
        let mut base = Vec::new();
        // Rows of cuts that could not be written: they go into the next piece.
        let mut carried: Vec<StateRow> = Vec::new();
        let mut in_flight: Vec<Cut> = Vec::new();
        // Pieces written, in order, whose notes are not sent yet.
        let mut outcomes: std::collections::VecDeque<Outcome> = Default::default();
        let mut ended = false;
        move |frontiers| {
            windows_input.for_each(|_, data| {
                for snapshot in data.drain(..) {
                    let rows = snapshot.changes.into_iter().map(|((business, device), state)| StateRow::Window {
                        business,
                        device,
                        state,
                    });
                    snapshots.entry(snapshot.cut).or_default().extend(rows);
                }
            });
            // The restore epoch's updates are the restored state, already
            // in the checkpoint: not kept.
            let restored_at = config.restored_at;
            walkins_input.for_each(|_, data| {
                walkins.extend(data.drain(..).filter(|u| Some(u.1) != restored_at))
            });
            logins_input.for_each(|_, data| {
                logins.extend(data.drain(..).filter(|u| Some(u.1) != restored_at))
            });
            base_input.for_each(|_, data| {
                base.extend(data.drain(..).filter(|u| Some(u.1) != restored_at))
            });
            let passed = |cut: Cut| {
                frontiers.iter().all(|f| match cut {
                    Cut::At(c) => !f.less_than(&c),
                    Cut::Final => f.is_empty(),
                })
            };
            while let Some(entry) = snapshots.first_entry() {
                let cut = *entry.key();
                if !passed(cut) || ended {
                    break;
                }
                let mut rows = std::mem::take(&mut carried);
                rows.extend(entry.remove());
                rows.extend(walkin_rows(below(&mut walkins, cut, config.restored_at)));
                rows.extend(latest_rows(below(&mut logins, cut, config.restored_at), |device, (ts, contact)| {
                    StateRow::Login { device, ts, contact }
                }));
                rows.extend(latest_rows(below(&mut base, cut, config.restored_at), |(business, contact), count| {
                    StateRow::BaseCount { business, contact, count }
                }));
                ended |= cut == Cut::Final;
                in_flight.push(cut);
                jobs.send((cut, rows)).expect("the writer outlives the operator");
            }
            let mut out = output.activate();
            outcomes.extend(results.try_iter());
            while let Some(cut) = outcomes.front().map(|(cut, _)| *cut) {
                let floors = match &deliveries {
                    Some(deliveries) => {
                        let mut deliveries =
                            deliveries.lock().expect("no thread panics holding the lock");
                        if cut == Cut::Final
                            && !deliveries.all_acknowledged()
                            && deliveries.failure().is_none()
                        {
                            waiting.activate_after(Duration::from_millis(1));
                            break;
                        }
                        let at = match cut {
                            Cut::At(c) => Some(c),
                            Cut::Final => None,
                        };
                        deliveries.floors(at)
                    }
                    None => Default::default(),
                };
                let (cut, result) = outcomes.pop_front().expect("a front");
                debug_assert_eq!(in_flight.first(), Some(&cut), "pieces complete in order");
                in_flight.remove(0);
                let held = capability.as_mut().expect("held until the final piece");
                let time = match cut {
                    Cut::At(c) => c - 1,
                    Cut::Final => *held.time(),
                };
                let piece = match result {
                    Ok(piece) => {
                        let bytes = piece.as_ref().map_or(0, |p| p.bytes);
                        metrics.update(|f| f.checkpoints.bytes_written += bytes);
                        Ok(piece)
                    }
                    Err((error, rows)) => {
                        tracing::warn!(worker, ?cut, %error, "could not write a checkpoint piece; its changes go into the next one");
                        carried = rows;
                        Err(error)
                    }
                };
                out.session(&held.delayed(&time)).give(PieceNote {
                    cut,
                    worker,
                    run: config.run,
                    piece,
                    outputs: floors
                        .into_iter()
                        .map(|((topic, partition), offset)| (topic, partition, offset))
                        .collect(),
                });
                match cut {
                    Cut::At(c) => held.downgrade(&c),
                    Cut::Final => capability = None,
                }
            }
        }
    });
    notes
}

/// Where a cut's outputs are read back from: per output partition the
/// least of every worker's floor (a worker that knows none for it: its
/// beginning), but never below the previous cut's (`previous`), which
/// bounds every later cut too. At the final cut every record of the run
/// is acknowledged and none comes after it: the greatest floor, the
/// partition's end.
fn combine_floors(
    notes: &[PieceNote],
    previous: &crate::kafka::Floors,
    last: bool,
) -> crate::kafka::Floors {
    let workers: Vec<BTreeMap<(&str, i32), i64>> = notes
        .iter()
        .map(|note| {
            note.outputs
                .iter()
                .map(|(topic, partition, offset)| ((topic.as_str(), *partition), *offset))
                .collect()
        })
        .collect();
    let mut combined: crate::kafka::Floors = BTreeMap::new();
    for &(topic, partition) in workers.iter().flat_map(|w| w.keys()) {
        let each = workers
            .iter()
            .map(|w| w.get(&(topic, partition)).copied().unwrap_or(0));
        let floor = if last { each.max() } else { each.min() };
        combined.insert((topic.to_owned(), partition), floor.unwrap_or(0));
    }
    for (key, &floor) in previous {
        let at = combined.entry(key.clone()).or_insert(floor);
        *at = (*at).max(floor);
    }
    combined
}

/// A piece writer: the job's rows to a piece file, on its own thread.
type Job = (Cut, Vec<StateRow>);
/// What became of a job: the piece (or none, for no rows), or the error
/// and the rows back.
type Outcome = (Cut, Result<Option<PieceInfo>, (String, Vec<StateRow>)>);

fn writer(
    config: Arc<CheckpointConfig>,
    worker: usize,
    activator: timely::scheduling::SyncActivator,
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
                    std::thread::sleep(config.write_delay);
                    match store::write_piece(&config.dir, &name, rows.clone()) {
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

/// A manifest job for the coordinator's thread: write it (merging its
/// pieces first when they span many cuts), then prune the folder, keeping
/// what the runs of the live cluster's workers may be writing.
type ManifestJob = (Manifest, std::collections::BTreeSet<u64>);
type ManifestOutcome = Result<Manifest, (String, Manifest)>;

fn manifest_writer(
    dir: PathBuf,
    activator: timely::scheduling::SyncActivator,
) -> (mpsc::Sender<ManifestJob>, mpsc::Receiver<ManifestOutcome>) {
    let (jobs, queue) = mpsc::channel::<ManifestJob>();
    let (done, results) = mpsc::channel::<ManifestOutcome>();
    std::thread::Builder::new()
        .name("checkpoint-manifest".into())
        .spawn(move || {
            for (manifest, runs) in queue {
                let result = write_and_tidy(&dir, &runs, manifest.clone())
                    .map_err(|e| (e.to_string(), manifest));
                if done.send(result).is_err() {
                    break;
                }
                let _ = activator.activate();
            }
        })
        .expect("a thread can be started");
    (jobs, results)
}

/// Writes `manifest`; if its pieces span more than
/// [`store::MERGE_AFTER_CUTS`] cuts, merges them into one and writes the
/// merged manifest in its place; prunes. Returns the manifest in force.
fn write_and_tidy(
    dir: &std::path::Path,
    runs: &std::collections::BTreeSet<u64>,
    manifest: Manifest,
) -> Result<Manifest, store::StoreError> {
    store::write_manifest(dir, &manifest)?;
    let cuts: std::collections::BTreeSet<&str> = manifest
        .pieces
        .iter()
        .filter_map(|p| p.name.split('-').nth(1))
        .collect();
    let manifest = if cuts.len() > store::MERGE_AFTER_CUTS {
        let name = format!("piece-{:020}-merged-w0000.piece", manifest.time);
        match store::merge(dir, &manifest, &name) {
            Ok(merged) => {
                store::write_manifest(dir, &merged)?;
                merged
            }
            Err(error) => {
                tracing::warn!(%error, "could not merge checkpoint pieces; keeping them as they are");
                manifest
            }
        }
    } else {
        manifest
    };
    if let Err(error) = store::prune(dir, runs) {
        tracing::warn!(%error, "could not delete old checkpoint files");
    }
    Ok(manifest)
}

/// The coordinator, on worker 0: writes a cut's manifest once every
/// worker's piece is durable and the notes below the cut (acknowledged
/// outputs, input offsets) are in; see the module docs. The returned
/// stream's frontier is empty once the final manifest is written (or the
/// run failed).
pub fn coordinate<'scope>(
    pieces: StreamVec<'scope, Time, PieceNote>,
    notes: StreamVec<'scope, Time, Note>,
    config: Arc<CheckpointConfig>,
    metrics: Metrics,
    mut group: Option<crate::kafka::offsets::GroupOffsets>,
) -> StreamVec<'scope, Time, ()> {
    let scope = pieces.scope();
    let peers = scope.peers();
    let coordinator = scope.index() == 0;
    let mut builder = OperatorBuilder::new("CheckpointCoordinator".to_owned(), scope);
    let info = builder.operator_info();
    let mut piece_input = builder.new_input(pieces, Exchange::new(|_: &PieceNote| 0));
    let mut note_input = builder.new_input(notes, Exchange::new(|_: &Note| 0));
    let (_output, done) = builder.new_output::<Vec<()>>();
    let activator = scope.worker().sync_activator_for(info.address.to_vec());
    builder.build(move |mut capabilities| {
        let mut capability = capabilities.pop().filter(|_| coordinator);
        let (jobs, results) = manifest_writer(config.dir.clone(), activator);
        // Every worker's run id, from its notes.
        let mut runs: std::collections::BTreeSet<u64> = [config.run].into();
        let mut pieces: BTreeMap<Cut, Vec<PieceNote>> = BTreeMap::new();
        let mut notes: BTreeMap<Time, Vec<Note>> = BTreeMap::new();
        let mut partitions: BTreeMap<(String, i32), PartitionState> = config
            .base
            .iter()
            .flat_map(|m| m.partitions.iter().cloned())
            .filter(|_| config.origin == Origin::Run)
            .map(|p| ((p.topic.clone(), p.partition), p))
            .collect();
        // The pieces the next manifest extends: the last one in force.
        let mut chain: Vec<PieceInfo> = config.base.iter().flat_map(|m| m.pieces.clone()).collect();
        // Pieces written since, of cuts whose manifest was not written.
        let mut unnamed: Vec<PieceInfo> = Vec::new();
        // Where the last manifest's outputs are read back from: still a
        // bound for every later cut.
        let mut floors: crate::kafka::Floors = config
            .base
            .iter()
            .filter(|m| m.origin == Origin::Run)
            .flat_map(|m| m.outputs.iter().flatten())
            .map(|f| ((f.topic.clone(), f.partition), f.offset))
            .collect();
        let mut pending_rejections = config.rejections.clone();
        let mut last_epoch: Option<Time> = None;
        let mut closed = 0;
        let mut writing: Option<(Cut, Instant)> = None;
        move |frontiers| {
            piece_input.for_each(|_, data| {
                for note in data.drain(..) {
                    runs.insert(note.run);
                    pieces.entry(note.cut).or_default().push(note);
                }
            });
            note_input.for_each_stamp(|stamp, data| {
                let time = *stamp.least().expect("a total order has a least time");
                let entry = notes.entry(time).or_default();
                for batch in data {
                    entry.append(batch);
                }
            });
            if capability.is_none() {
                return;
            }
            while let Ok(result) = results.try_recv() {
                let (cut, started) = writing.take().expect("a manifest was being written");
                match result {
                    Ok(manifest) => {
                        chain = manifest.pieces.clone();
                        unnamed.clear();
                        let seconds = started.elapsed().as_secs_f64();
                        tracing::info!(time = manifest.time, pieces = manifest.pieces.len(), bytes = manifest.bytes(), seconds, "checkpoint written");
                        metrics.update(|f| {
                            f.checkpoints.completed += 1;
                            f.checkpoints.last_time = Some(manifest.time);
                            f.checkpoints.last_wall_ms = Some(manifest.wall_time_ms);
                            f.checkpoints.last_duration_seconds = Some(seconds);
                            f.checkpoints.bytes = manifest.bytes();
                        });
                        if let Some(group) = &mut group {
                            group.commit(
                                manifest
                                    .partitions
                                    .iter()
                                    .map(|p| (p.topic.clone(), p.partition, p.next)),
                                cut == Cut::Final,
                            );
                        }
                        if cut == Cut::Final {
                            capability = None;
                            return;
                        }
                    }
                    Err((error, manifest)) => {
                        tracing::warn!(time = manifest.time, %error, "could not write a checkpoint's manifest; the previous one stays in force");
                        metrics.update(|f| f.checkpoints.failures += 1);
                        // Its pieces are durable: the next manifest names them.
                        let named = chain.len();
                        unnamed = manifest.pieces[named.min(manifest.pieces.len())..].to_vec();
                        if cut == Cut::Final {
                            capability = None;
                            return;
                        }
                    }
                }
            }
            if writing.is_some() {
                return; // one manifest at a time: the next extends it
            }
            let notes_frontier = &frontiers[1];
            // A worker whose frontier jumped past two cuts at once (after a
            // restore, or a stall) takes only the later one: an earlier cut
            // that only some workers took never completes. Once a later cut
            // does, the earlier one's pieces go into its checkpoint (the
            // workers that skipped it wrote those changes in the later cut).
            //
            // A cut at or below the restore epoch (the first one a restored
            // run's workers take can be) is the restored checkpoint again,
            // and earlier runs wrote outputs after it that this run cannot
            // place: it is never a checkpoint of its own either, and its
            // pieces go into the next one.
            while let Some(entry) = pieces.first_entry() {
                let complete = entry.get().len() == peers;
                let restored = matches!(entry.key(), Cut::At(c) if config.restored_at.is_some_and(|e| *c <= e));
                let superseded = !complete
                    && pieces
                        .iter()
                        .skip(1)
                        .any(|(_, notes)| notes.len() == peers);
                if !(superseded || (restored && complete)) {
                    break;
                }
                let notes = pieces.pop_first().expect("an entry").1;
                unnamed.extend(notes.into_iter().filter_map(|note| note.piece.ok().flatten()));
            }
            let Some(entry) = pieces.first_entry() else {
                return;
            };
            let cut = *entry.key();
            let complete = entry.get().len() == peers;
            let passed = match cut {
                Cut::At(c) => !notes_frontier.less_than(&c),
                Cut::Final => notes_frontier.is_empty(),
            };
            if !complete || !passed {
                return;
            }
            let notes_of_cut = entry.remove();
            // The input as the cut reflects it: the notes below it.
            while let Some(entry) = notes.first_entry() {
                if matches!(cut, Cut::At(c) if *entry.key() >= c) {
                    break;
                }
                let (time, batch) = entry.remove_entry();
                for note in batch {
                    match note {
                        Note::Read { topic, partition, next, high_water, floor } => {
                            partitions.insert(
                                (topic.clone(), partition),
                                PartitionState { topic, partition, next, high_water, floor },
                            );
                        }
                        Note::Closed => {
                            closed += 1;
                            last_epoch = Some(last_epoch.map_or(time, |e| e.max(time)));
                        }
                        Note::Written => {}
                    }
                }
            }
            floors = combine_floors(&notes_of_cut, &floors, cut == Cut::Final);
            // A rejection an earlier run wrote, of input still to be read
            // again after this cut, is not written again: the topic is
            // read back from it.
            if let Some((topic, written)) = &mut pending_rejections {
                written.retain(|r| {
                    partitions
                        .get(&(r.source.clone(), r.partition))
                        .is_none_or(|p| r.offset >= p.next)
                });
                for r in written.iter() {
                    let floor = floors.entry((topic.clone(), r.out_partition)).or_insert(r.out_offset);
                    *floor = (*floor).min(r.out_offset);
                }
            }
            let mut written: Vec<PieceInfo> = Vec::new();
            let mut failed = Vec::new();
            for note in notes_of_cut {
                match note.piece {
                    Ok(piece) => written.extend(piece),
                    Err(error) => failed.push(format!("worker {}: {error}", note.worker)),
                }
            }
            written.sort_by(|a, b| a.name.cmp(&b.name));
            if !failed.is_empty() || (cut == Cut::Final && closed != peers && config.origin == Origin::Run) {
                tracing::warn!(?cut, failures = ?failed, "a checkpoint could not be written; the previous one stays in force");
                metrics.update(|f| f.checkpoints.failures += 1);
                unnamed.extend(written);
                if cut == Cut::Final {
                    capability = None;
                }
                return;
            }
            let time = match cut {
                Cut::At(c) => c,
                Cut::Final => last_epoch.map_or_else(
                    || config.base.as_ref().map_or(0, |m| m.time),
                    |e| e + 1,
                ),
            };
            let mut manifest = Manifest::new(time, config.origin, &config.params, peers);
            manifest.inputs = config.inputs.clone();
            manifest.partitions = partitions.values().cloned().collect();
            if config.origin == Origin::Run {
                manifest.outputs = Some(
                    floors
                        .iter()
                        .map(|((topic, partition), &offset)| store::OutputFloor {
                            topic: topic.clone(),
                            partition: *partition,
                            offset,
                        })
                        .collect(),
                );
            }
            manifest.pieces = chain.iter().chain(&unnamed).chain(&written).cloned().collect();
            writing = Some((cut, Instant::now()));
            jobs.send((manifest, runs.clone()))
                .expect("the manifest writer outlives the operator");
        }
    });
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(worker: usize, outputs: &[(i32, i64)]) -> PieceNote {
        PieceNote {
            cut: Cut::At(10),
            worker,
            run: 0,
            piece: Ok(None),
            outputs: outputs
                .iter()
                .map(|&(p, offset)| ("walkins".to_owned(), p, offset))
                .collect(),
        }
    }

    #[test]
    fn a_cut_reads_back_from_the_least_worker_floor_but_never_below_the_last_cut() {
        let notes = [note(0, &[(0, 40), (1, 9)]), note(1, &[(0, 30)])];
        let previous: crate::kafka::Floors = [
            (("walkins".to_owned(), 1), 5),
            (("walkins".to_owned(), 2), 3),
        ]
        .into();
        let floors = combine_floors(&notes, &previous, false);
        let at = |p: i32| floors[&("walkins".to_owned(), p)];
        assert_eq!(at(0), 30, "the least of the workers'");
        assert_eq!(at(1), 5, "worker 1 knows none: the last cut's");
        assert_eq!(at(2), 3, "no worker knows it: the last cut's");
        let floors = combine_floors(&notes, &Default::default(), false);
        assert_eq!(floors[&("walkins".to_owned(), 1)], 0, "from its beginning");
        // The final cut: every record acknowledged, none after it.
        let floors = combine_floors(&notes, &previous, true);
        assert_eq!(floors[&("walkins".to_owned(), 0)], 40);
        assert_eq!(floors[&("walkins".to_owned(), 1)], 9);
    }
}
