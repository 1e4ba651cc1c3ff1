//! The retroactive join of walk-ins with their device's current contact,
//! holding each walk-in in 24 bytes.
//!
//! For each device the operator keeps its contact and its walk-ins; its
//! output is the collection of `(walk-in, contact)` for devices that have a
//! contact. A walk-in that arrives is enriched at once; a contact that
//! arrives or changes retracts every walk-in of the device with the old
//! contact and inserts them with the new one — the whole history moves.
//!
//! # Notes
//!
//! Logical times must be totally ordered (`u64`); the operator handles a
//! logical time once both input frontiers have passed it, in time order,
//! and emits at that time. Both inputs are exchanged by the device's hash,
//! so a device's walk-ins and contact meet on one worker.
//!
//! # State
//!
//! This is the dataflow's one state that grows with history: a walk-in must
//! be kept for as long as a later login can enrich it. It is the reason
//! this is an operator rather than differential's `join` over two
//! arrangements, which holds each walk-in with its update's time, diff and
//! offsets, and twice while its batches merge. Here a walk-in is its
//! business's number on this worker (`Businesses`) and its window, 24
//! bytes in its device's slice; a device is its [`Id`] (inline), its
//! contact, and that slice, 56 bytes. Nothing is kept per update.
//!
//! # Contract
//!
//! Each input record has multiplicity 0 or 1 at every time, and a device
//! has at most one contact (`assert!`ed: a retraction of what is not held
//! would otherwise corrupt the state silently). The output then has
//! multiplicity 0 or 1 too.
//!
//! # Example
//!
//! ```
//! use presence::dataflow::operators::enrich::Devices;
//! use presence::dataflow::operators::Window;
//!
//! let devices = Devices::default();
//! let mut out = Vec::new();
//! let window = Window { start: 1, detected_at: 5 };
//! devices.apply(vec![(("shop".into(), "phone".into()), window, 1)], vec![], |e, d| out.push((e, d)));
//! assert!(out.is_empty()); // no contact yet
//! devices.apply(vec![], vec![(("phone".into(), "ann".into()), 1)], |e, d| out.push((e, d)));
//! assert_eq!(out.len(), 1); // the past walk-in, enriched
//! assert_eq!(out[0].0.contact, "ann");
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use super::stash::{applied_frontier, next_complete, Arrived, Ports, Stash};
use super::windows::{Open, Window};
use crate::dataflow::query::{self, Answered, Asked, Part, Query};
use crate::model::records::{EnrichedWalkIn, Id, Present};

/// A walk-in update: `((business, device), window)` and its diff.
pub type WalkinUpdate = ((Id, Id), Window, isize);
/// A contact update: `(device, contact)` and its diff.
pub type ContactUpdate = ((Id, String), isize);
/// An open walk-in update: `((business, device), open)` and its diff.
pub type OpenUpdate = ((Id, Id), Open, isize);

/// The devices one worker holds: each one's contact and walk-ins. Cloning
/// shares them (the operator writes, a reader such as a backfill reads
/// once the dataflow is done).
#[derive(Clone, Default)]
pub struct Devices {
    held: Rc<RefCell<HashMap<Id, Device, foldhash::fast::RandomState>>>,
    /// Open walk-ins by (device, business): who is in a store now (one
    /// row per open walk-in, bounded by open visits).
    open: Rc<RefCell<BTreeMap<(Id, Business), Open>>>,
    businesses: Businesses,
}

/// What a worker's [`Devices`] hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevicesSize {
    /// Devices with a contact or a walk-in.
    pub devices: usize,
    /// Walk-ins.
    pub walkins: usize,
    /// Open walk-ins (present rows).
    pub open: usize,
    /// Businesses numbered.
    pub businesses: usize,
}

/// One logical time's changes to a device: its walk-ins', its contact's
/// and its open walk-ins'.
type Changes = (
    Vec<((Business, Window), isize)>,
    Vec<(String, isize)>,
    Vec<((Business, Open), isize)>,
);

/// One device's contact and walk-ins, each in exactly the memory it needs
/// (boxed, not growable: the walk-ins are the history, and a vector's
/// spare capacity would be part of it).
#[derive(Default)]
struct Device {
    contact: Option<Box<str>>,
    walkins: Box<[(Business, Window)]>,
}

