//! Queries over the state the dataflow holds (docs/contract.md, "Queries"),
//! answered by the dataflow itself.
//!
//! A query is an input like any other: a worker gives it at its current
//! epoch `t`, and the exchange takes it to the worker that holds its key
//! (or to every worker, for a question about a whole business).
//!
//! - A **point** query (one device's contact, one pair's count) is answered
//!   by the operator holding the key as soon as it arrives, from the state
//!   the operator has applied: every update below the operator's applied
//!   frontier `f` and none at or beyond it, so the answer is exactly the
//!   state as of `f` — the state the upsert topics hold once the progress
//!   topic reaches `f`. It does not wait for `t` to cross the dataflow.
//! - A **business** query has a part on every worker, and parts answered
//!   at different frontiers would not add up to one state; so each worker
//!   answers it when it handles `t`, *before* applying `t`'s updates, and
//!   the whole answer is exactly the state as of `t`.
//!
//! The parts travel back to the asking worker, which replies once every
//! part is in and the event-time frontier at the answer's frontier is
//! known. No copy of the state is kept for queries, and which process
//! holds a key does not matter: the dataflow's exchanges route both ways.
//!
//! ```text
//!  asked (any worker) ──route──► Enrich (present, device contacts) ──parts──┐
//!                      └─route──► SumByKey (walk-in counts) ──────parts────┴─► Gather (asking worker) ─► reply
//!  watermarks (broadcast) ──────────────────────────────────────────────────────┘ (the event-time frontier at f)
//! ```
//!
//! This module holds the queries' types and bookkeeping; the operators
//! answer them (`crate::dataflow::operators::gather` puts the parts together).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use differential_dataflow::Hashable;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::StreamVec;

use crate::dataflow::time::Time;
use crate::model::records::{EventTime, Id, Present};

/// A question about the collections' state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Query {
    /// The devices in a business now (`present` rows of the business).
    Present {
        /// The business.
        business: String,
    },
    /// The walk-in count of one (business, contact).
    Count {
        /// The business.
        business: String,
        /// The contact.
        contact: String,
    },
    /// Every contact's walk-in count at a business.
    Counts {
        /// The business.
        business: String,
    },
    /// A device's contact.
    Contact {
        /// The device.
        device: String,
    },
}

/// Which operator answers a query, and on which workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The join (`Enrich`): contacts and present rows, by device.
    Devices,
    /// The count (`SumByKey`): counts, by (business, contact).
    Counts,
}

impl Query {
    /// Whether one worker holds the whole answer (a point query), which it
    /// then gives on arrival, as of the state it has applied.
    pub fn is_point(&self) -> bool {
        matches!(self, Query::Count { .. } | Query::Contact { .. })
    }

    /// The operator whose state answers this query.
    pub fn holder(&self) -> Holder {
        match self {
            Query::Present { .. } | Query::Contact { .. } => Holder::Devices,
            Query::Count { .. } | Query::Counts { .. } => Holder::Counts,
        }
    }

    /// The worker that holds the query's key, or `None` when every worker
    /// holds part of the answer. The holders exchange their input by the
    /// same hash, so the key's state is on this worker.
    pub fn owner(&self, peers: usize) -> Option<usize> {
        let hash = match self {
            Query::Contact { device } => Id::from(device.as_str()).hashed(),
            Query::Count { business, contact } => {
                (Id::from(business.as_str()), Id::from(contact.as_str())).hashed()
            }
            Query::Present { .. } | Query::Counts { .. } => return None,
        };
        Some((hash % peers as u64) as usize)
    }
}

/// A query on its way: who asked, and which worker it is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    /// Unique on the asking worker.
    pub id: u64,
    /// The asking worker, to which the parts of the answer go.
    pub origin: usize,
    /// The worker that answers this copy.
    pub to: usize,
    /// The question.
    pub query: Query,
}

/// One worker's part of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Present rows.
    Present(Vec<Present>),
    /// A count (0: no row).
    Count(u64),
    /// `(contact, count)` pairs.
    Counts(Vec<(String, u64)>),
    /// A contact, if the device has one.
    Contact(Option<String>),
}

impl Asked {
    /// This copy's answer: `part`, exactly the answering worker's state as
    /// of `frontier`.
    pub fn answered(self, part: Part, frontier: Time) -> Answered {
        Answered {
            id: self.id,
            origin: self.origin,
            part,
            frontier,
        }
    }
}

/// A part on its way back to the asking worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    /// The query's id on the asking worker.
    pub id: u64,
    /// The asking worker.
    pub origin: usize,
    /// The part.
    pub part: Part,
    /// The logical frontier the part is exactly as of: the query's time for
    /// a business query, the answering operator's applied frontier for a
    /// point query.
    pub frontier: Time,
}

