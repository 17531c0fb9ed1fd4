//! Loading a job component: validate everything before anyone may use it.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;

use super::Runtime;
use super::bindings::{JobPre, types as wit};
use super::cache::{Entry, Meta};
use super::exec::new_store;
use super::host::HostState;
use crate::model::{Capability, DbAccess, JobInfo, JobKind};

/// Largest component accepted, checked before compiling.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

/// How long `describe` may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a file was not accepted as a job component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Larger than [`MAX_COMPONENT_BYTES`].
    #[error("file is {size} bytes, larger than the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a WebAssembly component at all.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// wasmtime could not compile it.
    #[error("component does not compile: {0}")]
    Compile(String),
    /// Its imports are not what the host provides (another world, extra imports).
    #[error("component does not target the sundial:job@0.1.0 world: {0}")]
    World(String),
    /// Its exports have the wrong names or types.
    #[error("component exports do not match the sundial:job@0.1.0 world: {0}")]
    Exports(String),
    /// `describe` failed or returned something unusable.
    #[error("describe failed: {0}")]
    Describe(String),
    /// The host failed while loading.
    #[error("host failure while loading: {0}")]
    Host(String),
}

/// What the host knows a component's bytes by internally: their BLAKE3 hash.
/// It is several times faster to compute than the sha256 [`digest`] users see,
/// so a reload finds the version it already holds, or its compiled artifact,
/// without computing the sha256 (the artifact cache keeps it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentKey([u8; 32]);

impl ContentKey {
    /// The key of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentKey {
        ContentKey(*blake3::hash(bytes).as_bytes())
    }

    /// As lowercase hex (the cache's file names).
    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = self.to_hex();
        write!(f, "ContentKey({})", hex.get(..12).unwrap_or(&hex))
    }
}

/// A validated, compiled job component, ready to instantiate.
pub struct ComponentVersion {
    /// Hex sha256 of the file.
    pub digest: String,
    /// The [`ContentKey`] of the file.
    pub key: ContentKey,
    /// Size of the file in bytes.
    pub size: usize,
    /// What `describe` returned.
    pub info: JobInfo,
    pub(crate) pre: JobPre<super::host::HostState>,
}

impl std::fmt::Debug for ComponentVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentVersion")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// sha256 of `bytes` as lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Refuses a file over [`MAX_COMPONENT_BYTES`] before anything reads it further.
pub(crate) fn check_size(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(LoadError::TooLarge { size: bytes.len(), max: MAX_COMPONENT_BYTES });
    }
    Ok(())
}

/// Validates and compiles `bytes`, whose [`ContentKey`] is `key`.
pub(crate) fn load(
    rt: &Runtime,
    bytes: &[u8],
    key: ContentKey,
    meta: Option<Meta>,
) -> Result<ComponentVersion, LoadError> {
    check_size(bytes)?;
    check_header(bytes)?;
    let engine = &rt.inner.engine;
    let (component, described) = match rt.inner.cache.as_ref().and_then(|c| c.get(engine, key, meta)) {
        Some((c, entry)) => (c, Some(entry)),
        None => (Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?, None),
    };
    let pre = rt.inner.linker.instantiate_pre(&component).map_err(|e| LoadError::World(format!("{e:#}")))?;
    let pre = JobPre::new(pre).map_err(|e| LoadError::Exports(format!("{e:#}")))?;
    let (digest, info) = match described {
        // Cached only after `describe` succeeded for these very bytes.
        Some(entry) => (entry.digest, entry.info),
        None => {
            let entry = Entry { digest: digest(bytes), info: describe(rt, &pre)? };
            if let Some(cache) = &rt.inner.cache {
                cache.put(key, &component, &entry);
            }
            (entry.digest, entry.info)
        }
    };
    Ok(ComponentVersion { digest, key, size: bytes.len(), info, pre })
}

/// Instantiates the component and calls its `describe`.
fn describe(rt: &Runtime, pre: &JobPre<HostState>) -> Result<JobInfo, LoadError> {
    let mut store: Store<_> = new_store(rt, "<describe>", 0, DESCRIBE_TIMEOUT, 64 << 20, None, Default::default());
    let job = pre.instantiate(&mut store).map_err(|e| LoadError::Describe(format!("{e:#}")))?;
    let started = Instant::now();
    let info = job.call_describe(&mut store).map_err(|e| {
        if started.elapsed() >= DESCRIBE_TIMEOUT {
            LoadError::Describe(format!("did not return within {}s", DESCRIBE_TIMEOUT.as_secs()))
        } else {
            LoadError::Describe(format!("{e:#}"))
        }
    })?;
    convert_info(info)
}

/// Tells a core module or random bytes apart from a component before compiling,
/// so the error says what the file is.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::NotAComponent("the file is empty".into()));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotAComponent("no WebAssembly header (\\0asm)".into()));
    }
    // Version (2 bytes) and layer (2 bytes): core modules are layer 0,
    // components layer 1.
    match (bytes[6], bytes[7]) {
        (1, 0) => Ok(()),
        (0, 0) => Err(LoadError::NotAComponent(
            "this is a core WebAssembly module; build the job for wasm32-wasip2 to get a component".into(),
        )),
        _ => Err(LoadError::NotAComponent("unknown WebAssembly layer".into())),
    }
}

fn convert_info(info: wit::JobInfo) -> Result<JobInfo, LoadError> {
    let name = info.name.trim().to_string();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if !valid {
        return Err(LoadError::Describe(format!(
            "job name {name:?} is invalid: use 1-64 lowercase letters, digits, '-' or '_'"
        )));
    }
    let zone = if info.default_timezone.trim().is_empty() { "UTC".to_string() } else { info.default_timezone };
    Ok(JobInfo {
        name,
        description: info.description,
        kind: match info.kind {
            wit::JobKind::Single => JobKind::Single,
            wit::JobKind::Items => JobKind::Items,
        },
        default_schedule: info.default_schedule,
        default_timezone: zone,
        capabilities: info
            .capabilities
            .into_iter()
            .map(|c| match c {
                wit::Capability::Database(wit::DbAccess::ReadOnly) => Capability::Database(DbAccess::ReadOnly),
                wit::Capability::Database(wit::DbAccess::ReadWrite) => Capability::Database(DbAccess::ReadWrite),
                wit::Capability::Http(h) => Capability::Http(h),
                wit::Capability::KeyValue => Capability::KeyValue,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(check_header(b"").unwrap_err().to_string().contains("empty"));
        assert!(check_header(b"garbage!").unwrap_err().to_string().contains("no WebAssembly header"));
        let core = b"\0asm\x01\0\0\0";
        assert!(check_header(core).unwrap_err().to_string().contains("core WebAssembly module"));
        let component = b"\0asm\x0d\0\x01\0";
        assert!(check_header(component).is_ok());
    }
}
