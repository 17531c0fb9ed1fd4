//! On-disk cache of compiled components, so a restart (or a reload of bytes
//! seen before) does not compile again.
//!
//! An entry is keyed by the component's [`ContentKey`] (a BLAKE3 of its
//! bytes) and the engine's compatibility hash (wasmtime version, target,
//! settings). Only components that passed validation are cached, with their
//! sha256 digest and what their `describe` returned, so loading an entry
//! skips compiling, instantiating, calling `describe` and computing the
//! sha256 (the same key is the same bytes).
//!
//! Loading compiled code runs it without validation, so the host only loads
//! entries it wrote itself: each entry carries a keyed BLAKE3 MAC of its
//! contents under a secret key kept in the cache directory (mode 0600),
//! checked before the code reaches wasmtime. A missing, foreign, corrupt or
//! stale entry is compiled again and rewritten; the cache never makes a load
//! fail.
//!
//! An entry is two files, so that wasmtime can map the code straight from
//! the page cache instead of copying it into fresh memory (less than half
//! the time of a cached load):
//! - `<key>-<compat>.v4.cwasm`: the serialized component, exactly;
//! - `<key>-<compat>.v4.meta`: the MAC (32 bytes) over the key, the record
//!   and the code, then the record (JSON: the digest and the `describe`
//!   record).
//!
//! The code file is opened once: the MAC is checked on what that open file
//! holds (mapped, not copied) and wasmtime maps the same open file (through
//! `/proc/self/fd`), so a file renamed over the entry in between is not what
//! gets mapped.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::component::ContentKey;
use crate::model::JobInfo;

const MAC_LEN: usize = 32;
/// The entry format, part of each file's name: entries of another format
/// are not read.
const FORMAT: &str = "v4";
/// File name endings of earlier formats, removed when the cache opens.
const EARLIER_FORMATS: [&str; 3] = [".v2.cwasm", ".v3.cwasm", ".v3.meta"];

/// What an entry records beside the code.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Entry {
    /// The component's sha256 digest.
    pub(crate) digest: String,
    /// What its `describe` returned.
    pub(crate) info: JobInfo,
}

/// An entry's metadata file (MAC and record) as read from the cache, not
/// yet checked.
pub(crate) struct Meta(Vec<u8>);

/// A directory of compiled components.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
    compat: String,
}

