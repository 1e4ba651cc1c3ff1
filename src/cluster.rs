//! Timely's cluster flags (`-w -n -p -h`), parsed by clap, and the
//! `timely::Config` they describe; running workers on it; which worker
//! owns what ([`responsible_for`]).

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::{CommunicationConfig, WorkerConfig};

use crate::model::params::is_host_port;

/// The shape of the cluster: as in timely, every process gets the same flags
/// except `-p`.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(
        short = 'w',
        long = "threads",
        visible_alias = "workers",
        default_value_t = 1,
        value_name = "N",
        value_parser = parse_count
    )]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1, value_name = "N",
          value_parser = parse_count)]
    pub processes: usize,
    /// This process's index, from 0.
    #[arg(short = 'p', long = "process", default_value_t = 0, value_name = "I")]
    pub process: usize,
    /// Hostfile: one host:port per line, line i is process i (default localhost:2101+i).
    #[arg(short = 'h', long = "hostfile", value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        ClusterArgs {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

/// The most workers or processes a flag takes.
const MOST: usize = 1024;

/// `-w` and `-n` (and `demo -w`): 1 to 1024.
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MOST).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MOST}")),
    }
}

/// Cluster flags that do not describe a cluster: a usage error (the flags
/// can be fixed), except a hostfile that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `-w 0` or `-n 0` (clap refuses them first).
    #[error("-w and -n must be at least 1")]
    Empty,
    /// `-p` out of range.
    #[error("-p {process} is not a process index for -n {processes} (use 0 to {})", processes - 1)]
    Process {
        /// `-p`.
        process: usize,
        /// `-n`.
        processes: usize,
    },
    /// The hostfile could not be read.
    #[error("cannot read hostfile {path}: {source}")]
    Hostfile {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A hostfile line that is not `HOST:PORT`.
    #[error("hostfile {path} line {line}: {address:?} is not HOST:PORT (a host name or IP address, a colon, a port from 1 to 65535)")]
    BadAddress {
        /// The path.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What it holds.
        address: String,
    },
    /// The hostfile has too few lines.
    #[error("hostfile {path} has {found} addresses, but -n is {processes} (one HOST:PORT line per process)")]
    TooFewHosts {
        /// The path.
        path: PathBuf,
        /// Non-empty lines found.
        found: usize,
        /// `-n`.
        processes: usize,
    },
}

/// Set once a lost process has been reported: later panics it causes in
/// other threads say nothing more.
static LOST_REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What a panic of timely's networking means, if it means a lost process:
/// the process index (from the thread's name) and the cause.
fn lost_process(thread: Option<&str>, message: &str) -> Option<(Option<usize>, String)> {
    let peer = thread
        .and_then(|t| {
            t.strip_prefix("timely:recv-")
                .or_else(|| t.strip_prefix("timely:send-"))
        })
        .and_then(|i| i.parse().ok());
    if let Some(cause) = message.strip_prefix("timely communication error: ") {
        Some((peer, cause.to_owned()))
    } else if message.contains("MergeQueue poisoned") {
        Some((peer, "its connection failed".to_owned()))
    } else {
        None
    }
}

impl ClusterArgs {
    /// When another process of the cluster dies or its connection breaks,
    /// timely's network threads panic, and then every worker: instead, say
    /// in one line which process was lost and exit with status 1 (a restart
    /// of every process resumes from the newest checkpoint). Other panics
    /// (bugs) are reported as usual.
    pub fn exit_on_lost_process(&self) {
        if self.processes < 2 {
            return;
        }
        let addresses: Vec<String> = match self.timely_config().map(|c| c.communication) {
            Ok(CommunicationConfig::Cluster { addresses, .. }) => addresses,
            _ => Vec::new(),
        };
        let usual = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            let thread = std::thread::current();
            let Some((peer, cause)) = lost_process(thread.name(), message) else {
                return usual(info);
            };
            if !LOST_REPORTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let who = match peer {
                    Some(i) => format!(
                        "process {i} ({})",
                        addresses.get(i).map_or("?", String::as_str)
                    ),
                    None => "a process".to_owned(),
                };
                eprintln!("presence: error: lost {who} of the cluster: {cause}; restart every process to resume");
            }
            std::process::exit(1);
        }));
    }

    /// Workers in the whole cluster.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }

    /// The timely configuration for this process.
    pub fn timely_config(&self) -> Result<timely::Config, ClusterError> {
        if self.workers == 0 || self.processes == 0 {
            return Err(ClusterError::Empty);
        }
        if self.process >= self.processes {
            return Err(ClusterError::Process {
                process: self.process,
                processes: self.processes,
            });
        }
        let communication = if self.processes > 1 {
            let addresses = match &self.hostfile {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ClusterError::Hostfile {
                            path: path.clone(),
                            source,
                        })?;
                    let lines: Vec<(usize, &str)> = text
                        .lines()
                        .map(str::trim)
                        .enumerate()
                        .filter(|(_, line)| !line.is_empty())
                        .take(self.processes)
                        .collect();
                    for (index, line) in &lines {
                        // Timely listens on each of a line's addresses.
                        for address in line.split_whitespace() {
                            // Timely retries an address it cannot use forever.
                            if !is_host_port(address) {
                                return Err(ClusterError::BadAddress {
                                    path: path.clone(),
                                    line: index + 1,
                                    address: address.to_owned(),
                                });
                            }
                        }
                    }
                    let addresses: Vec<String> =
                        lines.into_iter().map(|(_, line)| line.to_owned()).collect();
                    if addresses.len() < self.processes {
                        return Err(ClusterError::TooFewHosts {
                            path: path.clone(),
                            found: addresses.len(),
                            processes: self.processes,
                        });
                    }
                    addresses
                }
                None => (0..self.processes)
                    .map(|i| format!("localhost:{}", 2101 + i))
                    .collect(),
            };
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses,
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        };
        Ok(timely::Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }
}

