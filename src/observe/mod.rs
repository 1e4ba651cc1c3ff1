//! What the service tells its operators: Prometheus metrics (names and
//! values) and status lines.

pub mod metrics;
pub mod status;
