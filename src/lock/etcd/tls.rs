//! TLS for https:// endpoints, as etcdctl does it: the server's certificate
//! checked against --cacert (or the system's CA certificates), a client
//! certificate and key where the cluster asks for one (--cert, --key), and
//! no check at all only when asked (--insecure-skip-tls-verify). rustls on
//! ring does the work.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};

/// The TLS files and choices of the command line (or environment).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// Whether any TLS option was given: then an endpoint without a scheme
    /// is https, as etcdctl takes it.
    pub fn any(&self) -> bool {
        self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure_skip_verify
    }

    /// Whether the options go together: a client certificate comes with
    /// its key.
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err("--cert needs --key (the certificate's private key)".into()),
            (None, Some(_)) => Err("--key needs --cert (the client certificate)".into()),
            _ => Ok(()),
        }
    }

    /// The client configuration these options make; Err says which file
    /// could not be used, and why.
    pub fn config(&self) -> Result<Arc<ClientConfig>, String> {
        self.check()?;
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS: {err}"))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert, "--cert")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                    format!("cannot read the key in --key {}: {err}", key.display())
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| format!("--cert and --key do not go together: {err}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The CAs that sign the servers' certificates: --cacert's, or the
    /// system's.
    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        let certificates = match &self.cacert {
            Some(cacert) => read_certificates(cacert, "--cacert")?,
            None => rustls_native_certs::load_native_certs().certs,
        };
        let (added, _) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            return Err(match &self.cacert {
                Some(cacert) => format!("--cacert {}: no CA certificate in it", cacert.display()),
                None => "no CA certificates on this system: give --cacert".into(),
            });
        }
        Ok(roots)
    }
}

fn read_certificates(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |err: &dyn std::fmt::Display| {
        format!(
            "cannot read the certificates in {option} {}: {err}",
            path.display()
        )
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|err| unreadable(&err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unreadable(&err))?;
    if certificates.is_empty() {
        return Err(unreadable(&"no PEM certificate in it"));
    }
    Ok(certificates)
}

/// A connection to an endpoint, plain or in TLS.
pub enum Connection {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Connection {
    /// `socket`, in TLS with `config` for `host`.
    pub fn tls(
        socket: TcpStream,
        config: &Arc<ClientConfig>,
        host: &str,
    ) -> Result<Connection, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("'{host}' is not a name a certificate can be for"))?;
        let session = ClientConnection::new(config.clone(), name).map_err(|err| err.to_string())?;
        Ok(Connection::Tls(Box::new(StreamOwned::new(session, socket))))
    }

    /// The TCP socket under it, for timeouts.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Connection::Plain(socket) => socket,
            Connection::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(socket) => socket.read(buffer),
            Connection::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(socket) => socket.write(buffer),
            Connection::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Plain(socket) => socket.flush(),
            Connection::Tls(stream) => stream.flush(),
        }
    }
}

/// What went wrong in TLS, in words that say what to check, if `err` is a
/// TLS failure.
pub fn failure(err: &std::io::Error) -> Option<String> {
    use rustls::{AlertDescription, CertificateError, Error};

    let tls = err.get_ref()?.downcast_ref::<Error>()?;
    let hint = match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "its certificate is not signed by a CA in --cacert (or the system's)"
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "its certificate is not for the endpoint's host name or address",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "its certificate has expired",
        Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown,
        ) => {
            "it refused the client certificate: none was given (--cert, --key), \
             or it is not one it accepts (expired, or not signed by its CA)"
        }
        _ => "",
    };
    Some(match hint {
        "" => format!("TLS: {tls}"),
        hint => format!("TLS: {hint} ({tls})"),
    })
}

/// --insecure-skip-tls-verify: any certificate passes, though handshake
/// signatures are still checked (they prove nothing without the check of
/// the certificate, but keep the handshake well formed).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
