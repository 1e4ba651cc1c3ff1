//! The sum of the weights per key of a collection, as a collection of
//! `(key, sum)` with one record per key whose sum is not zero: the walk-in
//! counts (each enriched walk-in weighs 1, a base count of n weighs n).
//!
//! # Notes
//!
//! Logical times must be totally ordered (`u64`); the operator handles a
//! logical time once the input frontier has passed it, in time order, and
//! emits at that time: a key whose sum changed has its old `(key, sum)`
//! retracted and its new one inserted.
//!
//! # State
//!
//! One sum per key with a non-zero sum, nothing per update. (Differential's
//! `count` arranges its input and its output, each keeping updates until
//! their batches merge: several copies of every key.)
//!
//! # Example
//!
//! ```
//! use presence::dataflow::operators::sum::Sums;
//!
//! let sums = Sums::default();
//! let mut out = Vec::new();
//! sums.apply(vec![("shop", 1), ("shop", 1), ("cafe", 3)], |k, s, d| out.push((*k, s, d)));
//! out.sort();
//! assert_eq!(out, vec![("cafe", 3, 1), ("shop", 2, 1)]);
//! out.clear();
//! sums.apply(vec![("cafe", -3)], |k, s, d| out.push((*k, s, d)));
//! assert_eq!(out, vec![("cafe", 3, -1)]); // a sum of zero has no record
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::StreamVec;

use super::stash::{applied_frontier, next_complete, Arrived, Ports, Stash};
use crate::dataflow::query::{self, Answered, Asked};

/// The sums one worker holds, by key; cloning shares them (the operator
/// writes, a reader such as a backfill reads once the dataflow is done).
pub struct Sums<K> {
    held: Rc<RefCell<HashMap<K, isize, foldhash::fast::RandomState>>>,
}

impl<K> Clone for Sums<K> {
    fn clone(&self) -> Self {
        Sums {
            held: Rc::clone(&self.held),
        }
    }
}

impl<K> Default for Sums<K> {
    fn default() -> Self {
        Sums {
            held: Rc::default(),
        }
    }
}

impl<K: Hash + Eq + Ord + Clone> Sums<K> {
    /// Applies one logical time's weights (in any order), calling `emit`
    /// with each change of the `(key, sum)` records.
    pub fn apply(&self, mut weights: Vec<(K, isize)>, mut emit: impl FnMut(&K, isize, isize)) {
        differential_dataflow::consolidation::consolidate(&mut weights);
        let mut held = self.held.borrow_mut();
        for (key, weight) in weights {
            let old = held.get(&key).copied().unwrap_or(0);
            let new = old + weight;
            if old != 0 {
                emit(&key, old, -1);
            }
            if new != 0 {
                emit(&key, new, 1);
                held.insert(key, new);
            } else {
                held.remove(&key);
            }
        }
    }

    /// The sum of `key` (0: none held).
    pub fn get<Q>(&self, key: &Q) -> isize
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.held.borrow().get(key).copied().unwrap_or(0)
    }

    /// Calls `each` with every key and its sum, in no particular order.
    pub fn for_each(&self, mut each: impl FnMut(&K, isize)) {
        for (key, sum) in self.held.borrow().iter() {
            each(key, *sum);
        }
    }

    /// The number of keys held (those whose sum is not zero).
    pub fn len(&self) -> usize {
        self.held.borrow().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.held.borrow().is_empty()
    }

    /// Calls `each` with every key and its sum, in key order (so that what
    /// is read is the same on every run).
    pub fn read(&self, mut each: impl FnMut(&K, isize)) {
        let held = self.held.borrow();
        let mut sums: Vec<_> = held.iter().collect();
        sums.sort_unstable_by_key(|(key, _)| *key);
        for (key, sum) in sums {
            each(key, *sum);
        }
    }
}

/// Sums the weights per key.
pub trait SumByKey<'scope, K> {
    /// The collection of `(key, sum of its weights)` for keys whose sum is
    /// not zero, and the sums the operator holds.
    fn sum_by_key(self, name: &str) -> (VecCollection<'scope, u64, (K, isize)>, Sums<K>);

    /// [`SumByKey::sum_by_key`], also answering `queries` (each copy
    /// addressed to its worker) with `answer(sums, query, frontier)` from
    /// the sums as of `frontier`: a point query on arrival, as of the
    /// weights added so far; a business query at its time, before that
    /// time's weights are added (see [`crate::dataflow::query`]).
    #[allow(clippy::type_complexity)]
    fn sum_by_key_answering(
        self,
        name: &str,
        queries: StreamVec<'scope, u64, Asked>,
        answer: impl Fn(&Sums<K>, Asked, u64) -> Answered + 'static,
    ) -> (
        VecCollection<'scope, u64, (K, isize)>,
        StreamVec<'scope, u64, Answered>,
        Sums<K>,
    );
}

