//! Sources and sinks: parsing and lateness per partition ([`ingest`]), input
//! files and their assignment to workers ([`files`]), output files
//! ([`output`]), the synthetic workload ([`generator`]) and its open-loop
//! producer ([`load`]), and Kafka: clients ([`kafka`]), the consumer's
//! queue ([`fetch`]), one worker's input partitions ([`source`]), the
//! upsert sinks ([`upsert`]) and the progress topic ([`progress`]).

pub mod checkpoint;
pub mod fetch;
pub mod files;
pub mod generator;
pub mod ingest;
pub mod kafka;
pub mod load;
pub mod offsets;
pub mod output;
pub mod progress;
pub mod settings;
pub mod source;
pub mod store;
pub mod upsert;
