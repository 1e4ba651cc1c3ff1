//! The output collections read from the state the dataflow already holds,
//! rather than from copies of them.
//!
//! The join's operator keeps every device's contact and walk-ins, and the
//! count's keeps every (business, contact)'s count: together these are the
//! four output collections. A driver that needs the collections only once
//! they are complete (a backfill) keeps [`Held`] and reads it once the
//! dataflow is done — instead of accumulating a second copy of every
//! output as it changes.

use crate::dataflow::operators::enrich::Devices;
use crate::dataflow::operators::sum::Sums;
use crate::model::records::{DeviceContact, EnrichedWalkIn, Id, Present, WalkIn, WalkinCount};

/// Handles on the state that holds the output collections.
pub struct Held {
    /// Each device's contact and walk-ins (the join's operator).
    pub devices: Devices,
    /// The walk-in count per (business, contact) (the count's operator).
    pub counts: Sums<(Id, Id)>,
}

/// What a worker's [`Held`] holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldSize {
    /// Devices with a contact or a walk-in.
    pub devices: usize,
    /// Walk-ins (the join keeps every one).
    pub walkins: usize,
    /// (business, contact) pairs with a count.
    pub counts: usize,
}

impl Held {
    /// What this worker holds.
    pub fn size(&self) -> HeldSize {
        let devices = self.devices.size();
        HeldSize {
            devices: devices.devices,
            walkins: devices.walkins,
            counts: self.counts.len(),
        }
    }

    /// Calls `each` with every walk-in, by device. Only once the dataflow
    /// is complete.
    pub fn walkins(&self, mut each: impl FnMut(WalkIn)) {
        self.devices.walkins(|device, business, window, _| {
            each(WalkIn {
                business: business.to_string(),
                device: device.to_string(),
                start: window.start,
                detected_at: window.detected_at,
            })
        });
    }

    /// Calls `each` with every device contact, by device. Only once the
    /// dataflow is complete.
    pub fn device_contacts(&self, mut each: impl FnMut(DeviceContact)) {
        self.devices.contacts(|device, contact| {
            each(DeviceContact {
                device: device.to_string(),
                contact: contact.to_owned(),
            })
        });
    }

    /// Calls `each` with every walk-in whose device has a contact, with
    /// that contact, by device. Only once the dataflow is complete.
    pub fn enriched_walkins(&self, mut each: impl FnMut(EnrichedWalkIn)) {
        self.devices.walkins(|device, business, window, contact| {
            if let Some(contact) = contact {
                each(EnrichedWalkIn {
                    business: business.to_string(),
                    device: device.to_string(),
                    start: window.start,
                    detected_at: window.detected_at,
                    contact: contact.to_owned(),
                })
            }
        });
    }

    /// Calls `each` with every present row (open walk-in with its device's
    /// contact), by device. Only once the dataflow is complete.
    pub fn present(&self, each: impl FnMut(Present)) {
        self.devices.present(each);
    }

    /// Calls `each` with every walk-in count, by (business, contact). Only
    /// once the dataflow is complete.
    pub fn walkin_counts(&self, mut each: impl FnMut(WalkinCount)) {
        self.counts.read(|(business, contact), count| {
            each(WalkinCount {
                business: business.to_string(),
                contact: contact.to_string(),
                count: u64::try_from(count).expect("counts are never negative"),
            })
        });
    }
}