/// What an answer is exactly as of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsOf {
    /// The logical time: the state reflects every update below it.
    pub frontier: Time,
    /// The event-time frontier `W` at that time (see docs/contract.md).
    pub event_time: EventTime,
}

/// A complete answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The question.
    pub query: Query,
    /// The answer, every worker's part put together (present rows by
    /// device, counts by count descending then contact).
    pub part: Part,
    /// What it is exactly as of.
    pub as_of: AsOf,
}

/// Where an answer goes: called once with it, on the worker that asked
/// (so it should only hand the answer on, e.g. to a thread that writes it
/// out). Dropped uncalled when the workers stop first.
pub type Reply = Box<dyn FnOnce(Answer) + Send>;

/// Where a process's queries wait for a worker to ask them: shared by the
/// threads that take queries (HTTP) and the workers of the process. Any
/// worker may take any query; the dataflow routes it.
#[derive(Clone, Default)]
pub struct Inbox {
    inner: Arc<InboxInner>,
}

#[derive(Default)]
struct InboxInner {
    queue: Mutex<Vec<(Query, Reply)>>,
    /// Whether the workers answer: set once the first frontier is complete
    /// (after a restore, once its epoch is), cleared when they stop.
    open: AtomicBool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("answering", &self.answering())
            .finish_non_exhaustive()
    }
}

/// Why a query could not be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAnswering;

impl Inbox {
    /// Queues `query` for the workers; `reply` gets its answer. Refused (and
    /// `reply` dropped) before the first frontier and after the workers
    /// stopped.
    pub fn ask(&self, query: Query, reply: Reply) -> Result<(), NotAnswering> {
        if !self.answering() {
            return Err(NotAnswering);
        }
        self.inner
            .queue
            .lock()
            .expect("no panics holding the inbox")
            .push((query, reply));
        Ok(())
    }

    /// Whether the workers answer queries now.
    pub fn answering(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Opens (the first frontier is complete) or closes (the workers stop:
    /// queued queries are dropped, so their askers hear so) the inbox.
    pub fn set_answering(&self, open: bool) {
        self.inner.open.store(open, Ordering::Release);
        if !open {
            self.take();
        }
    }

    /// Takes every queued query (a worker asks them).
    pub fn take(&self) -> Vec<(Query, Reply)> {
        let mut queue = self
            .inner
            .queue
            .lock()
            .expect("no panics holding the inbox");
        if queue.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *queue)
        }
    }
}

/// The queries one worker asked and has not answered yet; shared between
/// the driver, which asks ([`Asking::ask`]), and the operator that puts
/// answers together.
#[derive(Clone, Default)]
pub struct Asking {
    inner: Rc<RefCell<AskingInner>>,
}

#[derive(Default)]
struct AskingInner {
    next: u64,
    /// By id.
    pending: HashMap<u64, Pending>,
}

/// A query asked and not answered yet.
struct Pending {
    query: Query,
    reply: Reply,
    /// How many parts the answer has (one per worker asked).
    parts_expected: usize,
    parts: Vec<Part>,
    /// The frontier the parts are as of (all the same), once one is in.
    frontier: Option<Time>,
}

impl Pending {
    /// The frontier the whole answer is as of, once every part is in.
    fn complete(&self) -> Option<Time> {
        self.frontier
            .filter(|_| self.parts.len() == self.parts_expected)
    }
}

impl Asking {
    /// Registers `query`, asked by worker `origin` of `peers`; returns its
    /// copies to send (at the asking worker's epoch), one per worker that
    /// holds part of the answer.
    pub fn ask(&self, query: Query, reply: Reply, origin: usize, peers: usize) -> Vec<Asked> {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next;
        inner.next += 1;
        let targets: Vec<usize> = match query.owner(peers) {
            Some(owner) => vec![owner],
            None => (0..peers).collect(),
        };
        let parts_expected = targets.len();
        let copies = targets
            .into_iter()
            .map(|to| Asked {
                id,
                origin,
                to,
                query: query.clone(),
            })
            .collect();
        inner.pending.insert(
            id,
            Pending {
                query,
                reply,
                parts_expected,
                parts: Vec::new(),
                frontier: None,
            },
        );
        copies
    }

    /// Queries asked and not yet answered.
    pub fn pending(&self) -> usize {
        self.inner.borrow().pending.len()
    }

    /// Adds a worker's part to its query's answer.
    pub fn add_part(&self, answered: Answered) {
        if let Some(pending) = self.inner.borrow_mut().pending.get_mut(&answered.id) {
            debug_assert!(
                pending.frontier.is_none_or(|f| f == answered.frontier),
                "the parts of one answer are as of one frontier"
            );
            pending.frontier = Some(answered.frontier);
            pending.parts.push(answered.part);
        }
    }

