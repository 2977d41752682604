//! Session recordings: a time-stamped event stream per session (metadata, then data chunks with
//! direction, size and SHA-256), buffered in a local spool and drained to object storage
//! (`file://` or `s3://` through `object_store`), sealed by a manifest of every object's hash
//! that the leased manifest job signs.
//!
//! What is recorded is what the relay carries. For SSH and TLS targets that is ciphertext: a
//! recording proves when, how much and in which direction data flowed, and that nothing was
//! altered since, but it cannot show the commands typed. Say so to anyone relying on it.
//!
//! Layout under the configured prefix, per session:
//! `<id>/meta.json` (who, what, when), `<id>/chunk-000001.bin` (the bytes, both directions
//! interleaved), `<id>/chunk-000001.json` (its frames: time, direction, size, offset, and the
//! chunk's hash), `<id>/end.json` (when and why it ended), `<id>/manifest.json` (the signed
//! list of every other object with size and hash).
//!
//! Durability: a chunk is written to the spool before its upload starts and deleted only after
//! the upload succeeded; failed uploads are retried by a background task and after a restart
//! (the spool is per replica id, so a restarted replica finds its own). A session whose replica
//! died without uploading `end.json` is signed as incomplete after a grace period.

use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signing::{Expiring, Keyring};

/// A chunk is sealed when it holds this many bytes…
pub const CHUNK_BYTES: usize = 256 * 1024;
/// …or when data arrives and it is older than this.
pub const CHUNK_AGE: Duration = Duration::from_secs(1);
/// Name of the signed manifest object.
pub const MANIFEST: &str = "manifest.json";

/// Failures of recording storage.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The URL is not `file:///…` or `s3://…`, or the store cannot be built from it.
    #[error("recordings URL `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// Object storage refused or failed a request.
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    /// The local spool failed.
    #[error("recording spool {path}: {source}")]
    Spool {
        /// File or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A stored document is not what it should be.
    #[error("recording {0}: malformed {1}")]
    Malformed(String, String),
}

fn spool_err(path: &FsPath) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Spool {
        path: path.display().to_string(),
        source,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Direction of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to target.
    Up,
    /// Target to client.
    Down,
}

/// One relayed read or write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Unix ms.
    pub at_ms: i64,
    /// Direction.
    pub dir: Direction,
    /// Offset in the chunk's bytes.
    pub offset: usize,
    /// Bytes.
    pub size: usize,
}

/// The index of one chunk (`chunk-N.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkIndex {
    /// Session.
    pub session: String,
    /// 1-based sequence number.
    pub seq: u64,
    /// Total bytes.
    pub size: usize,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Frames in order.
    pub frames: Vec<Frame>,
}

/// Session metadata (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Session id.
    pub session: String,
    /// Target name.
    pub target: String,
    /// Host and port dialled.
    pub address: String,
    /// Token id of the user.
    pub token_id: String,
    /// Replica that relayed.
    pub replica: String,
    /// Unix ms.
    pub started_ms: i64,
    /// Always true for SSH and TLS targets: the bytes are ciphertext.
    pub note: String,
}

/// One object listed in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Object name within the session's prefix.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: String,
}

/// The signed content of `manifest.json`. Deterministic for a given set of objects, so signing
/// twice produces the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Session id.
    pub session: String,
    /// Every object of the recording except the manifest, by name.
    pub objects: Vec<Entry>,
    /// False when the relaying replica died before uploading `end.json`.
    pub complete: bool,
}

impl Expiring for Manifest {
    fn expires_at_ms(&self) -> i64 {
        i64::MAX
    }
}

/// Result of verifying a recording: a wire type, see [`crate::wire::Verification`].
pub use crate::wire::Verification;

#[derive(Debug, Serialize, Deserialize)]
struct SignedManifest {
    /// The keyring envelope (`kid`, `body`, `sig`).
    signed: String,
    /// The same manifest, readable.
    manifest: Manifest,
}

/// Where recordings go, and the replica's spool.
#[derive(Clone)]
pub struct Recordings {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    spool: PathBuf,
    uploaded: prometheus::IntCounter,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings")
            .field("prefix", &self.prefix)
            .field("spool", &self.spool)
            .finish()
    }
}

