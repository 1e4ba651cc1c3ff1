//! The bare-Kafka floor: what one Kafka hop costs here, measured before the
//! pipeline's schedule starts (its workers idle meanwhile).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::config::{BenchConfig, BenchError};
use super::samples::{wall_us, Samples};
use super::schedule::{generate, producer};
use super::watch::{field, watch};
use crate::kafka::Connection;

/// With `--floor`, measures the floor through `topic`; `None` without.
pub(super) fn measure(
    kafka: &Connection,
    topic: &str,
    config: &BenchConfig,
) -> Result<Option<Histogram<u64>>, BenchError> {
    if !config.floor {
        return Ok(None);
    }
    tracing::info!(
        seconds = config.duration.as_secs_f64(),
        "bench: measuring the bare-Kafka floor (the same schedule, no dataflow)"
    );
    Ok(Some(floor(kafka, topic, config)?))
}

/// The bare-Kafka floor: the same schedule produced to `topic` and consumed
/// back, with the pipeline's consumer settings.
fn floor(
    kafka: &Connection,
    topic: &str,
    config: &BenchConfig,
) -> Result<Histogram<u64>, BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(200);
    let start_ms = wall_us() / 1000 + 200;
    let samples = Arc::new(Mutex::new(Samples::new(start_ms, config)));
    let consumer = {
        let (kafka, topic, stop, samples) = (
            kafka.clone(),
            topic.to_owned(),
            Arc::clone(&stop),
            Arc::clone(&samples),
        );
        std::thread::spawn(move || {
            watch(&kafka, &topic, &stop, |value| {
                if let Some(ts) = field(value, "ts") {
                    samples.lock().expect("no panics").record(ts, None);
                }
            })
        })
    };
    let acked = Arc::new(
        (0..config.duration.as_secs() + 2)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let producer = producer(kafka, config.linger_ms, start, acked)?;
    // Probes and logins alike go to the one floor topic.
    generate(&producer, [topic, topic], config, start, start_ms)?;
    std::thread::sleep(config.drain.min(Duration::from_secs(2)));
    stop.store(true, Ordering::Relaxed);
    consumer
        .join()
        .expect("the floor consumer does not panic")?;
    let total = samples.lock().expect("no panics").total.clone();
    Ok(total)
}
