//! Input held until the frontier passes its time: how both operators wait
//! for a complete logical time.

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};

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