impl Device {
    /// Applies one logical time's changes to the walk-ins (consolidated:
    /// each walk-in once, with a diff of 1 or -1), in one reallocation.
    fn change(&mut self, changes: Vec<((Business, Window), isize)>) {
        if changes.is_empty() {
            return;
        }
        let mut walkins = std::mem::take(&mut self.walkins).into_vec();
        let mut added = Vec::new();
        for (walkin, diff) in changes {
            match diff {
                1 => added.push(walkin),
                -1 => {
                    let at = walkins
                        .iter()
                        .position(|held| *held == walkin)
                        .expect("a walk-in is retracted only if it is held");
                    walkins.swap_remove(at);
                }
                _ => panic!("walk-ins have multiplicity 0 or 1, not a change of {diff}"),
            }
        }
        walkins.reserve_exact(added.len());
        walkins.extend(added);
        self.walkins = walkins.into_boxed_slice();
    }
}

impl Devices {
    /// Applies one logical time's updates (in any order; they are
    /// consolidated first), calling `emit` with each change of the enriched
    /// walk-ins.
    pub fn apply(
        &self,
        walkins: Vec<WalkinUpdate>,
        contacts: Vec<ContactUpdate>,
        emit: impl FnMut(EnrichedWalkIn, isize),
    ) {
        self.apply_all(walkins, contacts, Vec::new(), emit, |_, _| {});
    }

    /// [`Devices::apply`] with the open walk-ins' updates too, calling
    /// `emit_present` with each change of the present rows (open walk-ins
    /// with their device's contact, or none).
    pub fn apply_all(
        &self,
        mut walkins: Vec<WalkinUpdate>,
        mut contacts: Vec<ContactUpdate>,
        mut opens: Vec<OpenUpdate>,
        mut emit: impl FnMut(EnrichedWalkIn, isize),
        mut emit_present: impl FnMut(Present, isize),
    ) {
        // By device, then walk-in: equal updates meet and cancel.
        let mut changes: BTreeMap<Id, Changes> = BTreeMap::new();
        for ((business, device), window, diff) in walkins.drain(..) {
            let business = self.businesses.number(business);
            changes
                .entry(device)
                .or_default()
                .0
                .push(((business, window), diff));
        }
        for ((device, contact), diff) in contacts.drain(..) {
            changes.entry(device).or_default().1.push((contact, diff));
        }
        for ((business, device), open, diff) in opens.drain(..) {
            let business = self.businesses.number(business);
            changes
                .entry(device)
                .or_default()
                .2
                .push(((business, open), diff));
        }
        let mut held = self.held.borrow_mut();
        let mut open_held = self.open.borrow_mut();
        for (device_id, (mut walkin_changes, mut contact_changes, mut open_changes)) in changes {
            differential_dataflow::consolidation::consolidate(&mut walkin_changes);
            differential_dataflow::consolidation::consolidate(&mut contact_changes);
            differential_dataflow::consolidation::consolidate(&mut open_changes);
            let device = held.entry(device_id.clone()).or_default();
            let old_contact = device.contact.clone();
            // Retractions first: a device has one contact at a time.
            contact_changes.sort_by_key(|(_, diff)| *diff);
            for (contact, diff) in contact_changes {
                match diff {
                    -1 => {
                        assert_eq!(
                            device.contact.as_deref(),
                            Some(contact.as_str()),
                            "a contact is retracted only if it is held"
                        );
                        device.contact = None;
                    }
                    1 => {
                        assert!(
                            device.contact.is_none(),
                            "a device has one contact at a time"
                        );
                        device.contact = Some(contact.into_boxed_str());
                    }
                    _ => panic!("contacts have multiplicity 0 or 1, not a change of {diff}"),
                }
            }
            let name = |business: Business| self.businesses.name(business);
            let mut enriched = |contact: &str, (business, window): (Business, Window), diff| {
                emit(
                    EnrichedWalkIn {
                        business: name(business).to_string(),
                        device: device_id.to_string(),
                        start: window.start,
                        detected_at: window.detected_at,
                        contact: contact.to_owned(),
                    },
                    diff,
                )
            };
            if old_contact == device.contact {
                if let Some(contact) = &device.contact {
                    for &(walkin, diff) in &walkin_changes {
                        enriched(contact, walkin, diff);
                    }
                }
                device.change(walkin_changes);
            } else {
                if let Some(old) = &old_contact {
                    for walkin in &device.walkins {
                        enriched(old, *walkin, -1);
                    }
                }
                device.change(walkin_changes);
                if let Some(new) = &device.contact {
                    for walkin in &device.walkins {
                        enriched(new, *walkin, 1);
                    }
                }
            }
            // The present rows: the open walk-ins with the contact.
            let device_open = (device_id.clone(), 0)..=(device_id.clone(), Business::MAX);
            let mut present = |contact: Option<&str>, business: Business, open: Open, diff| {
                emit_present(self.present_row(business, &device_id, open, contact), diff)
            };
            let moved = old_contact != device.contact;
            if moved {
                for (&(_, business), &open) in open_held.range(device_open.clone()) {
                    present(old_contact.as_deref(), business, open, -1);
                }
            }
            // Retractions first: a (business, device) has one open walk-in.
            open_changes.sort_by_key(|(_, diff)| *diff);
            for ((business, open), diff) in open_changes {
                let key = (device_id.clone(), business);
                match diff {
                    -1 => {
                        let removed = open_held.remove(&key);
                        assert_eq!(
                            removed,
                            Some(open),
                            "an open walk-in is retracted only if it is held"
                        );
                    }
                    1 => {
                        let replaced = open_held.insert(key, open);
                        assert!(
                            replaced.is_none(),
                            "a business and device have one open walk-in at a time"
                        );
                    }
                    _ => panic!("open walk-ins have multiplicity 0 or 1, not a change of {diff}"),
                }
                if !moved {
                    present(device.contact.as_deref(), business, open, diff);
                }
            }
            if moved {
                for (&(_, business), &open) in open_held.range(device_open) {
                    present(device.contact.as_deref(), business, open, 1);
                }
            }
            if device.contact.is_none() && device.walkins.is_empty() {
                held.remove(&device_id);
            }
        }
    }

