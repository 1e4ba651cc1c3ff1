//! Session windows: timestamps per key (accepted probes per (business, device))
//! to the walk-ins of docs/contract.md, section 2, as a differential collection.
//!
//! For each key, the distinct timestamps are split into *visits* wherever two
//! neighbours differ by more than `session_gap`; a visit with at least
//! `min_probes` timestamps whose last is at least `min_dwell` after its first
//! is a [`Window`] `{start, detected_at}`, where `detected_at` is the
//! timestamp at which the visit first qualified.
//!
//! # Notes
//!
//! Logical times must be totally ordered (`u64`); the operator handles a
//! logical time once both input frontiers have passed it, in time order, and
//! emits at that same time. A window is emitted at the logical time of the
//! probe that made its visit qualify — the lateness horizon never delays it.
//! A probe that arrives out of order but is not late (it lands inside, before
//! or between visits) retracts the windows it changes and inserts their
//! corrections at its logical time. Duplicate timestamps count once.
//!
//! Event-time progress comes from the second input, a broadcast stream of
//! [`Watermark`]s: worker `source` promises that every timestamp it sends at
//! a logical time after the watermark's is at least `frontier`. Sources start
//! at 0 (no promise) and only their largest watermark counts; the operator's
//! event-time frontier `F` is the least over all workers.
//!
//! # State
//!
//! Per key: a summary of the last visit below `F` (first, last, count,
//! detection; O(1)) and the distinct timestamps at or above `F`. A visit
//! whose last timestamp is more than `session_gap` below `F` can no longer
//! change, so it is dropped, and a key with nothing left is removed. The state
//! is therefore O(keys with an open visit + timestamps within the lateness
//! window), plus the input not yet passed by the frontier — never the
//! number of probes ever read. A heap of wake-up times finds the keys to fold
//! when `F` advances without visiting the others. [`WindowStats`] reports the
//! current and peak sizes.
//!
//! # Contract
//!
//! Timestamps at or above `F` only (`assert!`ed: a source that breaks its
//! watermark promise would corrupt visits silently otherwise). Within a key,
//! the emitted windows accumulate to exactly the windows of its visits; each
//! output record has multiplicity 0 or 1 (`debug_assert!`ed).
//!
//! # Example
//!
//! ```
//! use presence::dataflow::operators::windows::{Window, WindowConfig, Windows};
//!
//! let config = WindowConfig { session_gap: 10, min_dwell: 5, min_probes: 3 };
//! let mut windows = Windows::new(config);
//! let mut out = Vec::new();
//! windows.apply(vec![("shop-phone", 0), ("shop-phone", 3)], |k, w, d| out.push((*k, w, d)));
//! assert!(out.is_empty());
//! windows.apply(vec![("shop-phone", 6)], |k, w, d| out.push((*k, w, d)));
//! assert_eq!(out, vec![("shop-phone", Window { start: 0, detected_at: 6 }, 1)]);
//! windows.advance(100); // every visit ended long ago: the state is empty
//! assert_eq!(windows.stats().keys, 0);
//! ```

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::hash::Hash;
use std::rc::Rc;

use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;
use timely::progress::frontier::MutableAntichain;

use super::stash::{next_complete, Stash};
use crate::model::records::EventTime;

/// The parameters of a visit (docs/contract.md, section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// Neighbours more than this apart split a visit.
    pub session_gap: u64,
    /// A walk-in's last timestamp is at least this after its first.
    pub min_dwell: u64,
    /// A walk-in has at least this many distinct timestamps.
    pub min_probes: u64,
}

/// A qualified visit: what becomes a walk-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// The visit's first timestamp.
    pub start: EventTime,
    /// The timestamp at which the visit first qualified.
    pub detected_at: EventTime,
}

/// A key's newest visit when it is a walk-in still open at the event-time
/// frontier: who is in the store now (docs/contract.md, "Who is in the
/// store now").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Open {
    /// The visit's first timestamp.
    pub since: EventTime,
    /// Its last timestamp so far.
    pub last_seen: EventTime,
}

/// An event-time promise from one worker's sources (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Watermark {
    /// The index of the worker that reads the partitions.
    pub source: usize,
    /// Every timestamp it sends later is at least this.
    pub frontier: EventTime,
}

