//! Object-storage settings and URLs: plain data the configuration parses on every target
//! (the client itself, `s3`, is native only).

use std::time::Duration;

use anyhow::bail;

use crate::secret::Secret;

/// An object-storage URL, parsed once when the configuration is read: `s3://bucket/prefix`
/// (also `gs://`, `az://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectUrl {
    /// `s3`, `gs`, `az`, `azure` or `abfs`.
    pub scheme: String,
    /// The bucket (or container).
    pub bucket: String,
    /// The prefix inside it, without slashes around (may be empty).
    pub prefix: String,
}

impl ObjectUrl {
    /// Parses `scheme://bucket/prefix`.
    pub fn parse(url: &str) -> anyhow::Result<ObjectUrl> {
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("{url:?} is not a URL (expected s3://bucket/prefix)");
        };
        if !matches!(scheme, "s3" | "gs" | "az" | "azure" | "abfs") {
            bail!("{url:?}: unsupported scheme {scheme:?} (expected s3://, gs:// or az://)");
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{url:?} names no bucket");
        }
        Ok(ObjectUrl {
            scheme: scheme.to_owned(),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// `scheme://bucket/`: what an object's key (which starts with the prefix) is shown after.
    pub fn bucket_root(&self) -> String {
        format!("{}://{}/", self.scheme, self.bucket)
    }
}

impl std::fmt::Display for ObjectUrl {
    /// `scheme://bucket/prefix`, or `scheme://bucket` without a prefix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket and prefix.
    pub url: ObjectUrl,
    /// A custom endpoint (MinIO, Ceph RGW, …); path-style requests by default there.
    pub endpoint_url: Option<String>,
    /// The region (`AWS_REGION` / profile otherwise; `us-east-1` as the last resort).
    pub region: Option<String>,
    /// A profile in `~/.aws/credentials` and `~/.aws/config`.
    pub profile: Option<String>,
    /// Static credentials from the configuration (the environment is preferred).
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    pub secret_access_key: Option<Secret>,
    /// Force path-style (`endpoint/bucket/key`) or virtual-hosted-style requests.
    pub path_style: Option<bool>,
    /// Objects larger than this are uploaded in parts.
    pub multipart_threshold: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of a failing request (5xx, 429/SlowDown, connection errors).
    pub max_retries: usize,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("url", &self.url)
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("profile", &self.profile)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// The defaults for `url` (the one place they are set): 64 MiB parts, 60 s per request,
    /// 5 retries, credentials and region from the environment.
    pub fn new(url: ObjectUrl) -> Self {
        S3Settings {
            url,
            endpoint_url: None,
            region: None,
            profile: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: None,
            multipart_threshold: 64 << 20,
            timeout: Duration::from_secs(60),
            max_retries: 5,
        }
    }
}
