//! The cluster CA and node certificates (`geocache certs init`, `geocache certs issue`).
//!
//! A geocache cluster trusts exactly one certificate authority. Every node holds a
//! certificate issued by that CA whose subject alternative names are
//! [`CLUSTER_SERVER_NAME`] (the name every node dials, whatever the address) and the node's
//! own name, usable both as a TLS server and as a TLS client: the QUIC transport
//! (`crate::quic`) runs mutual TLS, so each side of a connection proves it belongs to
//! the cluster.
//!
//! Files, as written by [`Ca::save`] and [`NodeCert::save`]:
//!
//! | file | content | mode (unix) |
//! | --- | --- | --- |
//! | `ca.crt` | CA certificate, PEM | 0644 |
//! | `ca.key` | CA private key, PKCS#8 PEM (only in the CA directory) | 0600 |
//! | `node.crt` | node certificate, PEM | 0644 |
//! | `node.key` | node private key, PKCS#8 PEM | 0600 |
//!
//! Keys are ECDSA P-256. The CA is valid for [`CA_VALIDITY_DAYS`], node certificates for
//! [`NODE_VALIDITY_DAYS`], both starting one day in the past to tolerate clock skew.
//! Re-issuing a node certificate (same CA, same name) is how a node's certificate is renewed.
//!
//! ```
//! use geocache_gossip::certs::Ca;
//!
//! let ca = Ca::generate("geocache test CA")?;
//! let node = ca.issue("node-1")?;
//! assert_eq!(node.ca_pem, ca.cert_pem());
//! assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! # Ok::<(), geocache_gossip::certs::CertError>(())
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The DNS name every node certificate carries and every node dials: peers are found by
/// address, and the certificate only has to prove membership of the cluster.
pub const CLUSTER_SERVER_NAME: &str = "geocache.cluster";

/// The start of the URI subject alternative name that carries a node's region.
pub const REGION_URI_PREFIX: &str = "urn:geocache:region:";

/// Who a node certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertIdentity {
    /// The node's name (the subject's common name).
    pub name: String,
    /// Its region, when the certificate was issued with one.
    pub region: Option<String>,
}

impl CertIdentity {
    /// Reads the name and region of a node certificate (DER).
    ///
    /// # Errors
    ///
    /// [`CertError::NotNodeCert`] when the certificate has no single
    /// common name or a garbled region.
    pub fn of_der(cert_der: &[u8]) -> Result<CertIdentity, CertError> {
        let fail = |reason: &str| CertError::NotNodeCert { reason: reason.to_owned() };
        let (name, _) = der::subject_common_name_and_spki(cert_der).map_err(fail)?;
        let uris = der::subject_alt_uris(cert_der).map_err(fail)?;
        let region = match uris.iter().find_map(|u| u.strip_prefix(REGION_URI_PREFIX)) {
            Some(encoded) => Some(percent_decode(encoded).ok_or_else(|| fail("garbled region"))?),
            None => None,
        };
        Ok(CertIdentity { name, region })
    }

    /// Reads the name and region of a node certificate (PEM).
    ///
    /// # Errors
    ///
    /// As [`of_der`](Self::of_der), and for PEM that holds no certificate.
    pub fn of_pem(cert_pem: &str) -> Result<CertIdentity, CertError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertError::NotNodeCert { reason: e.to_string() })?;
        CertIdentity::of_der(&der)
    }
}

/// Every byte but `[A-Za-z0-9-._~]` as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// CA certificate file name, in both the CA directory and a node directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// CA private key file name (CA directory only).
pub const CA_KEY_FILE: &str = "ca.key";
/// Node certificate file name.
pub const NODE_CERT_FILE: &str = "node.crt";
/// Node private key file name.
pub const NODE_KEY_FILE: &str = "node.key";