/// The size of a [`Windows`] state: its memory bound, observable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Keys with an open visit or pending timestamps.
    pub keys: usize,
    /// Timestamps held individually (at or above the event-time frontier).
    pub timestamps: usize,
    /// The largest `keys` seen.
    pub peak_keys: usize,
    /// The largest `timestamps` seen.
    pub peak_timestamps: usize,
}

/// A shared view of one worker's window state size (for metrics and tests).
#[derive(Clone, Debug, Default)]
pub struct WindowStats(Rc<Cell<StateSize>>);

impl WindowStats {
    /// The latest reported size.
    pub fn get(&self) -> StateSize {
        self.0.get()
    }
}

/// The summary of a visit's timestamps, in the order they were folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// The visit's first timestamp.
    pub first: EventTime,
    /// Its last timestamp so far.
    pub last: EventTime,
    /// How many distinct timestamps it has.
    pub probes: u64,
    /// The timestamp at which it qualified, if it has.
    pub detected_at: Option<EventTime>,
}

/// One key's state as it is checkpointed and restored: the folded last
/// visit below the event-time frontier, and the distinct timestamps above it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySnapshot {
    /// The last visit below the frontier, if still open.
    pub head: Option<Visit>,
    /// Distinct timestamps, sorted, all greater than `head.last`.
    pub tail: Vec<EventTime>,
}

/// A consistent cut of state: at a logical time (every time below it is
/// reflected), or at the end of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cut {
    /// Every logical time below this one.
    At(u64),
    /// All of the input.
    Final,
}

/// The changes of one worker's window state since its previous snapshot:
/// each changed key's state, or `None` for a key that has none any more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSnapshot<K> {
    /// What the snapshot reflects.
    pub cut: Cut,
    /// The changed keys.
    pub changes: Vec<(K, Option<KeySnapshot>)>,
}

impl Visit {
    fn start(ts: EventTime, config: &WindowConfig) -> Visit {
        let mut visit = Visit {
            first: ts,
            last: ts,
            probes: 0,
            detected_at: None,
        };
        visit.push(ts, config);
        visit
    }

    /// Appends `ts`, which is greater than `last` and within the gap.
    fn push(&mut self, ts: EventTime, config: &WindowConfig) {
        self.last = ts;
        self.probes += 1;
        if self.detected_at.is_none()
            && self.probes >= config.min_probes
            && ts - self.first >= config.min_dwell
        {
            self.detected_at = Some(ts);
        }
    }

    /// The visit as an open walk-in, if it is a walk-in.
    fn open(&self) -> Option<Open> {
        self.detected_at.map(|_| Open {
            since: self.first,
            last_seen: self.last,
        })
    }

    fn window(&self) -> Option<Window> {
        self.detected_at.map(|detected_at| Window {
            start: self.first,
            detected_at,
        })
    }
}

/// One key's state: a folded head visit and the timestamps above it.
#[derive(Debug, Default)]
struct KeyState {
    /// The last visit of the timestamps below the frontier, if still open.
    head: Option<Visit>,
    /// Distinct timestamps, sorted, all greater than `head.last`.
    tail: Vec<EventTime>,
    /// The frontier value this key is queued to wake at, if any.
    scheduled: Option<EventTime>,
    /// The last batch that touched this key.
    touched: u64,
}

impl KeyState {
    /// Appends the windows of this key's visits to `out`, in start order,
    /// and returns its open walk-in: the newest visit, if it is a walk-in.
    /// Open at the frontier whenever the key has state: a visit that closed
    /// below it has been dropped (see `fold`), so that every later
    /// timestamp would start a new visit.
    fn windows(&self, config: &WindowConfig, out: &mut Vec<Window>) -> Option<Open> {
        let mut current = self.head;
        for &ts in &self.tail {
            match &mut current {
                Some(visit) if ts - visit.last <= config.session_gap => visit.push(ts, config),
                _ => {
                    out.extend(current.and_then(|visit| visit.window()));
                    current = Some(Visit::start(ts, config));
                }
            }
        }
        out.extend(current.and_then(|visit| visit.window()));
        current.and_then(|visit| visit.open())
    }