    /// Calls `each` with every device's contact, in device order.
    pub fn contacts(&self, mut each: impl FnMut(&Id, &str)) {
        let held = self.held.borrow();
        for (device, state) in sorted(&held) {
            if let Some(contact) = &state.contact {
                each(device, contact);
            }
        }
    }

    /// Calls `each` with every walk-in (`device`, `business`, window) and
    /// its device's contact, in device order.
    pub fn walkins(&self, mut each: impl FnMut(&Id, &Id, Window, Option<&str>)) {
        let held = self.held.borrow();
        for (device, state) in sorted(&held) {
            for &(business, window) in &state.walkins {
                each(
                    device,
                    &self.businesses.name(business),
                    window,
                    state.contact.as_deref(),
                );
            }
        }
    }

    /// Calls `each` with every present row (open walk-in), in device order.
    pub fn present(&self, each: impl FnMut(Present)) {
        self.present_where(|_| true, each);
    }

    /// Calls `each` with the present rows of the businesses `at` accepts,
    /// in device order, each with its device's contact.
    fn present_where(&self, at: impl Fn(Business) -> bool, mut each: impl FnMut(Present)) {
        let held = self.held.borrow();
        for (&(ref device, business), &open) in self.open.borrow().iter() {
            if at(business) {
                let contact = held.get(device).and_then(|state| state.contact.as_deref());
                each(self.present_row(business, device, open, contact));
            }
        }
    }

    /// The present row of an open walk-in.
    fn present_row(
        &self,
        business: Business,
        device: &Id,
        open: Open,
        contact: Option<&str>,
    ) -> Present {
        Present {
            business: self.businesses.name(business).to_string(),
            device: device.to_string(),
            since: open.since,
            last_seen: open.last_seen,
            contact: contact.map(str::to_owned),
        }
    }

