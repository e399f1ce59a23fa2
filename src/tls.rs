//! Certificates and TLS configuration: the cluster CA, node and client identities, and the
//! rustls/quinn configs built from them.
//!
//! Every connection is mutually authenticated: a node accepts only certificates its
//! cluster CA signed, and clients verify the node's name. The certificate's
//! organizational unit says what the holder is (`node`, `client` or `admin`), so a client
//! certificate cannot be used to impersonate a replica and inject peer messages, and only
//! an admin certificate may create or drop keyspaces (see docs/SECURITY.md).
//!
//! Private keys are written with mode 0600 and never replaced: issuing a certificate for
//! a name whose key file exists re-issues the certificate for that same key (a renewal),
//! so re-running `quorumkv certs` can never silently swap a node's identity.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::proto::ALPN;

/// Errors making or loading certificates and TLS configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}: {message}")]
    Load {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Writing a generated file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// rustls refused the material.
    #[error("TLS configuration rejected: {0}")]
    Config(String),
    /// A name that cannot go into a certificate.
    #[error("invalid certificate name {0:?}: use letters, digits, '-' and '.'")]
    BadName(String),
    /// A validity period of zero days or beyond what a certificate can carry.
    #[error("invalid validity of {0} days: use 1 to {MAX_VALIDITY_DAYS}")]
    BadDays(u32),
    /// The CA key exists without its certificate: refusing to make a new CA over it.
    #[error("{key} exists but {cert} does not: restore the CA certificate (a new CA would not replace an existing key)")]
    OrphanCaKey {
        /// The CA key.
        key: PathBuf,
        /// The missing certificate.
        cert: PathBuf,
    },
    /// The certificate's validity period has ended (or not begun).
    #[error(
        "certificate {path} is not valid now: {message}; issue a new one with `quorumkv certs`"
    )]
    NotValid {
        /// The certificate.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Default validity of issued node, client and admin certificates, days.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// Validity of a new cluster CA, days (ten years: replacing a CA means re-issuing every
/// certificate, so it outlives the certificates it signs).
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Longest validity `issue` accepts, days (100 years).
pub const MAX_VALIDITY_DAYS: u32 = 36500;
/// A node warns at start when its certificate expires within this many days.
pub const EXPIRY_WARNING_DAYS: u64 = 30;

/// What a certificate holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cluster node: may send peer requests.
    Node,
    /// A client: may send client requests only, subject to keyspace grants.
    Client,
    /// An operator: a client that may also create and drop keyspaces and is not limited
    /// by grants.
    Admin,
}

impl Role {
    /// The organizational unit (OU) that carries the role in a certificate.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.ou())
    }
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn write_file(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a private key: mode 0600 from the moment the file exists (no window in which it
/// is readable by others), and never over an existing file.
fn write_key(path: &Path, text: &str) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

fn read_pem(path: &Path, what: &'static str) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Load {
        what,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A warning if a private key file can be read by anyone but its owner.
pub fn key_mode_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "private key {} has mode {mode:o}: readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Set `params` to be valid from a few minutes ago (clock skew between the issuing host
/// and the nodes) for `days` days.
fn set_validity(params: &mut CertificateParams, days: u32) -> Result<(), TlsError> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(TlsError::BadDays(days));
    }
    let now = unix_now() as i64;
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| TlsError::Generate(e.to_string()))
    };
    params.not_before = at(now - 300)?;
    params.not_after = at(now + i64::from(days) * 86_400)?;
    Ok(())
}

fn valid_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadName(name.to_string()))
    }
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "quorumkv cluster CA");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Paths of a generated identity.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    /// Certificate PEM.
    pub cert: PathBuf,
    /// Key PEM.
    pub key: PathBuf,
    /// Whether the key file existed and was kept (the certificate was re-issued for it).
    pub reused_key: bool,
}

