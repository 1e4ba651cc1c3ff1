//! Files: input files read as partitions, and output parts.

pub mod input;
pub mod output;
