//! Not the product: the latency and throughput benchmark, the demo, the
//! workload generator and its open-loop producer; and what the commands
//! show on a terminal while they run and when they end.

pub mod bench;
pub mod console;
pub mod demo;
pub mod generator;
pub mod hooks;
pub mod live;
pub mod load;
pub mod text;
