//! The upstream hop: hyper-util's pooled client over hyper-rustls, or a
//! test's stand-in.
//!
//! - TLS by rustls (ring, the Mozilla roots of `webpki-roots`), HTTP/1.1
//!   and HTTP/2 chosen by ALPN; plain `http://` for local upstreams.
//! - `TCP_NODELAY`, a connect timeout, idle pool limits
//!   (`upstream.pool_idle_timeout_ms`, `pool_max_idle`).
//! - Redirects are never followed (hyper does not), system proxy variables
//!   are never read; `upstream.proxy` is honoured: `http://` and `https://`
//!   proxies by an HTTP `CONNECT` tunnel (hyper-util's `Tunnel`), `socks5://`
//!   by hyper-util's `SocksV5` (names resolved by the proxy); credentials in
//!   the proxy URL go as `Proxy-Authorization: Basic` or SOCKS5 user/password.
//!
//! A test builds a [`Hop`] from any function ([`Hop::service`]), so the
//! stages above the hop are tested without sockets.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::future::BoxFuture;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;

/// What a hop answers: the response head with a streaming body.
pub type HopResponse = http::Response<Body>;

/// Why a hop gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    /// No connection could be made (refused, unreachable, DNS, TLS, proxy).
    #[error("connect failed")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed after the connection was made (reset, bad
    /// answer, the request body failed).
    #[error("exchange failed")]
    Exchange(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A function standing in for the upstream (tests).
type Stand = Arc<
    dyn Fn(http::Request<Body>) -> BoxFuture<'static, Result<HopResponse, HopError>> + Send + Sync,
>;

/// The upstream hop.
#[derive(Clone)]
pub struct Hop(Kind);

#[derive(Clone)]
enum Kind {
    Direct(Client<HttpsConnector<HttpConnector>, Body>),
    Tunnel(Client<HttpsConnector<Tunnel<HttpsConnector<HttpConnector>>>, Body>),
    Socks(Client<HttpsConnector<SocksV5<HttpConnector>>, Body>),
    Stand(Stand),
}

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Kind::Direct(_) => "direct",
            Kind::Tunnel(_) => "tunnel",
            Kind::Socks(_) => "socks5",
            Kind::Stand(_) => "stand-in",
        };
        f.debug_tuple("Hop").field(&kind).finish()
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The TLS settings were refused.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// `upstream.proxy` is not a usable proxy address.
    #[error("upstream.proxy: {0}")]
    Proxy(String),
}

impl Hop {
    /// The pooled client `config` describes.
    ///
    /// # Errors
    /// The TLS settings or the proxy address are refused.
    pub fn new(config: &UpstreamConfig) -> Result<Self, BuildError> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .pool_max_idle_per_host(config.pool_max_idle);
        let kind = match &config.proxy {
            None => Kind::Direct(builder.build(tls(tcp)?)),
            Some(proxy) => {
                let (uri, credentials) = proxy_parts(proxy)?;
                match proxy.scheme() {
                    "socks5" => {
                        let mut socks = SocksV5::new(uri, tcp);
                        if let Some((user, password)) = credentials {
                            socks = socks.with_auth(user, password);
                        }
                        Kind::Socks(builder.build(tls(socks)?))
                    }
                    "http" | "https" => {
                        let mut tunnel = Tunnel::new(uri, tls(tcp)?);
                        if let Some((user, password)) = credentials {
                            tunnel = tunnel.with_auth(basic(&user, &password)?);
                        }
                        Kind::Tunnel(builder.build(tls(tunnel)?))
                    }
                    other => return Err(BuildError::Proxy(format!("unknown scheme {other:?}"))),
                }
            }
        };
        Ok(Self(kind))
    }

    /// A hop that answers with `serve`: a test's upstream without sockets.
    pub fn service<F, Fut>(serve: F) -> Self
    where
        F: Fn(http::Request<Body>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HopResponse, HopError>> + Send + 'static,
    {
        let stand: Stand = Arc::new(move |request| Box::pin(serve(request)));
        Self(Kind::Stand(stand))
    }

    /// Sends `request` (an absolute URI) and waits for the response head.
    ///
    /// # Errors
    /// [`HopError`]: no connection, or the exchange failed.
    pub async fn send(&self, request: http::Request<Body>) -> Result<HopResponse, HopError> {
        let sent = match &self.0 {
            Kind::Direct(client) => client.request(request),
            Kind::Tunnel(client) => client.request(with_port(request)),
            Kind::Socks(client) => client.request(with_port(request)),
            Kind::Stand(stand) => return stand(request).await,
        };
        match sent.await {
            Ok(response) => Ok(response.map(Body::new)),
            Err(error) if error.is_connect() => Err(HopError::Connect(Box::new(error))),
            Err(error) => Err(HopError::Exchange(Box::new(error))),
        }
    }
}