impl ClusterError {
    /// Whether the flags are at fault (exit status 2), rather than a file
    /// that cannot be read.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ClusterError::Hostfile { .. })
    }
}

/// Whether a process of this cluster is still connecting to the others
/// (timely's connection step has no timeout and does not look at signals:
/// the command line ends the process itself when stopped then).
pub fn connecting() -> bool {
    CONNECTING.load(Ordering::SeqCst)
}

static CONNECTING: AtomicBool = AtomicBool::new(false);

/// Sends what is written to stdout to stderr while it lives: timely's
/// connection step prints its progress ("awaiting connections") with
/// `println!`, and stdout is for results.
struct StdoutToStderr {
    saved: Option<libc::c_int>,
}

impl StdoutToStderr {
    fn new() -> Self {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: dup and dup2 on the process's own standard descriptors;
        // failures leave stdout as it was.
        let saved = unsafe {
            let saved = libc::dup(libc::STDOUT_FILENO);
            if saved >= 0 && libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) >= 0 {
                Some(saved)
            } else {
                if saved >= 0 {
                    libc::close(saved);
                }
                None
            }
        };
        StdoutToStderr { saved }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if let Some(saved) = self.saved {
            // SAFETY: `saved` is the descriptor `new` duplicated.
            unsafe {
                libc::dup2(saved, libc::STDOUT_FILENO);
                libc::close(saved);
            }
        }
    }
}

/// How many workers a cluster runs: in each of its processes, and in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workers {
    /// Workers in each process (`-w`).
    pub per_process: usize,
    /// Workers in all processes: timely's `peers`.
    pub total: usize,
    /// This process's index (`-p`).
    pub process: usize,
}

impl Workers {
    /// The workers of `config`.
    pub fn of(config: &timely::Config) -> Workers {
        let (per_process, processes, process) = match &config.communication {
            CommunicationConfig::Thread => (1, 1, 0),
            CommunicationConfig::Process(n) | CommunicationConfig::ProcessBinary(n) => (*n, 1, 0),
            CommunicationConfig::Cluster {
                threads,
                addresses,
                process,
                ..
            } => (*threads, addresses.len(), *process),
        };
        Workers {
            per_process,
            total: per_process * processes,
            process,
        }
    }
}

/// The worker (index among all `peers` workers of all processes) that owns
/// the item at `position` of a list every process computes the same: an
/// input file in [`crate::files::input::plan`] order, an input partition
/// in [`crate::kafka::input_partitions`] order, a checkpoint key group.
///
/// Round robin: every process computes the same answer from the same
/// arguments with no coordination, probe files and partitions (which carry
/// the work) spread evenly over workers, and a file or partition is never
/// split, because its lateness depends on reading it in order.
pub fn responsible_for(position: usize, peers: usize) -> usize {
    position % peers
}

/// Runs `func` on every worker of `config` as `timely::execute` does, and
/// joins them, with the other processes of a cluster watched for signs of
/// life meanwhile: one silent for `timeout` once connected ends this
/// process (see [`Liveness`]). The outer error is timely's, starting; the
/// inner ones are workers' panics.
pub fn execute<T, F>(
    config: timely::Config,
    timeout: Duration,
    func: F,
) -> Result<Vec<Result<T, String>>, String>
where
    T: Send + 'static,
    F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
{
    // Heard by the others from before this process connects, however late
    // it leaves the connection step.
    let liveness = Peers::of(&config).map(|peers| peers.start(timeout));
    let guards = if liveness.is_some() {
        CONNECTING.store(true, Ordering::SeqCst);
        let quiet = StdoutToStderr::new();
        let guards = timely::execute(config, func);
        drop(quiet);
        CONNECTING.store(false, Ordering::SeqCst);
        guards?
    } else {
        timely::execute(config, func)?
    };
    // The cluster is connected: from now on a process that hangs is lost.
    if let Some(liveness) = &liveness {
        liveness.connected();
    }
    let results = guards.join();
    drop(liveness); // says goodbye
    Ok(results)
}

