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
use timely::dataflow::operators::Operator;

use super::stash::Stash;
use super::windows::Window;
use crate::model::records::{EnrichedWalkIn, Id};

/// A walk-in update: `((business, device), window)` and its diff.
pub type WalkinUpdate = ((Id, Id), Window, isize);
/// A contact update: `(device, contact)` and its diff.
pub type ContactUpdate = ((Id, String), isize);

/// The devices one worker holds: each one's contact and walk-ins. Cloning
/// shares them (the operator writes, a reader such as a backfill reads
/// once the dataflow is done).
#[derive(Clone, Default)]
pub struct Devices {
    held: Rc<RefCell<HashMap<Id, Device, foldhash::fast::RandomState>>>,
    businesses: Businesses,
}

/// What a worker's [`Devices`] hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevicesSize {
    /// Devices with a contact or a walk-in.
    pub devices: usize,
    /// Walk-ins.
    pub walkins: usize,
    /// Businesses numbered.
    pub businesses: usize,
}

/// One logical time's changes to a device: its walk-ins' and its contact's.
type Changes = (Vec<((Business, Window), isize)>, Vec<(String, isize)>);

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
        mut walkins: Vec<WalkinUpdate>,
        mut contacts: Vec<ContactUpdate>,
        mut emit: impl FnMut(EnrichedWalkIn, isize),
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
        let mut held = self.held.borrow_mut();
        for (device_id, (mut walkin_changes, mut contact_changes)) in changes {
            differential_dataflow::consolidation::consolidate(&mut walkin_changes);
            differential_dataflow::consolidation::consolidate(&mut contact_changes);
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

    /// What this worker holds: devices and walk-ins.
    pub fn size(&self) -> DevicesSize {
        let held = self.held.borrow();
        DevicesSize {
            devices: held.len(),
            walkins: held.values().map(|device| device.walkins.len()).sum(),
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

/// Joins walk-ins with their device's current contact, retroactively.
pub trait Enrich<'scope> {
    /// The walk-ins (`((business, device), window)`) of devices with a
    /// contact in `contacts` (`(device, contact)`, at most one per device),
    /// with that contact; and the devices the operator holds.
    fn enrich(
        self,
        contacts: VecCollection<'scope, u64, (Id, String)>,
    ) -> (VecCollection<'scope, u64, EnrichedWalkIn>, Devices);
}

impl<'scope> Enrich<'scope> for VecCollection<'scope, u64, ((Id, Id), Window)> {
    fn enrich(
        self,
        contacts: VecCollection<'scope, u64, (Id, String)>,
    ) -> (VecCollection<'scope, u64, EnrichedWalkIn>, Devices) {
        type Walkin = (((Id, Id), Window), u64, isize);
        type Contact = ((Id, String), u64, isize);
        let walkins_by_device = Exchange::new(|(((_, device), _), _, _): &Walkin| device.hashed());
        let contacts_by_device = Exchange::new(|((device, _), _, _): &Contact| device.hashed());
        let devices = Devices::default();
        let held = devices.clone();
        let enriched = self
            .inner
            .binary_frontier::<_, CapacityContainerBuilder<Vec<_>>, _, _, _, _>(
                contacts.inner,
                walkins_by_device,
                contacts_by_device,
                "Enrich",
                |_capability, _info| {
                    let mut walkins = Stash::new();
                    let mut contacts = Stash::new();
                    move |(walkin_input, walkin_frontier),
                          (contact_input, contact_frontier),
                          output| {
                        walkin_input
                            .for_each_stamp(|capability, data| walkins.hold(capability, data));
                        contact_input
                            .for_each_stamp(|capability, data| contacts.hold(capability, data));
                        loop {
                            let next = match (walkins.first_time(), contacts.first_time()) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            };
                            let Some(time) = next.filter(|time| {
                                !walkin_frontier.less_equal(time)
                                    && !contact_frontier.less_equal(time)
                            }) else {
                                break;
                            };
                            let (mut capability, mut walkin_updates) = (None, Vec::new());
                            if let Some((held_at, batch)) = walkins.take(time) {
                                walkin_updates.extend(batch.map(|(record, _, diff)| {
                                    let (key, window) = record;
                                    (key, window, diff)
                                }));
                                capability = Some(held_at);
                            }
                            let mut contact_updates = Vec::new();
                            if let Some((held_at, batch)) = contacts.take(time) {
                                contact_updates
                                    .extend(batch.map(|(record, _, diff)| (record, diff)));
                                capability = capability.or(Some(held_at));
                            }
                            let capability = capability.expect("a time with updates is held");
                            let mut session = output.session(&capability);
                            held.apply(walkin_updates, contact_updates, |enriched, diff| {
                                session.give((enriched, time, diff))
                            });
                        }
                    }
                },
            )
            .as_collection();
        (enriched, devices)
    }
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
}