    /// Folds the timestamps below `frontier` into the head, dropping visits
    /// that can no longer change; returns the head visit it dropped, if any.
    fn fold(&mut self, frontier: EventTime, config: &WindowConfig) -> Option<Visit> {
        let below = self.tail.partition_point(|&ts| ts < frontier);
        for ts in self.tail.drain(..below) {
            match &mut self.head {
                Some(visit) if ts - visit.last <= config.session_gap => visit.push(ts, config),
                head => *head = Some(Visit::start(ts, config)),
            }
        }
        // Every later timestamp is >= frontier > last + gap: nothing can join.
        if self
            .head
            .is_some_and(|visit| visit.last.saturating_add(config.session_gap) < frontier)
        {
            return self.head.take();
        }
        None
    }

    /// The frontier value past which `fold` has work to do.
    fn wake_at(&self, config: &WindowConfig) -> Option<EventTime> {
        match (self.tail.first(), &self.head) {
            (Some(&ts), _) => Some(ts),
            (None, Some(visit)) => Some(visit.last.saturating_add(config.session_gap)),
            (None, None) => None,
        }
    }
}

/// The state of the session-window operator on one worker, usable on its own.
#[derive(Debug)]
pub struct Windows<K: Hash + Eq> {
    config: WindowConfig,
    keys: HashMap<K, KeyState, foldhash::fast::RandomState>,
    wakeups: BinaryHeap<Reverse<(EventTime, K)>>,
    frontier: EventTime,
    size: StateSize,
    /// Batches applied so far (identifies the current batch).
    batches: u64,
    /// Keys whose state changed since the last [`Windows::take_changes`],
    /// when changes are tracked (for checkpoints).
    changed: Option<HashSet<K, foldhash::fast::RandomState>>,
}

impl<K: Ord + Hash + Clone> Windows<K> {
    /// Empty state.
    pub fn new(config: WindowConfig) -> Self {
        Windows {
            config,
            keys: HashMap::default(),
            wakeups: BinaryHeap::new(),
            frontier: 0,
            size: StateSize::default(),
            batches: 0,
            changed: None,
        }
    }

