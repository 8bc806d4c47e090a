//! TLS settings of a deployment: the CA to trust (`tls_ca`), the client certificate for
//! mutual TLS (`tls_cert` + `tls_key`) and `tls_insecure`, read from their files when
//! the URL is parsed and handed to redis-rs ([`redis::Client::build_with_tls`]) for every
//! connection.
//!
//! redis-rs builds the rustls configuration itself; this module only reads and checks
//! the PEM files, so that a wrong path or a file without a certificate is an
//! [`Error::Config`] from `CacheManager::from_url`, not a connection failure later.

use std::path::{Path, PathBuf};

use partcache::{Error, Result};

/// How a TLS connection is verified and which client certificate it presents. Part of
/// [`DeploymentUrl`](crate::url::DeploymentUrl); filled from the URL parameters
/// `tls_ca`, `tls_cert`, `tls_key` and `tls_insecure`.
///
/// The default (nothing set) verifies servers against the system's root certificates
/// and presents no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `tls_ca`: the CA certificate(s) to trust *instead of* the system's roots (for
    /// deployments whose certificates a private or self-signed CA issued).
    pub ca: Option<PemFile>,
    /// `tls_cert` + `tls_key`: the client certificate presented to servers that require
    /// one (`tls-auth-clients yes`).
    pub client: Option<ClientCertificate>,
    /// `tls_insecure`: accept any server certificate, without checking who issued it or
    /// whom it names. **For tests only**: it makes the connection open to anyone
    /// between the client and the server.
    pub insecure: bool,
}

/// A client certificate (chain) and its private key, for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate, optionally followed by its intermediates (PEM).
    pub cert: PemFile,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PemFile,
}

/// The contents of a PEM file, read when the URL was parsed (or by [`PemFile::read`]).
///
/// Its `Debug` output shows the path and size only, never the contents (a private key).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    path: PathBuf,
    pem: Vec<u8>,
}

impl PemFile {
    /// Reads `path` (relative paths are relative to the working directory). An
    /// unreadable file is an [`Error::Config`] naming it.
    pub fn read(path: impl Into<PathBuf>) -> Result<PemFile> {
        let path = path.into();
        let pem = std::fs::read(&path).map_err(|e| {
            Error::Config(format!(
                "cannot read the TLS file `{}`: {e}",
                path.display()
            ))
        })?;
        Ok(PemFile { path, pem })
    }

    /// PEM text that did not come from a file; `label` stands for the path in messages.
    pub fn from_pem(label: impl Into<PathBuf>, pem: impl Into<Vec<u8>>) -> PemFile {
        PemFile {
            path: label.into(),
            pem: pem.into(),
        }
    }

    /// The file the contents were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PEM text.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .field("bytes", &self.pem.len())
            .finish()
    }
}

/// Reads the file of parameter `name` (for the message) and checks its contents.
pub(crate) fn read_parameter(name: &str, path: &str, kind: PemKind) -> Result<PemFile> {
    let file = PemFile::read(path).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("`{name}`: {m}")),
        other => other,
    })?;
    check(&file, kind).map_err(|m| {
        Error::Config(format!(
            "`{name}`: the TLS file `{}` {m}",
            file.path.display()
        ))
    })?;
    Ok(file)
}

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PemKind {
    /// At least one certificate (`tls_ca`, `tls_cert`).
    Certificates,
    /// A private key (`tls_key`).
    PrivateKey,
}

/// Checks that `file` holds what `kind` asks for; the error completes "the TLS file `…`".
#[cfg(feature = "tls")]
fn check(file: &PemFile, kind: PemKind) -> std::result::Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    match kind {
        PemKind::Certificates => {
            let mut count = 0;
            for cert in CertificateDer::pem_slice_iter(file.pem()) {
                cert.map_err(|e| format!("is not valid PEM: {e}"))?;
                count += 1;
            }
            if count == 0 {
                return Err("holds no certificate (expected `-----BEGIN CERTIFICATE-----`)".into());
            }
        }
        PemKind::PrivateKey => {
            PrivateKeyDer::from_pem_slice(file.pem())
                .map_err(|e| format!("holds no private key in PEM: {e}"))?;
        }
    }
    Ok(())
}

