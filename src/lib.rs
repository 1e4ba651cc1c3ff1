//! presence: walk-ins, device contacts, enriched walk-ins and walk-in counts
//! from Wi-Fi probes and CRM logins, as one timely/differential dataflow.
//!
//! - [`records`] and [`params`]: the contract's types (docs/contract.md).
//! - [`io`]: parsing and lateness per partition, files, the generator.
//! - [`operators`]: the custom operators; [`dataflow`]: the one dataflow.
//! - [`pipeline`]: one worker's inputs and outputs; [`backfill`]: file backfill.
//! - [`run`]: the Kafka service, [`status`]: its live figures; [`demo`]: it
//!   on an in-process broker; [`bench`]: the latency and throughput benchmark.
//! - [`metrics`]: Prometheus figures; [`clock`]: the wall clock; [`cluster`]:
//!   timely's cluster flags.
#![deny(missing_docs)]

pub mod backfill;
pub mod bench;
pub mod clock;
pub mod cluster;
pub mod dataflow;
pub mod demo;
pub mod io;
pub mod metrics;
pub mod operators;
pub mod params;
pub mod pipeline;
pub mod records;
pub mod restore;
pub mod run;
pub mod status;
