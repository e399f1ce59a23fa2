//! Certificates and TLS configuration: the cluster CA, node and client identities, and the
//! rustls/quinn configs built from them.
//!
//! Every connection is mutually authenticated: a node accepts only certificates its
//! cluster CA signed, and clients verify the node's name. The certificate's
//! organizational unit says what the holder is (`node` or `client`), so a client
//! certificate cannot be used to impersonate a replica and inject peer messages.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
}

/// What a certificate holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cluster node: may send peer requests.
    Node,
    /// A client: may send client requests only.
    Client,
}

impl Role {
    fn ou(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
        }
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
}

/// Create `dir/ca.pem` and `dir/ca.key` unless they exist; returns their paths.
pub fn ensure_ca(dir: &Path) -> Result<IdentityFiles, TlsError> {
    let files = IdentityFiles {
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = ca_params()?.self_signed(&key).map_err(gen_err)?;
    write_file(&files.cert, &cert.pem())?;
    write_file(&files.key, &key.serialize_pem())?;
    Ok(files)
}

/// Issue a certificate for `name` with `role`, signed by the CA in `dir`, valid for the
/// DNS names `name` and `localhost` and the given IPs. Writes `dir/<name>.pem` and
/// `dir/<name>.key` (overwriting).
pub fn issue(
    dir: &Path,
    name: &str,
    role: Role,
    ips: &[IpAddr],
) -> Result<IdentityFiles, TlsError> {
    valid_name(name)?;
    let ca = ensure_ca(dir)?;
    let read = |p: &Path, what| {
        std::fs::read_to_string(p).map_err(|e| TlsError::Load {
            what,
            path: p.to_path_buf(),
            message: e.to_string(),
        })
    };
    let ca_key = KeyPair::from_pem(&read(&ca.key, "CA key")?).map_err(gen_err)?;
    let issuer =
        Issuer::from_ca_cert_pem(&read(&ca.cert, "CA certificate")?, ca_key).map_err(gen_err)?;

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
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    let files = IdentityFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    write_file(&files.cert, &cert.pem())?;
    write_file(&files.key, &key.serialize_pem())?;
    Ok(files)
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
            issue(dir.path(), "bad name", Role::Client, &[]),
            Err(TlsError::BadName(_))
        ));
        let e = client_config(&dir.path().join("nope.pem"), &n1.cert, &n1.key, &s).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
    }

    /// Goal: the role is read back from a certificate's subject.
    #[test]
    fn role_from_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let c = issue(dir.path(), "alice", Role::Client, &[]).unwrap();
        let certs = load_certs(&c.cert, "certificate").unwrap();
        let any: Box<dyn std::any::Any> = Box::new(certs);
        assert_eq!(
            peer_role(Some(any)),
            Some((Role::Client, "alice".to_string()))
        );
        let n = issue(dir.path(), "n2", Role::Node, &[]).unwrap();
        let any: Box<dyn std::any::Any> = Box::new(load_certs(&n.cert, "certificate").unwrap());
        assert_eq!(peer_role(Some(any)), Some((Role::Node, "n2".to_string())));
        assert_eq!(peer_role(None), None);
    }
}
