//! The wall clock, in the unit of event time and of the service's logical
//! time: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in milliseconds (0 if it is set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
