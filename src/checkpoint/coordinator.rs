//! The [`coordinate`] operator, on worker 0: gathers every worker's piece
//! notes and the input notes, and writes a cut's manifest (on a thread of
//! its own) once the cut is complete; the manifest in force then names
//! the pieces, and older files are pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::frontier::MutableAntichain;
use timely::scheduling::SyncActivator;

use crate::dataflow::note::Note;
use crate::dataflow::operators::windows::Cut;
use crate::dataflow::Time;
use crate::kafka::offsets::GroupOffsets;
use crate::kafka::upsert::WrittenRejection;
use crate::kafka::Floors;
use crate::observe::metrics::Metrics;

use super::config::CheckpointConfig;
use super::store::{self, Manifest, Origin, PartitionState, PieceInfo};
use super::worker::PieceNote;

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
    group: Option<GroupOffsets>,
) -> StreamVec<'scope, Time, ()> {
    let scope = pieces.scope();
    let peers = scope.peers();
    let is_coordinator = scope.index() == 0;
    let mut builder = OperatorBuilder::new("CheckpointCoordinator".to_owned(), scope);
    let info = builder.operator_info();
    let mut piece_input = builder.new_input(pieces, Exchange::new(|_: &PieceNote| 0));
    let mut note_input = builder.new_input(notes, Exchange::new(|_: &Note| 0));
    let (_output, done) = builder.new_output::<Vec<()>>();
    let activator = scope.worker().sync_activator_for(info.address.to_vec());
    builder.build(move |mut capabilities| {
        let capability = capabilities.pop().filter(|_| is_coordinator);
        let mut coordinator =
            Coordinator::new(capability, config, peers, activator, metrics, group);
        move |frontiers| {
            piece_input.for_each(|_, data| coordinator.receive_pieces(data));
            note_input.for_each_stamp(|stamp, data| {
                let time = *stamp.least().expect("a total order has a least time");
                coordinator.receive_notes(time, data);
            });
            coordinator.advance(&frontiers[1]);
        }
    });
    done
}

/// The coordinator's state between activations: the notes received and
/// not yet folded into a manifest, what the last manifest in force holds,
/// and the manifest being written.
struct Coordinator {
    config: Arc<CheckpointConfig>,
    /// The number of workers: the pieces of a complete cut.
    peers: usize,
    metrics: Metrics,
    /// The consumer group a written manifest's input offsets are committed to.
    group: Option<GroupOffsets>,
    /// Held until the final manifest is written (or the run failed); only
    /// on worker 0.
    capability: Option<Capability<Time>>,
    /// To the manifest writer thread.
    jobs: mpsc::Sender<ManifestJob>,
    /// From the manifest writer thread.
    results: mpsc::Receiver<ManifestOutcome>,
    /// Every worker's run id, from its notes.
    runs: BTreeSet<u64>,
    /// The piece notes received, by cut.
    pieces: BTreeMap<Cut, Vec<PieceNote>>,
    /// The input notes received, by time.
    notes: BTreeMap<Time, Vec<Note>>,
    /// The input partitions as of the notes read so far.
    partitions: BTreeMap<(String, i32), PartitionState>,
    /// The pieces the next manifest extends: the last one in force.
    chain: Vec<PieceInfo>,
    /// Pieces written since, of cuts whose manifest was not written.
    unnamed: Vec<PieceInfo>,
    /// Where the last manifest's outputs are read back from: still a
    /// bound for every later cut.
    floors: Floors,
    /// The rejections an earlier run wrote that may still be read back.
    pending_rejections: Option<(String, Vec<WrittenRejection>)>,
    /// The greatest epoch a worker closed its input at.
    last_epoch: Option<Time>,
    /// How many workers have closed their input.
    closed: usize,
    /// The cut whose manifest is being written, and since when.
    writing: Option<(Cut, Instant)>,
}

impl Coordinator {
    /// The coordinator's state before its first activation, from the
    /// restored checkpoint (if any); starts the manifest writer thread.
    fn new(
        capability: Option<Capability<Time>>,
        config: Arc<CheckpointConfig>,
        peers: usize,
        activator: SyncActivator,
        metrics: Metrics,
        group: Option<GroupOffsets>,
    ) -> Coordinator {
        let committer = store::Committer::new(config.store.clone(), config.generation);
        let (jobs, results) = manifest_writer(committer, config.kept, activator);
        let runs: BTreeSet<u64> = [config.run].into();
        let partitions = config
            .base
            .iter()
            .flat_map(|m| m.partitions.iter().cloned())
            .filter(|_| config.origin == Origin::Run)
            .map(|p| ((p.topic.clone(), p.partition), p))
            .collect();
        let chain = config.base.iter().flat_map(|m| m.pieces.clone()).collect();
        let floors = config
            .base
            .iter()
            .filter(|m| m.origin == Origin::Run)
            .flat_map(|m| m.outputs.iter().flatten())
            .map(|f| ((f.topic.clone(), f.partition), f.offset))
            .collect();
        let pending_rejections = config.rejections.clone();
        Coordinator {
            config,
            peers,
            metrics,
            group,
            capability,
            jobs,
            results,
            runs,
            pieces: BTreeMap::new(),
            notes: BTreeMap::new(),
            partitions,
            chain,
            unnamed: Vec::new(),
            floors,
            pending_rejections,
            last_epoch: None,
            closed: 0,
            writing: None,
        }
    }

