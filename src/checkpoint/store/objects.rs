//! The checkpoint store's objects: created, read, listed and deleted
//! through the `object_store` crate, so a local folder and an S3 prefix
//! are one code path. Every request is counted by operation; a request
//! that fails for a reason that may pass (a timeout, a 5xx, a refused
//! connection, the store restarting) is retried with backoff until the
//! store's patience runs out.
//!
//! `object_store` is async; a small runtime of the store's own drives it,
//! and callers (writer threads, the restore, the CLI) block on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::observe::metrics::Metrics;

use super::location::Location;

/// The name of the small objects a start writes and deletes to check the
/// store, before the process and time that make it unique.
pub const WRITE_CHECK: &str = "write-check-";
/// How long a store keeps retrying a request by default.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// The first pause before a retry; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The longest a single request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A checkpoint that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or configured, or refused a request.
    #[error("{place}: {message}")]
    Store {
        /// The folder, prefix or object.
        place: String,
        /// Why (never a credential).
        message: String,
    },
    /// An object's content is not what was written.
    #[error("{place} is damaged: {what}")]
    Damaged {
        /// The object.
        place: String,
        /// What is wrong.
        what: String,
    },
    /// An object that should be there is not.
    #[error("{place} is missing")]
    Missing {
        /// The object.
        place: String,
    },
    /// An object that is only ever created exists already: another writer
    /// took its name.
    #[error("{place} exists already")]
    Exists {
        /// The object.
        place: String,
    },
    /// A newer run took this store: this one may no longer make a
    /// checkpoint count.
    #[error("superseded: a newer run (generation {newer}) took {place}; this run (generation {ours}) stops")]
    Superseded {
        /// The folder or prefix.
        place: String,
        /// This run's generation.
        ours: u64,
        /// The newer one's.
        newer: u64,
    },
}

/// An object in the store, as a listing gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Its name in the folder or prefix.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// When the store last wrote it (ms since the epoch, the store's clock).
    pub modified_ms: i64,
}

/// A checkpoint store: a folder or an S3 prefix. Cheap to clone; clones
/// share the connection, the runtime and the counters.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    /// How long a request is retried before it fails.
    patience: Duration,
}

struct Shared {
    objects: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    location: Location,
    /// The prefix in the bucket (empty for a folder: the store is rooted there).
    root: Option<ObjectPath>,
    metrics: Metrics,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.shared.location)
    }
}

/// Why a request failed, and whether trying it again may help.
struct Failure {
    error: object_store::Error,
    transient: bool,
}

