//! The one dataflow: accepted input records to the five output collections,
//! and answers to queries over them.
//!
//! ```text
//!  probes ──filter rssi──► SessionWindows ──► walk-ins ──────────────┐ (by device)
//!  watermarks (broadcast) ─────┘    │             │                  │
//!                                   │             └─► walk-ins out   ├─► Enrich ─► enriched walk-ins out
//!                                   └─► open walk-ins ───────────────┤     │  └──► present out
//!  logins ──► LatestByKey (device → (ts, contact)) ─► device contacts┘      │
//!                                                         └─► out          ▼ (business, contact)
//!  base counts ──► LatestByKey ((business, contact) → count) ──weight──► SumByKey ─► walk-in counts out
//!  queries ──► Enrich, SumByKey (by key, or to every worker) ──parts──► Gather (asking worker) ─► replies
//! ```
//!
//! State is data: the checkpointed state (the window operator's changed
//! keys at each cut, walk-ins, the latest login per device, base counts)
//! leaves as [`State`], and a restored checkpoint enters as [`StateRow`]s at one
//! restore epoch, through the same exchanges as live data, so that any
//! number of workers and processes restores any checkpoint.
//!
//! Logical time is a `u64` ingestion epoch chosen by the driver, not event
//! time: a walk-in is emitted at the epoch of the probe that made it qualify,
//! so latency is never held back by the lateness horizon. Event time lives in
//! the data; its progress arrives as [`Watermark`]s and only decides when the
//! window state can be freed.
//!
//! # Guarantees
//!
//! At every logical time `t` the frontier has passed, each output collection
//! accumulated over times `<= t` is exactly the docs/contract.md, section 2 function of the
//! accepted input sent at times `<= t` — whatever the number of workers and
//! processes, which worker read which partition, and how input was batched.
//! Each output record has multiplicity 0 or 1.
//!
//! Memory: windows hold open visits only (see [`crate::dataflow::operators::windows`]);
//! contacts and base counts one value per key; the join
//! ([`crate::dataflow::operators::enrich`]) holds every walk-in (a later
//! login must enrich them all), 24 bytes each, and one contact per device;
//! the count ([`crate::dataflow::operators::sum`]) one sum per (business,
//! contact). No operator keeps updates: the outputs can be read from this
//! state ([`Held`]) instead of from a copy.

pub mod held;
pub mod note;
pub mod operators;
pub mod query;
pub mod state;
pub mod time;

use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::{Concat, Operator};
use timely::dataflow::StreamVec;

use crate::dataflow::operators::enrich::Enriched;
use crate::dataflow::operators::sum::Sums;
use crate::dataflow::operators::windows::{KeySnapshot, Snapshots, Window, WindowSnapshot};
use crate::dataflow::operators::{
    Enrich, LatestByKey, Open, SessionWindows, SumByKey, Watermark, WindowConfig, WindowStats,
};
use crate::dataflow::query::{Answered, Asked, Asking, Holder, Part, Query};
use crate::model::params::Params;
use crate::model::records::{
    BaseCount, DeviceContact, EnrichedWalkIn, Id, Login, Present, Probe, WalkIn, WalkinCount,
};
use held::Held;
use state::{StateRow, StateStreams as State, StateWalkIn};

pub use time::Time;

/// The accepted input, as streams (records are inserted, never retracted).
pub struct Inputs<'scope> {
    /// Accepted probes (including those below `rssi-min`).
    pub probes: StreamVec<'scope, Time, Probe>,
    /// Accepted logins.
    pub logins: StreamVec<'scope, Time, Login>,
    /// Accepted base counts.
    pub base_counts: StreamVec<'scope, Time, BaseCount>,
    /// Event-time promises of every worker's probe sources.
    pub watermarks: StreamVec<'scope, Time, Watermark>,
    /// A restored checkpoint's rows (at the restore epoch).
    pub restored: StreamVec<'scope, Time, StateRow>,
    /// Queries, each copy addressed to the worker that answers it.
    pub queries: StreamVec<'scope, Time, Asked>,
    /// The queries this worker asked, answered as their parts come back.
    pub asking: Asking,
}