/// Create `dir/ca.pem` and `dir/ca.key` unless they exist; returns their paths. A CA key
/// without its certificate is an error, never overwritten.
pub fn ensure_ca(dir: &Path) -> Result<IdentityFiles, TlsError> {
    let mut files = IdentityFiles {
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
        reused_key: true,
    };
    if files.key.exists() {
        if files.cert.exists() {
            return Ok(files);
        }
        return Err(TlsError::OrphanCaKey {
            key: files.key,
            cert: files.cert,
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = ca_params()?;
    set_validity(&mut params, CA_VALIDITY_DAYS)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    // Key first: if writing it fails, no certificate points at a key that is not there.
    write_key(&files.key, &key.serialize_pem())?;
    write_file(&files.cert, &cert.pem())?;
    files.reused_key = false;
    Ok(files)
}

/// Issue a certificate for `name` with `role`, signed by the CA in `dir`, valid for `days`
/// days for the DNS names `name` and `localhost` and the given IPs. Writes
/// `dir/<name>.pem` (replacing an older certificate) and, unless it exists,
/// `dir/<name>.key` (mode 0600). An existing key is kept and the certificate re-issued
/// for it, so renewing a certificate never changes the key behind it.
pub fn issue(
    dir: &Path,
    name: &str,
    role: Role,
    ips: &[IpAddr],
    days: u32,
) -> Result<IdentityFiles, TlsError> {
    valid_name(name)?;
    let ca = ensure_ca(dir)?;
    let ca_key = KeyPair::from_pem(&read_pem(&ca.key, "CA key")?).map_err(gen_err)?;
    let issuer = Issuer::from_ca_cert_pem(&read_pem(&ca.cert, "CA certificate")?, ca_key)
        .map_err(gen_err)?;

    let mut params =
        CertificateParams::new(vec![name.to_string(), "localhost".to_string()]).map_err(gen_err)?;
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.ou());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    set_validity(&mut params, days)?;
    let mut files = IdentityFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        reused_key: false,
    };
    let key = if files.key.exists() {
        files.reused_key = true;
        KeyPair::from_pem(&read_pem(&files.key, "private key")?).map_err(|e| TlsError::Load {
            what: "private key",
            path: files.key.clone(),
            message: e.to_string(),
        })?
    } else {
        let key = KeyPair::generate().map_err(gen_err)?;
        write_key(&files.key, &key.serialize_pem())?;
        key
    };
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    write_file(&files.cert, &cert.pem())?;
    Ok(files)
}

/// Seconds until the certificate in `path` expires (its first certificate), or
/// [`TlsError::NotValid`] if it has expired or is not valid yet.
pub fn seconds_left(path: &Path) -> Result<u64, TlsError> {
    let certs = load_certs(path, "certificate")?;
    let err = |message: String| TlsError::Load {
        what: "certificate",
        path: path.to_path_buf(),
        message,
    };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(certs[0].as_ref()).map_err(|e| err(e.to_string()))?;
    let validity = parsed.validity();
    let now = unix_now() as i64;
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now < from {
        return Err(TlsError::NotValid {
            path: path.to_path_buf(),
            message: format!("it is valid only from {}", validity.not_before),
        });
    }
    if now >= until {
        return Err(TlsError::NotValid {
            path: path.to_path_buf(),
            message: format!("it expired on {}", validity.not_after),
        });
    }
    Ok((until - now) as u64)
}

/// Check a node's own certificate at start: an error if it is not valid now, and a
/// warning text if it expires within [`EXPIRY_WARNING_DAYS`].
pub fn expiry_warning(path: &Path) -> Result<Option<String>, TlsError> {
    let left = seconds_left(path)?;
    let days = left / 86_400;
    Ok((days < EXPIRY_WARNING_DAYS).then(|| {
        format!(
            "certificate {} expires in {days} day(s) ({} hours); renew it with `quorumkv certs` and restart the node",
            path.display(),
            left / 3600
        )
    }))
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Load {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in file".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Load {
        what: "private key",
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca, "CA certificate")? {
        roots.add(c).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// QUIC transport settings shared by both ends.
pub struct TransportSettings {
    /// Connection idle timeout.
    pub idle: Duration,
    /// Streams a peer may have open at once on one connection.
    pub max_streams: u32,
    /// Receive windows to advertise; `None` keeps quinn's defaults (clients).
    pub receive_windows: Option<ReceiveWindows>,
}

/// How many bytes a peer may send before this end has read them: what quinn buffers per
/// connection for data the application has not taken yet. Nodes set these from
/// `limits.max_inflight_bytes` (see `docs/SECURITY.md` for the arithmetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveWindows {
    /// Unread bytes per connection, all streams together.
    pub connection: u64,
    /// Unread bytes per stream.
    pub stream: u64,
}

fn transport_config(s: &TransportSettings) -> Result<quinn::TransportConfig, TlsError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(s.idle).map_err(|e| TlsError::Config(e.to_string()))?;
    t.max_idle_timeout(Some(idle));
    // Keep-alives at a third of the idle timeout: an idle but healthy link stays open, and a
    // dead peer is noticed within the idle timeout.
    t.keep_alive_interval(Some(s.idle / 3));
    t.max_concurrent_bidi_streams(s.max_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    if let Some(w) = s.receive_windows {
        let var = |v: u64| {
            quinn::VarInt::from_u64(v).map_err(|e| TlsError::Config(format!("window {v}: {e}")))
        };
        t.receive_window(var(w.connection)?);
        t.stream_receive_window(var(w.stream)?);
    }
    Ok(t)
}

/// Server side: accept clients and peers whose certificate the CA signed.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    settings: &TransportSettings,
) -> Result<quinn::ServerConfig, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        provider(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert, "certificate")?, load_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
    sc.transport_config(Arc::new(transport_config(settings)?));
    Ok(sc)
}