impl Recordings {
    /// Opens `url` (`file:///dir` or `s3://bucket/prefix`; S3 settings from the usual `AWS_*`
    /// environment variables) with the local spool `spool`.
    pub fn open(
        url: &str,
        spool: PathBuf,
        uploaded: prometheus::IntCounter,
    ) -> Result<Self, RecordingError> {
        let bad = |reason: String| RecordingError::Url {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(fs), Path::default())
            }
            "s3" => {
                let opts: Vec<(String, String)> = std::env::vars()
                    .filter(|(k, _)| k.starts_with("AWS_"))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                let (store, path) =
                    object_store::parse_url_opts(&parsed, opts).map_err(|e| bad(e.to_string()))?;
                (Arc::from(store), path)
            }
            other => {
                return Err(bad(format!(
                    "scheme `{other}`: use file:///path or s3://bucket/prefix"
                )));
            }
        };
        std::fs::create_dir_all(&spool).map_err(spool_err(&spool))?;
        Ok(Self {
            store,
            prefix,
            spool,
            uploaded,
        })
    }

    fn object(&self, session: &str, name: &str) -> Path {
        self.prefix.clone().join(session).join(name)
    }

    fn spool_dir(&self, session: &str) -> PathBuf {
        self.spool.join(session)
    }

    /// Starts recording a session: writes its metadata and returns the recorder the relay
    /// feeds. Chunks are spooled, then uploaded in the background.
    pub fn start(&self, meta: &Meta) -> Result<Recorder, RecordingError> {
        let dir = self.spool_dir(&meta.session);
        std::fs::create_dir_all(&dir).map_err(spool_err(&dir))?;
        let doc = serde_json::to_vec_pretty(meta).unwrap_or_default();
        std::fs::write(dir.join(".live"), b"").map_err(spool_err(&dir))?;
        write_atomic(&dir, "meta.json", &doc)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let uploader = self.clone();
        let session = meta.session.clone();
        tokio::spawn(async move { uploader.upload_loop(session, rx).await });
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Pending {
                session: meta.session.clone(),
                dir,
                seq: 0,
                bytes: Vec::new(),
                frames: Vec::new(),
                opened: Instant::now(),
            })),
            kick: tx,
        })
    }

    /// Uploads everything spooled for `session` whenever kicked, until the recorder is gone.
    async fn upload_loop(self, session: String, mut rx: tokio::sync::mpsc::UnboundedReceiver<()>) {
        while rx.recv().await.is_some() {
            if let Err(e) = self.upload_session(&session).await {
                tracing::warn!(session = %session, error = %e, "recording upload failed; kept in the spool for retry");
            }
        }
        if let Err(e) = self.upload_session(&session).await {
            tracing::warn!(session = %session, error = %e, "recording upload failed; kept in the spool for retry");
        }
    }

    /// Uploads every spooled file of `session` (`end.json` last), deleting each after its upload.
    pub async fn upload_session(&self, session: &str) -> Result<usize, RecordingError> {
        let dir = self.spool_dir(session);
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".tmp") && !n.starts_with('.'))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(spool_err(&dir)(e)),
        };
        // Data before its index, and the end marker only after everything else.
        names.sort_by_key(|n| (n == "end.json", n.ends_with(".json"), n.clone()));
        let mut n = 0;
        for name in &names {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(spool_err(&path))?;
            self.store
                .put(&self.object(session, name), PutPayload::from(bytes))
                .await?;
            std::fs::remove_file(&path).map_err(spool_err(&path))?;
            self.uploaded.inc();
            n += 1;
        }
        if !dir.join(".live").exists()
            && std::fs::read_dir(&dir).is_ok_and(|mut rd| rd.next().is_none())
        {
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(n)
    }

    /// Uploads what is left in the spool: at start-up everything an earlier run of this
    /// replica left (its sessions are over, whatever their marker says), later only sessions
    /// that are not being recorded right now (those upload themselves). Returns how many
    /// objects went up.
    pub async fn resume_spool(&self, at_startup: bool) -> Result<usize, RecordingError> {
        let mut total = 0;
        let rd = std::fs::read_dir(&self.spool).map_err(spool_err(&self.spool))?;
        for e in rd.filter_map(|e| e.ok()) {
            if !e.path().is_dir() {
                continue;
            }
            let live = e.path().join(".live");
            if live.exists() {
                if !at_startup {
                    continue;
                }
                let _ = std::fs::remove_file(&live);
            }
            total += self
                .upload_session(&e.file_name().to_string_lossy())
                .await?;
        }
        Ok(total)
    }

    /// Whether `session`'s `end.json` is in object storage.
    pub async fn has_end(&self, session: &str) -> Result<bool, RecordingError> {
        match self.store.head(&self.object(session, "end.json")).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn entries(&self, session: &str) -> Result<Vec<Entry>, RecordingError> {
        let base = self.prefix.clone().join(session);
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&base)).try_collect().await?;
        let mut out = Vec::new();
        for m in metas {
            let name = m.location.filename().unwrap_or_default().to_string();
            if name == MANIFEST {
                continue;
            }
            let bytes = self.store.get(&m.location).await?.bytes().await?;
            out.push(Entry {
                name,
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Builds `session`'s manifest from what object storage holds (hashing every object).
    pub async fn manifest(&self, session: &str) -> Result<Manifest, RecordingError> {
        let objects = self.entries(session).await?;
        let complete = objects.iter().any(|e| e.name == "end.json");
        Ok(Manifest {
            session: session.to_string(),
            objects,
            complete,
        })
    }

    /// The signed `manifest.json` document for `manifest` and its SHA-256. Deterministic.
    pub fn signed_document(manifest: &Manifest, keyring: &Keyring) -> (Vec<u8>, String) {
        let doc = serde_json::to_vec_pretty(&SignedManifest {
            signed: keyring.sign(manifest),
            manifest: manifest.clone(),
        })
        .unwrap_or_default();
        let hash = sha256_hex(&doc);
        (doc, hash)
    }

    /// Stores a signed manifest document for `session`.
    pub async fn put_manifest(&self, session: &str, doc: Vec<u8>) -> Result<(), RecordingError> {
        self.store
            .put(&self.object(session, MANIFEST), PutPayload::from(doc))
            .await?;
        Ok(())
    }

    /// Test and repair access: the raw object store and the object path of `name`.
    pub fn raw(&self, session: &str, name: &str) -> (Arc<dyn ObjectStore>, Path) {
        (self.store.clone(), self.object(session, name))
    }

    /// Verifies `session`: the manifest's signature, then every listed object's size and hash,
    /// and that no object was added or removed.
    pub async fn verify(
        &self,
        session: &str,
        keyring: &Keyring,
    ) -> Result<Verification, RecordingError> {
        let mut v = Verification {
            session: session.to_string(),
            ok: false,
            key_id: None,
            complete: false,
            objects: 0,
            bytes: 0,
            problems: Vec::new(),
        };
        let doc = match self.store.get(&self.object(session, MANIFEST)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                v.problems
                    .push("no manifest: the recording is not signed (yet)".into());
                return Ok(v);
            }
            Err(e) => return Err(e.into()),
        };
        let signed: SignedManifest = serde_json::from_slice(&doc)
            .map_err(|e| RecordingError::Malformed(session.into(), format!("manifest: {e}")))?;
        let manifest: Manifest = match keyring.verify(&signed.signed, 0) {
            Ok(m) => m,
            Err(e) => {
                v.problems.push(format!("manifest signature: {e}"));
                return Ok(v);
            }
        };
        v.key_id = serde_json::from_str::<serde_json::Value>(&signed.signed)
            .ok()
            .and_then(|e| e["kid"].as_str().map(str::to_string));
        if manifest.session != session {
            v.problems
                .push(format!("manifest is for session {}", manifest.session));
        }
        v.complete = manifest.complete;
        let actual = self.entries(session).await?;
        for want in &manifest.objects {
            match actual.iter().find(|a| a.name == want.name) {
                None => v.problems.push(format!("{}: missing", want.name)),
                Some(a) if a.sha256 != want.sha256 || a.size != want.size => {
                    v.problems.push(format!(
                        "{}: altered (sha256 {} size {}, signed {} size {})",
                        want.name, a.sha256, a.size, want.sha256, want.size
                    ))
                }
                Some(a) => {
                    v.objects += 1;
                    v.bytes += a.size;
                }
            }
        }
        for a in &actual {
            if !manifest.objects.iter().any(|w| w.name == a.name) {
                v.problems
                    .push(format!("{}: not in the signed manifest", a.name));
            }
        }
        // Every chunk's index must match its bytes too.
        for e in manifest
            .objects
            .iter()
            .filter(|e| e.name.ends_with(".json") && e.name.starts_with("chunk-"))
        {
            let Ok(r) = self.store.get(&self.object(session, &e.name)).await else {
                continue;
            };
            let idx: ChunkIndex = match serde_json::from_slice(&r.bytes().await?) {
                Ok(i) => i,
                Err(err) => {
                    v.problems.push(format!("{}: {err}", e.name));
                    continue;
                }
            };
            let bin = e.name.replace(".json", ".bin");
            let listed = manifest.objects.iter().find(|o| o.name == bin);
            if listed.is_none_or(|b| b.sha256 != idx.sha256 || b.size != idx.size as u64) {
                v.problems
                    .push(format!("{}: index does not match {bin}", e.name));
            }
        }
        v.ok = v.problems.is_empty();
        Ok(v)
    }
}

struct Pending {
    session: String,
    dir: PathBuf,
    seq: u64,
    bytes: Vec<u8>,
    frames: Vec<Frame>,
    opened: Instant,
}

impl Pending {
    /// Writes the current chunk to the spool (bytes, then index; each via a rename so a crash
    /// never leaves a torn file).
    fn seal(&mut self) -> Result<bool, RecordingError> {
        if self.bytes.is_empty() {
            return Ok(false);
        }
        self.seq += 1;
        let bytes = std::mem::take(&mut self.bytes);
        let index = ChunkIndex {
            session: self.session.clone(),
            seq: self.seq,
            size: bytes.len(),
            sha256: sha256_hex(&bytes),
            frames: std::mem::take(&mut self.frames),
        };
        let base = format!("chunk-{:06}", self.seq);
        write_atomic(&self.dir, &format!("{base}.bin"), &bytes)?;
        write_atomic(
            &self.dir,
            &format!("{base}.json"),
            &serde_json::to_vec(&index).unwrap_or_default(),
        )?;
        self.opened = Instant::now();
        Ok(true)
    }
}

fn write_atomic(dir: &FsPath, name: &str, bytes: &[u8]) -> Result<(), RecordingError> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(spool_err(&tmp))?;
    let dst = dir.join(name);
    std::fs::rename(&tmp, &dst).map_err(spool_err(&dst))
}

