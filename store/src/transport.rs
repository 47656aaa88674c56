//! The HTTP transport object_store's S3 client runs on: hyper 1 with rustls on ring.
//!
//! Why not object_store's built-in reqwest transport: with TLS it needs either the aws-lc-rs
//! provider (a C build that wants cmake) or reqwest's `rustls-no-provider`, which — features
//! being unified across a workspace build — would make every other `reqwest::Client` in the
//! workspace panic unless a process-wide provider had been installed first. Here the ring
//! provider is handed to this connector alone, and nothing global changes.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::TokioExecutor;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};

/// Makes one [`Transport`] per S3 client.
#[derive(Debug)]
pub(crate) struct Connector {
    /// Whether plain `http://` endpoints are allowed (MinIO or moto without TLS); otherwise
    /// only https is spoken.
    pub allow_http: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut tcp = TcpConnector::new();
        // The TLS layer above decides the scheme.
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(self.connect_timeout));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The system's roots (and SSL_CERT_FILE / SSL_CERT_DIR), so a private CA in front of an
        // in-cluster MinIO works once it is in the image or mounted.
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "failed to load the system's CA certificates for TLS: {e} (install \
                     ca-certificates in the image, or point SSL_CERT_FILE at a bundle)"
                )
                .into(),
            })?;
        let tls = if self.allow_http {
            tls.https_or_http()
        } else {
            tls.https_only()
        };
        let connector = tls.enable_http1().wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient::new(Transport {
            client,
            request_timeout: self.request_timeout,
        }))
    }
}

#[derive(Debug)]
struct Transport {
    client: Client<HttpsConnector<TcpConnector>, HttpRequestBody>,
    /// Until the response headers arrive; object_store retries timeouts of idempotent requests.
    request_timeout: Duration,
}

#[async_trait::async_trait]
impl HttpService for Transport {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = tokio::time::timeout(self.request_timeout, self.client.request(request))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Timeout, e))?
            .map_err(|e| {
                // Connection failures are retried by object_store; so are failed requests.
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| {
            let kind = if e.is_timeout() {
                HttpErrorKind::Timeout
            } else {
                HttpErrorKind::Interrupted
            };
            HttpError::new(kind, e)
        });
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}
