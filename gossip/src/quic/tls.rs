//! Mutual TLS against the cluster CA.
//!
//! Both roles trust exactly one root, the cluster CA. As a server a node requires a
//! client certificate chaining to it ([`WebPkiClientVerifier`]); as a client it requires
//! the server's certificate to chain to it and name [`CLUSTER_SERVER_NAME`]. A peer with
//! a certificate from another CA fails the handshake and never reaches the application.
//! Only TLS 1.3 (QUIC requires it), only the ring provider, passed explicitly: nothing
//! here depends on a process-wide default provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::QuicError;
use crate::certs::{CertIdentity, NodeCert, CLUSTER_SERVER_NAME};

/// ALPN protocol of the geocache gossip transport, version 1.
pub const ALPN: &[u8] = b"geocache/1";

/// This node's TLS identity in the cluster: the CA root, the node's certificate chain and
/// key, already turned into QUIC server and client configurations.
///
/// Construction checks that the node certificate verifies against the CA both as a server
/// for `geocache.cluster` and as a client, so a misissued certificate is reported here
/// rather than as refused handshakes on every peer.
///
/// ```
/// use geocache_gossip::certs::Ca;
/// use geocache_gossip::quic::ClusterTls;
///
/// let ca = Ca::generate("example CA")?;
/// let tls = ClusterTls::from_node_cert(&ca.issue("node-1")?)?;
/// # let _ = tls;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ClusterTls {
    pub(crate) server: Arc<QuicServerConfig>,
    pub(crate) client: Arc<QuicClientConfig>,
    identity: CertIdentity,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// From certificates in memory (as made by [`crate::certs::Ca::issue`]).
    pub fn from_node_cert(cert: &NodeCert) -> Result<Self, QuicError> {
        let ca = parse_cert(cert.ca_pem.as_bytes(), "CA certificate")?;
        let chain = parse_chain(cert.cert_pem.as_bytes(), "node certificate")?;
        let key = parse_key(cert.key_pem.as_bytes(), "node key")?;
        Self::new(ca, chain, key)
    }

    /// From PEM files: the CA certificate, the node certificate (chain) and its key (as
    /// written by [`NodeCert::save`]).
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, QuicError> {
        let ca_der = parse_cert(&read(ca)?, &ca.display().to_string())?;
        let chain = parse_chain(&read(cert)?, &cert.display().to_string())?;
        let key_der = parse_key(&read(key)?, &key.display().to_string())?;
        Self::new(ca_der, chain, key_der)
    }

    fn new(
        ca: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, QuicError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca).map_err(QuicError::InvalidCa)?;
        let roots = Arc::new(roots);

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(QuicError::ServerVerifier)?;
        check_own_certificate(&chain, client_verifier.as_ref(), server_verifier.as_ref())?;
        let identity = chain
            .first()
            .ok_or_else(|| QuicError::InvalidPem { what: "node certificate".into(), reason: "empty".into() })
            .and_then(|leaf| {
                CertIdentity::of_der(leaf).map_err(|e| QuicError::InvalidPem {
                    what: "node certificate".into(),
                    reason: e.to_string(),
                })
            })?;

        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![ALPN.to_vec()];

        Ok(ClusterTls {
            server: Arc::new(QuicServerConfig::try_from(server)?),
            client: Arc::new(QuicClientConfig::try_from(client)?),
            identity,
        })
    }

    /// Who this node's own certificate says it is: the name (and region)
    /// peers check what it sends against.
    pub fn identity(&self) -> &CertIdentity {
        &self.identity
    }
}

/// Verifies this node's chain the way its peers will, in both roles.
fn check_own_certificate(
    chain: &[CertificateDer<'static>],
    as_client: &dyn ClientCertVerifier,
    as_server: &dyn ServerCertVerifier,
) -> Result<(), QuicError> {
    let (end_entity, intermediates) = chain.split_first().ok_or_else(|| QuicError::InvalidPem {
        what: "node certificate".to_owned(),
        reason: "no certificate".to_owned(),
    })?;
    let now = UnixTime::now();
    let name = ServerName::try_from(CLUSTER_SERVER_NAME).map_err(|e| QuicError::InvalidPem {
        what: "cluster server name".to_owned(),
        reason: e.to_string(),
    })?;
    as_server
        .verify_server_cert(end_entity, intermediates, &name, &[], now)
        .map_err(QuicError::CertificateRejected)?;
    as_client.verify_client_cert(end_entity, intermediates, now).map_err(QuicError::CertificateRejected)?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, QuicError> {
    std::fs::read(path).map_err(|source| QuicError::ReadFile { path: path.to_owned(), source })
}

fn parse_cert(pem: &[u8], what: &str) -> Result<CertificateDer<'static>, QuicError> {
    CertificateDer::from_pem_slice(pem)
        .map_err(|e| QuicError::InvalidPem { what: what.to_owned(), reason: e.to_string() })
}

fn parse_chain(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, QuicError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QuicError::InvalidPem { what: what.to_owned(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(QuicError::InvalidPem { what: what.to_owned(), reason: "no certificate".to_owned() });
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, QuicError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| QuicError::InvalidPem { what: what.to_owned(), reason: e.to_string() })
}