/// `request` with its URI's port written out: hyper-util's proxy
/// connectors take a missing port for 443 whatever the scheme.
fn with_port(mut request: http::Request<Body>) -> http::Request<Body> {
    let uri = request.uri();
    if uri.port().is_some() {
        return request;
    }
    let (Some(scheme), Some(host)) = (uri.scheme(), uri.host()) else {
        return request;
    };
    let port = if *scheme == http::uri::Scheme::HTTP {
        80
    } else {
        443
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if let Ok(with_port) = http::Uri::try_from(format!("{scheme}://{host}:{port}{path}")) {
        *request.uri_mut() = with_port;
    }
    request
}

/// The proxy's address without its credentials, and the credentials
/// (percent-decoded) if the URL carries a user name.
fn proxy_parts(proxy: &url::Url) -> Result<(http::Uri, Option<(String, String)>), BuildError> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| BuildError::Proxy("credentials are not UTF-8".into()))
    };
    let credentials = match proxy.username() {
        "" => None,
        user => Some((decode(user)?, decode(proxy.password().unwrap_or(""))?)),
    };
    let mut bare = proxy.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let uri = bare
        .as_str()
        .parse()
        .map_err(|e: http::uri::InvalidUri| BuildError::Proxy(e.to_string()))?;
    Ok((uri, credentials))
}

/// `Proxy-Authorization: Basic …` for `user` and `password`.
fn basic(user: &str, password: &str) -> Result<http::HeaderValue, BuildError> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = http::HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| BuildError::Proxy("credentials do not fit a header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Wraps `connector` in rustls (the ring provider, the Mozilla roots);
/// `http://` allowed; HTTP/2 when the server offers it by ALPN.
fn tls<H>(connector: H) -> Result<HttpsConnector<H>, BuildError> {
    let provider = rustls::crypto::ring::default_provider();
    Ok(HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)?
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_are_taken_out_of_the_address() {
        let proxy = url::Url::parse("http://team%40corp:s3cr%3At@127.0.0.1:3128").unwrap();
        let (uri, credentials) = proxy_parts(&proxy).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:3128/");
        assert_eq!(
            credentials,
            Some(("team@corp".to_string(), "s3cr:t".to_string()))
        );
        let value = basic("team@corp", "s3cr:t").unwrap();
        assert_eq!(value, "Basic dGVhbUBjb3JwOnMzY3I6dA==");
        let bare = url::Url::parse("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(proxy_parts(&bare).unwrap().1, None);
    }

    #[test]
    fn a_proxied_request_names_its_port() {
        let port = |uri: &str| {
            let request = http::Request::builder()
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            with_port(request).uri().to_string()
        };
        assert_eq!(
            port("http://up.internal/api/v1/x?q=1"),
            "http://up.internal:80/api/v1/x?q=1"
        );
        assert_eq!(
            port("https://api.castari.com/api/v1/x"),
            "https://api.castari.com:443/api/v1/x"
        );
        assert_eq!(port("http://127.0.0.1:9/a"), "http://127.0.0.1:9/a");
    }
}