    /// From now on, remembers which keys change, for [`Windows::take_changes`].
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::default);
    }

    /// The state of every key that changed since the last call (`None`:
    /// the key has no state any more), in key order.
    pub fn take_changes(&mut self) -> Vec<(K, Option<KeySnapshot>)> {
        let Some(changed) = &mut self.changed else {
            return Vec::new();
        };
        let mut changes: Vec<_> = changed
            .drain()
            .map(|key| {
                let snapshot = self.keys.get(&key).map(|state| KeySnapshot {
                    head: state.head,
                    tail: state.tail.clone(),
                });
                (key, snapshot)
            })
            .collect();
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes
    }

    /// Loads a key's checkpointed state (before any timestamp of it is
    /// applied): its windows count as already emitted. Returns its open
    /// walk-in, if any, which the caller emits (it is not restored elsewhere).
    pub fn restore(&mut self, key: K, snapshot: KeySnapshot) -> Option<Open> {
        debug_assert!(!self.keys.contains_key(&key), "each key is restored once");
        self.size.timestamps += snapshot.tail.len();
        let mut state = KeyState {
            head: snapshot.head,
            tail: snapshot.tail,
            scheduled: None,
            touched: 0,
        };
        Self::schedule(&mut self.wakeups, &self.config, &key, &mut state);
        let open = state.windows(&self.config, &mut Vec::new());
        self.keys.insert(key, state);
        self.note_size();
        open
    }

    /// The current and peak state size.
    pub fn stats(&self) -> StateSize {
        self.size
    }

    /// Adds one logical time's timestamps and reports each change to the
    /// windows as `(key, window, +1 or -1)`.
    pub fn apply(
        &mut self,
        batch: impl IntoIterator<Item = (K, EventTime)>,
        emit: impl FnMut(&K, Window, isize),
    ) {
        self.apply_with(batch, emit, |_, _, _| {});
    }

    /// [`Windows::apply`], also reporting each change to the keys' open
    /// walk-ins as `(key, open, +1 or -1)`.
    pub fn apply_with(
        &mut self,
        batch: impl IntoIterator<Item = (K, EventTime)>,
        mut emit: impl FnMut(&K, Window, isize),
        mut emit_open: impl FnMut(&K, Open, isize),
    ) {
        let config = self.config;
        self.batches += 1;
        // Each key's windows and open walk-in before this batch, for the
        // keys it touches.
        let mut touched: Vec<(K, Vec<Window>, Option<Open>)> = Vec::new();
        for (key, ts) in batch {
            assert!(
                ts >= self.frontier,
                "a timestamp arrived below the event-time frontier: a source broke its watermark promise"
            );
            let state = match self.keys.get_mut(&key) {
                Some(state) => state,
                None => self.keys.entry(key.clone()).or_default(),
            };
            if state.touched != self.batches {
                state.touched = self.batches;
                let mut before = Vec::new();
                let open = state.windows(&config, &mut before);
                if let Some(changed) = &mut self.changed {
                    changed.insert(key.clone());
                }
                touched.push((key, before, open));
            }
            if let Err(at) = state.tail.binary_search(&ts) {
                state.tail.insert(at, ts);
                self.size.timestamps += 1;
            }
        }
        let mut after = Vec::new();
        for (key, before, open_before) in touched {
            let state = self.keys.get_mut(&key).expect("touched keys have state");
            after.clear();
            let open_after = state.windows(&config, &mut after);
            if open_before != open_after {
                if let Some(open) = open_before {
                    emit_open(&key, open, -1);
                }
                if let Some(open) = open_after {
                    emit_open(&key, open, 1);
                }
            }
            if before != after {
                // Both lists are sorted by start, and a start identifies a visit.
                let (mut old, mut new) = (before.iter().peekable(), after.iter().peekable());
                loop {
                    match (old.peek(), new.peek()) {
                        (Some(o), Some(n)) if o == n => {
                            old.next();
                            new.next();
                        }
                        (Some(o), Some(n)) if o < n => emit(&key, *old.next().expect("peeked"), -1),
                        (Some(_), Some(_)) | (None, Some(_)) => {
                            emit(&key, *new.next().expect("peeked"), 1)
                        }
                        (Some(_), None) => emit(&key, *old.next().expect("peeked"), -1),
                        (None, None) => break,
                    }
                }
            }
            Self::schedule(&mut self.wakeups, &config, &key, state);
        }
        self.note_size();
    }

    fn schedule(
        wakeups: &mut BinaryHeap<Reverse<(EventTime, K)>>,
        config: &WindowConfig,
        key: &K,
        state: &mut KeyState,
    ) {
        if let Some(wake) = state.wake_at(config) {
            if state.scheduled.is_none_or(|scheduled| wake < scheduled) {
                state.scheduled = Some(wake);
                wakeups.push(Reverse((wake, key.clone())));
            }
        }
    }

    /// Raises the event-time frontier: folds timestamps below it and frees
    /// visits that can no longer change.
    pub fn advance(&mut self, frontier: EventTime) {
        self.advance_with(frontier, |_, _, _| {});
    }

    /// [`Windows::advance`], reporting each open walk-in that closes as
    /// `(key, open, -1)`.
    pub fn advance_with(
        &mut self,
        frontier: EventTime,
        mut emit_open: impl FnMut(&K, Open, isize),
    ) {
        if frontier <= self.frontier {
            return;
        }
        self.frontier = frontier;
        let config = self.config;
        while let Some(Reverse((wake, _))) = self.wakeups.peek() {
            if *wake >= frontier {
                break;
            }
            let Reverse((wake, key)) = self.wakeups.pop().expect("peeked");
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            if state.scheduled != Some(wake) {
                continue; // superseded by an earlier wake-up
            }
            state.scheduled = None;
            let held = state.tail.len();
            // Folding never changes the newest visit; it only drops it once
            // it closed, and then the key has no timestamp left.
            let dropped = state.fold(frontier, &config);
            if let (Some(open), true) = (
                dropped.and_then(|visit| visit.open()),
                state.tail.is_empty(),
            ) {
                emit_open(&key, open, -1);
            }
            self.size.timestamps -= held - state.tail.len();
            if let Some(changed) = &mut self.changed {
                changed.insert(key.clone());
            }
            if state.head.is_none() && state.tail.is_empty() {
                self.keys.remove(&key);
            } else {
                Self::schedule(&mut self.wakeups, &config, &key, state);
            }
        }
        self.note_size();
    }

    fn note_size(&mut self) {
        self.size.keys = self.keys.len();
        self.size.peak_keys = self.size.peak_keys.max(self.size.keys);
        self.size.peak_timestamps = self.size.peak_timestamps.max(self.size.timestamps);
        // The heap holds at most one live entry per key, plus superseded ones;
        // rebuild it when the superseded ones dominate, so it stays O(keys).
        if self.wakeups.len() > 2 * self.keys.len() + 1024 {
            let keys = &self.keys;
            self.wakeups.retain(|Reverse((wake, key))| {
                keys.get(key)
                    .is_some_and(|state| state.scheduled == Some(*wake))
            });
        }
    }
}