/// How long a CA made by [`Ca::generate`] is valid, in days (about ten years).
pub const CA_VALIDITY_DAYS: u64 = 3_650;
/// How long a node certificate made by [`Ca::issue`] is valid, in days (about two years).
pub const NODE_VALIDITY_DAYS: u64 = 730;
/// Longest node name, in bytes: one DNS label.
pub const NODE_NAME_BYTES_MAX: usize = 63;
/// Longest CA common name, in bytes (X.520 `ub-common-name`).
pub const CA_COMMON_NAME_BYTES_MAX: usize = 64;

const DAY: Duration = Duration::from_secs(86_400);
/// Certificate dates past this are refused rather than risk overflowing date arithmetic.
const YEAR_9000_SECS: u64 = 221_845_392_000;

/// Everything that can go wrong making, saving or loading certificates.
///
/// No variant leaves a partial result behind in memory; see each variant for files.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A peer's or this node's certificate does not say who its holder is.
    #[error("not a geocache node certificate: {reason}")]
    NotNodeCert {
        /// What is wrong.
        reason: String,
    },
    /// Reading, writing or creating a file or directory failed. A save that failed
    /// part-way may have written some of its files.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done: "reading", "writing", "creating directory".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// [`Ca::save`] found a CA key already there and wrote nothing: a CA key is never
    /// overwritten, since every node certificate issued with it would be orphaned.
    #[error("refusing to overwrite existing CA key {path}: remove it first if you really mean to replace the cluster CA")]
    CaKeyExists {
        /// The existing key file.
        path: PathBuf,
    },
    /// The node name is not a DNS label: 1 to 63 bytes of `a-z`, `0-9` and `-`,
    /// not starting or ending with `-`. Nothing was issued.
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The CA common name is empty or longer than [`CA_COMMON_NAME_BYTES_MAX`]. Nothing
    /// was generated.
    #[error("invalid CA common name {name:?}: {reason}")]
    InvalidCommonName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A file does not hold the PEM object it should.
    #[error("{path}: {reason}")]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `ca.crt` parses but is not shaped like a CA made by [`Ca::generate`] (its subject
    /// must be a single UTF-8 common name), so it cannot be used to issue.
    #[error("{path}: not a geocache CA certificate: {reason}")]
    UnsupportedCa {
        /// The certificate file.
        path: PathBuf,
        /// What does not match.
        reason: &'static str,
    },
    /// The CA key does not belong to the CA certificate next to it.
    #[error("CA key {key} does not match CA certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The system clock is before 1970 or so far ahead that validity dates overflow.
    #[error("system clock unusable for certificate validity: {reason}")]
    Clock {
        /// What was wrong.
        reason: &'static str,
    },
    /// rcgen refused to generate a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The cluster certificate authority: its certificate and what is needed to sign with it.
