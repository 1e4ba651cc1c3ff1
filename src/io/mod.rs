//! Sources and sinks: parsing and lateness per partition ([`ingest`]), input
//! files and their assignment to workers ([`files`]), output files
//! ([`output`]), the synthetic workload ([`generator`]) and its open-loop
//! producer ([`load`]), and Kafka: clients ([`kafka`]), input reading
//! ([`fetch`]) and the upsert sinks ([`upsert`]).

pub mod fetch;
pub mod files;
pub mod generator;
pub mod ingest;
pub mod kafka;
pub mod load;
pub mod output;
pub mod upsert;
