//! Point queries offered open-loop over HTTP while a point runs
//! (`bench --query-rate N`): their latency, and what they cost the ingest.
//!
//! Query `j` is due at `start + j / rate` and is measured from its due time
//! to its answer's last byte, so a slow answer delays the queries behind it
//! on its connection and is counted against them too (no coordinated
//! omission). [`CONNECTIONS`] keep-alive connections share the schedule
//! round robin, each waiting for an answer before its next query: they
//! keep up while a query takes less than `CONNECTIONS / rate` (12.8 ms at
//! 5,000/s); beyond that the queries queue in the client, and their wait
//! counts in their latency. Half the queries ask a device's contact, half a (store,
//! contact) count, for random keys of the workload: each goes through the
//! dataflow to the worker that holds its key, and only 200s count as
//! answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::harness::generator::{business_name, contact_name, device_name};
use crate::observe::metrics::latency_histogram;

/// Keep-alive connections the queries are spread over.
pub const CONNECTIONS: usize = 64;

/// What the query load measured.
#[derive(Debug)]
pub struct Measured {
    /// Latency of the answered queries due in the measured window (µs).
    pub latency: Histogram<u64>,
    /// Queries due in the measured window.
    pub offered: u64,
    /// Of those, answered with 200.
    pub answered: u64,
    /// Of those, answered otherwise or not at all.
    pub failed: u64,
}

/// The query load, running.
pub struct QueryLoad {
    threads: Vec<JoinHandle<Measured>>,
}

/// The keys queries pick from: the workload's devices and stores.
#[derive(Clone, Copy, Debug)]
pub struct Keys {
    /// Devices of the workload.
    pub devices: u64,
    /// Businesses of the workload.
    pub businesses: u64,
}

impl QueryLoad {
    /// Starts `rate` queries per second to `addr`, due from `start` until
    /// `until`; those due from `measure_from` count.
    pub fn start(
        addr: SocketAddr,
        rate: u64,
        start: Instant,
        measure_from: Instant,
        until: Instant,
        keys: Keys,
    ) -> QueryLoad {
        let window = (start, measure_from, until);
        let threads = (0..CONNECTIONS)
            .map(|connection| {
                std::thread::Builder::new()
                    .name(format!("bench-queries-{connection}"))
                    .spawn(move || drive(addr, rate, connection, window, keys))
                    .expect("a thread starts")
            })
            .collect();
        QueryLoad { threads }
    }

    /// Waits for the load to end; what it measured, over all connections.
    pub fn finish(self) -> Measured {
        let mut total = Measured {
            latency: latency_histogram(),
            offered: 0,
            answered: 0,
            failed: 0,
        };
        for thread in self.threads {
            let part = thread.join().expect("a query thread does not panic");
            total
                .latency
                .add(&part.latency)
                .expect("histograms of the same bounds");
            total.offered += part.offered;
            total.answered += part.answered;
            total.failed += part.failed;
        }
        total
    }
}

/// One connection's share of the schedule: queries `connection`,
/// `connection + CONNECTIONS`, ...
fn drive(
    addr: SocketAddr,
    rate: u64,
    connection: usize,
    (start, measure_from, until): (Instant, Instant, Instant),
    keys: Keys,
) -> Measured {
    // The clients stand for programs on other machines: on this one they
    // yield to the workers as the server's threads do.
    crate::http::yield_to_workers();
    let mut measured = Measured {
        latency: latency_histogram(),
        offered: 0,
        answered: 0,
        failed: 0,
    };
    let mut client: Option<Client> = None;
    let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ connection as u64;
    for j in (connection as u64..).step_by(CONNECTIONS) {
        let due = start + Duration::from_micros(j * 1_000_000 / rate.max(1));
        if due >= until {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let device = random % keys.devices.max(1);
        let path = if j % 2 == 0 {
            format!("/v1/device-contacts?device={}", device_name(device))
        } else {
            format!(
                "/v1/walkin-counts?business={}&contact={}",
                business_name((random >> 32) % keys.businesses.max(1)),
                contact_name(device, 0)
            )
        };
        let status = match client.as_mut() {
            Some(client) => client.get(&path),
            None => Client::connect(addr).and_then(|mut fresh| {
                let status = fresh.get(&path);
                client = Some(fresh);
                status
            }),
        };
        let counted = due >= measure_from;
        if counted {
            measured.offered += 1;
        }
        match status {
            Ok(200) => {
                if counted {
                    let us = due.elapsed().as_micros() as u64;
                    let _ = measured.latency.record(us.max(1));
                    measured.answered += 1;
                }
            }
            Ok(_) => measured.failed += u64::from(counted),
            Err(_) => {
                measured.failed += u64::from(counted);
                client = None; // reconnect for the next one
            }
        }
    }
    measured
}

/// A keep-alive HTTP/1.1 connection.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// GETs `path`; the status (the body is read and dropped).
    fn get(&mut self, path: &str) -> std::io::Result<u16> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}
