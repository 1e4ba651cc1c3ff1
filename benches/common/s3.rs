//! An S3-compatible server for the benchmarks (moto, started by
//! `scripts/s3.sh PORT`, which prints its endpoint): buckets made with a
//! plain unsigned `PUT /BUCKET` (as `tests/common/s3.rs` makes them), and
//! the AWS environment a store on it needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

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

    let rest = endpoint
        .trim_end_matches('/')
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("the S3 endpoint is http://HOST:PORT, not {endpoint:?}"));
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addresses: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("the S3 endpoint {endpoint:?}: {e}"))
        .collect();
    let what = format!("creating the bucket {name} at {endpoint}");
    let mut stream = addresses
        .iter()
        .find_map(|address| TcpStream::connect_timeout(address, TIMEOUT).ok())
        .unwrap_or_else(|| panic!("{what}: cannot connect to {addresses:?}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let request = format!(
        "PUT /{name} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: sending the request: {e}"));
    // `Connection: close`: the answer ends where the stream does.
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        panic!(
            "{what}: no complete answer within {TIMEOUT:?} ({e}); got {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    assert_eq!(
        status.split_whitespace().nth(1),
        Some("200"),
        "{what}: the server answered {answer:?}"
    );
    name
}
