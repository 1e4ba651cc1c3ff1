//! What the service tells its operators: Prometheus metrics (names and
//! values) and status lines; and the hooks through which a harness
//! measures or disturbs a run.

pub mod hooks;
pub mod metrics;
pub mod status;