impl Store {
    /// Opens the store at `location`: a folder is created if missing; an S3
    /// prefix is configured from the AWS environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`). Requests are
    /// counted in `metrics`.
    pub fn open(location: &Location, metrics: &Metrics) -> Result<Store, StoreError> {
        let place = location.to_string();
        let failed = |message: String| StoreError::Store {
            place: place.clone(),
            message,
        };
        let (objects, root): (Arc<dyn ObjectStore>, _) = match location {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| failed(e.to_string()))?;
                (Arc::new(local), None)
            }
            Location::S3 { bucket, prefix } => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                use object_store::ClientConfigKey;
                // Timeouts set as keys on top of the environment's settings
                // (`with_client_options` would replace them, AWS_ALLOW_HTTP
                // among them).
                let client = |key| AmazonS3ConfigKey::Client(key);
                // Retries are ours (counted, and bounded by the patience).
                let retry = object_store::RetryConfig {
                    max_retries: 0,
                    ..Default::default()
                };
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_config(
                        client(ClientConfigKey::Timeout),
                        humantime::format_duration(REQUEST_TIMEOUT).to_string(),
                    )
                    .with_config(client(ClientConfigKey::ConnectTimeout), "5s")
                    .with_retry(retry)
                    .build()
                    .map_err(|e| failed(format!("cannot configure the S3 client: {e}")))?;
                let root = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                (Arc::new(s3), root)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("checkpoint-store")
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start the store's runtime: {e}")))?;
        Ok(Store {
            shared: Arc::new(Shared {
                objects,
                runtime,
                location: location.clone(),
                root,
                metrics: metrics.clone(),
            }),
            patience: PATIENCE,
        })
    }

    /// The store at `location`, counting its requests nowhere (listings,
    /// tools and tests).
    pub fn at(location: impl Into<Location>) -> Result<Store, StoreError> {
        Store::open(&location.into(), &Metrics::default())
    }

    /// The same store, retrying each request for up to `patience`.
    pub fn with_patience(&self, patience: Duration) -> Store {
        Store {
            shared: Arc::clone(&self.shared),
            patience,
        }
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.shared.location
    }

    /// The place of object `name`, for messages.
    pub fn place(&self, name: &str) -> String {
        self.shared.location.of(name)
    }

    fn path(&self, name: &str) -> ObjectPath {
        match &self.shared.root {
            Some(root) => root.clone().join(name),
            None => ObjectPath::from(name),
        }
    }

    /// Runs `request` (made afresh for each try) until it succeeds, fails
    /// for good, or the patience runs out; counts every try under `op`.
    fn retrying<T, F>(
        &self,
        op: &'static str,
        name: &str,
        mut request: impl FnMut() -> F,
        bytes_of: impl Fn(&T) -> u64,
    ) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        let began = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0u64;
        loop {
            // A request waits at most what is left of the patience (and
            // never less than a second), so that a store that does not
            // answer fails within it.
            let left = self.patience.saturating_sub(began.elapsed());
            let timeout = left.clamp(Duration::from_secs(1), REQUEST_TIMEOUT);
            let outcome = self.shared.runtime.block_on(async {
                match tokio::time::timeout(timeout, request()).await {
                    Ok(result) => result,
                    Err(_) => Err(object_store::Error::Generic {
                        store: "checkpoints",
                        source: format!("no answer within {timeout:?}").into(),
                    }),
                }
            });
            let failure = outcome.as_ref().err().map(transient);
            self.shared.metrics.update(|f| {
                let figures = f.checkpoints.store.entry(op).or_default();
                figures.requests += 1;
                figures.retries += u64::from(tries > 0);
                match &outcome {
                    Ok(value) => figures.bytes += bytes_of(value),
                    Err(_) => figures.errors += 1,
                }
            });
            tries += 1;
            match (outcome, failure) {
                (Ok(value), _) => return Ok(value),
                (Err(error), Some(true)) if began.elapsed() + backoff < self.patience => {
                    tracing::debug!(op, object = %self.place(name), %error, tries, "a checkpoint store request failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                (Err(error), transient) => {
                    return Err(Failure {
                        error,
                        transient: transient.unwrap_or(false),
                    })
                }
            }
        }
    }

    fn failed(&self, name: &str, failure: Failure) -> StoreError {
        match failure.error {
            object_store::Error::AlreadyExists { .. } => {
                return StoreError::Exists {
                    place: self.place(name),
                }
            }
            object_store::Error::NotFound { .. } => {
                return StoreError::Missing {
                    place: self.place(name),
                }
            }
            _ => {}
        }
        let message = if failure.transient {
            format!(
                "{} (gave up after retrying for {:?})",
                one_line(&failure.error.to_string()),
                self.patience
            )
        } else {
            one_line(&failure.error.to_string())
        };
        StoreError::Store {
            place: self.place(name),
            message,
        }
    }

    /// Writes `bytes` as object `name` (replacing it, or with `create`
    /// only if it does not exist: [`StoreError::Exists`] otherwise). In a
    /// folder the file is synced before this returns.
    pub fn put(&self, name: &str, bytes: Vec<u8>, create: bool) -> Result<(), StoreError> {
        let path = self.path(name);
        let size = bytes.len() as u64;
        // Kept to recognise our own object if a create's answer was lost.
        let ours = create.then(|| bytes.clone());
        let payload = PutPayload::from(bytes);
        let mode = if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let objects = &self.shared.objects;
        let result = self.retrying(
            "put",
            name,
            || {
                let options = PutOptions {
                    mode: mode.clone(),
                    ..Default::default()
                };
                objects.put_opts(&path, payload.clone(), options)
            },
            |_| size,
        );
        match result {
            Ok(_) => self.sync_local(name),
            // A retried create whose earlier try reached the store finds
            // its own object (a manifest names its writer and wall time:
            // another writer's is never the same bytes).
            Err(failure)
                if matches!(failure.error, object_store::Error::AlreadyExists { .. })
                    && ours.is_some()
                    && self.get(name).ok() == ours =>
            {
                self.sync_local(name)
            }
            Err(failure) => Err(self.failed(name, failure)),
        }
    }

    /// A folder's file and the folder itself synced, so that what was
    /// written survives the machine; nothing for an object store.
    fn sync_local(&self, name: &str) -> Result<(), StoreError> {
        let Some(dir) = self.shared.location.local() else {
            return Ok(());
        };
        let file: PathBuf = dir.join(name);
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::File::open(dir))
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::Store {
                place: file.display().to_string(),
                message: format!("cannot sync: {e}"),
            })
    }

    /// The whole of object `name`.
    pub fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(name);
        let objects = &self.shared.objects;
        self.retrying(
            "get",
            name,
            || async { objects.get(&path).await?.bytes().await },
            |bytes| bytes.len() as u64,
        )
        .map(|bytes| bytes.to_vec())
        .map_err(|failure| self.failed(name, failure))
    }

    /// Every object in the folder or prefix (not below it).
    pub fn list(&self) -> Result<Vec<Object>, StoreError> {
        let objects = &self.shared.objects;
        let root = self.shared.root.clone();
        let listed = self
            .retrying(
                "list",
                "",
                || objects.list_with_delimiter(root.as_ref()),
                |_| 0,
            )
            .map_err(|failure| self.failed("", failure))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                Some(Object {
                    name: meta.location.filename()?.to_owned(),
                    bytes: meta.size,
                    modified_ms: meta.last_modified.timestamp_millis(),
                })
            })
            .collect())
    }

    /// Deletes object `name`; one already gone is not an error. Returns
    /// whether it was there.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let path = self.path(name);
        let objects = &self.shared.objects;
        match self.retrying("delete", name, || objects.delete(&path), |_| 0) {
            Ok(()) => Ok(true),
            Err(Failure {
                error: object_store::Error::NotFound { .. },
                ..
            }) => Ok(false),
            Err(failure) => Err(self.failed(name, failure)),
        }
    }

    /// Checks that objects can be created, read and deleted, so that an
    /// unusable folder or prefix (missing bucket, wrong credentials, no
    /// permission) fails before any work.
    pub fn check(&self) -> Result<(), StoreError> {
        let name = format!(
            "{WRITE_CHECK}{}-{}",
            std::process::id(),
            crate::model::clock::now_ms()
        );
        self.put(&name, b"presence".to_vec(), false)
            .map_err(|error| match error {
                // S3 answers a put into a bucket that is not there with 404.
                StoreError::Missing { .. } => StoreError::Store {
                    place: self.location().to_string(),
                    message: "cannot create an object there: does the bucket exist?".to_owned(),
                },
                error => error,
            })?;
        self.get(&name)?;
        self.delete(&name)?;
        Ok(())
    }
}