/// The five collections of docs/contract.md.
pub struct Outputs<'scope> {
    /// Walk-ins.
    pub walkins: VecCollection<'scope, Time, WalkIn>,
    /// The latest contact per device.
    pub device_contacts: VecCollection<'scope, Time, DeviceContact>,
    /// Walk-ins with their device's current contact.
    pub enriched_walkins: VecCollection<'scope, Time, EnrichedWalkIn>,
    /// Walk-ins per (business, contact), plus base counts.
    pub walkin_counts: VecCollection<'scope, Time, WalkinCount>,
    /// Open walk-ins with their device's contact: who is in a store now.
    pub present: VecCollection<'scope, Time, Present>,
    /// Done at a time once every query asked by this worker at that time
    /// is answered.
    pub answered: StreamVec<'scope, Time, ()>,
    /// The state to checkpoint.
    pub state: State<'scope>,
    /// Handles on the operators' state, which holds the collections (a
    /// driver reads them from it once the dataflow is done, or drops it).
    pub held: Held,
}

/// A stream's records as a collection, each inserted at its time.
fn inserted<'scope, D: differential_dataflow::ExchangeData>(
    stream: StreamVec<'scope, Time, D>,
) -> VecCollection<'scope, Time, D> {
    stream
        .unary::<CapacityContainerBuilder<Vec<(D, Time, isize)>>, _, _, _>(
            Pipeline,
            "Inserted",
            |_, _| {
                move |input, output| {
                    input.for_each_stamp(|capability, data| {
                        let at = *capability.least().expect("a total order has a least time");
                        let capability = capability.delayed(&at, 0);
                        output.session(&capability).give_iterator(
                            data.flat_map(|batch| batch.drain(..)).map(|d| (d, at, 1)),
                        );
                    })
                }
            },
        )
        .as_collection()
}

/// Builds the dataflow in the inputs' scope; with `snapshots`, the window
/// operator snapshots its state at those cuts.
pub fn build<'scope>(
    inputs: Inputs<'scope>,
    params: &Params,
    snapshots: Option<Snapshots>,
    window_stats: WindowStats,
) -> Outputs<'scope> {
    // The stages are built in this order, which fixes the operators' addresses.
    let restored = split_restored(inputs.restored);
    let (walkin_windows, window_snapshots, open) = detect_walkins(
        inputs.probes,
        inputs.watermarks.clone(),
        restored.windows,
        restored.walkins,
        params,
        snapshots,
        window_stats,
    );
    let walkins = as_walkins(walkin_windows.clone());
    let latest_logins = latest_logins(inputs.logins, restored.logins);
    let device_contacts = as_device_contacts(latest_logins.clone());
    let Enriched {
        walkins: enriched_walkins,
        present,
        answers: device_answers,
        devices,
    } = walkin_windows.clone().enrich(
        latest_logins
            .clone()
            .map(|(device, (_ts, contact))| (Id::from(device), contact)),
        open,
        query::routed(inputs.queries.clone(), Holder::Devices),
    );
    let latest_base_counts = latest_base_counts(inputs.base_counts, restored.base_counts);
    let (walkin_counts, count_answers, counts) = count_walkins(
        enriched_walkins.clone(),
        latest_base_counts.clone(),
        query::routed(inputs.queries, Holder::Counts),
    );
    let answered = operators::gather::gather(
        device_answers.concat(count_answers),
        inputs.watermarks,
        inputs.asking,
    );
    Outputs {
        walkins,
        device_contacts,
        enriched_walkins,
        walkin_counts,
        present,
        answered,
        state: State {
            windows: window_snapshots,
            walkins: walkin_windows,
            logins: latest_logins,
            base_counts: latest_base_counts,
        },
        held: Held { devices, counts },
    }
}

