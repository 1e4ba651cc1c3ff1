//! Buckets on an S3-compatible test server (moto, `scripts/s3.sh`): a plain
//! unsigned `PUT /BUCKET`, which such a server accepts. Self-contained, so
//! that the benchmarks include this file too (`benches/common/s3.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The `HOST:PORT` of `endpoint` (`http://HOST:PORT`) and its addresses.
/// Panics on another form, or a name that resolves to nothing.
pub fn address(endpoint: &str) -> (String, Vec<SocketAddr>) {
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
    let addresses: Vec<SocketAddr> = match authority.to_socket_addrs() {
        Ok(addresses) => addresses.collect(),
        Err(e) => panic!("the S3 endpoint {endpoint:?}: {e}"),
    };
    assert!(
        !addresses.is_empty(),
        "the S3 endpoint {endpoint:?} names no address"
    );
    (authority, addresses)
}

/// Creates the bucket `name` on the server at `endpoint`; panics with the
/// server's answer on anything but `200`, as on no answer within `timeout`.
pub fn create(endpoint: &str, name: &str, timeout: Duration) {
    let (authority, addresses) = address(endpoint);
    let request = format!(
        "PUT /{name} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let what = format!("creating the bucket {name} at {endpoint}");
    let mut connected = Err(None);
    for address in &addresses {
        connected = TcpStream::connect_timeout(address, timeout).map_err(Some);
        if connected.is_ok() {
            break;
        }
    }
    let mut stream = connected
        .unwrap_or_else(|e| panic!("{what}: cannot connect to {addresses:?}: {}", e.unwrap()));
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: sending the request: {e}"));
    // `Connection: close`: the answer ends where the stream does.
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        panic!(
            "{what}: no complete answer within {timeout:?} ({e}); got {:?}",
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
}
