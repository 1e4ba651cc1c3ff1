//! The state the dataflow emits for checkpoints and takes back on restore:
//! its own row type, [`StateRow`], which `crate::checkpoint` knows how to
//! store (the dataflow knows nothing of files).
//!
//! State is data: the window operator's snapshots of changed keys at each
//! cut, walk-ins, the latest login per device and base counts leave the
//! dataflow as [`StateStreams`]; a restored checkpoint's rows enter at one
//! restore epoch through the same exchanges as live data.

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

use crate::dataflow::operators::windows::{KeySnapshot, Window, WindowSnapshot};
use crate::dataflow::time::Time;
use crate::model::records::{EventTime, Id};

/// Rows are spread over this many key groups by a stable hash of their key:
/// enough that any cluster up to this many workers restores in parallel.
pub const KEY_GROUPS: u32 = 256;

/// A row of the state the dataflow emits for checkpoints and takes back
/// on restore. Rows with the same [`key`](StateRow::key)
/// replace each other; the `None` forms remove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateRow {
    /// A (business, device) key's window state.
    Window {
        /// The business.
        business: Id,
        /// The device.
        device: Id,
        /// Its state; `None`: it has none any more.
        state: Option<KeySnapshot>,
    },
    /// A walk-in: a visit that qualified.
    WalkIn {
        /// The business.
        business: Id,
        /// The device.
        device: Id,
        /// The visit's first probe.
        start: EventTime,
        /// When it qualified; `None`: the walk-in no longer exists.
        detected_at: Option<EventTime>,
    },
    /// A device's latest login.
    Login {
        /// The device.
        device: String,
        /// The login's `ts`.
        ts: EventTime,
        /// Its contact.
        contact: String,
    },
    /// A (business, contact)'s base count.
    BaseCount {
        /// The business.
        business: String,
        /// The contact.
        contact: String,
        /// The largest count.
        count: u64,
    },
}

/// What identifies a row: its kind and key, borrowed from the row (made
/// for every comparison of a sort, so it allocates nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateKey<'a>(u8, &'a str, &'a str, u64);

impl StateRow {
    /// The row's key: a later row with the same key replaces it.
    pub fn key(&self) -> StateKey<'_> {
        match self {
            StateRow::Window {
                business, device, ..
            } => StateKey(0, business, device, 0),
            StateRow::WalkIn {
                business,
                device,
                start,
                ..
            } => StateKey(1, business, device, *start),
            StateRow::Login { device, .. } => StateKey(2, device, "", 0),
            StateRow::BaseCount {
                business, contact, ..
            } => StateKey(3, business, contact, 0),
        }
    }

    /// Whether the row removes its key.
    pub fn removes(&self) -> bool {
        matches!(
            self,
            StateRow::Window { state: None, .. }
                | StateRow::WalkIn {
                    detected_at: None,
                    ..
                }
        )
    }

    /// The row's key group: a stable hash (FNV-1a) of its key, so that the
    /// same key lands in the same group whatever wrote it.
    pub fn group(&self) -> u32 {
        let StateKey(kind, a, b, n) = self.key();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &byte in bytes {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(&[kind]);
        eat(a.as_bytes());
        eat(&[0xff]);
        eat(b.as_bytes());
        eat(&[0xff]);
        eat(&n.to_le_bytes());
        (hash % u64::from(KEY_GROUPS)) as u32
    }
}

/// A walk-in as the state holds it: (business, device) and its window.
pub type StateWalkIn = ((Id, Id), Window);

/// The state collections a checkpoint holds, as the dataflow has them.
pub struct StateStreams<'scope> {
    /// The window operator's snapshots.
    pub windows: StreamVec<'scope, Time, WindowSnapshot<(Id, Id)>>,
    /// Walk-ins by (business, device).
    pub walkins: VecCollection<'scope, Time, StateWalkIn>,
    /// The latest login per device: `(device, (ts, contact))`.
    pub logins: VecCollection<'scope, Time, (String, (u64, String))>,
    /// The base count per (business, contact).
    pub base_counts: VecCollection<'scope, Time, ((String, String), u64)>,
}
