//! One worker's handle on the dataflow: typed inputs to feed, a logical
//! clock to advance, and the output collections accumulated as they change.
//!
//! A driver (file backfill, or a test feeding batches) owns one [`Pipeline`]
//! per worker and repeats: [`Pipeline::give`] the records of an epoch,
//! [`Pipeline::promise`] the event-time frontier of its probe partitions,
//! [`Pipeline::advance`], and step the worker. The pipeline decides nothing
//! about which records are accepted; that is [`crate::model::ingest`]'s job.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use differential_dataflow::VecCollection;
use timely::dataflow::operators::Probe as _;
use timely::dataflow::{InputHandleVec, ProbeHandle, StreamVec};
use timely::worker::Worker;

use crate::checkpoint::{self, CheckpointConfig};
use crate::dataflow::held::Held;
use crate::dataflow::note::Note;
use crate::dataflow::operators::windows::Snapshots;
use crate::dataflow::operators::{Watermark, WindowStats};
use crate::dataflow::query::{Asked, Asking, Query, Reply};
use crate::dataflow::state::StateRow;
use crate::dataflow::{self, Inputs, Outputs, Time};
use crate::kafka::upsert::Existing;
use crate::model::ingest::Ingested;
use crate::model::params::Params;
use crate::model::records::{
    BaseCount, DeviceContact, EnrichedWalkIn, EventTime, Login, Present, Probe, Rejected, WalkIn,
    WalkinCount,
};
use crate::observe::metrics::Metrics;

/// Where a [`Pipeline`] keeps its output collections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Accumulated as they change, in [`Collections`]' maps: readable at
    /// every step (a test comparing each frontier), at the cost of a copy
    /// of every output.
    Collections,
    /// Only in the state the dataflow holds anyway, read once complete
    /// through [`Pipeline::take_held`] (a backfill): no copy.
    State,
}

/// The output collections as accumulated so far (with [`Keep::Collections`]),
/// plus rejected records not yet taken by the driver.
#[derive(Debug, Default)]
pub struct Collections {
    /// Walk-ins and their multiplicities.
    pub walkins: HashMap<WalkIn, isize>,
    /// Device contacts and their multiplicities.
    pub device_contacts: HashMap<DeviceContact, isize>,
    /// Enriched walk-ins and their multiplicities.
    pub enriched_walkins: HashMap<EnrichedWalkIn, isize>,
    /// Walk-in counts and their multiplicities.
    pub walkin_counts: HashMap<WalkinCount, isize>,
    /// Present rows and their multiplicities.
    pub present: HashMap<Present, isize>,
    /// Rejected records, in arrival order; drained by the driver.
    pub rejected: Vec<Rejected>,
}

/// The records of a collection, sorted.
///
/// Panics if a record's multiplicity is not 1: that would break the
/// dataflow's guarantee that outputs are sets.
pub fn records<D: Ord + Clone + std::fmt::Debug>(collection: &HashMap<D, isize>) -> Vec<D> {
    let mut records: Vec<D> = collection
        .iter()
        .map(|(record, count)| {
            assert_eq!(
                *count, 1,
                "output records are a set, but {record:?} has multiplicity {count}"
            );
            record.clone()
        })
        .collect();
    records.sort();
    records
}

fn accumulate<'scope, D>(
    collection: VecCollection<'scope, Time, D>,
    collections: &Arc<Mutex<Collections>>,
    field: fn(&mut Collections) -> &mut HashMap<D, isize>,
    probe: &ProbeHandle<Time>,
) where
    D: differential_dataflow::ExchangeData + Hash,
{
    let collections = Arc::clone(collections);
    collection
        .inspect(move |(record, _time, diff)| {
            let mut collections = collections
                .lock()
                .expect("no worker panics holding the lock");
            let map = field(&mut collections);
            let count = map.entry(record.clone()).or_insert(0);
            *count += diff;
            if *count == 0 {
                map.remove(record);
            }
        })
        .probe_with(probe);
}

/// The streams a driver's sinks take besides the outputs.
pub struct Sides<'scope> {
    /// Rejected records.
    pub rejected: StreamVec<'scope, Time, Rejected>,
    /// Notes ([`Pipeline::note`]).
    pub notes: StreamVec<'scope, Time, Note>,
    /// Rows the output topics already hold ([`Pipeline::existing`]).
    pub existing: StreamVec<'scope, Time, Existing>,
}