/// Records one session; shared by the relay's two directions.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Pending>>,
    kick: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `data` relayed in `dir`. Seals a chunk when it is full or old.
    pub fn record(&self, dir: Direction, data: &[u8]) {
        let sealed = {
            let mut p = self.lock();
            let offset = p.bytes.len();
            p.bytes.extend_from_slice(data);
            p.frames.push(Frame {
                at_ms: crate::store::now_ms(),
                dir,
                offset,
                size: data.len(),
            });
            if p.bytes.len() >= CHUNK_BYTES || p.opened.elapsed() >= CHUNK_AGE {
                p.seal()
            } else {
                Ok(false)
            }
        };
        match sealed {
            Ok(true) => {
                let _ = self.kick.send(());
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "recording chunk could not be spooled"),
        }
    }

    /// Seals the last chunk and writes `end.json`; the upload finishes in the background.
    pub fn finish(self, reason: &str, bytes_up: u64, bytes_down: u64) {
        let mut p = self.lock();
        if let Err(e) = p.seal() {
            tracing::error!(error = %e, "recording chunk could not be spooled");
        }
        let end = serde_json::json!({
            "session": p.session, "ended_ms": crate::store::now_ms(), "reason": reason,
            "chunks": p.seq, "bytes_up": bytes_up, "bytes_down": bytes_down,
        });
        if let Err(e) = write_atomic(
            &p.dir,
            "end.json",
            &serde_json::to_vec(&end).unwrap_or_default(),
        ) {
            tracing::error!(error = %e, "recording end could not be spooled");
        }
        let _ = std::fs::remove_file(p.dir.join(".live"));
        drop(p);
        let _ = self.kick.send(());
    }
}
