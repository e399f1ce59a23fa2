//! Causal contexts as clients hold them: a key's version vector, sealed under the cluster
//! key so that only contexts the cluster issued are accepted back.
//!
//! A context is the client's claim about what it has seen, and a write replaces exactly
//! the versions its context covers. A context that claims versions nobody issued is
//! therefore a weapon: `{n1: 2^64-1}` once made the lead's next counter wrap (every later
//! write to the key was acknowledged and dropped), and a context that claims a counter
//! beyond what the replicas hold makes a concurrent write issued elsewhere look
//! overwritten when the two meet, losing it.
//!
//! Two ways out were possible: check every context against what the replicas hold, or
//! authenticate contexts. Checking needs the lead to know every replica's copy at write
//! time (an honest context can be ahead of a stale lead, so the lead's own copy is not
//! enough), which costs a round of reads on every write. A MAC costs one HMAC-SHA256 per
//! context issued or presented and no network at all, and it also stops a context read
//! from one key being replayed against another (the MAC covers the keyspace and key). So
//! contexts are sealed: `base64url(version || msgpack(vv) || HMAC-SHA256(key, keyspace,
//! key, version, vv))`. The cluster key is a secret file (`cluster.key`, 32 random bytes)
//! that `quorumkv certs` writes beside the CA and every node loads; contexts sealed under
//! another key — another cluster's, or a key since replaced — are refused with a clear
//! error that says to read the key again. See docs/SECURITY.md.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::hmac;

use crate::causality::VersionVector;

/// Errors opening a context or loading the cluster key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// The context string is not base64url.
    #[error("causal context is not valid base64url: {0}")]
    Encoding(String),
    /// The context is larger than any context this cluster issues.
    #[error("causal context is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Length of the encoded context.
        len: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// The context was not issued by this cluster for this key (forged, altered, from
    /// another key or sealed under a cluster key since replaced).
    #[error("causal context was not issued by this cluster for key {key} (forged, altered, copied from another key, or the cluster key changed): read the key again and use the context that read returns")]
    NotIssued {
        /// The key the context was presented with.
        key: String,
    },
    /// The authenticated bytes are not a version vector of this format.
    #[error("causal context is not a valid version vector: {0}")]
    Decode(String),
    /// The cluster key file could not be read, written or parsed.
    #[error("cluster key {path}: {message}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Largest encoded context accepted. A version vector holds one entry per node
/// incarnation that led a write to the key (about 25 bytes each), so 4 KiB leaves room for
/// well over a hundred; anything larger was not issued by this cluster.
pub const MAX_CONTEXT_LEN: usize = 4096;
/// Most entries a context may hold once opened (a second guard on the decoded form).
pub const MAX_CONTEXT_ENTRIES: usize = 256;
/// Format byte inside the sealed bytes, so the layout can change.
const CONTEXT_FORMAT: u8 = 1;
/// Length of the cluster key in bytes.
pub const CLUSTER_KEY_LEN: usize = 32;
/// The cluster key's file name, beside the CA's files.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

/// The cluster key that seals and opens contexts.
#[derive(Clone)]
pub struct ContextKey {
    key: hmac::Key,
}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