/// When the window operator snapshots its state changes (see
/// [`WindowSnapshot`]): the cuts a checkpoint is taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshots {
    /// At every multiple of this logical time; `None`: only at the end of
    /// the input.
    pub every: Option<u64>,
}

/// Session windows over a stream of `(key, timestamp)`.
pub trait SessionWindows<'scope, K: ExchangeData + Hash> {
    /// Windows of each key's visits, as a collection of `(key, window)`;
    /// `watermarks` carries event-time progress from every worker, and
    /// `restored` checkpointed key states to load (their windows count as
    /// already in the output). With `snapshots`, the second stream carries,
    /// at each cut `Cut::At(c)` (at time `c - 1`) and at the end, the state of
    /// every key that changed since the previous cut. The third is the
    /// collection of each key's [`Open`] walk-in, restored keys' included;
    /// it is not retracted at the end of the input (the end of input is not
    /// the passing of time).
    #[allow(clippy::type_complexity)]
    fn session_windows(
        self,
        watermarks: StreamVec<'scope, u64, Watermark>,
        restored: StreamVec<'scope, u64, (K, KeySnapshot)>,
        config: WindowConfig,
        snapshots: Option<Snapshots>,
        stats: WindowStats,
    ) -> (
        VecCollection<'scope, u64, (K, Window)>,
        StreamVec<'scope, u64, WindowSnapshot<K>>,
        VecCollection<'scope, u64, (K, Open)>,
    );
}

impl<'scope, K: ExchangeData + Hash> SessionWindows<'scope, K>
    for StreamVec<'scope, u64, (K, EventTime)>
{
    fn session_windows(
        self,
        watermarks: StreamVec<'scope, u64, Watermark>,
        restored: StreamVec<'scope, u64, (K, KeySnapshot)>,
        config: WindowConfig,
        snapshots: Option<Snapshots>,
        stats: WindowStats,
    ) -> (
        VecCollection<'scope, u64, (K, Window)>,
        StreamVec<'scope, u64, WindowSnapshot<K>>,
        VecCollection<'scope, u64, (K, Open)>,
    ) {
        let scope = self.scope();
        let peers = scope.peers();
        let mut builder = OperatorBuilder::new("SessionWindows".to_owned(), scope);
        let by_key = Exchange::new(|(key, _): &(K, EventTime)| key.hashed());
        let mut probe_input = builder.new_input(self, by_key);
        let mut mark_input = builder.new_input(watermarks.broadcast(), Pipeline);
        let restore_by_key = Exchange::new(|(key, _): &(K, KeySnapshot)| key.hashed());
        let mut restore_input = builder.new_input(restored, restore_by_key);
        let (windows_output, windows_stream) = builder.new_output();
        let (snapshot_output, snapshot_stream) = builder.new_output();
        let (open_output, open_stream) = builder.new_output();
        let mut windows_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<((K, Window), u64, isize)>>,
        >::from(windows_output);
        let mut snapshot_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<WindowSnapshot<K>>>,
        >::from(snapshot_output);
        let mut open_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<((K, Open), u64, isize)>>,
        >::from(open_output);
        builder.build(move |mut capabilities| {
            let open_capability = capabilities.pop().expect("a capability per output");
            let snapshot_capability = capabilities.pop().filter(|_| snapshots.is_some());
            drop(capabilities);
            let mut worker = WindowsWorker::new(
                config,
                snapshots,
                snapshot_capability,
                open_capability,
                peers,
            );
            move |frontiers| {
                probe_input.for_each_stamp(|capability, data| worker.probes.hold(capability, data));
                mark_input.for_each_stamp(|capability, data| {
                    hold_by_time(&mut worker.marks, capability, data)
                });
                restore_input.for_each_stamp(|capability, data| {
                    hold_by_time(&mut worker.restores, capability, data)
                });
                let mut outs = Outs {
                    windows: windows_output.activate(),
                    snapshots: snapshot_output.activate(),
                    open: open_output.activate(),
                };
                worker.run(frontiers, &mut outs);
                stats.0.set(worker.windows.stats());
            }
        });
        (
            windows_stream.as_collection(),
            snapshot_stream,
            open_stream.as_collection(),
        )
    }
}

