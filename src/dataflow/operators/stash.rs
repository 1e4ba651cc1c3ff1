//! Input held until the frontier passes its time: how both operators wait
//! for a complete logical time.

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

use crate::dataflow::query::Asked;

/// Input held until the frontier passes its logical time, with a capability
/// to emit at that time: how both operators wait for a complete time.
///
/// Containers are kept as they arrive rather than appended into one vector:
/// growing one vector per epoch cost a fifth of backfill time in reallocation
/// and page faults.
pub(super) struct Stash<D> {
    batches: BTreeMap<u64, (Capability<u64>, Vec<Vec<D>>)>,
}

impl<D> Stash<D> {
    pub(super) fn new() -> Self {
        Stash {
            batches: BTreeMap::new(),
        }
    }

    /// Holds the containers received under `capability`.
    pub(super) fn hold<'a>(
        &mut self,
        capability: InputCapability<u64>,
        data: impl Iterator<Item = &'a mut Vec<D>>,
    ) where
        D: 'a,
    {
        let time = *capability.least().expect("a total order has a least time");
        let (_, batch) = self.batches.entry(time).or_insert_with(|| {
            let capability = capability.retain_least(0).expect("data holds its own time");
            (capability, Vec::new())
        });
        batch.extend(data.map(std::mem::take));
    }

    /// The earliest time held.
    pub(super) fn first_time(&self) -> Option<u64> {
        self.batches.keys().next().copied()
    }

    /// Takes the batch of `time`, if any.
    pub(super) fn take(&mut self, time: u64) -> Option<(Capability<u64>, impl Iterator<Item = D>)> {
        self.batches
            .remove(&time)
            .map(|(capability, batch)| (capability, batch.into_iter().flatten()))
    }

    /// Takes the earliest time held if it is `complete` (the frontier has
    /// passed it): the time, its capability and its data.
    pub(super) fn take_complete(
        &mut self,
        complete: impl Fn(&u64) -> bool,
    ) -> Option<(u64, Capability<u64>, impl Iterator<Item = D>)> {
        let time = self.first_time().filter(|time| complete(time))?;
        let (capability, data) = self.take(time).expect("a held time");
        Some((time, capability, data))
    }
}

/// An operator's capabilities, one per output, held at the least of its
/// input frontiers (the earliest time it may still handle): how an
/// operator with several outputs emits at any time it handles, whichever
/// input brought that time. Dropped once every input is done.
pub(super) struct Ports {
    held: Vec<Capability<u64>>,
}

impl Ports {
    /// The initial capabilities, one per output, in output order.
    pub(super) fn new(capabilities: Vec<Capability<u64>>) -> Self {
        Ports { held: capabilities }
    }

    /// A capability for output `port` at `time` (not below the frontiers).
    pub(super) fn at(&self, port: usize, time: u64) -> Capability<u64> {
        self.held[port].delayed(&time)
    }

    /// Moves the capabilities to the least input frontier, or drops them
    /// once every input is done.
    pub(super) fn downgrade(&mut self, frontiers: &[MutableAntichain<u64>]) {
        let least = frontiers
            .iter()
            .filter_map(|frontier| frontier.frontier().first().copied())
            .min();
        match least {
            Some(least) => self.held.iter_mut().for_each(|held| held.downgrade(&least)),
            None => self.held.clear(),
        }
    }
}

/// The earliest of `times` (each input's first held time, if any), if
/// every input's frontier has passed it: the next time an operator that
/// handles its inputs a time at a time, in time order, may handle.
pub(super) fn next_complete(
    times: impl IntoIterator<Item = Option<u64>>,
    frontiers: &[MutableAntichain<u64>],
) -> Option<u64> {
    times
        .into_iter()
        .flatten()
        .min()
        .filter(|time| frontiers.iter().all(|frontier| !frontier.less_equal(time)))
}

impl Stash<Asked> {
    /// Takes the queries received under `capability`: point queries into
    /// `now`, with their time, to be answered as soon as the operator has
    /// handled what it can; the rest held until their time is complete
    /// (see [`crate::dataflow::query`]).
    pub(super) fn hold_queries<'a>(
        &mut self,
        capability: InputCapability<u64>,
        data: impl Iterator<Item = &'a mut Vec<Asked>>,
        now: &mut Arrived,
    ) {
        let time = *capability.least().expect("a total order has a least time");
        let mut later = Vec::new();
        for asked in data.flat_map(|batch| batch.drain(..)) {
            if asked.query.is_point() {
                now.0.entry(time).or_default().push(asked);
            } else {
                later.push(asked);
            }
        }
        if !later.is_empty() {
            self.hold(capability, std::iter::once(&mut later));
        }
    }
}

/// Point queries that arrived and are answered at the end of the
/// operator's activation, by the time they were asked at (one answer
/// message per time).
#[derive(Default)]
pub(super) struct Arrived(BTreeMap<u64, Vec<Asked>>);

impl Arrived {
    /// Whether none is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes them all, by time.
    pub(super) fn take(&mut self) -> BTreeMap<u64, Vec<Asked>> {
        std::mem::take(&mut self.0)
    }
}

/// The frontier an operator's state is exactly as of once it has handled
/// every complete time: the least of its data inputs' first held times
/// (`held`) and frontiers; once they are all done, `handled_below` (just
/// past the last time it handled).
pub(super) fn applied_frontier(
    held: impl IntoIterator<Item = Option<u64>>,
    data_frontiers: &[MutableAntichain<u64>],
    handled_below: u64,
) -> u64 {
    held.into_iter()
        .flatten()
        .chain(
            data_frontiers
                .iter()
                .filter_map(|frontier| frontier.frontier().first().copied()),
        )
        .min()
        .unwrap_or(handled_below)
}