/// The other processes of a cluster, watched for signs of life: a process
/// that hangs (stopped, or cut off by the network) keeps its connections
/// open, and timely waits for it forever. Every process sends a datagram to
/// every other one's hostfile address (UDP, on the port of timely's TCP)
/// several times per timeout, from before it connects to the cluster; once
/// connected, one not heard from for a timeout (less one beat, so that it
/// is reported within the timeout) is lost, reported in one line as a
/// broken connection is, and the process exits 1. A process that stops
/// cleanly says goodbye, so the others do not mistake the end of its run
/// for a loss. Dropping it stops it.
pub struct Liveness {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A cluster's processes and which one this is.
#[derive(Clone, Debug)]
struct Peers {
    process: usize,
    addresses: Vec<String>,
}

impl Peers {
    /// The processes of `config`, if it has more than one.
    fn of(config: &timely::Config) -> Option<Peers> {
        match &config.communication {
            CommunicationConfig::Cluster {
                process, addresses, ..
            } if addresses.len() > 1 => Some(Peers {
                process: *process,
                addresses: addresses.clone(),
            }),
            _ => None,
        }
    }

    /// Starts sending heartbeats (call it before connecting, so that the
    /// others hear this process as soon as they are connected, however
    /// late it leaves timely's connection step); watching starts with
    /// [`Liveness::connected`], and then one silent for `timeout` ends this
    /// process. Without its own port to hear on, warns and only sends (from
    /// any port), so that the others still watch it; it sees only lost
    /// connections.
    fn start(self, timeout: Duration) -> Liveness {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let own = self.addresses[self.process]
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next());
        let (socket, hears) = match own.map(UdpSocket::bind) {
            Some(Ok(socket)) => (Some(socket), true),
            other => {
                let why = match other {
                    Some(Err(error)) => error.to_string(),
                    _ => "the address does not resolve".to_owned(),
                };
                tracing::warn!(address = %self.addresses[self.process], %why, "cannot hear the other processes' heartbeats on this process's port: it detects only lost connections (the others still hear it)");
                let any = match own {
                    Some(SocketAddr::V6(_)) => "[::]:0",
                    _ => "0.0.0.0:0",
                };
                (UdpSocket::bind(any).ok(), false)
            }
        };
        let thread = socket.and_then(|socket| {
            let (stop, connected) = (Arc::clone(&stop), Arc::clone(&connected));
            std::thread::Builder::new()
                .name("presence:liveness".into())
                .spawn(move || self.beat(&socket, hears, timeout, &stop, &connected))
                .ok()
        });
        Liveness {
            stop,
            connected,
            thread,
        }
    }

    /// Sends (and, if `hears`, hears) heartbeats until `stop`, watching the
    /// others once `connected`, then says goodbye.
    fn beat(
        &self,
        socket: &UdpSocket,
        hears: bool,
        timeout: Duration,
        stop: &AtomicBool,
        connected: &AtomicBool,
    ) {
        let every = (timeout / 5).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let _ = socket.set_read_timeout(Some(every / 2));
        let n = self.addresses.len();
        let peers: Vec<Option<SocketAddr>> = (0..n)
            .map(|i| {
                (i != self.process)
                    .then(|| self.addresses[i].to_socket_addrs().ok()?.next())
                    .flatten()
            })
            .collect();
        let send = |what: &str| {
            let message = format!("presence {what} {} of {n}", self.process);
            for peer in peers.iter().flatten() {
                let _ = socket.send_to(message.as_bytes(), peer);
            }
        };
        // When each was last heard from (`None`: this process, or one that
        // said goodbye), and whether the watch has begun.
        let start = Instant::now();
        let mut heard: Vec<Option<Instant>> = vec![Some(start); n];
        heard[self.process] = None;
        let mut watching = false;
        let mut sent = start - every;
        let mut buffer = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if sent.elapsed() >= every {
                send("alive");
                sent = Instant::now();
            }
            if !hears {
                std::thread::sleep(every / 2);
                continue;
            }
            if let Ok((length, _)) = socket.recv_from(&mut buffer) {
                match parse_heartbeat(&buffer[..length], n) {
                    Some((peer, true)) => {
                        if let Some(at) = &mut heard[peer] {
                            *at = Instant::now();
                        }
                    }
                    Some((peer, false)) => heard[peer] = None, // it stopped cleanly
                    None => {}
                }
            }
            if !watching {
                if !connected.load(Ordering::Relaxed) {
                    continue;
                }
                // Connected: every other process sends from before its own
                // connection step, so each gets one timeout from now.
                watching = true;
                let now = Instant::now();
                heard.iter_mut().flatten().for_each(|at| *at = now);
            }
            let silent = heard
                .iter()
                .position(|at| at.is_some_and(|at| at.elapsed() > timeout.saturating_sub(every)));
            if let Some(peer) = silent {
                if !LOST_REPORTED.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "presence: error: lost process {peer} ({}) of the cluster: no sign of life from it within --connect-timeout ({}); restart every process to resume",
                        self.addresses[peer],
                        humantime::format_duration(timeout)
                    );
                }
                std::process::exit(1);
            }
        }
        for _ in 0..3 {
            send("bye");
        }
    }
}