/// One worker's inputs, logical clock and output probe.
pub struct Pipeline {
    index: usize,
    epoch: Time,
    promised: Option<EventTime>,
    probes: InputHandleVec<Time, Probe>,
    logins: InputHandleVec<Time, Login>,
    base_counts: InputHandleVec<Time, BaseCount>,
    watermarks: InputHandleVec<Time, Watermark>,
    rejected: InputHandleVec<Time, Rejected>,
    notes: InputHandleVec<Time, Note>,
    restored: InputHandleVec<Time, StateRow>,
    existing: InputHandleVec<Time, Existing>,
    queries: InputHandleVec<Time, Asked>,
    /// The queries this worker asked and has not answered yet.
    asking: Asking,
    peers: usize,
    probe: ProbeHandle<Time>,
    /// Done once the final checkpoint is written (a backfill's), if any.
    /// Apart from `probe`: the checkpoint holds its time until the end, and
    /// `lagging` must not wait for that.
    checkpointed: Option<ProbeHandle<Time>>,
    window_stats: WindowStats,
    /// The state holding the outputs, with [`Keep::State`].
    held: Option<Held>,
}

impl Pipeline {
    /// Builds the dataflow on `worker`, keeping its outputs as `keep` says
    /// (with [`Keep::Collections`] in `collections`, which several workers
    /// may share) and its rejected records in `collections`; with
    /// `checkpoint`, writes the final state as a checkpoint there (the probe
    /// is done once it is written).
    pub fn new(
        worker: &mut Worker,
        params: &Params,
        collections: Arc<Mutex<Collections>>,
        keep: Keep,
        checkpoint: Option<Arc<CheckpointConfig>>,
        metrics: Metrics,
    ) -> Self {
        let snapshots = checkpoint.as_ref().map(|c| Snapshots { every: c.every });
        let checkpointed = checkpoint.as_ref().map(|_| ProbeHandle::new());
        let written = checkpointed.clone();
        let mut held = None;
        let mut pipeline = Self::with_sinks(worker, params, snapshots, |outputs, sides, probe| {
            let (rejected, notes) = (sides.rejected, sides.notes);
            if let (Some(config), Some(written)) = (checkpoint, written) {
                let pieces = checkpoint::checkpoint(
                    outputs.state,
                    Arc::clone(&config),
                    metrics.clone(),
                    None,
                );
                checkpoint::coordinate(pieces, notes, config, metrics, None).probe_with(&written);
            }
            if keep == Keep::State {
                // The collections' updates flow on only to the probe.
                outputs.walkins.probe_with(probe);
                outputs.device_contacts.probe_with(probe);
                outputs.enriched_walkins.probe_with(probe);
                outputs.walkin_counts.probe_with(probe);
                outputs.present.probe_with(probe);
                held = Some(outputs.held);
            } else {
                accumulate(outputs.walkins, &collections, |c| &mut c.walkins, probe);
                accumulate(
                    outputs.device_contacts,
                    &collections,
                    |c| &mut c.device_contacts,
                    probe,
                );
                accumulate(
                    outputs.enriched_walkins,
                    &collections,
                    |c| &mut c.enriched_walkins,
                    probe,
                );
                accumulate(
                    outputs.walkin_counts,
                    &collections,
                    |c| &mut c.walkin_counts,
                    probe,
                );
                accumulate(outputs.present, &collections, |c| &mut c.present, probe);
            }
            let sink = Arc::clone(&collections);
            use timely::dataflow::operators::Inspect;
            rejected
                .inspect(move |record: &Rejected| {
                    sink.lock()
                        .expect("no worker panics holding the lock")
                        .rejected
                        .push(record.clone())
                })
                .probe_with(probe);
        });
        pipeline.checkpointed = checkpointed;
        pipeline.held = held;
        pipeline
    }

    /// Builds the dataflow on `worker` (the window operator snapshotting its
    /// state at `snapshots`) with the sinks `attach` connects to its
    /// outputs, rejected records and notes ([`Pipeline::note`]); `attach`
    /// must make the probe it is given cover every sink, so that the probe
    /// passes a time only once its output is written.
    pub fn with_sinks<F>(
        worker: &mut Worker,
        params: &Params,
        snapshots: Option<Snapshots>,
        attach: F,
    ) -> Self
    where
        F: FnOnce(Outputs<'_>, Sides<'_>, &ProbeHandle<Time>),
    {
        let mut probes = InputHandleVec::new();
        let mut logins = InputHandleVec::new();
        let mut base_counts = InputHandleVec::new();
        let mut watermarks = InputHandleVec::new();
        let mut rejected = InputHandleVec::new();
        let mut notes = InputHandleVec::new();
        let mut restored = InputHandleVec::new();
        let mut existing = InputHandleVec::new();
        let mut queries = InputHandleVec::new();
        let asking = Asking::default();
        let probe = ProbeHandle::new();
        let window_stats = WindowStats::default();
        let (index, peers) = (worker.index(), worker.peers());
        worker.dataflow::<Time, _, _>(|scope| {
            let outputs = dataflow::build(
                Inputs {
                    probes: probes.to_stream(scope),
                    logins: logins.to_stream(scope),
                    base_counts: base_counts.to_stream(scope),
                    watermarks: watermarks.to_stream(scope),
                    restored: restored.to_stream(scope),
                    queries: queries.to_stream(scope),
                    asking: asking.clone(),
                },
                params,
                snapshots,
                window_stats.clone(),
            );
            let sides = Sides {
                rejected: rejected.to_stream(scope),
                notes: notes.to_stream(scope),
                existing: existing.to_stream(scope),
            };
            attach(outputs, sides, &probe);
        });
        Pipeline {
            index,
            epoch: 0,
            promised: None,
            probes,
            logins,
            base_counts,
            watermarks,
            rejected,
            notes,
            restored,
            existing,
            queries,
            asking,
            peers,
            probe,
            checkpointed: None,
            window_stats,
            held: None,
        }
    }

