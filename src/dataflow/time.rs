//! The dataflow's logical time.

/// The logical time of the dataflow: an ingestion epoch (a millisecond of
/// the wall clock at which its input was read, kept increasing).
pub type Time = u64;