impl ContextKey {
    /// A key from raw secret bytes.
    pub fn from_bytes(secret: &[u8]) -> Self {
        ContextKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A fresh random key (in-process clusters and tests).
    pub fn random() -> Self {
        Self::from_bytes(&random_secret())
    }

    /// Load the key from `path` (hex text, as [`ensure_key_file`] writes it).
    pub fn load(path: &Path) -> Result<Self, ContextError> {
        let err = |message: String| ContextError::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read it ({e}); `quorumkv certs --dir DIR` creates it beside the CA, and every node of a cluster needs the same file")))?;
        let secret = hex_decode(text.trim()).ok_or_else(|| {
            err(format!(
                "expected {} hex digits (as `quorumkv certs` writes it)",
                CLUSTER_KEY_LEN * 2
            ))
        })?;
        if secret.len() != CLUSTER_KEY_LEN {
            return Err(err(format!(
                "expected {CLUSTER_KEY_LEN} bytes, found {}",
                secret.len()
            )));
        }
        Ok(Self::from_bytes(&secret))
    }

    /// The context a client gets for `vv`, a version vector of `key` (its encoded form,
    /// [`crate::key::Key::encode`] without the keyspace) in `keyspace`. The empty vector is
    /// the empty string ("seen nothing"), which needs no seal.
    pub fn seal(&self, keyspace: &str, key: &[u8], vv: &VersionVector) -> String {
        if vv.0.is_empty() {
            return String::new();
        }
        let mut body = vec![CONTEXT_FORMAT];
        // Encoding a BTreeMap<String,u64> into a Vec cannot fail.
        let _ = rmp_serde::encode::write(&mut body, &vv.0);
        let tag = hmac::sign(&self.key, &signed_message(keyspace, key, &body));
        body.extend_from_slice(tag.as_ref());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }

    /// Open a context presented with `key` of `keyspace`: only what [`ContextKey::seal`]
    /// produced for that same key under this cluster key is accepted. The empty string is
    /// the empty context.
    pub fn open(
        &self,
        keyspace: &str,
        key: &[u8],
        display_key: &dyn std::fmt::Display,
        text: &str,
    ) -> Result<VersionVector, ContextError> {
        let text = text.trim();
        if text.len() > MAX_CONTEXT_LEN {
            return Err(ContextError::TooLarge {
                len: text.len(),
                max: MAX_CONTEXT_LEN,
            });
        }
        if text.is_empty() {
            return Ok(VersionVector::new());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| ContextError::Encoding(e.to_string()))?;
        let tag_len = hmac::HMAC_SHA256.digest_algorithm().output_len();
        let not_issued = || ContextError::NotIssued {
            key: display_key.to_string(),
        };
        if bytes.len() <= tag_len {
            return Err(not_issued());
        }
        let (body, tag) = bytes.split_at(bytes.len() - tag_len);
        // Verify before decoding anything: unauthenticated bytes never reach the decoder.
        hmac::verify(&self.key, &signed_message(keyspace, key, body), tag)
            .map_err(|_| not_issued())?;
        decode_body(body)
    }
}

/// The bytes the tag covers: keyspace and key, length-prefixed so ("ab","c") and
/// ("a","bc") cannot share a tag, then the body.
fn signed_message(keyspace: &str, key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + keyspace.len() + key.len() + body.len());
    m.extend_from_slice(&(keyspace.len() as u64).to_be_bytes());
    m.extend_from_slice(keyspace.as_bytes());
    m.extend_from_slice(&(key.len() as u64).to_be_bytes());
    m.extend_from_slice(key);
    m.extend_from_slice(body);
    m
}

/// Decode the authenticated body: format byte, then the vector.
pub fn decode_body(body: &[u8]) -> Result<VersionVector, ContextError> {
    match body.split_first() {
        Some((&CONTEXT_FORMAT, rest)) => {
            let map: std::collections::BTreeMap<String, u64> =
                rmp_serde::from_slice(rest).map_err(|e| ContextError::Decode(e.to_string()))?;
            if map.len() > MAX_CONTEXT_ENTRIES {
                return Err(ContextError::Decode(format!(
                    "{} entries; at most {MAX_CONTEXT_ENTRIES}",
                    map.len()
                )));
            }
            Ok(VersionVector(map))
        }
        Some((v, _)) => Err(ContextError::Decode(format!("unknown context format {v}"))),
        None => Err(ContextError::Decode("empty".into())),
    }
}

