//! Gather: the parts of each query's answer put together on the worker
//! that asked it (see [`crate::dataflow::query`]).

use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

use super::windows::Watermark;
use crate::dataflow::query::{Answered, Asking};
use crate::model::records::EventTime;

/// Puts the parts of each query together on the worker that asked it and
/// replies, once every part is in, with the answer as of the parts'
/// frontier `f` and the event-time frontier at `f`: the least over the
/// workers of their largest watermark below `f` (known once the watermarks'
/// frontier reaches `f`). The output is empty.
pub fn gather<'scope>(
    parts: StreamVec<'scope, u64, Answered>,
    watermarks: StreamVec<'scope, u64, Watermark>,
    asking: Asking,
) -> StreamVec<'scope, u64, ()> {
    let peers = parts.scope().peers();
    let to_origin = Exchange::new(|answered: &Answered| answered.origin as u64);
    parts.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
        watermarks.broadcast(),
        to_origin,
        Pipeline,
        "Gather",
        move |_capability, _info| {
            let mut marks: BTreeMap<u64, Vec<Watermark>> = BTreeMap::new();
            let mut frontiers = EventFrontiers::new(peers);
            move |(part_input, part_frontier), (mark_input, mark_frontier), _output| {
                part_input.for_each_stamp(|_capability, data| {
                    data.flat_map(|data| data.drain(..))
                        .for_each(|answered| asking.add_part(answered));
                });
                mark_input.for_each_stamp(|capability, data| {
                    let time = *capability.least().expect("a total order has a least time");
                    let held = marks.entry(time).or_default();
                    data.for_each(|data| held.append(data));
                });
                // Every watermark below the watermarks' frontier is in.
                let marks_below = mark_frontier.frontier().first().copied();
                while let Some(entry) = marks.first_entry() {
                    if marks_below.is_some_and(|below| *entry.key() >= below) {
                        break;
                    }
                    let time = *entry.key();
                    frontiers.apply(time, entry.remove());
                }
                let known = |frontier: u64| marks_below.is_none_or(|below| frontier <= below);
                for (frontier, id) in asking.due(known) {
                    asking.answer(id, frontiers.at(frontier));
                }
                // A part still to come is as of a frontier at least the
                // parts' frontier here (its operator's applied frontier
                // only grows, and its output is held below it).
                let needed = [
                    asking.oldest_complete(),
                    part_frontier.frontier().first().copied(),
                ]
                .into_iter()
                .flatten()
                .min();
                frontiers.forget_below(needed.unwrap_or(u64::MAX));
            }
        },
    )
}

/// The event-time frontier at each logical frontier, from the watermarks
/// applied in time order: the least over the workers of their largest
/// watermark at a time below it. Keeps the frontiers it may still be asked
/// about.
struct EventFrontiers {
    promised: Vec<EventTime>,
    /// At every logical frontier up to the first key's.
    base: EventTime,
    /// By time `t` with watermarks: the event-time frontier for logical
    /// frontiers above `t` (up to the next key's).
    after: BTreeMap<u64, EventTime>,
}

impl EventFrontiers {
    fn new(peers: usize) -> Self {
        EventFrontiers {
            promised: vec![0; peers],
            base: 0,
            after: BTreeMap::new(),
        }
    }

    /// Applies the watermarks of `time`, no earlier than those applied.
    fn apply(&mut self, time: u64, marks: Vec<Watermark>) {
        for mark in marks {
            self.promised[mark.source] = self.promised[mark.source].max(mark.frontier);
        }
        let least = self
            .promised
            .iter()
            .copied()
            .min()
            .unwrap_or(EventTime::MAX);
        self.after.insert(time, least);
    }

    /// The event-time frontier at logical frontier `frontier` (every
    /// watermark below it applied, and it not below a forgotten one).
    fn at(&self, frontier: u64) -> EventTime {
        self.after
            .range(..frontier)
            .next_back()
            .map_or(self.base, |(_, at)| *at)
    }

    /// Folds what frontiers below `bound` need into the base.
    fn forget_below(&mut self, bound: u64) {
        while let Some(entry) = self.after.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            self.base = entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(source: usize, frontier: EventTime) -> Watermark {
        Watermark { source, frontier }
    }

    #[test]
    fn the_event_time_frontier_at_a_logical_frontier_counts_watermarks_below_it() {
        let mut at = EventFrontiers::new(2);
        at.apply(3, vec![mark(0, 100), mark(1, 50)]);
        at.apply(5, vec![mark(1, 200)]);
        at.apply(8, vec![mark(0, 300)]);
        assert_eq!(at.at(3), 0, "watermarks at 3 are not below 3");
        assert_eq!(at.at(4), 50);
        assert_eq!(at.at(6), 100);
        assert_eq!(at.at(9), 200);
        at.forget_below(7);
        assert_eq!(at.at(7), 100, "still answered after forgetting below 7");
        assert_eq!(at.at(9), 200);
    }
}