    /// Keeps the piece notes received, by cut, and their workers' run ids.
    fn receive_pieces(&mut self, data: &mut Vec<PieceNote>) {
        for note in data.drain(..) {
            self.runs.insert(note.run);
            self.pieces.entry(note.cut).or_default().push(note);
        }
    }

    /// Keeps the input notes received at `time`.
    fn receive_notes<'a>(&mut self, time: Time, data: impl Iterator<Item = &'a mut Vec<Note>>) {
        let entry = self.notes.entry(time).or_default();
        for batch in data {
            entry.append(batch);
        }
    }

    /// One activation's work after the inputs are read: takes the written
    /// manifest back, and unless one is still being written, decides
    /// whether the earliest cut is complete (`notes_frontier`: the input
    /// notes' frontier), and if so writes its manifest or counts it as a
    /// failure. Nothing once the capability is dropped (or off worker 0).
    fn advance(&mut self, notes_frontier: &MutableAntichain<Time>) {
        if self.capability.is_none() {
            return;
        }
        self.receive_manifests();
        if self.capability.is_none() {
            return; // the final manifest is written (or failed)
        }
        if self.writing.is_some() {
            return; // one manifest at a time: the next extends it
        }
        self.fold_skipped_cuts();
        let Some((cut, notes_of_cut)) = self.complete_cut(notes_frontier) else {
            return;
        };
        self.read_notes_below(cut);
        self.floors = combine_floors(&notes_of_cut, &self.floors, cut == Cut::Final);
        self.keep_rejections_read_back();
        let (written, failed) = split_pieces(notes_of_cut);
        let peers = self.peers;
        if !failed.is_empty()
            || (cut == Cut::Final && self.closed != peers && self.config.origin == Origin::Run)
        {
            self.fail(cut, failed, written);
            return;
        }
        let manifest = self.manifest(cut, written);
        self.writing = Some((cut, Instant::now()));
        self.jobs
            .send((manifest, self.runs.clone()))
            .expect("the manifest writer outlives the operator");
    }

    /// Takes back what the manifest writer did with the manifest being
    /// written: a manifest written is in force (its pieces are the chain
    /// the next one extends), counted, and its input offsets committed to
    /// the group; one that could not be is a failure, and the previous one
    /// stays in force. Drops the capability after the final cut's.
    fn receive_manifests(&mut self) {
        while let Ok(result) = self.results.try_recv() {
            let (cut, started) = self.writing.take().expect("a manifest was being written");
            match result {
                Ok(manifest) => self.written(cut, started, manifest),
                Err((error @ store::StoreError::Superseded { .. }, _)) => {
                    // A newer run took the store: nothing more is written,
                    // and the service stops with the error's one line.
                    tracing::debug!(%error, "superseded");
                    let _ = self.config.superseded.set(error.to_string());
                    self.metrics.update(|f| f.checkpoints.failures += 1);
                    self.capability = None;
                    return;
                }
                Err((error, manifest)) => {
                    tracing::warn!(time = manifest.time, %error, "could not write a checkpoint's manifest; the previous one stays in force");
                    self.metrics.update(|f| f.checkpoints.failures += 1);
                    // Its pieces are durable: the next manifest names them.
                    let named = self.chain.len();
                    self.unnamed = manifest.pieces[named.min(manifest.pieces.len())..].to_vec();
                }
            }
            if cut == Cut::Final {
                self.capability = None;
                return;
            }
        }
    }

    /// A manifest of `cut` is written (started at `started`): it is in
    /// force; logs it, counts it, and commits its input offsets.
    fn written(&mut self, cut: Cut, started: Instant, manifest: Manifest) {
        self.chain = manifest.pieces.clone();
        self.unnamed.clear();
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            time = manifest.time,
            pieces = manifest.pieces.len(),
            bytes = manifest.bytes(),
            seconds,
            "checkpoint written"
        );
        self.metrics.update(|f| {
            f.checkpoints.completed += 1;
            f.checkpoints.last_time = Some(manifest.time);
            f.checkpoints.last_wall_ms = Some(manifest.wall_time_ms);
            f.checkpoints.last_duration_seconds = Some(seconds);
            f.checkpoints.bytes = manifest.bytes();
        });
        if let Some(group) = &mut self.group {
            group.commit(
                manifest
                    .partitions
                    .iter()
                    .map(|p| (p.topic.clone(), p.partition, p.next)),
                cut == Cut::Final,
            );
        }
    }

    /// Decides which of the earliest cuts are never checkpoints of their
    /// own, and moves their pieces into the next one's (as unnamed).
    ///
    /// A worker whose frontier jumped past two cuts at once (after a
    /// restore, or a stall) takes only the later one: an earlier cut that
    /// only some workers took never completes. Once a later cut does, the
    /// earlier one's pieces go into its checkpoint (the workers that
    /// skipped it wrote those changes in the later cut).
    ///
    /// A cut at or below the restore epoch (the first one a restored run's
    /// workers take can be) is the restored checkpoint again, and earlier
    /// runs wrote outputs after it that this run cannot place: it is never
    /// a checkpoint of its own either, and its pieces go into the next one.
    fn fold_skipped_cuts(&mut self) {
        let peers = self.peers;
        while let Some(entry) = self.pieces.first_entry() {
            let complete = entry.get().len() == peers;
            let restored = matches!(entry.key(), Cut::At(c) if self.config.restored_at.is_some_and(|e| *c <= e));
            let superseded = !complete
                && self
                    .pieces
                    .iter()
                    .skip(1)
                    .any(|(_, notes)| notes.len() == peers);
            if !(superseded || (restored && complete)) {
                break;
            }
            let notes = self.pieces.pop_first().expect("an entry").1;
            self.unnamed.extend(
                notes
                    .into_iter()
                    .filter_map(|note| note.piece.ok().flatten()),
            );
        }
    }

    /// Decides whether the earliest cut is complete: every worker's piece
    /// is noted, and the input notes' frontier has passed it (the final
    /// cut: is empty). If so, takes its piece notes.
    fn complete_cut(
        &mut self,
        notes_frontier: &MutableAntichain<Time>,
    ) -> Option<(Cut, Vec<PieceNote>)> {
        let entry = self.pieces.first_entry()?;
        let cut = *entry.key();
        let complete = entry.get().len() == self.peers;
        let passed = match cut {
            Cut::At(c) => !notes_frontier.less_than(&c),
            Cut::Final => notes_frontier.is_empty(),
        };
        if !complete || !passed {
            return None;
        }
        Some((cut, entry.remove()))
    }

    /// Reads the input as `cut` reflects it, the notes below it: each
    /// partition's offsets and lateness state, and the workers that closed
    /// their input (and the greatest epoch they did at).
    fn read_notes_below(&mut self, cut: Cut) {
        while let Some(entry) = self.notes.first_entry() {
            if matches!(cut, Cut::At(c) if *entry.key() >= c) {
                break;
            }
            let (time, batch) = entry.remove_entry();
            for note in batch {
                match note {
                    Note::Read {
                        topic,
                        partition,
                        next,
                        high_water,
                        floor,
                    } => {
                        self.partitions.insert(
                            (topic.clone(), partition),
                            PartitionState {
                                topic,
                                partition,
                                next,
                                high_water,
                                floor,
                            },
                        );
                    }
                    Note::Closed => {
                        self.closed += 1;
                        self.last_epoch = Some(self.last_epoch.map_or(time, |e| e.max(time)));
                    }
                    Note::Written | Note::Promised { .. } => {}
                }
            }
        }
    }

    /// Decides which rejections an earlier run wrote are not written
    /// again: those of input still to be read again after this cut (the
    /// rest are dropped). Their topic is read back from them: its floor is
    /// lowered to the least of their offsets.
    fn keep_rejections_read_back(&mut self) {
        let Some((topic, written)) = &mut self.pending_rejections else {
            return;
        };
        written.retain(|r| {
            self.partitions
                .get(&(r.source.clone(), r.partition))
                .is_none_or(|p| r.offset >= p.next)
        });
        for r in written.iter() {
            let floor = self
                .floors
                .entry((topic.clone(), r.out_partition))
                .or_insert(r.out_offset);
            *floor = (*floor).min(r.out_offset);
        }
    }

    /// `cut` is not a checkpoint (a worker's piece failed, or a clean stop
    /// did not see every worker close its input): logs and counts it; its
    /// pieces written go into the next one. Drops the capability after
    /// the final cut.
    fn fail(&mut self, cut: Cut, failed: Vec<String>, written: Vec<PieceInfo>) {
        tracing::warn!(?cut, failures = ?failed, "a checkpoint could not be written; the previous one stays in force");
        self.metrics.update(|f| f.checkpoints.failures += 1);
        self.unnamed.extend(written);
        if cut == Cut::Final {
            self.capability = None;
        }
    }

    /// The manifest of `cut`: at the cut (the final one: the least time
    /// above every worker's last epoch, or the restored checkpoint's time
    /// when none closed), with the input partitions, (in `run`) the
    /// output floors, and the pieces of the chain, the unnamed ones and
    /// the cut's `written` ones.
    fn manifest(&self, cut: Cut, written: Vec<PieceInfo>) -> Manifest {
        let config = &self.config;
        let time = match cut {
            Cut::At(c) => c,
            Cut::Final => self
                .last_epoch
                .map_or_else(|| config.base.as_ref().map_or(0, |m| m.time), |e| e + 1),
        };
        let mut manifest = Manifest::new(time, config.origin, &config.params, self.peers);
        manifest.inputs = config.inputs.clone();
        manifest.partitions = self.partitions.values().cloned().collect();
        if config.origin == Origin::Run {
            manifest.outputs = Some(
                self.floors
                    .iter()
                    .map(|((topic, partition), &offset)| store::OutputFloor {
                        topic: topic.clone(),
                        partition: *partition,
                        offset,
                    })
                    .collect(),
            );
        }
        manifest.pieces = self
            .chain
            .iter()
            .chain(&self.unnamed)
            .chain(&written)
            .cloned()
            .collect();
        manifest
    }
}