impl ArtifactCache {
    /// Opens (creating) the cache in `dir`, with its key.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("key");
        let stored = std::fs::read(&key_path).ok().and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok());
        let key = match stored {
            Some(k) => k,
            None => {
                let mut k = [0u8; 32];
                getrandom::getrandom(&mut k).map_err(|e| std::io::Error::other(e.to_string()))?;
                write_private(&key_path, &k)?;
                k
            }
        };
        // Entries of earlier formats are never read again.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if EARLIER_FORMATS.iter().any(|f| name.ends_with(f)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // A stable name for this engine's compatibility (only needs to be
        // stable for the same binary and settings).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ArtifactCache { dir: dir.to_path_buf(), key, compat: format!("{:016x}", h.finish()) })
    }

    /// The entry's code file and its metadata file.
    fn paths(&self, key: ContentKey) -> (PathBuf, PathBuf) {
        let stem = format!("{}-{}.{FORMAT}", key.to_hex(), self.compat);
        (self.dir.join(format!("{stem}.cwasm")), self.dir.join(format!("{stem}.meta")))
    }

    /// The compiled component for `key`, its digest and what its
    /// `describe` returned, if this host cached them. `meta` is the entry's
    /// metadata file if [`ArtifactCache::peek`] read it already (it is
    /// checked here all the same: the MAC covers it).
    pub(crate) fn get(&self, engine: &Engine, key: ContentKey, meta: Option<Meta>) -> Option<(Component, Entry)> {
        let (code_path, meta_path) = self.paths(key);
        let meta = match meta {
            Some(Meta(bytes)) => bytes,
            None => std::fs::read(meta_path).ok()?,
        };
        let (mac, record) = meta.split_at_checked(MAC_LEN)?;
        let file = std::fs::File::open(&code_path).ok()?;
        // The code is hashed where the page cache holds it (mapped, not
        // copied); wasmtime then maps the same file again for itself.
        let mut hasher = self.hasher(key, record);
        hash_file(&file, &mut hasher).ok()?;
        if !bool::from(hasher.finalize().as_bytes().ct_eq(mac)) {
            tracing::warn!(key = ?key, "ignoring a cached artifact this host did not write");
            return None;
        }
        let unusable = |error: &dyn std::fmt::Display| {
            tracing::warn!(key = ?key, error = %error, "ignoring an unusable cached artifact");
        };
        let entry: Entry = match serde_json::from_slice(record) {
            Ok(entry) => entry,
            Err(e) => {
                unusable(&e);
                return None;
            }
        };
        // SAFETY: the bytes are exactly what `Component::serialize` produced
        // in this host (the MAC under the host's private key proves it) for
        // this engine configuration (the compatibility hash is in the name,
        // and wasmtime checks it again). The mapped file is the open file
        // whose contents were checked; only this host's user can write it.
        let mapped = unsafe { Component::deserialize_file(engine, open_file_path(&file, &code_path)) };
        let loaded = mapped.or_else(|e| {
            // Mapping is an optimisation: the checked bytes load as well.
            tracing::debug!(key = ?key, error = %e, "cannot map a cached artifact; reading it");
            let code = read_at_start(&file)?;
            if !bool::from(self.mac(key, record, &code).ct_eq(mac)) {
                return Err(wasmtime::format_err!("the code changed while it was read"));
            }
            // SAFETY: as above, these are the checked bytes themselves.
            unsafe { Component::deserialize(engine, &code) }
        });
        match loaded {
            Ok(c) => Some((c, entry)),
            Err(e) => {
                unusable(&e);
                None
            }
        }
    }

    /// What the entry for `key` says of the component (its digest and
    /// `describe` record), unchecked: for what may only stand once a load
    /// has shown it true, never for loading (that is [`ArtifactCache::get`],
    /// which takes the metadata file returned with it instead of reading it
    /// again).
    pub(crate) fn peek(&self, key: ContentKey) -> Option<(Entry, Meta)> {
        let meta = std::fs::read(self.paths(key).1).ok()?;
        let entry = serde_json::from_slice(meta.get(MAC_LEN..)?).ok()?;
        Some((entry, Meta(meta)))
    }

    /// Stores a validated component with its digest and what its `describe`
    /// returned (best effort: a failure is logged).
    pub(crate) fn put(&self, key: ContentKey, component: &Component, entry: &Entry) {
        let (code_path, meta_path) = self.paths(key);
        let result = (|| {
            let code = component.serialize().map_err(std::io::Error::other)?;
            let record = serde_json::to_vec(entry)?;
            let mut meta = Vec::with_capacity(MAC_LEN + record.len());
            meta.extend_from_slice(&self.mac(key, &record, &code));
            meta.extend_from_slice(&record);
            // Code first: metadata naming code that is not there yet would
            // only be ignored, but this way a complete entry is never missing it.
            write_private(&code_path, &code)?;
            write_private(&meta_path, &meta)
        })();
        if let Err(e) = result {
            tracing::warn!(digest = %entry.digest, error = %e, "cannot cache a compiled component");
        }
    }

    /// Keyed BLAKE3 of the content key, the record and the code (the
    /// record prefixed with its length, so no two entries hash the same
    /// bytes).
    fn mac(&self, key: ContentKey, record: &[u8], code: &[u8]) -> [u8; 32] {
        let mut h = self.hasher(key, record);
        h.update(code);
        *h.finalize().as_bytes()
    }

    /// The MAC's hasher, fed all but the code.
    fn hasher(&self, key: ContentKey, record: &[u8]) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(key.as_bytes());
        h.update(&(record.len() as u64).to_le_bytes());
        h.update(record);
        h
    }
}

/// Feeds `file` to `hasher`, from the page cache where it can be mapped,
/// else read through a small buffer.
fn hash_file(file: &std::fs::File, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    // SAFETY: cache files are only ever replaced by renaming a complete new
    // file over them, never written or truncated in place, and only this
    // host's user can write the directory; a mapping that did see other
    // bytes would only fail the MAC check.
    match unsafe { memmap2::Mmap::map(file) } {
        Ok(map) => {
            hasher.update(&map);
            Ok(())
        }
        Err(_) => read_into(file, hasher),
    }
}

/// Feeds what is left of `file` to `hasher`, 64 KiB at a time.
fn read_into(mut file: &std::fs::File, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    use std::io::Read as _;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The whole of `file`, from its start.
fn read_at_start(mut file: &std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _};
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut code = Vec::new();
    file.read_to_end(&mut code)?;
    Ok(code)
}

/// A path that opens `file` itself, not whatever is at `path` by then
/// (Linux: `/proc/self/fd`); elsewhere `path`.
fn open_file_path(file: &std::fs::File, path: &Path) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let _ = path;
        PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        path.to_path_buf()
    }
}

/// Writes a file readable by its owner only, through a temporary name.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
