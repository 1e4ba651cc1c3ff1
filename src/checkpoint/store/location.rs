//! Where checkpoints are kept: `--checkpoint-dir`, a local folder or
//! `s3://BUCKET/PREFIX`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A checkpoint store's place, as `--checkpoint-dir` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A folder (every process of a cluster on one machine, or a shared volume).
    Local(PathBuf),
    /// A prefix in an S3-compatible bucket, configured by the AWS
    /// environment variables.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix in it, without leading or trailing `/` (may be empty).
        prefix: String,
    },
}

impl Location {
    /// The local folder, if it is one.
    pub fn local(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(dir) => Some(dir),
            Location::S3 { .. } => None,
        }
    }

    /// The place of the object `name` in it, for messages.
    pub fn of(&self, name: &str) -> String {
        match self {
            Location::Local(dir) => dir.join(name).display().to_string(),
            Location::S3 { .. } => format!("{}/{name}", self.to_string().trim_end_matches('/')),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(dir: PathBuf) -> Self {
        Location::Local(dir)
    }
}

impl From<&std::path::Path> for Location {
    fn from(dir: &std::path::Path) -> Self {
        Location::Local(dir.to_owned())
    }
}

impl From<&PathBuf> for Location {
    fn from(dir: &PathBuf) -> Self {
        Location::Local(dir.clone())
    }
}

impl FromStr for Location {
    type Err = String;

    /// `s3://BUCKET[/PREFIX]` is a bucket's prefix; another `scheme://` is
    /// refused; anything else is a folder.
    fn from_str(text: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            if text.is_empty() {
                return Err("a folder or s3://BUCKET/PREFIX is required".to_owned());
            }
            return Ok(Location::Local(text.into()));
        };
        if scheme != "s3" {
            return Err(format!(
                "{scheme}:// is not supported: give a folder or s3://BUCKET/PREFIX"
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(format!(
                "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.'): give s3://BUCKET/PREFIX"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
            return Err(format!(
                "{prefix:?} is not a prefix (no empty, '.' or '..' parts): give s3://BUCKET/PREFIX"
            ));
        }
        Ok(Location::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(dir) => write!(f, "{}", dir.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_folder_or_a_bucket_s_prefix() {
        assert_eq!(
            "s3://state/presence/prod/".parse(),
            Ok(Location::S3 {
                bucket: "state".into(),
                prefix: "presence/prod".into()
            })
        );
        assert_eq!(
            "s3://state".parse::<Location>().unwrap().to_string(),
            "s3://state"
        );
        assert_eq!(
            "checkpoints/a".parse(),
            Ok(Location::Local("checkpoints/a".into()))
        );
        assert!("gs://state/x"
            .parse::<Location>()
            .unwrap_err()
            .contains("gs://"));
        assert!("s3://A_B/x".parse::<Location>().is_err());
        assert!("s3://state/a/../b".parse::<Location>().is_err());
        assert!("".parse::<Location>().is_err());
    }
}