/// The [`SessionWindows`] operator's output of window changes, activated.
type WindowsOut<'a, K> =
    OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<((K, Window), u64, isize)>>>;

/// The [`SessionWindows`] operator's output of snapshots, activated.
type SnapshotOut<'a, K> =
    OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<WindowSnapshot<K>>>>;

/// The [`SessionWindows`] operator's output of open walk-ins, activated.
type OpenOut<'a, K> =
    OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<((K, Open), u64, isize)>>>;

/// The [`SessionWindows`] operator's outputs, activated.
struct Outs<'a, K: 'static> {
    windows: WindowsOut<'a, K>,
    snapshots: SnapshotOut<'a, K>,
    open: OpenOut<'a, K>,
}

/// Appends the containers received under `capability` to its time's entry.
fn hold_by_time<'a, D: 'a>(
    held: &mut BTreeMap<u64, Vec<D>>,
    capability: InputCapability<u64>,
    data: impl Iterator<Item = &'a mut Vec<D>>,
) {
    let time = *capability.least().expect("a total order has a least time");
    data.for_each(|data| held.entry(time).or_default().append(data));
}

/// Sends the changes since the previous cut as the snapshot of `cut`, and
/// moves `capability` to a `Cut::At`.
fn send_snapshot<K: ExchangeData + Hash>(
    windows: &mut Windows<K>,
    cut: Cut,
    capability: &mut Capability<u64>,
    out: &mut SnapshotOut<'_, K>,
) {
    let time = match cut {
        Cut::At(c) => c - 1,
        Cut::Final => *capability.time(),
    };
    let changes = windows.take_changes();
    let at = capability.delayed(&time);
    out.session(&at).give(WindowSnapshot { cut, changes });
    if let Cut::At(c) = cut {
        capability.downgrade(&c);
    }
}

/// One worker's part of the [`SessionWindows`] operator: its window state,
/// the input held until its logical time is complete, and its snapshot cuts.
struct WindowsWorker<K: Hash + Eq> {
    windows: Windows<K>,
    /// Probes, by logical time.
    probes: Stash<(K, EventTime)>,
    /// Watermarks, by logical time.
    marks: BTreeMap<u64, Vec<Watermark>>,
    /// Restored key states, by logical time.
    restores: BTreeMap<u64, Vec<(K, KeySnapshot)>>,
    /// Each worker's largest watermark.
    promised: Vec<EventTime>,
    /// Held at the last cut, so that the next cut's snapshot can be sent at
    /// its time; dropped after the final one (`None`: no snapshots).
    snapshot_capability: Option<Capability<u64>>,
    /// For the open walk-ins, held at the least input frontier (the next
    /// time to handle); dropped at the end of the input.
    open_capability: Option<Capability<u64>>,
    /// Cuts at every multiple of this; `None`: only at the end.
    every: Option<u64>,
}

impl<K: ExchangeData + Hash> WindowsWorker<K> {
    fn new(
        config: WindowConfig,
        snapshots: Option<Snapshots>,
        snapshot_capability: Option<Capability<u64>>,
        open_capability: Capability<u64>,
        peers: usize,
    ) -> Self {
        let mut windows = Windows::new(config);
        if snapshots.is_some() {
            windows.track_changes();
        }
        WindowsWorker {
            windows,
            probes: Stash::new(),
            marks: BTreeMap::new(),
            restores: BTreeMap::new(),
            promised: vec![0; peers],
            snapshot_capability,
            open_capability: Some(open_capability),
            every: snapshots.and_then(|s| s.every),
        }
    }