/// A restored checkpoint's rows, by the part of the dataflow that holds them.
struct RestoredState<'scope> {
    /// Window states by (business, device).
    windows: StreamVec<'scope, Time, ((Id, Id), KeySnapshot)>,
    /// Walk-ins by (business, device), inserted at the restore epoch.
    walkins: VecCollection<'scope, Time, StateWalkIn>,
    /// The latest login per device: `(device, (ts, contact))`.
    logins: StreamVec<'scope, Time, (String, (u64, String))>,
    /// The base count per (business, contact).
    base_counts: StreamVec<'scope, Time, ((String, String), u64)>,
}

/// Moves each restored row to the one part of the dataflow that holds its
/// kind (a stream used four times would copy every row to each).
fn split_restored<'scope>(restored: StreamVec<'scope, Time, StateRow>) -> RestoredState<'scope> {
    let mut parts = restored
        .partition(4, |row| {
            let part = match row {
                StateRow::Window { .. } => 0,
                StateRow::WalkIn { .. } => 1,
                StateRow::Login { .. } => 2,
                StateRow::BaseCount { .. } => 3,
            };
            (part, row)
        })
        .into_iter();
    let mut part = || parts.next().expect("a part per kind of row");
    let windows = part().flat_map(|row| match row {
        StateRow::Window {
            business,
            device,
            state: Some(state),
        } => Some(((business, device), state)),
        _ => None,
    });
    let walkins = inserted(part().flat_map(|row| match row {
        StateRow::WalkIn {
            business,
            device,
            start,
            detected_at: Some(detected_at),
        } => Some(((business, device), Window { start, detected_at })),
        _ => None,
    }));
    let logins = part().flat_map(|row| match row {
        StateRow::Login {
            device,
            ts,
            contact,
        } => Some((device, (ts, contact))),
        _ => None,
    });
    let base_counts = part().flat_map(|row| match row {
        StateRow::BaseCount {
            business,
            contact,
            count,
        } => Some(((business, contact), count)),
        _ => None,
    });
    RestoredState {
        windows,
        walkins,
        logins,
        base_counts,
    }
}

/// The session windows of the probes at or above `rssi-min`, plus the
/// restored walk-ins: walk-ins by (business, device), the window
/// operator's snapshots, and the open walk-ins by (business, device).
#[allow(clippy::type_complexity)]
fn detect_walkins<'scope>(
    probes: StreamVec<'scope, Time, Probe>,
    watermarks: StreamVec<'scope, Time, Watermark>,
    restored_windows: StreamVec<'scope, Time, ((Id, Id), KeySnapshot)>,
    restored_walkins: VecCollection<'scope, Time, StateWalkIn>,
    params: &Params,
    snapshots: Option<Snapshots>,
    window_stats: WindowStats,
) -> (
    VecCollection<'scope, Time, StateWalkIn>,
    StreamVec<'scope, Time, WindowSnapshot<(Id, Id)>>,
    VecCollection<'scope, Time, ((Id, Id), Open)>,
) {
    let rssi_min = params.rssi_min;
    let window_config = WindowConfig {
        session_gap: params.session_gap,
        min_dwell: params.min_dwell,
        min_probes: params.min_probes,
    };
    let (windows, window_snapshots, open) = probes
        .flat_map(move |probe| {
            (probe.rssi >= rssi_min).then_some(((probe.business, probe.device), probe.ts))
        })
        .session_windows(
            watermarks,
            restored_windows,
            window_config,
            snapshots,
            window_stats,
        );
    (windows.concat(restored_walkins), window_snapshots, open)
}

/// Walk-ins by (business, device) as [`WalkIn`] records.
fn as_walkins<'scope>(
    walkin_windows: VecCollection<'scope, Time, StateWalkIn>,
) -> VecCollection<'scope, Time, WalkIn> {
    walkin_windows.map(|((business, device), window)| WalkIn {
        business: business.into(),
        device: device.into(),
        start: window.start,
        detected_at: window.detected_at,
    })
}