    /// The queries with every part in whose frontier `known` says the
    /// event-time frontier at is known, as `(frontier, id)`, in frontier
    /// order.
    pub fn due(&self, known: impl Fn(Time) -> bool) -> Vec<(Time, u64)> {
        let mut due: Vec<(Time, u64)> = self
            .inner
            .borrow()
            .pending
            .iter()
            .filter_map(|(id, pending)| Some((pending.complete()?, *id)))
            .filter(|(frontier, _)| known(*frontier))
            .collect();
        due.sort_unstable();
        due
    }

    /// The least frontier of a query with every part in and not yet
    /// answered.
    pub fn oldest_complete(&self) -> Option<Time> {
        self.inner
            .borrow()
            .pending
            .values()
            .filter_map(Pending::complete)
            .min()
    }

    /// Answers query `id` (every part in) with its parts put together, as
    /// of their frontier and the event-time frontier `event_time` there.
    pub fn answer(&self, id: u64, event_time: EventTime) {
        let pending = self
            .inner
            .borrow_mut()
            .pending
            .remove(&id)
            .expect("an answered query is pending");
        let as_of = AsOf {
            frontier: pending
                .complete()
                .expect("an answered query has every part"),
            event_time,
        };
        let part = merge(&pending.query, pending.parts);
        (pending.reply)(Answer {
            query: pending.query,
            part,
            as_of,
        });
    }
}

/// The queries for one holder, each at the worker it is for.
pub fn routed<'scope>(
    asked: StreamVec<'scope, Time, Asked>,
    holder: Holder,
) -> StreamVec<'scope, Time, Asked> {
    use timely::dataflow::operators::vec::Filter;
    asked.filter(move |asked| asked.query.holder() == holder)
}

/// The exchange that takes each copy of a query to its worker.
pub fn to_worker() -> Exchange<Asked, impl FnMut(&Asked) -> u64> {
    Exchange::new(|asked: &Asked| asked.to as u64)
}

/// Every worker's part of `query`'s answer, put together.
fn merge(query: &Query, parts: Vec<Part>) -> Part {
    match query {
        Query::Present { .. } => {
            let mut rows: Vec<Present> = parts
                .into_iter()
                .flat_map(|part| match part {
                    Part::Present(rows) => rows,
                    _ => Vec::new(),
                })
                .collect();
            rows.sort_by(|a, b| (&a.device, &a.business).cmp(&(&b.device, &b.business)));
            Part::Present(rows)
        }
        Query::Count { .. } => Part::Count(
            parts
                .into_iter()
                .map(|part| match part {
                    Part::Count(count) => count,
                    _ => 0,
                })
                .sum(),
        ),
        Query::Counts { .. } => {
            let mut counts: Vec<(String, u64)> = parts
                .into_iter()
                .flat_map(|part| match part {
                    Part::Counts(counts) => counts,
                    _ => Vec::new(),
                })
                .collect();
            counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Part::Counts(counts)
        }
        Query::Contact { .. } => Part::Contact(parts.into_iter().find_map(|part| match part {
            Part::Contact(contact) => contact,
            _ => None,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_query_goes_to_one_worker_and_a_business_query_to_all() {
        let asking = Asking::default();
        let reply = || -> Reply { Box::new(|_| {}) };
        let one = asking.ask(
            Query::Contact {
                device: "phone".into(),
            },
            reply(),
            1,
            4,
        );
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0].to as u64,
            Id::from("phone").hashed() % 4,
            "the worker that holds the device"
        );
        let all = asking.ask(
            Query::Present {
                business: "shop".into(),
            },
            reply(),
            1,
            4,
        );
        assert_eq!(
            all.iter().map(|a| a.to).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_ne!(one[0].id, all[0].id);
        assert_eq!(asking.pending(), 2);
    }

    #[test]
    fn parts_merge_in_the_documented_order() {
        let counts = merge(
            &Query::Counts {
                business: "shop".into(),
            },
            vec![
                Part::Counts(vec![("b".into(), 2), ("c".into(), 5)]),
                Part::Counts(vec![("a".into(), 2)]),
            ],
        );
        assert_eq!(
            counts,
            Part::Counts(vec![("c".into(), 5), ("a".into(), 2), ("b".into(), 2)])
        );
        let contact = merge(
            &Query::Contact {
                device: "phone".into(),
            },
            vec![Part::Contact(None)],
        );
        assert_eq!(contact, Part::Contact(None));
    }
}
