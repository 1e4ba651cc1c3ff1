//! The records presence reads and writes: docs/contract.md, sections 1 to 4.
//!
//! Input records ([`Probe`], [`Login`], [`BaseCount`]) are produced by
//! [`crate::model::ingest`] only after validation, so every value here satisfies
//! the ranges of docs/contract.md. Output records serialize to exactly the JSON fields of
//! docs/contract.md, section 2, in that order.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (event time, from the data).
pub type EventTime = u64;

/// An identifier (device, business or contact) on the hot path: ids of up to
/// 24 bytes — MAC addresses, store codes — are stored inline, without an
/// allocation per record.
pub type Id = compact_str::CompactString;

/// An accepted probe: a phone's probe request seen at a business.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Probe {
    /// The phone's identifier.
    pub device: Id,
    /// The business whose router saw the probe.
    pub business: Id,
    /// When the router saw it.
    pub ts: EventTime,
    /// Signal strength in dBm, in [-128, 0].
    pub rssi: i32,
}

/// An accepted login: a customer signed in to the Wi-Fi portal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Login {
    /// The phone's identifier.
    pub device: String,
    /// The business where the login happened (not used by the computation).
    pub business: String,
    /// The CRM contact that signed in.
    pub contact: String,
    /// When the login happened.
    pub ts: EventTime,
}

/// An accepted base count: a walk-in count carried over from an earlier system.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BaseCount {
    /// The business.
    pub business: String,
    /// The CRM contact.
    pub contact: String,
    /// The count, in [0, 2^53).
    pub count: u64,
}

/// A walk-in: a visit of a device to a business that qualified (docs/contract.md, section 2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WalkIn {
    /// The business visited.
    pub business: String,
    /// The visiting device.
    pub device: String,
    /// The first probe of the visit.
    pub start: EventTime,
    /// The probe at which the visit first qualified.
    pub detected_at: EventTime,
}

/// The latest contact of a device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceContact {
    /// The device.
    pub device: String,
    /// The contact of its latest login by (`ts`, `contact`).
    pub contact: String,
}

/// A walk-in together with its device's current contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EnrichedWalkIn {
    /// The business visited.
    pub business: String,
    /// The visiting device.
    pub device: String,
    /// The first probe of the visit.
    pub start: EventTime,
    /// The probe at which the visit first qualified.
    pub detected_at: EventTime,
    /// The device's current contact.
    pub contact: String,
}

/// A device in a store now (docs/contract.md, "Who is in the store now"):
/// its newest visit is a walk-in still open at the event-time frontier.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Present {
    /// The business.
    pub business: String,
    /// The device.
    pub device: String,
    /// The visit's first probe.
    pub since: EventTime,
    /// The visit's last probe so far.
    pub last_seen: EventTime,
    /// The device's contact, if it has one (`null` otherwise).
    pub contact: Option<String>,
}

/// The number of walk-ins of a contact at a business, plus its base count.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WalkinCount {
    /// The business.
    pub business: String,
    /// The contact.
    pub contact: String,
    /// Base count + enriched walk-ins; always > 0.
    pub count: u64,
}

/// Why a record was rejected (docs/contract.md, sections 3 and 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not JSON, or a field missing, of the wrong type or out of range.
    Malformed,
    /// A probe more than `allowed-lateness` below its partition's high-water mark.
    Late,
    /// A probe or login more than `max-future` ahead of the wall clock.
    Future,
    /// A record over 64 KiB.
    TooLarge,
    /// A record the Kafka client could not read at all.
    Corrupt,
}

impl Reason {
    /// Every reason, in a fixed order (for reports and metrics).
    pub const ALL: [Reason; 5] = [
        Reason::Malformed,
        Reason::Late,
        Reason::Future,
        Reason::TooLarge,
        Reason::Corrupt,
    ];

    /// The reason as it is written in rejected records.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Late => "late",
            Reason::Future => "future",
            Reason::TooLarge => "too_large",
            Reason::Corrupt => "corrupt",
        }
    }
}

/// A rejected input record, with where it came from (docs/contract.md, sections 3 and 4).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejected {
    /// The file path (as given) or Kafka topic.
    pub source: String,
    /// The Kafka partition, or the file's index among the files of its kind.
    pub partition: u64,
    /// The Kafka offset, or the file's physical line number (from 1).
    pub offset: u64,
    /// Why it was rejected.
    pub reason: Reason,
    /// A human-readable explanation.
    pub detail: String,
    /// The original text (lossy UTF-8).
    pub record: String,
}