/// A heartbeat's sender and whether it is alive (or says goodbye).
fn parse_heartbeat(datagram: &[u8], processes: usize) -> Option<(usize, bool)> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut words = text.split(' ');
    let (Some("presence"), Some(what), Some(peer), Some("of"), Some(n), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return None;
    };
    let peer: usize = peer.parse().ok()?;
    if n.parse::<usize>().ok()? != processes || peer >= processes {
        return None;
    }
    match what {
        "alive" => Some((peer, true)),
        "bye" => Some((peer, false)),
        _ => None,
    }
}

impl Liveness {
    /// The cluster is connected: from now on, a process silent for the
    /// timeout is lost.
    fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }
}

impl Drop for Liveness {
    /// Stops watching, and tells the others this process stopped cleanly.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A last exchange at the end of a run: every worker hands in some numbers
/// and worker 0 gets them all (a cluster's totals). Built before anything
/// can fail, as a dataflow: a worker that stops early drops its input, so
/// the others do not wait for it.
pub struct Gathering {
    input: timely::dataflow::InputHandleVec<u64, Vec<u64>>,
    probe: timely::dataflow::ProbeHandle<u64>,
    gathered: std::rc::Rc<std::cell::RefCell<Vec<Vec<u64>>>>,
}

impl Gathering {
    /// Builds the exchange on `worker` (every worker must).
    pub fn new(worker: &mut timely::worker::Worker) -> Gathering {
        use timely::container::CapacityContainerBuilder;
        use timely::dataflow::channels::pact::Exchange;
        use timely::dataflow::operators::{Input, Operator, Probe};
        let mut input = timely::dataflow::InputHandleVec::new();
        let probe = timely::dataflow::ProbeHandle::new();
        let gathered = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let (into, probe_out) = (std::rc::Rc::clone(&gathered), probe.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Exchange::new(|_: &Vec<u64>| 0),
                    "Gathering",
                    move |_capability, _info| {
                        move |input, _output| {
                            input.for_each_stamp(|_time, data| {
                                for batch in data {
                                    into.borrow_mut().append(batch);
                                }
                            });
                        }
                    },
                )
                .probe_with(&probe_out);
        });
        Gathering {
            input,
            probe,
            gathered,
        }
    }

    /// Hands in `numbers` and waits for every worker's: worker 0 gets them
    /// all (in no particular order), the others `None`.
    pub fn finish(
        mut self,
        worker: &mut timely::worker::Worker,
        numbers: Vec<u64>,
    ) -> Option<Vec<Vec<u64>>> {
        self.input.send(numbers);
        self.input.close();
        while !self.probe.done() {
            worker.step_or_park(None);
        }
        (worker.index() == 0).then(|| self.gathered.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timely_network_panics_name_the_lost_process() {
        assert_eq!(
            lost_process(
                Some("timely:recv-1"),
                "timely communication error: reading data: Connection reset by peer (os error 104)"
            ),
            Some((
                Some(1),
                "reading data: Connection reset by peer (os error 104)".to_owned()
            ))
        );
        assert_eq!(
            lost_process(Some("timely:work-0"), "MergeQueue poisoned."),
            Some((None, "its connection failed".to_owned()))
        );
        assert_eq!(lost_process(Some("main"), "index out of bounds"), None);
    }

    #[test]
    fn heartbeats_name_their_process_and_say_whether_it_lives() {
        assert_eq!(
            parse_heartbeat(b"presence alive 1 of 2", 2),
            Some((1, true))
        );
        assert_eq!(parse_heartbeat(b"presence bye 0 of 2", 2), Some((0, false)));
        // Another cluster's, a process out of range, or anything else.
        assert_eq!(parse_heartbeat(b"presence alive 1 of 3", 2), None);
        assert_eq!(parse_heartbeat(b"presence alive 2 of 2", 2), None);
        assert_eq!(parse_heartbeat(b"presence alive 1 of 2 x", 2), None);
        assert_eq!(parse_heartbeat(b"\xff", 2), None);
    }
}
