//! Not the product: the latency and throughput benchmark, the demo, the
//! workload generator and its open-loop producer.

pub mod bench;
pub mod demo;
pub mod generator;
pub mod load;
