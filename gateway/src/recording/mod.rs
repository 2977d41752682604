//! Session recordings: a time-stamped event stream per session (metadata, then data chunks with
//! direction, size and SHA-256), buffered in a local spool and drained to object storage
//! (`file://` or `s3://` through `object_store`), sealed by a manifest of every object's hash
//! that the leased manifest job signs.
//!
//! What is recorded is what the relay carries. For SSH and TLS targets that is ciphertext: a
//! recording proves when, how much and in which direction data flowed, and that nothing was
//! altered since, but it cannot show the commands typed. Say so to anyone relying on it.
//!
//! Layout under the configured prefix, per session (flat: nothing below `<id>/` has a `/`):
//! `<id>/meta.json` (who, what, when), `<id>/chunk-000001.bin` (the bytes, both directions
//! interleaved), `<id>/chunk-000001.json` (its frames: time, direction, size, offset, the
//! chunk's hash, `prev` and `seal`), `<id>/end.json` (when and why it ended, how many chunks,
//! `prev` and `seal`), `<id>/manifest.json` (the signed list of every other object with size and
//! hash).
//!
//! Integrity, in two layers:
//! - From the first chunk, by the relaying replica: every chunk index and `end.json` carry
//!   `prev`, the SHA-256 of the previous link (chunk 1: of `meta.json`), and a seal, an HMAC under
//!   the internal key ([`chain`]). Altering, removing, reordering or inserting a chunk of a live
//!   recording breaks the chain or a seal.
//! - Once the session ended, by the manifest job only: `manifest.json` lists every object's hash
//!   and is signed with Ed25519 under the recording key ([`signer`]; tag
//!   `wardengate-recording-manifest-v1\0`, key id in the document, old public keys kept for
//!   rotation); Postgres keeps the manifest's SHA-256. The public keys are published
//!   (`GET /v1/recordings/public-keys`), so `wgctl recordings verify --offline DIR --public-key
//!   FILE` checks a downloaded recording with no server.
//!
//! Manifests MACed with the shared internal key before Ed25519 signing (`legacy-hmac`) still
//! verify on the server, but only as the exact document whose hash Postgres recorded when it was
//! signed (anyone with the shared key could MAC a new one); offline they cannot be checked.
//!
//! Verification ([`verify`]) fetches every object by its exact key, flags nested, unexpected,
//! duplicate and missing keys, checks chunks 1..N against `end.json`, the chain, the seals
//! (server only), the manifest against Postgres and its signature.
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

pub mod chain;
pub mod signer;
pub mod verify;

pub use signer::ManifestKeys;
pub use verify::{Recorded, Snapshot, Trust};

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
    /// SHA-256 of the previous link's stored bytes (`meta.json` for chunk 1).
    #[serde(default)]
    pub prev: String,
    /// The relaying replica's seal over everything above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<chain::Seal>,
}

impl ChunkIndex {
    /// The JSON that the seal covers: the index without its seal.
    pub fn canonical(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.seal = None;
        serde_json::to_vec(&c).unwrap_or_default()
    }
}

/// The end record (`end.json`): the last link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Session.
    pub session: String,
    /// Unix ms.
    pub ended_ms: i64,
    /// Why it ended.
    pub reason: String,
    /// Chunks written: the chain runs 1..=chunks.
    pub chunks: u64,
    /// Bytes client to target.
    pub bytes_up: u64,
    /// Bytes target to client.
    pub bytes_down: u64,
    /// SHA-256 of the last chunk index (or of `meta.json` when there was no chunk).
    #[serde(default)]
    pub prev: String,
    /// The relaying replica's seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<chain::Seal>,
}

