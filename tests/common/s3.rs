//! An S3-compatible server for the checkpoint tests: moto, started by
//! `scripts/s3.sh PORT`, named by `PRESENCE_S3` (the endpoint the script
//! prints) and `PRESENCE_S3_PID` (its pid, to freeze it as a hung server).
//! Each test makes buckets of its own ([`S3::bucket`]), so tests share one
//! server without seeing each other's objects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::TIMEOUT;

/// The S3-compatible server the tests were given.
pub struct S3 {
    /// `http://HOST:PORT`, as `scripts/s3.sh` prints it.
    pub endpoint: String,
    /// The server's pid, when known: [`S3::freeze`] and [`S3::thaw`] need it.
    pub pid: Option<i32>,
}

/// The server named by `PRESENCE_S3` (and `PRESENCE_S3_PID`, if set);
/// `None` when `PRESENCE_S3` is unset or empty. A pid that is not a
/// positive number fails the test.
pub fn s3() -> Option<S3> {
    let endpoint = std::env::var("PRESENCE_S3").ok()?;
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return None;
    }
    let pid = std::env::var("PRESENCE_S3_PID")
        .ok()
        .filter(|pid| !pid.trim().is_empty())
        .map(|pid| match pid.trim().parse::<i32>() {
            Ok(pid) if pid > 0 => pid,
            _ => panic!("PRESENCE_S3_PID is the S3 server's pid, not {pid:?}"),
        });
    let s3 = S3 {
        endpoint: endpoint.to_owned(),
        pid,
    };
    s3.address(); // fails now on an endpoint that is not http://HOST:PORT
    Some(s3)
}

/// `s3://BUCKET/PREFIX` (`s3://BUCKET` for an empty prefix), as
/// `--checkpoint-dir` takes it.
pub fn url(bucket: &str, prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => format!("s3://{bucket}"),
        prefix => format!("s3://{bucket}/{prefix}"),
    }
}

/// Buckets made by this test binary so far (part of each one's name).
static BUCKETS: AtomicU64 = AtomicU64::new(0);

impl S3 {
    /// The endpoint's `HOST:PORT` (port 80 if it names none) and its
    /// socket addresses.
    fn address(&self) -> (String, Vec<SocketAddr>) {
        super::bucket::address(&self.endpoint)
    }

    /// Creates a bucket no other test uses, `presence-LABEL-PID-N-NANOS`
    /// (LABEL lowercased, other characters than letters and digits as `-`,
    /// and shortened so that the name stays a valid bucket name of at most
    /// 63 characters), and returns its name. Sent as a plain unsigned
    /// `PUT /BUCKET` (moto accepts it); anything but `200` fails the test
    /// with the server's answer, as does no answer within [`TIMEOUT`].
    pub fn bucket(&self, label: &str) -> String {
        let nanos = std::time::UNIX_EPOCH
            .elapsed()
            .expect("the clock is after 1970")
            .as_nanos();
        let unique = format!(
            "-{}-{}-{nanos}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::Relaxed)
        );
        let mut label: String = label
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '-',
            })
            .collect();
        while label.contains("--") {
            label = label.replace("--", "-");
        }
        let room = 63usize.saturating_sub("presence-".len() + unique.len());
        let label = label.trim_matches('-');
        let label = label[..label.len().min(room)].trim_end_matches('-');
        let name = if label.is_empty() {
            format!("presence{unique}")
        } else {
            format!("presence-{label}{unique}")
        };
        debug_assert!((3..=63).contains(&name.len()), "{name}");

        super::bucket::create(&self.endpoint, &name, TIMEOUT);
        name
    }

    /// The environment a `presence` process needs to use this server, for
    /// `Command::envs`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Stops the server with SIGSTOP: it still accepts connections (the
    /// kernel does) but answers nothing, as a hung server. See also
    /// [`S3::frozen`], which thaws it even when the test fails.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP, "freeze");
    }

    /// Lets a frozen server go on with SIGCONT.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT, "thaw");
    }

    /// Freezes the server until the returned guard is dropped, so that a
    /// failing test does not leave it frozen for the tests after it.
    pub fn frozen(&self) -> Frozen<'_> {
        self.freeze();
        Frozen(self)
    }

    /// The server's pid; fails the test when it is unknown.
    fn pid(&self, what: &str) -> i32 {
        match self.pid {
            Some(pid) if pid > 0 => pid,
            Some(pid) => panic!("cannot {what} the S3 server: {pid} is not a pid"),
            None => panic!(
                "cannot {what} the S3 server: its pid is unknown (set PRESENCE_S3_PID; scripts/s3.sh writes it to $PIDFILE)"
            ),
        }
    }

    /// Sends `signal` to the server; fails the test if it cannot.
    fn signal(&self, signal: i32, what: &str) {
        let pid = self.pid(what);
        // SAFETY: kill(2) with a positive pid signals that one process only.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let error = std::io::Error::last_os_error();
            panic!("cannot {what} the S3 server (pid {pid}): {error}");
        }
    }
}

/// The server frozen ([`S3::frozen`]) until this is dropped.
pub struct Frozen<'a>(&'a S3);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid.filter(|&pid| pid > 0) {
            // SAFETY: as in `S3::signal`. No panic here: this may run while
            // a failed test unwinds.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}