// Key material is made once by `quorumkv certs` (or for an in-process cluster), never by
// protocol code at run time, so it may use the OS random source directly.
#[allow(clippy::disallowed_methods)]
fn random_secret() -> [u8; CLUSTER_KEY_LEN] {
    use ring::rand::SecureRandom as _;
    let mut secret = [0u8; CLUSTER_KEY_LEN];
    // The OS random source failing is not recoverable for key generation; fall back to
    // nothing weaker than an error would be: retry once, then use a hash of time and pid
    // only in the (never observed) case the OS refuses twice.
    let rng = ring::rand::SystemRandom::new();
    if rng.fill(&mut secret).is_err() && rng.fill(&mut secret).is_err() {
        tracing::error!("the OS random source failed; cluster key derived from time and pid");
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        let h = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        secret.copy_from_slice(h.as_ref());
    }
    secret
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Make sure `dir/cluster.key` exists: created once with a fresh random key, mode 0600,
/// and never overwritten (replacing it would invalidate every context clients hold).
/// Returns its path.
pub fn ensure_key_file(dir: &Path) -> Result<PathBuf, ContextError> {
    let path = dir.join(CLUSTER_KEY_FILE);
    let err = |message: String| ContextError::KeyFile {
        path: path.clone(),
        message,
    };
    if path.exists() {
        // Refuse an unusable file now rather than at node start.
        ContextKey::load(&path)?;
        return Ok(path);
    }
    let hex: String = random_secret().iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path).map_err(|e| err(e.to_string()))?;
    writeln!(f, "{hex}").map_err(|e| err(e.to_string()))?;
    f.sync_all().map_err(|e| err(e.to_string()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        VersionVector(entries.iter().map(|(a, c)| (a.to_string(), *c)).collect())
    }

    /// Goal: a sealed context opens for the same key and is refused for another key,
    /// another keyspace, another cluster key, or after any byte is altered.
    #[test]
    fn seal_open_and_refusals() {
        let k = ContextKey::from_bytes(b"secret-one");
        let v = vv(&[("n1@0a0b0c0d", 3), ("n2@01020304", 7)]);
        let c = k.seal("ks", b"key", &v);
        assert_eq!(k.open("ks", b"key", &"key", &c).unwrap(), v);
        assert_eq!(
            k.open("ks", b"key", &"key", "").unwrap(),
            VersionVector::new()
        );
        assert_eq!(k.seal("ks", b"key", &VersionVector::new()), "");
        assert!(matches!(
            k.open("ks", b"other", &"other", &c),
            Err(ContextError::NotIssued { .. })
        ));
        assert!(matches!(
            k.open("ks2", b"key", &"key", &c),
            Err(ContextError::NotIssued { .. })
        ));
        let other = ContextKey::from_bytes(b"secret-two");
        assert!(matches!(
            other.open("ks", b"key", &"key", &c),
            Err(ContextError::NotIssued { .. })
        ));
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&c)
            .unwrap();
        raw[3] ^= 1;
        let altered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert!(matches!(
            k.open("ks", b"key", &"key", &altered),
            Err(ContextError::NotIssued { .. })
        ));
        assert!(matches!(
            k.open("ks", b"key", &"key", "!!!"),
            Err(ContextError::Encoding(_))
        ));
        assert!(matches!(
            k.open("ks", b"key", &"key", &"A".repeat(MAX_CONTEXT_LEN + 1)),
            Err(ContextError::TooLarge { .. })
        ));
    }

    /// Goal: the forged context of the issue (an unsealed vector claiming 2^64-1 writes by
    /// n1, as the old format encoded it) is refused, naming the key.
    #[test]
    fn forged_max_counter_context_is_refused() {
        let k = ContextKey::random();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(rmp_serde::to_vec(&vv(&[("n1", u64::MAX)]).0).unwrap());
        let e = k.open("default", b"z", &"z", &forged).unwrap_err();
        assert!(
            e.to_string()
                .contains("not issued by this cluster for key z"),
            "{e}"
        );
    }

    /// Goal: the key file is created once with mode 0600, reloaded, never overwritten, and
    /// a damaged file is an error naming it.
    #[test]
    fn key_file_created_once_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = ensure_key_file(dir.path()).unwrap();
        let first = std::fs::read_to_string(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        ensure_key_file(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), first);
        let a = ContextKey::load(&p).unwrap();
        let c = a.seal("k", b"x", &vv(&[("n1", 1)]));
        assert!(ContextKey::load(&p)
            .unwrap()
            .open("k", b"x", &"x", &c)
            .is_ok());
        std::fs::write(&p, "zz").unwrap();
        let e = ContextKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("cluster.key") && e.contains("hex digits"), "{e}");
    }
}