/// A cut's pieces written, sorted by name, and its workers' failures.
fn split_pieces(notes_of_cut: Vec<PieceNote>) -> (Vec<PieceInfo>, Vec<String>) {
    let mut written: Vec<PieceInfo> = Vec::new();
    let mut failed = Vec::new();
    for note in notes_of_cut {
        match note.piece {
            Ok(piece) => written.extend(piece),
            Err(error) => failed.push(format!("worker {}: {error}", note.worker)),
        }
    }
    written.sort_by(|a, b| a.name.cmp(&b.name));
    (written, failed)
}

/// Where a cut's outputs are read back from: per output partition the
/// least of every worker's floor (a worker that knows none for it: its
/// beginning), but never below the previous cut's (`previous`), which
/// bounds every later cut too. At the final cut every record of the run
/// is acknowledged and none comes after it: the greatest floor, the
/// partition's end.
fn combine_floors(notes: &[PieceNote], previous: &Floors, last: bool) -> Floors {
    let workers: Vec<BTreeMap<(&str, i32), i64>> = notes
        .iter()
        .map(|note| {
            note.outputs
                .iter()
                .map(|(topic, partition, offset)| ((topic.as_str(), *partition), *offset))
                .collect()
        })
        .collect();
    let mut combined: Floors = BTreeMap::new();
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

/// A manifest job for the coordinator's thread: write it (merging its
/// pieces first when they span many cuts), then prune the folder, keeping
/// what the runs of the live cluster's workers may be writing.
type ManifestJob = (Manifest, BTreeSet<u64>);
type ManifestOutcome = Result<Manifest, (store::StoreError, Manifest)>;

fn manifest_writer(
    mut committer: store::Committer,
    kept: usize,
    activator: SyncActivator,
) -> (mpsc::Sender<ManifestJob>, mpsc::Receiver<ManifestOutcome>) {
    let (jobs, queue) = mpsc::channel::<ManifestJob>();
    let (done, results) = mpsc::channel::<ManifestOutcome>();
    std::thread::Builder::new()
        .name("checkpoint-manifest".into())
        .spawn(move || {
            for (manifest, runs) in queue {
                let result = write_and_tidy(&mut committer, &runs, kept, manifest.clone())
                    .map_err(|e| (e, manifest));
                if done.send(result).is_err() {
                    break;
                }
                let _ = activator.activate();
            }
        })
        .expect("a thread can be started");
    (jobs, results)
}

/// Commits `manifest`; if its pieces are due to be merged
/// ([`store::wants_merge`]), merges them into one and commits the merged
/// manifest after it; prunes. Returns the manifest in force.
fn write_and_tidy(
    committer: &mut store::Committer,
    runs: &BTreeSet<u64>,
    kept: usize,
    manifest: Manifest,
) -> Result<Manifest, store::StoreError> {
    let manifest = committer.commit(manifest)?;
    let manifest = if store::wants_merge(&manifest) {
        match store::merge(committer.store(), &manifest, committer.generation()) {
            Ok(merged) => committer.commit(merged)?,
            Err(error) => {
                tracing::warn!(%error, "could not merge checkpoint pieces; keeping them as they are");
                manifest
            }
        }
    } else {
        manifest
    };
    match committer.prune(runs, kept) {
        Err(error @ store::StoreError::Superseded { .. }) => return Err(error),
        Err(error) => tracing::warn!(%error, "could not delete old checkpoint files"),
        Ok(_) => {}
    }
    Ok(manifest)
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
        let previous: Floors = [
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