/// The latest login per device: `(device, (ts, contact))`, with the
/// restored ones.
fn latest_logins<'scope>(
    logins: StreamVec<'scope, Time, Login>,
    restored_logins: StreamVec<'scope, Time, (String, (u64, String))>,
) -> VecCollection<'scope, Time, (String, (u64, String))> {
    logins
        .map(|login| (login.device, (login.ts, login.contact)))
        .concat(restored_logins)
        .latest_by_key("DeviceContacts")
}

/// The latest logins as [`DeviceContact`] records.
fn as_device_contacts<'scope>(
    latest_logins: VecCollection<'scope, Time, (String, (u64, String))>,
) -> VecCollection<'scope, Time, DeviceContact> {
    latest_logins.map(|(device, (_ts, contact))| DeviceContact { device, contact })
}

/// The largest base count per (business, contact), with the restored ones.
fn latest_base_counts<'scope>(
    base_counts: StreamVec<'scope, Time, BaseCount>,
    restored_base_counts: StreamVec<'scope, Time, ((String, String), u64)>,
) -> VecCollection<'scope, Time, ((String, String), u64)> {
    base_counts
        .map(|base| ((base.business, base.contact), base.count))
        .concat(restored_base_counts)
        .latest_by_key("BaseCounts")
}

/// Enriched walk-ins per (business, contact), plus the base counts; the
/// parts of the answers to `queries` about counts; and the counts the
/// operator holds.
#[allow(clippy::type_complexity)]
fn count_walkins<'scope>(
    enriched_walkins: VecCollection<'scope, Time, EnrichedWalkIn>,
    latest_base_counts: VecCollection<'scope, Time, ((String, String), u64)>,
    queries: StreamVec<'scope, Time, Asked>,
) -> (
    VecCollection<'scope, Time, WalkinCount>,
    StreamVec<'scope, Time, Answered>,
    Sums<(Id, Id)>,
) {
    // A base count of n is the pair (business, contact) weighing n, so that
    // summing adds it to the walk-ins.
    let base_weights = latest_base_counts
        .inner
        .map(|(((business, contact), count), time, diff)| {
            let weight = isize::try_from(count).expect("counts are below 2^53");
            ((Id::from(business), Id::from(contact)), time, diff * weight)
        })
        .as_collection();
    let (sums, answers, counts) = enriched_walkins
        .map(|enriched| (Id::from(enriched.business), Id::from(enriched.contact)))
        .concat(base_weights)
        .sum_by_key_answering("WalkinCounts", queries, answer_count);
    let walkin_counts = sums.map(|((business, contact), count)| {
        debug_assert!(count > 0, "walk-ins and base counts are never negative");
        WalkinCount {
            business: business.into(),
            contact: contact.into(),
            count: count as u64,
        }
    });
    (walkin_counts, answers, counts)
}

/// This worker's part of the answer to a query about counts.
fn answer_count(sums: &Sums<(Id, Id)>, asked: Asked, frontier: Time) -> Answered {
    let count = |sum: isize| u64::try_from(sum).expect("counts are never negative");
    let part = match &asked.query {
        Query::Count { business, contact } => Part::Count(count(
            sums.get(&(Id::from(business.as_str()), Id::from(contact.as_str()))),
        )),
        Query::Counts { business } => {
            let mut counts = Vec::new();
            sums.for_each(|(held_business, contact), sum| {
                if held_business == business {
                    counts.push((contact.to_string(), count(sum)));
                }
            });
            Part::Counts(counts)
        }
        Query::Present { .. } | Query::Contact { .. } => {
            unreachable!("contacts and present rows are asked of the join's operator")
        }
    };
    asked.answered(part, frontier)
}
