//! The custom operators of the dataflow, one per module.
//!
//! Both process their input a logical time at a time, in time order, once the
//! input frontier has passed it: their outputs are differential collections
//! whose contents at a time are a function of all input up to that time.

pub mod latest;
pub mod windows;

pub use latest::LatestByKey;
pub use windows::{SessionWindows, Watermark, Window, WindowConfig, WindowStats};

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};

/// Input held until the frontier passes its logical time, with a capability
/// to emit at that time: how both operators wait for a complete time.
///
/// Containers are kept as they arrive rather than appended into one vector:
/// growing one vector per epoch cost a fifth of backfill time in reallocation
/// and page faults.
struct Stash<D> {
    batches: BTreeMap<u64, (Capability<u64>, Vec<Vec<D>>)>,
}

impl<D> Stash<D> {
    fn new() -> Self {
        Stash {
            batches: BTreeMap::new(),
        }
    }

    /// Holds the containers received under `capability`.
    fn hold<'a>(
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
    fn first_time(&self) -> Option<u64> {
        self.batches.keys().next().copied()
    }

    /// Takes the batch of `time`, if any.
    fn take(&mut self, time: u64) -> Option<(Capability<u64>, impl Iterator<Item = D>)> {
        self.batches
            .remove(&time)
            .map(|(capability, batch)| (capability, batch.into_iter().flatten()))
    }
}
