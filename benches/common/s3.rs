//! An S3-compatible server for the benchmarks (moto, started by
//! `scripts/s3.sh PORT`, which prints its endpoint): buckets made with a
//! plain unsigned `PUT /BUCKET` (`tests/common/bucket.rs`, shared with the tests), and
//! the AWS environment a store on it needs.

use std::time::Duration;

#[path = "../../tests/common/bucket.rs"]
mod bucket;

/// How long connecting to the server, and its answer, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The AWS environment that a checkpoint store on `endpoint` needs (for
/// this process, before any thread starts, and its children).
pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
}

/// Creates a bucket no other run uses, `presence-LABEL-PID-NANOS`
/// (`label`: lowercase letters, digits and `-`, short), on the server at
/// `endpoint` (`http://HOST:PORT`), and returns its name. Panics with the
/// server's answer on anything but `200`.
pub fn bucket(endpoint: &str, label: &str) -> String {
    let nanos = std::time::UNIX_EPOCH
        .elapsed()
        .expect("the clock is after 1970")
        .as_nanos();
    let name = format!("presence-{label}-{}-{nanos}", std::process::id());
    assert!((3..=63).contains(&name.len()), "{name} is no bucket name");

    bucket::create(endpoint, &name, TIMEOUT);
    name
}
