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

/// Puts the parts of each query together on the worker that asked it,
/// once every part is in (both frontiers have passed its time), and
/// replies with the answer as of the query's time and the event-time
/// frontier then: the least over the workers of their largest watermark
/// below that time. The output is empty: the operator's frontier says
/// which times are answered.
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
            let mut promised: Vec<EventTime> = vec![0; peers];
            let mut apply_below = move |marks: &mut BTreeMap<u64, Vec<Watermark>>, bound: u64| {
                while let Some(entry) = marks.first_entry() {
                    if *entry.key() >= bound {
                        break;
                    }
                    for mark in entry.remove() {
                        promised[mark.source] = promised[mark.source].max(mark.frontier);
                    }
                }
                promised.iter().copied().min().unwrap_or(EventTime::MAX)
            };
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
                // Every query whose time both frontiers have passed has all
                // its parts, and every watermark below its time is in.
                let complete =
                    |time: &u64| !part_frontier.less_equal(time) && !mark_frontier.less_equal(time);
                for (time, id) in asking.due(complete) {
                    let event_time = apply_below(&mut marks, time);
                    asking.answer(id, event_time);
                }
                // Watermarks below every pending query and both frontiers
                // are applied now, so that they do not pile up (a query
                // asked later is at a time above the frontiers).
                let bound = [
                    asking.oldest(),
                    part_frontier.frontier().first().copied(),
                    mark_frontier.frontier().first().copied(),
                ]
                .into_iter()
                .flatten()
                .min();
                if let Some(bound) = bound {
                    apply_below(&mut marks, bound);
                }
            }
        },
    )
}
