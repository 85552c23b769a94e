//! WAL archives in object storage (S3 and S3-compatible servers; GCS and Azure through the
//! same client), implementing the core's storage contract over `object_store`.
//!
//! `object_store` is async; the core's traits are synchronous, so each call runs on a small
//! shared tokio runtime (`block_on` from the archiver's worker threads, which is how several
//! uploads run at once). Puts are durable when S3 acknowledges them; `PutMode::Create` is an
//! `If-None-Match: *` conditional put, atomic on the server.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

pub use super::object_url::{ObjectUrl, S3Settings};
use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, RetryConfig,
};
use walvault_core::storage::{
    ObjectMeta, Op, Payload, PutMode, StorageError, WalStore, run_payload, validate_key,
};

/// A bucket (and the prefix inside it) holding archives in Barman's cloud layout.
pub struct S3Store {
    store: Arc<dyn ObjectStore>,
    runtime: Arc<tokio::runtime::Runtime>,
    /// What messages show before a key.
    url: String,
    multipart_threshold: u64,
    /// For the failures object_store does not retry itself ([`S3Store::retry_unretried`]).
    max_retries: usize,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("url", &self.url).finish()
    }
}

impl S3Store {
    /// Connects lazily (the first request opens the connection); fails only on settings
    /// that cannot work.
    pub fn open(settings: &S3Settings) -> anyhow::Result<S3Store> {
        let (scheme, bucket) = (settings.url.scheme.clone(), settings.url.bucket.clone());
        // TLS through ring rather than reqwest's default aws-lc-rs: aws-lc seeds its random
        // generator with CPU-jitter entropy on first use, ~30 ms of every put-wal/get-wal
        // process (one per WAL) that talks HTTPS. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("walvault-s3")
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let mut client = ClientOptions::new()
            .with_timeout(settings.timeout)
            .with_connect_timeout(Duration::from_secs(10));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: INIT_BACKOFF,
                max_backoff: MAX_BACKOFF,
                base: 2.0,
            },
            max_retries: settings.max_retries,
            retry_timeout: Duration::from_secs(180),
        };
        let store: Arc<dyn ObjectStore> = match scheme.as_str() {
            "s3" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry);
                let profile = crate::store::aws_profile::load(settings.profile.as_deref())?;
                // Region: the configuration, the environment (read by from_env), the
                // profile, then us-east-1.
                let env_region = std::env::var_os("AWS_REGION").is_some()
                    || std::env::var_os("AWS_DEFAULT_REGION").is_some();
                if let Some(region) = &settings.region {
                    b = b.with_region(region);
                } else if !env_region {
                    b = b.with_region(profile.region.as_deref().unwrap_or("us-east-1"));
                }
                match (&settings.access_key_id, &settings.secret_access_key) {
                    (Some(id), Some(secret)) => {
                        b = b
                            .with_access_key_id(id)
                            .with_secret_access_key(secret.expose());
                    }
                    (Some(_), None) | (None, Some(_)) => bail!(
                        "set both access_key_id and secret_access_key, or neither (and use the \
                         AWS_* environment or a profile)"
                    ),
                    (None, None) => {
                        // A profile named in the configuration wins over the environment.
                        if (settings.profile.is_some()
                            || std::env::var_os("AWS_ACCESS_KEY_ID").is_none())
                            && let Some(creds) = &profile.credentials
                        {
                            b = b
                                .with_access_key_id(&creds.access_key_id)
                                .with_secret_access_key(&creds.secret_access_key);
                            if let Some(token) = &creds.session_token {
                                b = b.with_token(token);
                            }
                        }
                    }
                }
                if let Some(endpoint) = &settings.endpoint_url {
                    b = b.with_endpoint(endpoint);
                    if endpoint.starts_with("http://") {
                        client = client.with_allow_http(true);
                        // Plain HTTP with static credentials makes no TLS connection at all:
                        // skip loading the system's trust store (a scan of /etc/ssl/certs on
                        // Debian; about 6 ms per put-wal call, measured in bench/s3.sh).
                        let static_credentials = settings.access_key_id.is_some()
                            || std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
                            || profile.credentials.is_some();
                        if static_credentials {
                            client = client.with_no_system_certificates(true);
                        }
                    }
                    b = b.with_virtual_hosted_style_request(!settings.path_style.unwrap_or(true));
                } else if let Some(path_style) = settings.path_style {
                    b = b.with_virtual_hosted_style_request(!path_style);
                }
                Arc::new(b.with_client_options(client).build()?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()?,
            ),
        };
        Ok(S3Store {
            store,
            runtime: Arc::new(runtime),
            url: format!("{scheme}://{bucket}"),
            multipart_threshold: settings.multipart_threshold,
            max_retries: settings.max_retries,
        })
    }

    fn path(key: &str) -> Result<ObjectPath, StorageError> {
        validate_key(key)?;
        ObjectPath::parse(key).map_err(|_| StorageError::InvalidKey {
            key: key.to_owned(),
            reason: "not a valid object path",
        })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Runs `op`, and again up to `max_retries` times with a jittered exponential backoff
    /// while it fails in a way `retry` accepts: one object_store passed on without retrying
    /// ([`broken_body`], [`unanswered`]). It retries every other failure itself, within the
    /// same budget.
    fn retry_unretried<T>(
        &self,
        retry: impl Fn(&object_store::Error) -> bool,
        mut op: impl FnMut() -> object_store::Result<T>,
    ) -> object_store::Result<T> {
        let mut ceiling = INIT_BACKOFF;
        for attempt in 0..self.max_retries {
            match op() {
                Err(e) if retry(&e) => {
                    std::thread::sleep(jittered(ceiling, attempt));
                    ceiling = (ceiling * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
        op()
    }
}

/// The backoff object_store uses too (see `S3Store::open`).
const INIT_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A pause between [`INIT_BACKOFF`] and `ceiling`, so that clients failing together do not
/// retry together.
fn jittered(ceiling: Duration, salt: usize) -> Duration {
    use std::hash::BuildHasher;
    // RandomState is seeded randomly: a random number without a dependency for it.
    let random = std::collections::hash_map::RandomState::new().hash_one(salt);
    let spread = ceiling.saturating_sub(INIT_BACKOFF).as_millis() as u64;
    INIT_BACKOFF + Duration::from_millis(random % (spread + 1))
}

/// Whether `err` is a response body broken after its head arrived (a reset, a short body),
/// which object_store passes on unretried for listings (it retries downloads'): its backend
/// error holds the transport error directly, where a request it retried holds its retry
/// error, with the transport error below.
fn broken_body(err: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind as K};
    let object_store::Error::Generic { source, .. } = err else {
        return false;
    };
    source
        .source()
        .and_then(|e| e.downcast_ref::<HttpError>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            )
        })
}

/// Whether the request went out and no answer came back (a reset, a timeout): object_store
/// retries that only for requests it deems idempotent.
fn unanswered(err: &object_store::Error) -> bool {
    use object_store::client::HttpErrorKind as K;
    transport_kind(err).is_some_and(|kind| matches!(kind, K::Timeout | K::Interrupted))
}

/// Maps an `object_store` error to the core's semantic error, keeping it as the source.
///
/// By variant first (not found, exists, denied); a transport failure by the kind of
/// object_store's `HttpError` in the source chain (connect, request, timeout, interrupted:
/// transient). object_store 0.14 keeps the error that carries the HTTP status private, so a
/// status left after its retries is read from that error's own status line ("status code:
/// 5xx/429"), never from the URI or the body (WAL names contain digits such as "500").
fn classify(op: Op, key: &str, err: object_store::Error) -> StorageError {
    use object_store::Error as E;
    let key = key.to_owned();
    match err {
        E::NotFound { .. } => StorageError::NotFound { key },
        E::AlreadyExists { .. } | E::Precondition { .. } => StorageError::AlreadyExists { key },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => StorageError::Permanent {
            op,
            key,
            message: format!("access denied: {err} (check the credentials and the bucket policy)"),
            source: Some(Box::new(err)),
        },
        other => {
            let message = error_chain(&other);
            let transient = transport_kind(&other).is_some_and(|kind| {
                use object_store::client::HttpErrorKind as K;
                matches!(kind, K::Connect | K::Request | K::Timeout | K::Interrupted)
            }) || retryable_status(&other);
            let source = Some(Box::new(other) as walvault_core::storage::BackendError);
            if transient {
                StorageError::Transient {
                    op,
                    key,
                    message,
                    source,
                }
            } else {
                StorageError::Permanent {
                    op,
                    key,
                    message,
                    source,
                }
            }
        }
    }
}

/// The kind of the transport error in `err`'s source chain, if there is one.
fn transport_kind(
    err: &(dyn std::error::Error + 'static),
) -> Option<object_store::client::HttpErrorKind> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            return Some(http.kind());
        }
        next = e.source();
    }
    None
}

