//! Throwaway TLS material for test servers, made with the `openssl` CLI: a CA, a server
//! certificate for `127.0.0.1` / `localhost` signed by it, and for mutual TLS a client
//! certificate signed by it too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::error::{HarnessError, Result};

/// Whether a TLS server asks its clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Clients verify the server; the server asks for no client certificate
    /// (`--tls-auth-clients no`).
    ServerAuth,
    /// Mutual TLS: clients must present a certificate the CA signed
    /// (`--tls-auth-clients yes`).
    Mutual,
}

/// A CA, a server certificate and (for [`TlsMode::Mutual`]) a client certificate, in
/// their own temporary directory, removed on drop.
///
/// Keys are P-256 (fast to make); certificates are valid for two days. The server
/// certificate names `IP:127.0.0.1` and `DNS:localhost` and is good for both server and
/// client authentication, since a cluster node presents it on the cluster bus and on
/// replication links too (`--tls-cluster yes`, `--tls-replication yes`).
pub struct TlsFiles {
    mode: TlsMode,
    ca_pem: Vec<u8>,
    client_pem: Option<(Vec<u8>, Vec<u8>)>,
    // Dropped last.
    dir: TempDir,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("mode", &self.mode)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TlsFiles {
    /// Makes a fresh CA and the certificates `mode` needs (about 50 ms of `openssl`).
    /// Every call makes a new CA, unrelated to any other.
    pub fn generate(mode: TlsMode) -> Result<TlsFiles> {
        let dir = crate::scratch::scratch_dir("tls")
            .map_err(|e| HarnessError::io("creating a temp dir for TLS files", e))?;
        let d = dir.path();
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|t| t.as_nanos())
            .unwrap_or(0);
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                &format!("/CN=partcache test CA {nonce:x}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        sign(
            d,
            "server",
            "/CN=127.0.0.1",
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
            nonce,
        )?;
        if mode == TlsMode::Mutual {
            sign(
                d,
                "client",
                "/CN=partcache test client",
                "extendedKeyUsage=clientAuth\n",
                nonce + 1,
            )?;
        }
        let read = |name: &str| {
            std::fs::read(d.join(name)).map_err(|e| HarnessError::io(format!("reading {name}"), e))
        };
        let ca_pem = read("ca.crt")?;
        let client_pem = match mode {
            TlsMode::Mutual => Some((read("client.crt")?, read("client.key")?)),
            TlsMode::ServerAuth => None,
        };
        trace!("TLS files ({mode:?}) in {}", d.display());
        Ok(TlsFiles {
            mode,
            ca_pem,
            client_pem,
            dir,
        })
    }

    /// Whether servers using these files ask for client certificates.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM) that signed the others.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The client certificate (PEM), made for [`TlsMode::Mutual`] only.
    pub fn client_cert(&self) -> Option<PathBuf> {
        (self.mode == TlsMode::Mutual).then(|| self.dir.path().join("client.crt"))
    }

    /// The client's private key (PEM), made for [`TlsMode::Mutual`] only.
    pub fn client_key(&self) -> Option<PathBuf> {
        (self.mode == TlsMode::Mutual).then(|| self.dir.path().join("client.key"))
    }

    /// The partcache URL parameters that trust the CA and, for [`TlsMode::Mutual`],
    /// present the client certificate: `tls_ca=…[&tls_cert=…&tls_key=…]` (paths
    /// percent-encoded).
    pub fn url_params(&self) -> String {
        let mut params = format!("tls_ca={}", encode(&self.ca_cert()));
        if let (Some(cert), Some(key)) = (self.client_cert(), self.client_key()) {
            params.push_str(&format!(
                "&tls_cert={}&tls_key={}",
                encode(&cert),
                encode(&key)
            ));
        }
        params
    }

    /// Server arguments: TLS only on `port` (`--port 0`), with the cluster bus and
    /// replication over TLS for cluster nodes.
    pub(crate) fn server_args(&self, port: u16, cluster: bool) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut args = vec![
            "--port".to_string(),
            "0".to_string(),
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            path(self.server_cert()),
            "--tls-key-file".to_string(),
            path(self.server_key()),
            "--tls-ca-cert-file".to_string(),
            path(self.ca_cert()),
            "--tls-auth-clients".to_string(),
            match self.mode {
                TlsMode::Mutual => "yes",
                TlsMode::ServerAuth => "no",
            }
            .to_string(),
        ];
        if cluster {
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_string));
        }
        args
    }

    /// `redis-cli` arguments for a connection to a server using these files.
    pub(crate) fn cli_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut args = vec![
            "--tls".to_string(),
            "--cacert".to_string(),
            path(self.ca_cert()),
        ];
        if let (Some(cert), Some(key)) = (self.client_cert(), self.client_key()) {
            args.extend([
                "--cert".to_string(),
                path(cert),
                "--key".to_string(),
                path(key),
            ]);
        }
        args
    }

    /// The certificates a redis-rs client needs for a server using these files.
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_pem
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: Some(self.ca_pem.clone()),
        }
    }
}

/// redis-rs takes rustls' process-wide crypto provider; install ring's if there is none
/// (rustls cannot pick one by itself when its crate features name two).
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Makes `<name>.key` and `<name>.crt` for `subject`, signed by the CA in `dir`, with
/// the extensions `ext` (plus `CA:FALSE` and `digitalSignature`).
fn sign(dir: &Path, name: &str, subject: &str, ext: &str, serial: u128) -> Result<()> {
    let (key, csr, crt, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&extfile),
        format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
    )
    .map_err(|e| HarnessError::io(format!("writing {extfile}"), e))?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("0x{:x}", serial & ((1 << 120) - 1)),
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ],
    )
}

/// Runs `openssl <args>` in `dir`; its output goes into the error when it fails.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            HarnessError::io(
                "running `openssl` (install it: `apt-get install -y openssl`, or run scripts/servers.sh)",
                e,
            )
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: format!("openssl {}", args.join(" ")),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Percent-encodes a path for a URL query value (everything but unreserved characters
/// and `/`).
fn encode(path: &Path) -> String {
    let mut out = String::new();
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
