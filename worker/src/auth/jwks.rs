//! Keys from an issuer's JWKS document: fetched over HTTP(S) with a timeout, cached for
//! `jwks_cache_seconds`, fetched again early when a token names an unknown `kid` — but never
//! more often than `jwks_min_refresh_seconds`, and one fetch at a time.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use tracing::{info, warn};

/// A public key and the algorithms it may verify.
pub(super) struct VerifyKey {
    pub(super) kid: Option<String>,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) key: DecodingKey,
}

/// Largest JWKS document read.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// Most keys kept from one document.
const MAX_KEYS: usize = 64;

/// One issuer's key set and its cache.
pub(super) struct Jwks {
    url: Uri,
    /// The URL for logs (no query string).
    shown: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
    cache_for: Duration,
    min_interval: Duration,
    state: RwLock<State>,
    /// Held for the length of a fetch, so concurrent refreshes make one request.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    keys: Arc<Vec<VerifyKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// What a call to [`Jwks::refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refresh {
    /// Fetched; this many usable keys.
    Fetched(usize),
    /// The fetch failed; the old keys stay.
    Failed(String),
    /// A fetch was attempted less than the minimum interval ago (perhaps by a concurrent
    /// caller, whose keys are now in place).
    TooSoon,
}

impl Jwks {
    /// Builds the client; reads the system CA store for `https://`.
    pub(super) fn new(url: &str, timeout: f64, cache_for: f64, min_interval: f64) -> Result<Jwks, String> {
        super::settings::check_fetch_url(url)?;
        // `[auth]` validation bounds these; a value that still does not fit is refused here, by
        // name, rather than panicking inside `Duration`.
        let seconds = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|_| format!("{name} = {v} is not a number of seconds"))
        };
        let timeout = seconds("jwks_timeout", timeout)?;
        let cache_for = seconds("jwks_cache_seconds", cache_for)?;
        let min_interval = seconds("jwks_min_refresh_seconds", min_interval)?;
        let url: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let shown = format!(
            "{}://{}{}",
            url.scheme_str().unwrap_or("https"),
            url.authority().map_or("", |a| a.as_str()),
            url.path()
        );
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = if url.scheme_str() == Some("https") {
            tls.with_provider_and_native_roots(provider)
                .map_err(|e| {
                    format!(
                        "no usable CA certificates to fetch {shown} ({e}); install the system CA \
                         bundle (ca-certificates) or point SSL_CERT_FILE at one"
                    )
                })?
                .https_only()
        } else {
            // Loopback http:// only (checked above); TLS is never used.
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            tls.with_tls_config(config).https_or_http()
        };
        // Fetches are minutes apart: no pooled connections (which would also tie the client
        // to the runtime that opened them).
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(tls.enable_http1().wrap_connector(http));
        Ok(Jwks {
            url,
            shown,
            client,
            timeout,
            cache_for,
            min_interval,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keys in hand.
    pub(super) fn keys(&self) -> Arc<Vec<VerifyKey>> {
        Arc::clone(&self.state().keys)
    }

    /// Whether a fetch ever succeeded.
    pub(super) fn ever_fetched(&self) -> bool {
        self.state().fetched_at.is_some()
    }

    /// Whether the keys are older than the cache time (or were never fetched).
    pub(super) fn expired(&self) -> bool {
        self.state().fetched_at.is_none_or(|t| t.elapsed() >= self.cache_for)
    }

    /// Fetches the document again, unless a fetch was attempted less than the minimum
    /// interval ago. Failures keep the old keys.
    pub(super) async fn refresh(&self) -> Refresh {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if state.last_attempt.is_some_and(|t| t.elapsed() < self.min_interval) {
                return Refresh::TooSoon;
            }
            state.last_attempt = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(keys) => {
                let n = keys.len();
                let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                info!(event = "jwks_fetched", url = %self.shown, keys = n, "fetched {n} signing keys from {}", self.shown);
                Refresh::Fetched(n)
            }
            Err(e) => {
                warn!(event = "jwks_fetch_failed", url = %self.shown, error = %e, "cannot fetch the JWKS {}: {e}", self.shown);
                Refresh::Failed(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, String> {
        let req = Request::get(self.url.clone())
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .header(USER_AGENT, concat!("awswhitelist/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| root_cause(&e))?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| format!("cannot read the document: {e}"))?;
            Ok(body.to_bytes())
        };
        let body = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        parse(&body)
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if std::ptr::addr_eq(cause, e) {
        e.to_string()
    } else {
        format!("{e}: {cause}")
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable signing keys of a JWKS document; unusable entries are skipped.
pub(super) fn parse(body: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document (JSON with \"keys\"): {e}"))?;
    let keys: Vec<VerifyKey> = doc
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| key_from_jwk(&jwk))
        .take(MAX_KEYS)
        .collect();
    if keys.is_empty() {
        return Err("the document has no usable signing key (RSA, EC P-256/P-384, Ed25519)".into());
    }
    Ok(keys)
}

/// A JWK as a verification key, honouring its `use`, `key_ops` and `alg`. Symmetric (`oct`)
/// keys are never taken from a JWKS.
pub(super) fn key_from_jwk(jwk: &Jwk) -> Option<VerifyKey> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    if jwk.common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    let (family, key): (&[Algorithm], DecodingKey) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            (AlgorithmFamily::Rsa.algorithms(), DecodingKey::from_rsa_components(&p.n, &p.e).ok()?)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let algs: &[Algorithm] = match p.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return None,
            };
            (algs, DecodingKey::from_ec_components(&p.x, &p.y).ok()?)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (&[Algorithm::EdDSA], DecodingKey::from_ed_components(&p.x).ok()?)
        }
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family.to_vec(),
        Some(declared) => {
            let alg = Algorithm::try_from(declared).ok()?;
            if !family.contains(&alg) {
                return None;
            }
            vec![alg]
        }
    };
    Some(VerifyKey { kid: jwk.common.key_id.clone(), algorithms, key })
}