/// Client side (used by nodes for peer traffic and by clients): trust only the CA and
/// present our own certificate.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    settings: &TransportSettings,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert, "certificate")?, load_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(quic));
    cc.transport_config(Arc::new(transport_config(settings)?));
    Ok(cc)
}

/// The role and name in a verified peer certificate chain (from
/// `quinn::Connection::peer_identity`). `None` if there is no usable certificate.
pub fn peer_role(identity: Option<Box<dyn std::any::Any>>) -> Option<(Role, String)> {
    let certs = identity?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = certs.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = parsed.subject();
    let ou = subject.iter_organizational_unit().next()?.as_str().ok()?;
    let cn = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    match ou {
        "node" => Some((Role::Node, cn)),
        "client" => Some((Role::Client, cn)),
        "admin" => Some((Role::Admin, cn)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: generated certificates load into rustls configs, the CA is reused rather than
    /// replaced, and bad names are refused.
    #[test]
    fn generate_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca1 = std::fs::read_to_string(ensure_ca(dir.path()).unwrap().cert).unwrap();
        let n1 = issue(
            dir.path(),
            "n1",
            Role::Node,
            &["127.0.0.1".parse().unwrap()],
            DEFAULT_VALIDITY_DAYS,
        )
        .unwrap();
        let ca2 = std::fs::read_to_string(ensure_ca(dir.path()).unwrap().cert).unwrap();
        assert_eq!(ca1, ca2, "the CA must not be regenerated");
        let s = TransportSettings {
            idle: Duration::from_secs(5),
            max_streams: 16,
            receive_windows: Some(ReceiveWindows {
                connection: 1 << 20,
                stream: 256 << 10,
            }),
        };
        server_config(&dir.path().join("ca.pem"), &n1.cert, &n1.key, &s).unwrap();
        client_config(&dir.path().join("ca.pem"), &n1.cert, &n1.key, &s).unwrap();
        assert!(matches!(
            issue(dir.path(), "bad name", Role::Client, &[], 30),
            Err(TlsError::BadName(_))
        ));
        let e = client_config(&dir.path().join("nope.pem"), &n1.cert, &n1.key, &s).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
    }

    /// Goal: the role is read back from a certificate's subject.
    #[test]
    fn role_from_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let c = issue(dir.path(), "alice", Role::Client, &[], 30).unwrap();
        let certs = load_certs(&c.cert, "certificate").unwrap();
        let any: Box<dyn std::any::Any> = Box::new(certs);
        assert_eq!(
            peer_role(Some(any)),
            Some((Role::Client, "alice".to_string()))
        );
        let n = issue(dir.path(), "n2", Role::Node, &[], 30).unwrap();
        let any: Box<dyn std::any::Any> = Box::new(load_certs(&n.cert, "certificate").unwrap());
        assert_eq!(peer_role(Some(any)), Some((Role::Node, "n2".to_string())));
        let a = issue(dir.path(), "ops", Role::Admin, &[], 30).unwrap();
        let any: Box<dyn std::any::Any> = Box::new(load_certs(&a.cert, "certificate").unwrap());
        assert_eq!(peer_role(Some(any)), Some((Role::Admin, "ops".to_string())));
        assert_eq!(peer_role(None), None);
    }

    /// Goal: private keys (the CA's included) are created with mode 0600; issuing again for
    /// the same name keeps the key byte for byte and re-issues only the certificate; a CA
    /// key without its certificate is refused rather than replaced.
    #[test]
    fn keys_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = issue(dir.path(), "n1", Role::Node, &[], 30).unwrap();
        assert!(!first.reused_key);
        for key in [&first.key, &dir.path().join("ca.key")] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
            assert_eq!(key_mode_warning(key), None);
        }
        let key1 = std::fs::read(&first.key).unwrap();
        let cert1 = std::fs::read(&first.cert).unwrap();
        let again = issue(dir.path(), "n1", Role::Node, &[], 60).unwrap();
        assert!(again.reused_key);
        assert_eq!(std::fs::read(&again.key).unwrap(), key1, "key replaced");
        assert_ne!(
            std::fs::read(&again.cert).unwrap(),
            cert1,
            "cert not re-issued"
        );
        // The re-issued certificate still matches the kept key.
        let s = TransportSettings {
            idle: Duration::from_secs(5),
            max_streams: 4,
            receive_windows: None,
        };
        server_config(&dir.path().join("ca.pem"), &again.cert, &again.key, &s).unwrap();
        std::fs::set_permissions(&again.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(key_mode_warning(&again.key).unwrap().contains("chmod 600"));

        let orphan = tempfile::tempdir().unwrap();
        std::fs::write(orphan.path().join("ca.key"), "secret").unwrap();
        let e = ensure_ca(orphan.path()).unwrap_err();
        assert!(matches!(e, TlsError::OrphanCaKey { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(orphan.path().join("ca.key")).unwrap(),
            "secret"
        );
    }

    /// Goal: certificates carry the requested validity; one expiring within 30 days yields
    /// a warning naming the file and the days left; a year-long one does not; zero days is
    /// refused.
    #[test]
    fn validity_and_expiry_warning() {
        let dir = tempfile::tempdir().unwrap();
        let short = issue(dir.path(), "n1", Role::Node, &[], 10).unwrap();
        let left = seconds_left(&short.cert).unwrap();
        assert!((9 * 86_400..=10 * 86_400).contains(&left), "{left}");
        let w = expiry_warning(&short.cert).unwrap().expect("a warning");
        assert!(
            w.contains("expires in 9 day") || w.contains("expires in 10 day"),
            "{w}"
        );
        assert!(w.contains("n1.pem"), "{w}");
        let long = issue(dir.path(), "n2", Role::Node, &[], DEFAULT_VALIDITY_DAYS).unwrap();
        assert_eq!(expiry_warning(&long.cert).unwrap(), None);
        assert!(matches!(
            issue(dir.path(), "n3", Role::Node, &[], 0),
            Err(TlsError::BadDays(0))
        ));
    }
}