///
/// The `Debug` output shows the certificate only, never the key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl Ca {
    /// Makes a new CA with a fresh P-256 key, self-signed, valid [`CA_VALIDITY_DAYS`].
    ///
    /// The CA may sign end-entity certificates only (path length 0).
    pub fn generate(common_name: &str) -> Result<Ca, CertError> {
        validate_common_name(common_name)?;
        let key = KeyPair::generate()?;
        let mut params = ca_params(common_name);
        set_validity(&mut params, CA_VALIDITY_DAYS)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// Writes `dir/ca.crt` and `dir/ca.key` (mode 0600 on unix), creating `dir` (mode
    /// 0700 on unix) if needed.
    ///
    /// Refuses with [`CertError::CaKeyExists`] if `dir/ca.key` exists, before writing
    /// anything. An existing `ca.crt` without a key is overwritten.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        let key_path = dir.join(CA_KEY_FILE);
        write_file(&key_path, self.issuer.key().serialize_pem().as_bytes(), FileKind::NewSecret)?;
        write_file(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), FileKind::Public)
    }

    /// Reads `dir/ca.crt` and `dir/ca.key` as written by [`Ca::save`], and checks that the
    /// key belongs to the certificate.
    pub fn load(dir: &Path) -> Result<Ca, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertError::InvalidPem { path: cert_path.clone(), reason: e.to_string() })?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| CertError::InvalidPem { path: key_path.clone(), reason: e.to_string() })?;
        let (common_name, spki) = der::subject_common_name_and_spki(&cert_der)
            .map_err(|reason| CertError::UnsupportedCa { path: cert_path.clone(), reason })?;
        if spki != key.subject_public_key_info() {
            return Err(CertError::KeyMismatch { cert: cert_path, key: key_path });
        }
        // Issued certificates name their issuer by copying the CA's subject; rebuilding the
        // same single-CN name reproduces the CA's subject bytes exactly.
        Ok(Ca { cert_pem, issuer: Issuer::new(ca_params(&common_name), key) })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `node_name` with a fresh P-256 key, valid
    /// [`NODE_VALIDITY_DAYS`].
    ///
    /// Subject alternative names: [`CLUSTER_SERVER_NAME`] and `node_name`; extended key
    /// usage: TLS server and TLS client. `node_name` must be a DNS label (see
    /// [`CertError::InvalidNodeName`]).
    pub fn issue(&self, node_name: &str) -> Result<NodeCert, CertError> {
        self.issue_in(node_name, None)
    }

    /// As [`issue`](Self::issue), with the node's region written in as well
    /// (a URI subject alternative name, [`REGION_URI_PREFIX`] and the region
    /// percent-encoded), so peers can check the region a node announces.
    pub fn issue_in(&self, node_name: &str, region: Option<&str>) -> Result<NodeCert, CertError> {
        self.issue_for(node_name, region, &[])
    }

    /// As [`issue_in`](Self::issue_in), with `hosts` (DNS names or IP
    /// addresses) clients reach the node by, so the same certificate serves
    /// TLS on the client ports (`--tls-cert`).
    pub fn issue_for(
        &self,
        node_name: &str,
        region: Option<&str>,
        hosts: &[String],
    ) -> Result<NodeCert, CertError> {
        validate_node_name(node_name)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_name);
        params.distinguished_name = name;
        params.subject_alt_names =
            vec![SanType::DnsName(CLUSTER_SERVER_NAME.try_into()?), SanType::DnsName(node_name.try_into()?)];
        if let Some(region) = region {
            let uri = format!("{REGION_URI_PREFIX}{}", percent_encode(region));
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into()?));
        }
        for host in hosts {
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.as_str().try_into()?),
            };
            params.subject_alt_names.push(san);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY_DAYS)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), ca_pem: self.cert_pem.clone() })
    }
}

/// A node's certificate, its private key and the cluster CA certificate, all PEM.
///
/// The `Debug` output leaves the key out.
#[derive(Clone)]
pub struct NodeCert {
    /// The node certificate, PEM.
    pub cert_pem: String,
    /// The node private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    /// Writes `dir/node.crt`, `dir/node.key` (mode 0600 on unix) and `dir/ca.crt`,
    /// creating `dir` (mode 0700 on unix) if needed. Existing node files are replaced
    /// (re-issuing is how a certificate is renewed).
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        write_file(&dir.join(NODE_KEY_FILE), self.key_pem.as_bytes(), FileKind::Secret)?;
        write_file(&dir.join(NODE_CERT_FILE), self.cert_pem.as_bytes(), FileKind::Public)?;
        write_file(&dir.join(CA_CERT_FILE), self.ca_pem.as_bytes(), FileKind::Public)
    }

    /// Reads `dir/node.crt`, `dir/node.key` and `dir/ca.crt`, checking that each holds
    /// the PEM object it should (whether they chain is checked when building TLS
    /// configs, by `crate::quic::ClusterTls`).
    pub fn load(dir: &Path) -> Result<NodeCert, CertError> {
        let cert_path = dir.join(NODE_CERT_FILE);
        let key_path = dir.join(NODE_KEY_FILE);
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        let ca_pem = read_file(&ca_path)?;
        for (path, pem) in [(&cert_path, &cert_pem), (&ca_path, &ca_pem)] {
            CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| CertError::InvalidPem { path: path.clone(), reason: e.to_string() })?;
        }
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| CertError::InvalidPem { path: key_path, reason: e.to_string() })?;
        Ok(NodeCert { cert_pem, key_pem, ca_pem })
    }
}