    /// This worker's part of the answer to `asked` (see [`query`]): the
    /// state as it is, which the operator keeps as of `frontier`.
    pub fn answer(&self, asked: Asked, frontier: u64) -> Answered {
        let part = match &asked.query {
            Query::Contact { device } => Part::Contact(
                self.held
                    .borrow()
                    .get(device.as_str())
                    .and_then(|state| state.contact.as_deref().map(str::to_owned)),
            ),
            Query::Present { business } => {
                let mut rows = Vec::new();
                if let Some(number) = self.businesses.find(business) {
                    self.present_where(|held| held == number, |row| rows.push(row));
                }
                Part::Present(rows)
            }
            Query::Count { .. } | Query::Counts { .. } => {
                unreachable!("counts are asked of the count's operator")
            }
        };
        asked.answered(part, frontier)
    }

    /// What this worker holds: devices and walk-ins.
    pub fn size(&self) -> DevicesSize {
        let held = self.held.borrow();
        DevicesSize {
            devices: held.len(),
            walkins: held.values().map(|device| device.walkins.len()).sum(),
            open: self.open.borrow().len(),
            businesses: self.businesses.table.borrow().names.len(),
        }
    }
}

/// The devices in their order (so that what is read is the same on every run).
fn sorted(held: &HashMap<Id, Device, foldhash::fast::RandomState>) -> Vec<(&Id, &Device)> {
    let mut devices: Vec<_> = held.iter().collect();
    devices.sort_unstable_by_key(|(device, _)| *device);
    devices
}

/// What [`Enrich::enrich`] gives.
pub struct Enriched<'scope> {
    /// Walk-ins of devices with a contact, with that contact.
    pub walkins: VecCollection<'scope, u64, EnrichedWalkIn>,
    /// Open walk-ins with their device's contact, if any (`present`).
    pub present: VecCollection<'scope, u64, Present>,
    /// This worker's parts of the answers to the queries it was sent.
    pub answers: StreamVec<'scope, u64, Answered>,
    /// The devices the operator holds.
    pub devices: Devices,
}

/// Joins walk-ins with their device's current contact, retroactively.
pub trait Enrich<'scope> {
    /// The walk-ins (`((business, device), window)`) of devices with a
    /// contact in `contacts` (`(device, contact)`, at most one per device),
    /// with that contact; the open walk-ins (`open`, at most one per
    /// (business, device)) with their device's contact or none; and the
    /// answers to `queries` about contacts and present rows (each copy
    /// already addressed to its worker), as of each query's time.
    fn enrich(
        self,
        contacts: VecCollection<'scope, u64, (Id, String)>,
        open: VecCollection<'scope, u64, ((Id, Id), Open)>,
        queries: StreamVec<'scope, u64, Asked>,
    ) -> Enriched<'scope>;
}