/// Whether the request error in `err`'s chain reports a 5xx or 429 status (throttling,
/// SlowDown, an overloaded or failing server): the status line of object_store's request
/// error, which starts "Server returned non-2xx status code: <code>".
fn retryable_status(err: &dyn std::error::Error) -> bool {
    let mut next: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if let Some(code) = text
            .strip_prefix("Server returned non-2xx status code: ")
            .or_else(|| text.strip_prefix("Server returned error response: "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
        {
            return code == 429 || (500..600).contains(&code);
        }
        next = e.source();
    }
    false
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

impl WalStore for S3Store {
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        let path = Self::path(key)?;
        let meta = self
            .block_on(self.store.head(&path))
            .map_err(|e| classify(Op::Head, key, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: meta.size,
        })
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let path = Self::path(key)?;
        let result = self
            .block_on(self.store.get(&path))
            .map_err(|e| classify(Op::Get, key, e))?;
        Ok(Box::new(StreamReader {
            runtime: &self.runtime,
            stream: result.into_stream(),
            chunk: Bytes::new(),
        }))
    }

    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError> {
        let path = Self::path(key)?;
        // A compressed segment is at most a segment: buffering it keeps retries simple (the
        // same bytes are sent again) and memory bounded by jobs × segment size.
        let mut body = Vec::new();
        run_payload(payload, &mut body).map_err(|f| f.into_storage_error(key))?;
        let size = body.len() as u64;
        let bytes = Bytes::from(body);
        if size > self.multipart_threshold {
            self.put_multipart(key, &path, mode, bytes)?;
        } else {
            let put = || {
                let opts = PutOptions {
                    mode: match mode {
                        PutMode::Create => object_store::PutMode::Create,
                        PutMode::Overwrite => object_store::PutMode::Overwrite,
                    },
                    ..PutOptions::default()
                };
                let payload = PutPayload::from(bytes.clone());
                self.block_on(self.store.put_opts(&path, payload, opts))
            };
            match mode {
                // object_store repeats only idempotent requests after a reset or a timeout, and
                // a conditional put is not one to it. To walvault it is: a repeat of one that
                // landed answers "already exists", and the archiver then compares contents.
                PutMode::Create => self.retry_unretried(unanswered, put),
                PutMode::Overwrite => put(),
            }
            .map_err(|e| classify(Op::Put, key, e))?;
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        // object_store lists by path segments; list the deepest whole directory and filter
        // by the string prefix.
        let dir = match prefix.rsplit_once('/') {
            Some((dir, _)) => Some(Self::path(dir)?),
            None => None,
        };
        let listed: Vec<object_store::ObjectMeta> = self
            .retry_unretried(broken_body, || {
                self.block_on(async {
                    let mut out = Vec::new();
                    let mut stream = self.store.list(dir.as_ref());
                    while let Some(item) = stream.next().await {
                        out.push(item?);
                    }
                    Ok(out)
                })
            })
            .map_err(|e| classify(Op::List, prefix, e))?;
        let mut out: Vec<ObjectMeta> = listed
            .into_iter()
            .map(|m| ObjectMeta {
                key: m.location.to_string(),
                size: m.size,
            })
            .filter(|m| m.key.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = Self::path(key)?;
        // S3 deletes of a missing key succeed; the contract says NotFound.
        self.head(key)?;
        self.block_on(self.store.delete(&path))
            .map_err(|e| classify(Op::Delete, key, e))
    }
}

impl S3Store {
    /// Multipart upload for objects above the threshold. S3 has no create-if-absent for
    /// multipart uploads in every implementation, so `Create` checks first (the race window
    /// is the upload's duration; WAL segments of the default sizes never take this path).
    fn put_multipart(
        &self,
        key: &str,
        path: &ObjectPath,
        mode: PutMode,
        bytes: Bytes,
    ) -> Result<(), StorageError> {
        if mode == PutMode::Create {
            match self.head(key) {
                Ok(_) => {
                    return Err(StorageError::AlreadyExists {
                        key: key.to_owned(),
                    });
                }
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.block_on(async {
            let mut upload = self
                .store
                .put_multipart_opts(path, PutMultipartOptions::default())
                .await?;
            const PART: usize = 16 << 20;
            let mut offset = 0;
            while offset < bytes.len() {
                let end = (offset + PART).min(bytes.len());
                upload
                    .put_part(PutPayload::from(bytes.slice(offset..end)))
                    .await?;
                offset = end;
            }
            upload.complete().await.map(|_| ())
        })
        .map_err(|e| classify(Op::Put, key, e))
    }
}

/// A blocking reader over an object's byte stream: memory stays at one network chunk.
struct StreamReader<'a> {
    runtime: &'a tokio::runtime::Runtime,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(error_chain(&e))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// An [`S3Store`] opened on first use: starting the client (TLS roots, runtime threads) costs
/// more than a `get-wal` served from the prefetch spool, which never needs it.
pub struct LazyS3Store {
    settings: S3Settings,
    store: std::sync::OnceLock<Result<S3Store, String>>,
}

impl std::fmt::Debug for LazyS3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyS3Store")
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

impl LazyS3Store {
    /// Checks the settings now; connects later.
    pub fn new(settings: &S3Settings) -> anyhow::Result<LazyS3Store> {
        Ok(LazyS3Store {
            settings: settings.clone(),
            store: std::sync::OnceLock::new(),
        })
    }

    fn store(&self, op: Op, key: &str) -> Result<&S3Store, StorageError> {
        self.store
            .get_or_init(|| S3Store::open(&self.settings).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|message| StorageError::Permanent {
                op,
                key: key.to_owned(),
                message: message.clone(),
                source: None,
            })
    }
}

impl WalStore for LazyS3Store {
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.store(Op::Head, key)?.head(key)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        self.store(Op::Get, key)?.get(key)
    }
    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError> {
        self.store(Op::Put, key)?.put(key, mode, payload)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.store(Op::List, prefix)?.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.store(Op::Delete, key)?.delete(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a given text and an optional source, as object_store nests them.
    #[derive(Debug)]
    struct Text(
        &'static str,
        Option<Box<dyn std::error::Error + Send + Sync>>,
    );
    impl std::fmt::Display for Text {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Text {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static))
        }
    }

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(source),
        }
    }

    #[test]
    fn errors_are_classified_by_kind_and_status_and_keep_their_source() {
        use object_store::client::{HttpError, HttpErrorKind};
        let timeout = generic(HttpError::new(
            HttpErrorKind::Timeout,
            std::io::Error::other("deadline"),
        ));
        let e = classify(Op::Put, "k", timeout);
        assert!(e.is_retryable(), "{e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the source is kept"
        );
        let status = |line: &'static str| {
            // The retry error's own text names the URI; its source is the status line.
            generic(Text(
                "Error performing PUT http://h/b/000000010000000000000500 in 1s",
                Some(Box::new(Text(line, None))),
            ))
        };
        for (line, retryable) in [
            (
                "Server returned non-2xx status code: 503 Service Unavailable: SlowDown",
                true,
            ),
            (
                "Server returned non-2xx status code: 429 Too Many Requests: ",
                true,
            ),
            (
                "Server returned non-2xx status code: 400 Bad Request: ",
                false,
            ),
            // A 500 in the URI is not a status.
            (
                "Server returned non-2xx status code: 403 Forbidden: ",
                false,
            ),
        ] {
            let e = classify(Op::Put, "k", status(line));
            assert_eq!(e.is_retryable(), retryable, "{line}");
        }
        // A listing's body broken after its head: object_store passes it on unretried (the
        // transport error right under its own); a request it retried wraps it in its retry
        // error. A reset or a timeout, wrapped or not, went unanswered; a refused connection
        // was never sent.
        let transport = |kind| {
            Some(Box::new(HttpError::new(
                kind,
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            )) as Box<dyn std::error::Error + Send + Sync>)
        };
        let body_error = |kind| generic(Text("Error getting list response body", transport(kind)));
        let retried = |kind| {
            generic(Text(
                "Error performing PUT",
                Some(Box::new(Text("after 5 retries", transport(kind)))),
            ))
        };
        assert!(broken_body(&body_error(HttpErrorKind::Interrupted)));
        assert!(!broken_body(&retried(HttpErrorKind::Interrupted)));
        assert!(unanswered(&retried(HttpErrorKind::Interrupted)));
        assert!(unanswered(&retried(HttpErrorKind::Timeout)));
        assert!(!unanswered(&retried(HttpErrorKind::Connect)));
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: Box::new(Text("403", None)),
        };
        assert!(!classify(Op::Get, "k", denied).is_retryable());
    }
}
