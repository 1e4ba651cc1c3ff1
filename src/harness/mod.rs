//! Not the product: the latency and throughput benchmark, the demo, the
//! workload generator and its open-loop producer, and the hooks through
//! which they measure and disturb a run.

pub mod bench;
pub mod demo;
pub mod generator;
pub mod hooks;
pub mod load;
