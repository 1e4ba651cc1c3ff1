//! presence: walk-ins, device contacts, enriched walk-ins and walk-in counts
//! from Wi-Fi probes and CRM logins, as one timely/differential dataflow.
//!
//! Each folder owns one concern and imports only from the folders below it
//! (`tests/layers.rs` fails on an import that runs upwards or in a circle):
//!
//! ```text
//!   console      what commands show: live lines, progress, panels, reports
//!   harness      bench, demo, workload generator, load, hooks (not the product)
//!   service      `run`: its job, restore, worker loop and sinks' wiring
//!   backfill     files to completion
//!   pipeline     one worker's handle on the dataflow, as both drive it
//!   checkpoint   the checkpoint format, the store, writer and coordinator
//!   kafka        clients, settings, source, upsert sinks, progress, offsets
//!   files        input files, output parts
//!   cluster      timely's cluster flags, execute, liveness, assignment
//!   http         the HTTP endpoints: metrics, health, readiness, queries
//!   observe      metrics, status lines, the hooks a harness may use
//!   dataflow     the one dataflow, its operators, the state it emits
//!   model        records, parameters, ingestion rules, summaries, clock
//! ```
//!
//! `src/bin/presence` parses arguments and calls into these.
//! docs/architecture.md says what each module owns and how a record
//! travels from a Kafka partition to an upsert topic and a checkpoint.
#![deny(missing_docs)]

pub mod model;

pub mod dataflow;

pub mod observe;

pub mod http;

pub mod cluster;

pub mod files;

pub mod kafka;

pub mod checkpoint;

pub mod pipeline;

pub mod backfill;

pub mod service;

pub mod harness;

pub mod console;