impl<'scope> Enrich<'scope> for VecCollection<'scope, u64, ((Id, Id), Window)> {
    fn enrich(
        self,
        contacts: VecCollection<'scope, u64, (Id, String)>,
        open: VecCollection<'scope, u64, ((Id, Id), Open)>,
        queries: StreamVec<'scope, u64, Asked>,
    ) -> Enriched<'scope> {
        type Walkin = (((Id, Id), Window), u64, isize);
        type Contact = ((Id, String), u64, isize);
        type Opened = (((Id, Id), Open), u64, isize);
        let scope = self.inner.scope();
        let devices = Devices::default();
        let held = devices.clone();
        let mut builder = OperatorBuilder::new("Enrich".to_owned(), scope);
        let mut walkin_input = builder.new_input(
            self.inner,
            Exchange::new(|(((_, device), _), _, _): &Walkin| device.hashed()),
        );
        let mut contact_input = builder.new_input(
            contacts.inner,
            Exchange::new(|((device, _), _, _): &Contact| device.hashed()),
        );
        let mut open_input = builder.new_input(
            open.inner,
            Exchange::new(|(((_, device), _), _, _): &Opened| device.hashed()),
        );
        let mut query_input = builder.new_input(queries, query::to_worker());
        let (enriched_output, enriched_stream) = builder.new_output();
        let (present_output, present_stream) = builder.new_output();
        let (answer_output, answer_stream) = builder.new_output();
        let mut enriched_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<(EnrichedWalkIn, u64, isize)>>,
        >::from(enriched_output);
        let mut present_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<(Present, u64, isize)>>,
        >::from(present_output);
        let mut answer_output =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Answered>>>::from(answer_output);
        builder.build(move |capabilities| {
            let mut ports = Ports::new(capabilities);
            let mut walkins = Stash::new();
            let mut contacts = Stash::new();
            let mut opens = Stash::new();
            let mut queries = Stash::new();
            let mut now = Arrived::default();
            let mut handled_below = 0;
            move |frontiers| {
                walkin_input.for_each_stamp(|capability, data| walkins.hold(capability, data));
                contact_input.for_each_stamp(|capability, data| contacts.hold(capability, data));
                open_input.for_each_stamp(|capability, data| opens.hold(capability, data));
                query_input.for_each_stamp(|capability, data| {
                    queries.hold_queries(capability, data, &mut now)
                });
                let mut enriched_out = enriched_output.activate();
                let mut present_out = present_output.activate();
                let mut answer_out = answer_output.activate();
                loop {
                    let held_times = [
                        walkins.first_time(),
                        contacts.first_time(),
                        opens.first_time(),
                        queries.first_time(),
                    ];
                    let Some(time) = next_complete(held_times, frontiers) else {
                        break;
                    };
                    // Business queries first: they see the state as of `time`.
                    if let Some((_, asked)) = queries.take(time) {
                        let answers: Vec<Answered> =
                            asked.map(|asked| held.answer(asked, time)).collect();
                        answer_out
                            .session(&ports.at(2, time))
                            .give_iterator(answers.into_iter());
                    }
                    let walkin_updates: Vec<WalkinUpdate> = take(&mut walkins, time)
                        .into_iter()
                        .map(|((key, window), diff)| (key, window, diff))
                        .collect();
                    let contact_updates: Vec<ContactUpdate> = take(&mut contacts, time);
                    let open_updates: Vec<OpenUpdate> = take(&mut opens, time)
                        .into_iter()
                        .map(|((key, open), diff)| (key, open, diff))
                        .collect();
                    let at = ports.at(0, time);
                    let mut enriched = enriched_out.session(&at);
                    let present_at = ports.at(1, time);
                    let mut present = present_out.session(&present_at);
                    held.apply_all(
                        walkin_updates,
                        contact_updates,
                        open_updates,
                        |row, diff| enriched.give((row, time, diff)),
                        |row, diff| present.give((row, time, diff)),
                    );
                    handled_below = time + 1;
                }
                // Point queries now, as of every update handled.
                if !now.is_empty() {
                    let frontier = applied_frontier(
                        [
                            walkins.first_time(),
                            contacts.first_time(),
                            opens.first_time(),
                        ],
                        &frontiers[..3],
                        handled_below,
                    );
                    for (time, asked) in now.take() {
                        answer_out
                            .session(&ports.at(2, time))
                            .give_iterator(asked.into_iter().map(|a| held.answer(a, frontier)));
                    }
                }
                ports.downgrade(frontiers);
            }
        });
        Enriched {
            walkins: enriched_stream.as_collection(),
            present: present_stream.as_collection(),
            answers: answer_stream,
            devices,
        }
    }
}

/// The updates of `time` held in `stash`, without their time.
fn take<D>(stash: &mut Stash<(D, u64, isize)>, time: u64) -> Vec<(D, isize)> {
    stash
        .take(time)
        .map(|(_, batch)| batch.map(|(record, _, diff)| (record, diff)).collect())
        .unwrap_or_default()
}

// A worker's table of business identifiers: the walk-ins held name their
// business by a 4-byte number instead of a 24-byte [`Id`]. A history has
// few businesses and many walk-ins. Numbers are local to one worker: a
// walk-in is numbered after the exchange that brings it to its device's
// worker, and named again there. The table only grows, by one entry per
// business the worker has seen.

/// A business's number on one worker.
type Business = u32;

/// The businesses a worker has numbered; cloning shares the table.
#[derive(Clone, Default)]
struct Businesses {
    table: Rc<RefCell<Table>>,
}

#[derive(Default)]
struct Table {
    names: Vec<Id>,
    numbers: HashMap<Id, Business, foldhash::fast::RandomState>,
}

