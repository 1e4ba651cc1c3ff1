//! The custom operators of the dataflow, one per module.
//!
//! Both process their input a logical time at a time, in time order, once the
//! input frontier has passed it: their outputs are differential collections
//! whose contents at a time are a function of all input up to that time.

pub mod enrich;
pub mod gather;
pub mod latest;
mod stash;
pub mod sum;
pub mod windows;

pub use enrich::Enrich;
pub use latest::LatestByKey;
pub use sum::SumByKey;
pub use windows::{Open, SessionWindows, Watermark, Window, WindowConfig, WindowStats};
