//! On-disk cache of compiled components, so a restart (or a reload of bytes
//! seen before) does not compile again.
//!
//! An entry is keyed by the component's digest and the engine's
//! compatibility hash (wasmtime version, target, settings). Loading compiled
//! code runs it without validation, so the host only loads entries it wrote
//! itself: each file carries an HMAC-SHA256 of its contents under a secret
//! key kept in the cache directory (mode 0600), checked before the bytes
//! reach wasmtime. A missing, foreign, corrupt or stale entry is compiled
//! again and rewritten; the cache never makes a load fail.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wasmtime::Engine;
use wasmtime::component::Component;

const MAC_LEN: usize = 32;
const BLOCK: usize = 64;

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
        self.dir.join(format!("{digest}-{}.cwasm", self.compat))
    }

    /// The compiled component for `digest`, if this host cached it.
    pub(crate) fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let file = std::fs::read(self.path(digest)).ok()?;
        if file.len() < MAC_LEN {
            return None;
        }
        let (mac, body) = file.split_at(MAC_LEN);
        if !bool::from(self.mac(digest, body).ct_eq(mac)) {
            tracing::warn!(digest, "ignoring a cached artifact this host did not write");
            return None;
        }
        // SAFETY: the bytes are exactly what `Component::serialize` produced
        // in this host (the MAC under the host's private key proves it) for
        // this engine configuration (the compatibility hash is in the name,
        // and wasmtime checks it again).
        match unsafe { Component::deserialize(engine, body) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(digest, error = %e, "ignoring an unusable cached artifact");
                None
            }
        }
    }

    /// Stores a compiled component (best effort: a failure is logged).
    pub(crate) fn put(&self, digest: &str, component: &Component) {
        let result = component.serialize().map_err(std::io::Error::other).and_then(|body| {
            let mut file = self.mac(digest, &body).to_vec();
            file.extend_from_slice(&body);
            write_private(&self.path(digest), &file)
        });
        if let Err(e) = result {
            tracing::warn!(digest, error = %e, "cannot cache a compiled component");
        }
    }

    /// HMAC-SHA256 (RFC 2104) of the digest and the artifact.
    fn mac(&self, digest: &str, body: &[u8]) -> [u8; 32] {
        let mut k = [0u8; BLOCK];
        k[..32].copy_from_slice(&self.key);
        let pad = |byte: u8| k.map(|b| b ^ byte);
        let inner = Sha256::new().chain_update(pad(0x36)).chain_update(digest.as_bytes()).chain_update(body).finalize();
        Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
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