impl Businesses {
    /// The number of `name`, numbering it if it is new.
    fn number(&self, name: Id) -> Business {
        let mut table = self.table.borrow_mut();
        if let Some(&number) = table.numbers.get(&name) {
            return number;
        }
        let number =
            Business::try_from(table.names.len()).expect("fewer than 2^32 businesses on a worker");
        table.names.push(name.clone());
        table.numbers.insert(name, number);
        number
    }

    /// The number of `name`, if it has one.
    fn find(&self, name: &str) -> Option<Business> {
        self.table.borrow().numbers.get(name).copied()
    }

    /// The name of a number this table gave.
    fn name(&self, number: Business) -> Id {
        self.table.borrow().names[number as usize].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: u64) -> Window {
        Window {
            start,
            detected_at: start + 5,
        }
    }

    fn walkin(business: &str, device: &str, start: u64, diff: isize) -> WalkinUpdate {
        ((business.into(), device.into()), window(start), diff)
    }

    fn contact(device: &str, contact: &str, diff: isize) -> ContactUpdate {
        ((device.into(), contact.to_owned()), diff)
    }

    /// `apply`'s output, as (business, device, start, contact, diff), sorted.
    fn apply(
        devices: &Devices,
        walkins: Vec<WalkinUpdate>,
        contacts: Vec<ContactUpdate>,
    ) -> Vec<(String, String, u64, String, isize)> {
        let mut out = Vec::new();
        devices.apply(walkins, contacts, |e, diff| {
            assert_eq!(e.detected_at, e.start + 5);
            out.push((e.business, e.device, e.start, e.contact, diff))
        });
        out.sort();
        out
    }

    fn row(
        business: &str,
        device: &str,
        start: u64,
        contact: &str,
        diff: isize,
    ) -> (String, String, u64, String, isize) {
        (business.into(), device.into(), start, contact.into(), diff)
    }

    #[test]
    fn a_contact_enriches_the_past_and_a_new_one_moves_it() {
        let devices = Devices::default();
        let none = apply(
            &devices,
            vec![
                walkin("s1", "p", 10, 1),
                walkin("s2", "p", 20, 1),
                walkin("s1", "q", 30, 1),
            ],
            vec![],
        );
        assert!(none.is_empty(), "no contact, nothing enriched: {none:?}");
        assert_eq!(
            apply(&devices, vec![], vec![contact("p", "ann", 1)]),
            vec![row("s1", "p", 10, "ann", 1), row("s2", "p", 20, "ann", 1)]
        );
        // A new contact and a new walk-in at the same time: the old rows
        // go, every walk-in comes back with the new contact.
        assert_eq!(
            apply(
                &devices,
                vec![walkin("s3", "p", 40, 1)],
                vec![contact("p", "ann", -1), contact("p", "bob", 1)]
            ),
            vec![
                row("s1", "p", 10, "ann", -1),
                row("s1", "p", 10, "bob", 1),
                row("s2", "p", 20, "ann", -1),
                row("s2", "p", 20, "bob", 1),
                row("s3", "p", 40, "bob", 1),
            ]
        );
        // A walk-in corrected (a late probe moved its start): one out, one in.
        assert_eq!(
            apply(
                &devices,
                vec![walkin("s2", "p", 20, -1), walkin("s2", "p", 15, 1)],
                vec![]
            ),
            vec![row("s2", "p", 15, "bob", 1), row("s2", "p", 20, "bob", -1)]
        );
        let size = devices.size();
        assert_eq!((size.devices, size.walkins, size.businesses), (2, 4, 3));
    }

    #[test]
    fn updates_that_cancel_change_nothing_and_empty_devices_are_dropped() {
        let devices = Devices::default();
        apply(
            &devices,
            vec![walkin("s1", "p", 10, 1)],
            vec![contact("p", "ann", 1)],
        );
        // The same contact retracted and inserted again: no change.
        assert!(apply(
            &devices,
            vec![],
            vec![contact("p", "ann", -1), contact("p", "ann", 1)]
        )
        .is_empty());
        assert_eq!(
            apply(&devices, vec![walkin("s1", "p", 10, -1)], vec![]),
            vec![row("s1", "p", 10, "ann", -1)]
        );
        assert_eq!(devices.size().walkins, 0);
        assert_eq!(devices.size().devices, 1, "the contact stays");
        apply(&devices, vec![], vec![contact("p", "ann", -1)]);
        assert_eq!(devices.size().devices, 0, "nothing left of the device");
        let mut read = Vec::new();
        devices.walkins(|device, _, _, _| read.push(device.clone()));
        devices.contacts(|device, _| read.push(device.clone()));
        assert!(read.is_empty());
    }

