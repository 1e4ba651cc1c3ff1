//! The contract's model: records, detection parameters, the ingestion
//! rules per partition, summaries and the wall clock. No timely, no Kafka,
//! no I/O.

pub mod clock;
pub mod ingest;
pub mod output;
pub mod params;
pub mod records;
pub mod summary;
