//! On-disk cache of compiled components, so a restart (or a reload of bytes
//! seen before) does not compile again.
//!
//! An entry is keyed by the component's digest and the engine's
//! compatibility hash (wasmtime version, target, settings). Only components
//! that passed validation are cached, with what their `describe` returned,
//! so loading an entry skips compiling, instantiating and calling
//! `describe` (the same digest is the same bytes).
//!
//! Loading compiled code runs it without validation, so the host only loads
//! entries it wrote itself: each file carries a keyed BLAKE3 MAC of its
//! contents under a secret key kept in the cache directory (mode 0600),
//! checked before the bytes reach wasmtime. A missing, foreign, corrupt or
//! stale entry is compiled again and rewritten; the cache never makes a load
//! fail.
//!
//! File layout: MAC (32 bytes), length of the `describe` record (4 bytes,
//! little-endian), the record (JSON), the serialized component.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::model::JobInfo;

const MAC_LEN: usize = 32;
/// The entry format, part of each file's name: entries of another format
/// are not read.
const FORMAT: &str = "v2";

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
        // A stable name for this engine's compatibility (only needs to be
        // stable for the same binary and settings).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ArtifactCache { dir: dir.to_path_buf(), key, compat: format!("{:016x}", h.finish()) })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.{FORMAT}.cwasm", self.compat))
    }

    /// The compiled component for `digest` and what its `describe`
    /// returned, if this host cached them.
    pub(crate) fn get(&self, engine: &Engine, digest: &str) -> Option<(Component, JobInfo)> {
        let file = std::fs::read(self.path(digest)).ok()?;
        let (mac, rest) = file.split_at_checked(MAC_LEN)?;
        if !bool::from(self.mac(digest, rest).ct_eq(mac)) {
            tracing::warn!(digest, "ignoring a cached artifact this host did not write");
            return None;
        }
        let unusable = |error: &dyn std::fmt::Display| {
            tracing::warn!(digest, error = %error, "ignoring an unusable cached artifact");
        };
        let record = rest
            .split_first_chunk::<4>()
            .and_then(|(len, rest)| rest.split_at_checked(u32::from_le_bytes(*len) as usize));
        let Some((info, body)) = record else {
            unusable(&"the describe record is cut short");
            return None;
        };
        let info: JobInfo = match serde_json::from_slice(info) {
            Ok(info) => info,
            Err(e) => {
                unusable(&e);
                return None;
            }
        };
        // SAFETY: the bytes are exactly what `Component::serialize` produced
        // in this host (the MAC under the host's private key proves it) for
        // this engine configuration (the compatibility hash is in the name,
        // and wasmtime checks it again).
        match unsafe { Component::deserialize(engine, body) } {
            Ok(c) => Some((c, info)),
            Err(e) => {
                unusable(&e);
                None
            }
        }
    }

    /// Stores a validated component and what its `describe` returned (best
    /// effort: a failure is logged).
    pub(crate) fn put(&self, digest: &str, component: &Component, info: &JobInfo) {
        let result = (|| {
            let body = component.serialize().map_err(std::io::Error::other)?;
            let info = serde_json::to_vec(info)?;
            let len = u32::try_from(info.len()).map_err(std::io::Error::other)?;
            // The MAC goes in front, over everything after it.
            let mut file = Vec::with_capacity(MAC_LEN + 4 + info.len() + body.len());
            file.extend_from_slice(&[0; MAC_LEN]);
            file.extend_from_slice(&len.to_le_bytes());
            file.extend_from_slice(&info);
            file.extend_from_slice(&body);
            let mac = self.mac(digest, &file[MAC_LEN..]);
            file[..MAC_LEN].copy_from_slice(&mac);
            write_private(&self.path(digest), &file)
        })();
        if let Err(e) = result {
            tracing::warn!(digest, error = %e, "cannot cache a compiled component");
        }
    }

    /// Keyed BLAKE3 of the digest and the entry.
    fn mac(&self, digest: &str, rest: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&(digest.len() as u64).to_le_bytes());
        h.update(digest.as_bytes());
        h.update(rest);
        *h.finalize().as_bytes()
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
