//! Sources and sinks: parsing and lateness per partition ([`ingest`]), input
//! files and their assignment to workers ([`files`]), output files
//! ([`output`]), and the synthetic workload ([`generator`]).

pub mod files;
pub mod generator;
pub mod ingest;
pub mod kafka;
pub mod load;
pub mod output;
pub mod upsert;
