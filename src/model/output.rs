//! The output collections, by name: the one list that the upsert topics,
//! the backfill's folders, the restore's read-back and the harness's
//! readers all go by. Adding an output starts here.

use serde::{Deserialize, Serialize};

/// An output collection of docs/contract.md, in the contract's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Output {
    /// Walk-ins: qualified visits, keyed by device and business.
    Walkins,
    /// Each device's latest contact.
    DeviceContacts,
    /// Walk-ins with the device's contact.
    EnrichedWalkins,
    /// Walk-ins per business and contact, with base counts.
    WalkinCounts,
    /// Devices in a store now: open walk-ins with the device's contact.
    Present,
    /// Rejected input records, keyed by where they were read.
    Rejected,
}

impl Output {
    /// Every output, in the contract's order.
    pub const ALL: [Output; 6] = [
        Output::Walkins,
        Output::DeviceContacts,
        Output::EnrichedWalkins,
        Output::WalkinCounts,
        Output::Present,
        Output::Rejected,
    ];

    /// The outputs whose topics are upserts of the dataflow's collections
    /// (every one but the rejected records, which are appended).
    pub const UPSERTS: [Output; 5] = [
        Output::Walkins,
        Output::DeviceContacts,
        Output::EnrichedWalkins,
        Output::WalkinCounts,
        Output::Present,
    ];

    /// Its place in [`Output::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its documented topic name (before any `--output-prefix`).
    pub const fn topic(self) -> &'static str {
        match self {
            Output::Walkins => "walkins",
            Output::DeviceContacts => "device-contacts",
            Output::EnrichedWalkins => "enriched-walkins",
            Output::WalkinCounts => "walkin-counts",
            Output::Present => "present",
            Output::Rejected => "presence-rejected",
        }
    }

    /// Its folder in a backfill's output directory.
    pub const fn folder(self) -> &'static str {
        match self {
            Output::Rejected => "rejected",
            other => other.topic(),
        }
    }
}

/// One value per output, indexed by [`Output`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerOutput<T>(pub [T; 6]);

impl<T> PerOutput<T> {
    /// Each output's value, from `f`.
    pub fn from_fn(mut f: impl FnMut(Output) -> T) -> Self {
        PerOutput(Output::ALL.map(&mut f))
    }

    /// The values, in the contract's order of the outputs.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T> std::ops::Index<Output> for PerOutput<T> {
    type Output = T;
    fn index(&self, output: Output) -> &T {
        &self.0[output.index()]
    }
}

impl<T> std::ops::IndexMut<Output> for PerOutput<T> {
    fn index_mut(&mut self, output: Output) -> &mut T {
        &mut self.0[output.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_in_index_order_and_names_are_distinct() {
        for (place, output) in Output::ALL.into_iter().enumerate() {
            assert_eq!(output.index(), place);
        }
        let topics: std::collections::BTreeSet<_> = Output::ALL.map(Output::topic).into();
        let folders: std::collections::BTreeSet<_> = Output::ALL.map(Output::folder).into();
        assert_eq!((topics.len(), folders.len()), (6, 6));
        assert!(Output::UPSERTS.iter().all(|&o| o != Output::Rejected));
    }
}