/// Without the `tls` feature, URLs with TLS are refused before any file is read.
#[cfg(not(feature = "tls"))]
fn check(_file: &PemFile, _kind: PemKind) -> std::result::Result<(), String> {
    Ok(())
}

/// Checks the whole set once the URL is parsed: redis-rs parses the certificates into a
/// trust store and a client identity here, as it will for each connection, so that
/// whatever it would refuse is refused now.
#[cfg(feature = "tls")]
pub(crate) fn validate(options: &TlsOptions) -> Result<()> {
    if options.ca.is_none() && options.client.is_none() {
        return Ok(());
    }
    let probe = redis::ConnectionAddr::TcpTls {
        host: "localhost".to_string(),
        port: 6379,
        insecure: options.insecure,
        tls_params: None,
    };
    redis::Client::build_with_tls(probe, certificates(options))
        .map(|_| ())
        .map_err(|e| Error::Config(format!("TLS settings ({}): {e}", describe(options))))
}

/// A client for `info` (a `TcpTls` address) with the certificates of `options`.
#[cfg(feature = "tls")]
pub(crate) fn client(info: redis::ConnectionInfo, options: &TlsOptions) -> Result<redis::Client> {
    install_crypto_provider();
    if options.ca.is_none() && options.client.is_none() {
        return redis::Client::open(info).map_err(|e| Error::Config(e.to_string()));
    }
    redis::Client::build_with_tls(info, certificates(options))
        .map_err(|e| Error::Config(format!("TLS settings ({}): {e}", describe(options))))
}

/// Without the `tls` feature: only reachable with a hand-made `DeploymentUrl`.
#[cfg(not(feature = "tls"))]
pub(crate) fn client(_info: redis::ConnectionInfo, _options: &TlsOptions) -> Result<redis::Client> {
    Err(Error::Config(
        "TLS was asked for, but partcache-redis was built without its `tls` feature".into(),
    ))
}

/// redis-rs builds its rustls configuration with `ClientConfig::builder()`, which takes
/// the process-wide default crypto provider and panics when there is none and the rustls
/// crate features name two (another crate of the application enabling `aws-lc-rs`
/// besides our `ring`). Installing ring's provider when none is installed yet avoids that
/// panic and leaves an application's own choice alone.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only if another thread installed one meanwhile: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(feature = "tls")]
fn certificates(options: &TlsOptions) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: options
            .client
            .as_ref()
            .map(|client| redis::ClientTlsConfig {
                client_cert: client.cert.pem().to_vec(),
                client_key: client.key.pem().to_vec(),
            }),
        root_cert: options.ca.as_ref().map(|ca| ca.pem().to_vec()),
    }
}

/// The files of `options`, for messages.
#[cfg(feature = "tls")]
fn describe(options: &TlsOptions) -> String {
    let mut parts = Vec::new();
    if let Some(ca) = &options.ca {
        parts.push(format!("tls_ca `{}`", ca.path().display()));
    }
    if let Some(client) = &options.client {
        parts.push(format!("tls_cert `{}`", client.cert.path().display()));
        parts.push(format!("tls_key `{}`", client.key.path().display()));
    }
    parts.join(", ")
}

/// The TLS error behind a failed connection, if the handshake (or the alert a server
/// sends right after it, such as "certificate required") failed: an untrusted or
/// misnamed certificate, a peer that does not speak TLS. Retrying cannot change these.
#[cfg(feature = "tls")]
pub(crate) fn handshake_error(e: &redis::RedisError) -> Option<rustls::Error> {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(error) = source {
        // redis-rs keeps an I/O error as an `Arc<dyn Error>`, which is its source.
        let error: &(dyn std::error::Error + 'static) =
            match error.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>() {
                Some(shared) => &**shared,
                None => error,
            };
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.clone());
        }
        source = error.source();
    }
    None
}