impl End {
    /// The JSON that the seal covers.
    pub fn canonical(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.seal = None;
        serde_json::to_vec(&c).unwrap_or_default()
    }
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

/// Where recordings go, and the replica's spool.
#[derive(Clone)]
pub struct Recordings {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    spool: PathBuf,
    uploaded: prometheus::IntCounter,
    seals: Option<Keyring>,
    keys: ManifestKeys,
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
            seals: None,
            keys: ManifestKeys::default(),
        })
    }

    /// Seals every chain link this replica writes with `keyring` (the internal key), and checks
    /// seals when verifying.
    pub fn sealed_with(mut self, keyring: Keyring) -> Self {
        self.seals = Some(keyring);
        self
    }

    /// The Ed25519 manifest keys: the private one (signing-job replicas only) and the trusted
    /// public ones.
    pub fn with_manifest_keys(mut self, keys: ManifestKeys) -> Self {
        self.keys = keys;
        self
    }

    /// Trusted manifest keys.
    pub fn manifest_keys(&self) -> &ManifestKeys {
        &self.keys
    }

    /// Whether this replica holds the private key, so may run the signing job.
    pub fn can_sign(&self) -> bool {
        self.keys.can_sign()
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
        let prev = chain::link_hash(&doc);
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
                prev,
                seals: self.seals.clone(),
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

    fn base(&self, session: &str) -> Path {
        self.prefix.clone().join(session)
    }

    /// Every key below `session`'s prefix, relative to it (nested keys included, `/`-joined).
    pub async fn list_keys(&self, session: &str) -> Result<Vec<String>, RecordingError> {
        let base = self.base(session);
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&base)).try_collect().await?;
        let mut keys: Vec<String> = metas
            .iter()
            .filter_map(|m| {
                m.location
                    .prefix_match(&base)
                    .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
            })
            .map(|parts| parts.join("/"))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The object `key` (relative, `/`-separated) of `session`, fetched by that exact key;
    /// `None` when it does not exist or the key is not a plain relative path.
    pub async fn get_object(
        &self,
        session: &str,
        key: &str,
    ) -> Result<Option<bytes::Bytes>, RecordingError> {
        if key.is_empty()
            || key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Ok(None);
        }
        let mut path = self.base(session);
        for part in key.split('/') {
            path = path.join(part);
        }
        match self.store.get(&path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The recording's objects as verification reads them: the listing, then every flat,
    /// well-named object by its exact key (and the ones the chain and manifest name).
    pub async fn snapshot(&self, session: &str) -> Result<Snapshot, RecordingError> {
        let listing = self.list_keys(session).await?;
        let mut snap = Snapshot {
            objects: Default::default(),
            listing,
        };
        for name in Snapshot::first_fetch(&snap.listing) {
            if let Some(b) = self.get_object(session, &name).await? {
                snap.objects
                    .insert(name.clone(), verify::Obj::new(&name, b));
            }
        }
        for name in snap.second_fetch() {
            if let Some(b) = self.get_object(session, &name).await? {
                snap.objects
                    .insert(name.clone(), verify::Obj::new(&name, b));
            }
        }
        Ok(snap)
    }

    /// Builds `session`'s manifest from what object storage holds: every flat object of the
    /// recording layout (never a nested or foreign key), fetched by its exact key and hashed.
    pub async fn manifest(&self, session: &str) -> Result<Manifest, RecordingError> {
        let mut objects = Vec::new();
        for name in self.list_keys(session).await? {
            if !verify::well_named(&name) || name == MANIFEST {
                continue;
            }
            if let Some(b) = self.get_object(session, &name).await? {
                objects.push(Entry {
                    size: b.len() as u64,
                    sha256: sha256_hex(&b),
                    name,
                });
            }
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        let complete = objects.iter().any(|e| e.name == verify::END);
        Ok(Manifest {
            session: session.to_string(),
            objects,
            complete,
        })
    }

    /// The Ed25519-signed `manifest.json` document for `manifest` and its SHA-256, or `None`
    /// without a private key. Deterministic (Ed25519 signatures are).
    pub fn signed_document(manifest: &Manifest, keys: &ManifestKeys) -> Option<(Vec<u8>, String)> {
        let body = serde_json::to_string(manifest).unwrap_or_default();
        let (kid, sig) = keys.sign(body.as_bytes())?;
        let doc = serde_json::to_vec_pretty(&verify::SignedManifest {
            format: signer::FORMAT.into(),
            alg: signer::ALGORITHM.into(),
            kid,
            body,
            sig,
            manifest: manifest.clone(),
        })
        .unwrap_or_default();
        let hash = sha256_hex(&doc);
        Some((doc, hash))
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

    /// Verifies `session` on the server: the chain and its seals, the manifest against what
    /// Postgres `recorded`, its signature (Ed25519, or a legacy HMAC manifest Postgres
    /// recorded), and every object.
    pub async fn verify(
        &self,
        session: &str,
        recorded: &Recorded,
    ) -> Result<Verification, RecordingError> {
        let snap = self.snapshot(session).await?;
        let trust = Trust {
            seals: self.seals.as_ref(),
            keys: &self.keys,
            legacy: self.seals.as_ref(),
        };
        Ok(verify::check(session, &snap, trust, recorded))
    }
}

/// Reads a downloaded recording directory for offline verification: the listing is every file
/// below `dir` (relative, `/`-joined), and objects are read by their exact names.
pub fn snapshot_dir(dir: &FsPath) -> Result<Snapshot, RecordingError> {
    fn walk(root: &FsPath, dir: &FsPath, out: &mut Vec<String>) -> Result<(), RecordingError> {
        for e in std::fs::read_dir(dir).map_err(spool_err(dir))? {
            let e = e.map_err(spool_err(dir))?;
            let path = e.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if let Ok(rel) = path.strip_prefix(root) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut listing = Vec::new();
    walk(dir, dir, &mut listing)?;
    listing.sort();
    let mut snap = Snapshot {
        listing,
        objects: Default::default(),
    };
    let read = |snap: &mut Snapshot, name: String| -> Result<(), RecordingError> {
        let path = dir.join(&name);
        match std::fs::read(&path) {
            Ok(b) => {
                snap.objects
                    .insert(name.clone(), verify::Obj::new(&name, bytes::Bytes::from(b)));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(spool_err(&path)(e)),
        }
    };
    for name in Snapshot::first_fetch(&snap.listing) {
        read(&mut snap, name)?;
    }
    for name in snap.second_fetch() {
        read(&mut snap, name)?;
    }
    Ok(snap)
}

/// Verifies a downloaded recording directory with no server, trusting only `keys`: the chain
/// (not its seals: they need the internal key), the manifest's Ed25519 signature and every
/// object. The session id is taken from `meta.json` (else the directory's name).
pub fn verify_offline(dir: &FsPath, keys: &ManifestKeys) -> Result<Verification, RecordingError> {
    let snap = snapshot_dir(dir)?;
    let session = snap
        .objects
        .get(verify::META)
        .and_then(|o| o.doc.as_ref())
        .and_then(|d| serde_json::from_slice::<Meta>(d).ok())
        .map(|m| m.session)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let trust = Trust {
        seals: None,
        keys,
        legacy: None,
    };
    Ok(verify::check(&session, &snap, trust, &Recorded::Unknown))
}

struct Pending {
    session: String,
    dir: PathBuf,
    seq: u64,
    bytes: Vec<u8>,
    frames: Vec<Frame>,
    opened: Instant,
    /// Hash of the last link written.
    prev: String,
    /// Internal key that seals links, when configured.
    seals: Option<Keyring>,
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
        let mut index = ChunkIndex {
            session: self.session.clone(),
            seq: self.seq,
            size: bytes.len(),
            sha256: sha256_hex(&bytes),
            frames: std::mem::take(&mut self.frames),
            prev: self.prev.clone(),
            seal: None,
        };
        let name = verify::chunk_name(self.seq, "json");
        index.seal = self
            .seals
            .as_ref()
            .map(|k| chain::seal(k, &self.session, &name, &index.canonical()));
        let doc = serde_json::to_vec(&index).unwrap_or_default();
        write_atomic(&self.dir, &verify::chunk_name(self.seq, "bin"), &bytes)?;
        write_atomic(&self.dir, &name, &doc)?;
        self.prev = chain::link_hash(&doc);
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
        let mut end = End {
            session: p.session.clone(),
            ended_ms: crate::store::now_ms(),
            reason: reason.to_string(),
            chunks: p.seq,
            bytes_up,
            bytes_down,
            prev: p.prev.clone(),
            seal: None,
        };
        end.seal = p
            .seals
            .as_ref()
            .map(|k| chain::seal(k, &p.session, verify::END, &end.canonical()));
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
