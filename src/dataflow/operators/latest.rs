//! The greatest value per key of an insert-only stream, as a differential
//! collection: device contacts (the login with the greatest `(ts, contact)`)
//! and base counts (the largest `count`).
//!
//! # Notes
//!
//! Logical times must be totally ordered (`u64`); the operator handles a
//! logical time once the input frontier has passed it, in time order, and
//! emits at that time. Ties are by `V`'s order, so `(ts, contact)` breaks a
//! tie on `ts` by the larger contact, and re-delivering a value changes
//! nothing. A value that replaces the current one is emitted as a retraction
//! of the old `(key, value)` and an insertion of the new one.
//!
//! # State
//!
//! One value per key ever seen — not the history of values — plus the input
//! not yet passed by the frontier. The input is insert-only, so the greatest
//! value never needs the ones it beat.
//!
//! # Contract
//!
//! Each key has at most one value in the output at any time.
//!
//! # Example
//!
//! ```
//! use presence::dataflow::operators::LatestByKey;
//! use timely::dataflow::operators::ToStream;
//! use timely::dataflow::operators::capture::{Capture, Extract};
//!
//! let captured = timely::example(|scope| {
//!     let logins = vec![(5, "ann"), (9, "bob"), (7, "cy")];
//!     logins
//!         .into_iter()
//!         .map(|(ts, contact)| ("phone".to_string(), (ts, contact.to_string())))
//!         .to_stream(scope)
//!         .latest_by_key("Contacts")
//!         .inner
//!         .capture()
//! });
//! let mut current = std::collections::BTreeMap::new();
//! for ((device, value), _time, diff) in captured.extract().into_iter().flat_map(|(_, data)| data) {
//!     *current.entry((device, value)).or_insert(0) += diff;
//! }
//! current.retain(|_, diff| *diff != 0);
//! let expected = [(("phone".to_string(), (9, "bob".to_string())), 1)];
//! assert_eq!(current.into_iter().collect::<Vec<_>>(), expected);
//! ```

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;

use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

use super::stash::Stash;

/// The greatest value per key.
pub trait LatestByKey<'scope, K, V> {
    /// The collection of `(key, greatest value so far)`.
    fn latest_by_key(self, name: &str) -> VecCollection<'scope, u64, (K, V)>;
}

impl<'scope, K, V> LatestByKey<'scope, K, V> for StreamVec<'scope, u64, (K, V)>
where
    K: ExchangeData + Hash,
    V: ExchangeData,
{
    fn latest_by_key(self, name: &str) -> VecCollection<'scope, u64, (K, V)> {
        let by_key = Exchange::new(|(key, _): &(K, V)| key.hashed());
        self.unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
            by_key,
            name,
            |_capability, _info| {
                let mut pending = Stash::new();
                let mut latest: HashMap<K, V, foldhash::fast::RandomState> = HashMap::default();
                move |(input, frontier), output| {
                    input.for_each_stamp(|capability, data| pending.hold(capability, data));
                    while let Some((time, capability, batch)) =
                        pending.take_complete(|time| !frontier.less_equal(time))
                    {
                        let mut session = output.session(&capability);
                        for (key, value) in batch {
                            match latest.entry(key) {
                                Entry::Occupied(mut current) if value > *current.get() => {
                                    let old = std::mem::replace(current.get_mut(), value.clone());
                                    session.give(((current.key().clone(), old), time, -1));
                                    session.give(((current.key().clone(), value), time, 1));
                                }
                                Entry::Occupied(_) => {}
                                Entry::Vacant(vacant) => {
                                    session.give(((vacant.key().clone(), value.clone()), time, 1));
                                    vacant.insert(value);
                                }
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
    }
}