/// An error of the store as one line: an S3 answer's XML body is left out
/// but for its error code (`NoSuchBucket`, ...).
fn one_line(text: &str) -> String {
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next());
    let head = text.split("<?xml").next().unwrap_or(text);
    let mut line = head.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = line.trim_end_matches([':', ' ']).len();
    line.truncate(trimmed);
    if let Some(code) = code {
        line.push_str(&format!(" ({code})"));
    }
    line
}

/// Whether a request that failed with `error` may succeed if tried again.
fn transient(error: &object_store::Error) -> bool {
    use object_store::Error::*;
    match error {
        NotFound { .. }
        | AlreadyExists { .. }
        | Precondition { .. }
        | NotModified { .. }
        | NotImplemented { .. }
        | NotSupported { .. }
        | PermissionDenied { .. }
        | Unauthenticated { .. }
        | InvalidPath { .. }
        | UnknownConfigurationKey { .. } => false,
        // Connection errors, timeouts and 5xx come as `Generic`, and so do
        // other answers a listing does not map (a 404 for a missing
        // bucket): a 4xx but a timeout or throttling will not pass.
        Generic { source, .. } => {
            let text = source.to_string();
            match text.split("status code: ").nth(1).and_then(|s| s.get(..3)) {
                Some(status) if status.starts_with('4') => matches!(status, "408" | "429"),
                _ => true,
            }
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_is_one_line_with_its_code() {
        let answer = "Error performing GET http://h/b?list-type=2 - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>x</Message></Error>";
        assert_eq!(
            one_line(answer),
            "Error performing GET http://h/b?list-type=2 - Server returned non-2xx status code: 404 Not Found (NoSuchBucket)"
        );
        assert_eq!(one_line("a\n b"), "a b");
    }

    #[test]
    fn a_4xx_is_for_good_but_timeouts_throttling_and_5xx_may_pass() {
        let answered = |status: &str| object_store::Error::Generic {
            store: "S3",
            source: format!("Server returned non-2xx status code: {status}: ...").into(),
        };
        assert!(!transient(&answered("404 Not Found")));
        assert!(!transient(&answered("400 Bad Request")));
        assert!(transient(&answered("429 Too Many Requests")));
        assert!(transient(&answered("408 Request Timeout")));
        assert!(transient(&answered("503 Slow Down")));
        let no_answer = object_store::Error::Generic {
            store: "S3",
            source: "error sending request".into(),
        };
        assert!(transient(&no_answer));
        assert!(!transient(&object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into()
        }));
    }
}