/// The CA's parameters. [`Ca::load`] rebuilds them from the common name alone, so
/// anything here that ends up in issued certificates must be derivable from it.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, DnValue::Utf8String(common_name.to_owned()));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Valid from one day ago (clock skew between nodes) until `days` from now.
fn set_validity(params: &mut CertificateParams, days: u64) -> Result<(), CertError> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Clock { reason: "before 1970" })?;
    let not_before = since_epoch.checked_sub(DAY).ok_or(CertError::Clock { reason: "before 1970" })?;
    let not_after = DAY
        .checked_mul(u32::try_from(days).map_err(|_| CertError::Clock { reason: "validity overflows" })?)
        .and_then(|validity| since_epoch.checked_add(validity))
        .filter(|t| t.as_secs() < YEAR_9000_SECS)
        .ok_or(CertError::Clock { reason: "validity ends after year 9000" })?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + not_before;
    params.not_after = epoch + not_after;
    Ok(())
}

fn validate_node_name(name: &str) -> Result<(), CertError> {
    let fail = |reason| Err(CertError::InvalidNodeName { name: name.to_owned(), reason });
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > NODE_NAME_BYTES_MAX {
        return fail("longer than 63 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return fail("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return fail("must not start or end with '-'");
    }
    Ok(())
}

fn validate_common_name(name: &str) -> Result<(), CertError> {
    let fail = |reason| Err(CertError::InvalidCommonName { name: name.to_owned(), reason });
    if name.trim().is_empty() {
        return fail("empty");
    }
    if name.len() > CA_COMMON_NAME_BYTES_MAX {
        return fail("longer than 64 bytes");
    }
    if name.chars().any(char::is_control) {
        return fail("contains control characters");
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| CertError::Io {
        action: "creating directory",
        path: dir.to_owned(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// World-readable, replaced if present.
    Public,
    /// Owner-only, replaced if present.
    Secret,
    /// Owner-only, refused with [`CertError::CaKeyExists`] if present.
    NewSecret,
}

fn write_file(path: &Path, contents: &[u8], kind: FileKind) -> Result<(), CertError> {
    let io_err = |source| CertError::Io { action: "writing", path: path.to_owned(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if kind == FileKind::NewSecret {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    if kind != FileKind::Public {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && kind == FileKind::NewSecret => {
            return Err(CertError::CaKeyExists { path: path.to_owned() })
        }
        Err(e) => return Err(io_err(e)),
    };
    // `mode` only applies when the file is created: tighten a replaced key file before
    // the new key goes into it.
    #[cfg(unix)]
    if kind != FileKind::Public {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// Just enough DER to read back the CA certificate [`Ca::generate`] wrote: its subject
/// common name and its public key. Input is a local file, but is still treated as
/// untrusted: every read is bounds-checked and a mismatch is an error, never a panic.
mod der {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const INTEGER: u8 = 0x02;
    const OID: u8 = 0x06;
    const UTF8_STRING: u8 = 0x0c;
    const VERSION: u8 = 0xa0;
    /// id-at-commonName, 2.5.4.3.
    const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    struct Tlv<'a> {
        tag: u8,
        value: &'a [u8],
        /// Tag, length and value.
        raw: &'a [u8],
    }

    /// Reads one element off the front of `input`. Single-byte tags, definite lengths of
    /// up to four length bytes.
    fn next<'a>(input: &mut &'a [u8]) -> Option<Tlv<'a>> {
        let all: &'a [u8] = input;
        let (&tag, rest) = all.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        let header = all.len() - rest.len();
        let (value, after) = rest.split_at_checked(len)?;
        let raw = all.get(..header.checked_add(len)?)?;
        *input = after;
        Some(Tlv { tag, value, raw })
    }

    fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &'static str) -> Result<Tlv<'a>, &'static str> {
        next(input).filter(|t| t.tag == tag).ok_or(what)
    }

    /// id-ce-subjectAltName, 2.5.29.17.
    const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    const EXTENSIONS: u8 = 0xa3;
    const OCTET_STRING: u8 = 0x04;
    const BOOLEAN: u8 = 0x01;
    /// GeneralName uniformResourceIdentifier, [6] IMPLICIT IA5String.
    const URI: u8 = 0x86;

    /// The URI subject alternative names of a certificate.
    pub(super) fn subject_alt_uris(cert: &[u8]) -> Result<Vec<String>, &'static str> {
        let mut input = cert;
        let certificate = expect(&mut input, SEQUENCE, "not a certificate")?;
        let mut certificate = certificate.value;
        let tbs = expect(&mut certificate, SEQUENCE, "no TBSCertificate")?;
        let mut tbs = tbs.value;
        let mut uris = Vec::new();
        while let Some(field) = next(&mut tbs) {
            if field.tag != EXTENSIONS {
                continue;
            }
            let mut wrapped = field.value;
            let list = expect(&mut wrapped, SEQUENCE, "extensions are not a sequence")?;
            let mut list = list.value;
            while let Some(extension) = next(&mut list) {
                let mut extension = extension.value;
                let oid = expect(&mut extension, OID, "an extension without an id")?;
                if oid.value != OID_SUBJECT_ALT_NAME {
                    continue;
                }
                let mut value = next(&mut extension).ok_or("an extension without a value")?;
                if value.tag == BOOLEAN {
                    value = next(&mut extension).ok_or("an extension without a value")?;
                }
                if value.tag != OCTET_STRING {
                    return Err("an extension value is not an octet string");
                }
                let mut inner = value.value;
                let names = expect(&mut inner, SEQUENCE, "alternative names are not a sequence")?;
                let mut names = names.value;
                while let Some(name) = next(&mut names) {
                    if name.tag == URI {
                        let uri = std::str::from_utf8(name.value).map_err(|_| "a URI that is not text")?;
                        uris.push(uri.to_owned());
                    }
                }
            }
        }
        Ok(uris)
    }

    /// The subject's single UTF-8 common name, and the SubjectPublicKeyInfo (whole DER).
    pub(super) fn subject_common_name_and_spki(cert: &[u8]) -> Result<(String, Vec<u8>), &'static str> {
        let mut input = cert;
        let certificate = expect(&mut input, SEQUENCE, "not a certificate")?;
        let mut certificate = certificate.value;
        let tbs = expect(&mut certificate, SEQUENCE, "no TBSCertificate")?;
        let mut tbs = tbs.value;
        let mut field = next(&mut tbs).ok_or("empty TBSCertificate")?;
        if field.tag == VERSION {
            field = next(&mut tbs).ok_or("no serial number")?;
        }
        if field.tag != INTEGER {
            return Err("no serial number");
        }
        expect(&mut tbs, SEQUENCE, "no signature algorithm")?;
        expect(&mut tbs, SEQUENCE, "no issuer")?;
        expect(&mut tbs, SEQUENCE, "no validity")?;
        let subject = expect(&mut tbs, SEQUENCE, "no subject")?;
        let spki = expect(&mut tbs, SEQUENCE, "no subject public key")?;

        let mut names = subject.value;
        let rdn = expect(&mut names, SET, "subject is not a common name")?;
        if !names.is_empty() {
            return Err("subject has more than a common name");
        }
        let mut attributes = rdn.value;
        let attribute = expect(&mut attributes, SEQUENCE, "subject is not a common name")?;
        if !attributes.is_empty() {
            return Err("subject has more than a common name");
        }
        let mut attribute = attribute.value;
        let oid = expect(&mut attribute, OID, "subject is not a common name")?;
        if oid.value != OID_COMMON_NAME {
            return Err("subject is not a common name");
        }
        let value = expect(&mut attribute, UTF8_STRING, "common name is not a UTF-8 string")?;
        let common_name = std::str::from_utf8(value.value).map_err(|_| "common name is not UTF-8")?;
        Ok((common_name.to_owned(), spki.raw.to_vec()))
    }
}