    #[test]
    fn reads_are_in_device_order_with_their_contact() {
        let devices = Devices::default();
        apply(
            &devices,
            vec![
                walkin("s1", "z", 1, 1),
                walkin("s1", "a", 2, 1),
                walkin("s2", "m", 3, 1),
            ],
            vec![contact("m", "cy", 1)],
        );
        let mut read = Vec::new();
        devices.walkins(|device, business, window, contact| {
            read.push((
                device.to_string(),
                business.to_string(),
                window.start,
                contact.map(str::to_owned),
            ))
        });
        assert_eq!(
            read,
            vec![
                ("a".into(), "s1".into(), 2, None),
                ("m".into(), "s2".into(), 3, Some("cy".into())),
                ("z".into(), "s1".into(), 1, None),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "retracted only if it is held")]
    fn a_retraction_of_what_is_not_held_is_refused() {
        let devices = Devices::default();
        apply(&devices, vec![walkin("s1", "p", 10, 1)], vec![]);
        apply(&devices, vec![walkin("s1", "p", 11, -1)], vec![]);
    }

    /// The present rows, as (business, device, last_seen, contact, diff), sorted.
    fn present(
        devices: &Devices,
        walkins: Vec<WalkinUpdate>,
        contacts: Vec<ContactUpdate>,
        opens: Vec<OpenUpdate>,
    ) -> Vec<(String, String, u64, Option<String>, isize)> {
        let mut out = Vec::new();
        devices.apply_all(
            walkins,
            contacts,
            opens,
            |_, _| {},
            |p, diff| out.push((p.business, p.device, p.last_seen, p.contact, diff)),
        );
        out.sort();
        out
    }

    fn open(business: &str, device: &str, last_seen: u64, diff: isize) -> OpenUpdate {
        (
            (business.into(), device.into()),
            Open {
                since: 1,
                last_seen,
            },
            diff,
        )
    }

    #[test]
    fn present_rows_carry_the_contact_or_none_and_move_with_it() {
        let devices = Devices::default();
        let out = present(
            &devices,
            vec![walkin("s1", "p", 1, 1)],
            vec![],
            vec![open("s1", "p", 9, 1)],
        );
        assert_eq!(
            out,
            vec![("s1".into(), "p".into(), 9, None, 1)],
            "no contact: null"
        );
        let out = present(&devices, vec![], vec![contact("p", "ann", 1)], vec![]);
        assert_eq!(
            out,
            vec![
                ("s1".into(), "p".into(), 9, None, -1),
                ("s1".into(), "p".into(), 9, Some("ann".into()), 1)
            ],
            "a login moves the row to the contact"
        );
        let out = present(
            &devices,
            vec![],
            vec![],
            vec![open("s1", "p", 9, -1), open("s1", "p", 12, 1)],
        );
        assert_eq!(
            out,
            vec![
                ("s1".into(), "p".into(), 9, Some("ann".into()), -1),
                ("s1".into(), "p".into(), 12, Some("ann".into()), 1)
            ]
        );
        let mut rows = Vec::new();
        devices.present(|row| rows.push(row));
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].last_seen, rows[0].contact.as_deref()),
            (12, Some("ann"))
        );
        // Queries read the same state.
        let asked = |query| Asked {
            id: 7,
            origin: 0,
            to: 0,
            query,
        };
        let answered = devices.answer(
            asked(Query::Present {
                business: "s1".into(),
            }),
            5,
        );
        assert_eq!(answered.part, Part::Present(rows));
        let answered = devices.answer(asked(Query::Contact { device: "p".into() }), 5);
        assert_eq!(answered.part, Part::Contact(Some("ann".into())));
        let answered = devices.answer(
            asked(Query::Present {
                business: "nowhere".into(),
            }),
            5,
        );
        assert_eq!(answered.part, Part::Present(vec![]));
    }
}