    /// Sends a row an output topic already holds, at the current epoch (the
    /// restore epoch).
    pub fn existing(&mut self, row: Existing) {
        self.existing.send(row);
    }

    /// Sends a restored checkpoint's row at the current epoch.
    pub fn restore(&mut self, row: StateRow) {
        self.restored.send(row);
    }

    /// Sends the restored rows buffered so far on to the dataflow (the next
    /// step moves them into its operators).
    pub fn flush(&mut self) {
        self.restored.flush();
    }

    /// Asks `query` at the current epoch: `reply` gets the answer (see
    /// [`crate::dataflow::query`] for the frontier it is exactly as of).
    pub fn ask(&mut self, query: Query, reply: Reply) {
        for asked in self.asking.ask(query, reply, self.index, self.peers) {
            self.queries.send(asked);
        }
    }

    /// Sends a note (a fact about the input) at the current epoch.
    pub fn note(&mut self, note: Note) {
        self.notes.send(note);
    }

    /// Sends one ingested record into the dataflow at the current epoch.
    pub fn give(&mut self, ingested: Ingested) {
        match ingested {
            Ingested::Probe(probe) => self.probes.send(probe),
            Ingested::Login(login) => self.logins.send(login),
            Ingested::BaseCount(base) => self.base_counts.send(base),
            Ingested::Rejected(rejected) => self.rejected.send(rejected),
            Ingested::Blank => {}
        }
    }

    /// Promises that every probe this worker sends from the next epoch on has
    /// `ts >= frontier`. Only raises are sent; lower promises are ignored.
    pub fn promise(&mut self, frontier: EventTime) {
        if self.promised.is_none_or(|promised| frontier > promised) {
            self.promised = Some(frontier);
            self.watermarks.send(Watermark {
                source: self.index,
                frontier,
            });
            self.notes.send(Note::Promised {
                worker: self.index,
                frontier,
            });
        }
    }

    /// The largest event-time promise sent so far.
    pub fn promised(&self) -> Option<EventTime> {
        self.promised
    }

    /// Ends the current epoch.
    pub fn advance(&mut self) {
        self.advance_to(self.epoch + 1);
    }

    /// Ends the current epoch and starts `epoch` (later than the current one;
    /// a streaming driver uses wall-clock milliseconds).
    pub fn advance_to(&mut self, epoch: Time) {
        assert!(epoch > self.epoch, "epochs only advance");
        self.epoch = epoch;
        self.probes.advance_to(self.epoch);
        self.logins.advance_to(self.epoch);
        self.base_counts.advance_to(self.epoch);
        self.watermarks.advance_to(self.epoch);
        self.rejected.advance_to(self.epoch);
        self.notes.advance_to(self.epoch);
        self.restored.advance_to(self.epoch);
        self.existing.advance_to(self.epoch);
        self.queries.advance_to(self.epoch);
    }

    /// The current epoch: records given now carry it.
    pub fn epoch(&self) -> Time {
        self.epoch
    }

    /// Whether the outputs (of every worker) have not yet passed `epoch - by`.
    pub fn lagging(&self, by: Time) -> bool {
        self.probe.less_than(&self.epoch.saturating_sub(by))
    }

    /// Whether every epoch before the current one is complete in the outputs.
    pub fn caught_up(&self) -> bool {
        !self.probe.less_than(&self.epoch)
    }

    /// The probe that passes a time once every sink has written it.
    pub fn probe(&self) -> &ProbeHandle<Time> {
        &self.probe
    }

    /// The window operator's state size on this worker.
    pub fn window_stats(&self) -> &WindowStats {
        &self.window_stats
    }

    /// The state holding the outputs (with [`Keep::State`]): read it once
    /// [`Closed::done`].
    pub fn take_held(&mut self) -> Option<Held> {
        self.held.take()
    }

    /// Closes the inputs; the returned probe is done once all output is complete.
    pub fn close(self) -> Closed {
        Closed {
            probes: std::iter::once(self.probe)
                .chain(self.checkpointed)
                .collect(),
        }
    }
}

/// A closed pipeline: done once every output (and the final checkpoint, if
/// any) is written.
pub struct Closed {
    probes: Vec<ProbeHandle<Time>>,
}

impl Closed {
    /// Whether everything is written.
    pub fn done(&self) -> bool {
        self.probes.iter().all(ProbeHandle::done)
    }
}