    /// Handles each held time every input's frontier has passed, in time
    /// order, then what the frontiers' progress makes due.
    fn run(&mut self, frontiers: &[MutableAntichain<u64>], outs: &mut Outs<'_, K>) {
        while let Some(time) = self.next_complete(frontiers) {
            self.cut_before(time, &mut outs.snapshots);
            self.process(time, &mut outs.windows, &mut outs.open);
        }
        self.after_complete_times(frontiers, &mut outs.snapshots);
    }

    /// The earliest time held, if every input's frontier has passed it.
    fn next_complete(&self, frontiers: &[MutableAntichain<u64>]) -> Option<u64> {
        let held_times = [
            self.probes.first_time(),
            self.marks.keys().next().copied(),
            self.restores.keys().next().copied(),
        ];
        next_complete(held_times, frontiers)
    }

    /// The cut due before `time` is processed, if any.
    fn due(&self, time: u64) -> Option<u64> {
        let (every, capability) = (self.every?, self.snapshot_capability.as_ref()?);
        let cut = time / every * every;
        (cut > *capability.time()).then_some(cut)
    }

    /// Sends the snapshot of the cut due before `time`, if any.
    fn cut_before(&mut self, time: u64, out: &mut SnapshotOut<'_, K>) {
        if let Some(cut) = self.due(time) {
            let capability = self.snapshot_capability.as_mut().expect("a cut is due");
            send_snapshot(&mut self.windows, Cut::At(cut), capability, out);
        }
    }

    /// Handles the complete time `time`: loads its restored key states,
    /// applies its probes (emitting the window changes at `time`), then
    /// raises the event-time frontier by its watermarks.
    fn process(&mut self, time: u64, out: &mut WindowsOut<'_, K>, open_out: &mut OpenOut<'_, K>) {
        let open_at = self
            .open_capability
            .as_ref()
            .expect("held until the end of the input")
            .delayed(&time);
        let mut open = open_out.session(&open_at);
        for (key, state) in self.restores.remove(&time).into_iter().flatten() {
            if let Some(restored) = self.windows.restore(key.clone(), state) {
                open.give(((key, restored), time, 1));
            }
        }
        if let Some((capability, batch)) = self.probes.take(time) {
            let mut session = out.session(&capability);
            self.windows.apply_with(
                batch,
                |key, window, diff| session.give(((key.clone(), window), time, diff)),
                |key, visit, diff| open.give(((key.clone(), visit), time, diff)),
            );
        }
        for mark in self.marks.remove(&time).into_iter().flatten() {
            self.promised[mark.source] = self.promised[mark.source].max(mark.frontier);
        }
        let frontier = self.promised.iter().copied().min().unwrap_or(u64::MAX);
        self.windows.advance_with(frontier, |key, visit, diff| {
            open.give(((key.clone(), visit), time, diff))
        });
    }

    /// At the end of the input, sends the final snapshot and frees the
    /// state; before it, sends the cut the least frontier has passed, if due.
    fn after_complete_times(
        &mut self,
        frontiers: &[MutableAntichain<u64>],
        out: &mut SnapshotOut<'_, K>,
    ) {
        if frontiers.iter().all(|frontier| frontier.is_empty()) {
            if let Some(mut capability) = self.snapshot_capability.take() {
                send_snapshot(&mut self.windows, Cut::Final, &mut capability, out);
            }
            // No input will ever come: free everything. The open walk-ins
            // stay open (the end of input is not the passing of time).
            self.open_capability = None;
            self.windows.advance(u64::MAX);
        } else {
            // Every time below the least frontier is processed.
            let least = frontiers
                .iter()
                .filter_map(|frontier| frontier.frontier().first().copied())
                .min();
            if let Some(least) = least {
                self.cut_before(least, out);
                if let Some(capability) = &mut self.open_capability {
                    capability.downgrade(&least);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