impl<'scope, K> SumByKey<'scope, K> for VecCollection<'scope, u64, K>
where
    K: ExchangeData + Hash + Eq,
{
    fn sum_by_key(self, name: &str) -> (VecCollection<'scope, u64, (K, isize)>, Sums<K>) {
        let scope = self.inner.scope();
        let none = timely::dataflow::operators::generic::operator::empty(scope);
        let (sums, _, held) = self.sum_by_key_answering(name, none, |_, asked, _| {
            unreachable!("no queries were sent: {asked:?}")
        });
        (sums, held)
    }

    fn sum_by_key_answering(
        self,
        name: &str,
        queries: StreamVec<'scope, u64, Asked>,
        answer: impl Fn(&Sums<K>, Asked, u64) -> Answered + 'static,
    ) -> (
        VecCollection<'scope, u64, (K, isize)>,
        StreamVec<'scope, u64, Answered>,
        Sums<K>,
    ) {
        use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
        use timely::dataflow::operators::generic::OutputBuilder;
        let by_key = Exchange::new(|(key, _, _): &(K, u64, isize)| key.hashed());
        let sums = Sums::default();
        let held = sums.clone();
        let mut builder = OperatorBuilder::new(name.to_owned(), self.inner.scope());
        let mut weight_input = builder.new_input(self.inner, by_key);
        let mut query_input = builder.new_input(queries, query::to_worker());
        let (sum_output, sum_stream) = builder.new_output();
        let (answer_output, answer_stream) = builder.new_output();
        let mut sum_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<((K, isize), u64, isize)>>,
        >::from(sum_output);
        let mut answer_output =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Answered>>>::from(answer_output);
        builder.build(move |capabilities| {
            let mut ports = Ports::new(capabilities);
            let mut pending = Stash::new();
            let mut asked = Stash::new();
            let mut now = Arrived::default();
            let mut handled_below = 0;
            move |frontiers| {
                weight_input.for_each_stamp(|capability, data| pending.hold(capability, data));
                query_input.for_each_stamp(|capability, data| {
                    asked.hold_queries(capability, data, &mut now)
                });
                let mut sum_out = sum_output.activate();
                let mut answer_out = answer_output.activate();
                loop {
                    let held_times = [pending.first_time(), asked.first_time()];
                    let Some(time) = next_complete(held_times, frontiers) else {
                        break;
                    };
                    // Business queries first: they see the sums as of `time`.
                    if let Some((_, questions)) = asked.take(time) {
                        let answers: Vec<Answered> = questions
                            .map(|question| answer(&held, question, time))
                            .collect();
                        answer_out
                            .session(&ports.at(1, time))
                            .give_iterator(answers.into_iter());
                    }
                    if let Some((capability, batch)) = pending.take(time) {
                        let weights = batch.map(|(key, _, weight)| (key, weight)).collect();
                        let mut session = sum_out.session(&capability);
                        held.apply(weights, |key, sum, diff| {
                            session.give(((key.clone(), sum), time, diff))
                        });
                    }
                    handled_below = time + 1;
                }
                // Point queries now, as of every update handled.
                if !now.is_empty() {
                    let frontier =
                        applied_frontier([pending.first_time()], &frontiers[..1], handled_below);
                    for (time, questions) in now.take() {
                        answer_out.session(&ports.at(1, time)).give_iterator(
                            questions.into_iter().map(|q| answer(&held, q, frontier)),
                        );
                    }
                }
                ports.downgrade(frontiers);
            }
        });
        (sum_stream.as_collection(), answer_stream, sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_change_by_retraction_and_insertion_and_zero_is_dropped() {
        let sums = Sums::default();
        let mut out = Vec::new();
        sums.apply(vec![("b", 2), ("a", 1)], |k, s, d| out.push((*k, s, d)));
        out.clear();
        // Weights that cancel within a time change nothing.
        sums.apply(vec![("a", 1), ("a", -1)], |k, s, d| out.push((*k, s, d)));
        assert!(out.is_empty());
        sums.apply(vec![("a", 4)], |k, s, d| out.push((*k, s, d)));
        assert_eq!(out, vec![("a", 1, -1), ("a", 5, 1)]);
        sums.apply(vec![("b", -2)], |_, _, _| {});
        assert_eq!(sums.len(), 1);
        let mut read = Vec::new();
        sums.read(|k, s| read.push((*k, s)));
        assert_eq!(read, vec![("a", 5)]);
    }
}
