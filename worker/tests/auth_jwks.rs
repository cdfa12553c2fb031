//! JWKS served by a tiny HTTP server on 127.0.0.1, with a key rotation mid-test: keys are
//! fetched lazily and cached, an unknown `kid` triggers one refetch, a key gone from the set
//! stops working, and a flood of made-up `kid`s cannot make the server refetch more often than
//! `jwks_min_refresh_seconds` allows (counted at the server).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use worker::auth::{AuthSettings, Authenticator, Denial, InvalidToken};

const AUD: &str = "https://mcp.example.com/mcp";
const ISS: &str = "https://login.example.com/";

/// Serves whatever `body` holds, counting requests.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
}

impl JwksServer {
    fn start(body: Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(Mutex::new(body.to_string()));
        let (h, b) = (Arc::clone(&hits), Arc::clone(&body));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let body = b.lock().unwrap().clone();
                h.fetch_add(1, Ordering::SeqCst);
                answer(stream, &body);
            }
        });
        JwksServer { url, hits, body }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn serve(&self, body: Value) {
        *self.body.lock().unwrap() = body.to_string();
    }
}

fn answer(mut stream: TcpStream, body: &str) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    assert!(head.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn rsa_key() -> EncodingKey {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = STANDARD.encode(pair.as_der().unwrap().as_ref());
    EncodingKey::from_rsa_pem(
        format!("-----BEGIN PRIVATE KEY-----\n{der}\n-----END PRIVATE KEY-----\n").as_bytes(),
    )
    .unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    serde_json::to_value(jwk).unwrap()
}

fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

fn token(key: &EncodingKey, alg: Algorithm, kid: &str) -> String {
    let now = get_current_timestamp();
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    let claims = json!({"sub": "alice", "iss": ISS, "aud": AUD, "scope": "whitelist:read", "iat": now, "exp": now + 300});
    encode(&header, &claims, key).unwrap()
}

fn settings(url: &str, cache: f64, min_refresh: f64) -> AuthSettings {
    AuthSettings {
        enabled: true,
        issuer: Some(ISS.to_string()),
        audience: vec![AUD.to_string()],
        jwks_url: Some(url.to_string()),
        jwks_cache_seconds: cache,
        jwks_min_refresh_seconds: min_refresh,
        jwks_timeout: 2.0,
        ..AuthSettings::default()
    }
}

async fn check(auth: &Authenticator, token: &str) -> Result<String, Denial> {
    auth.authenticate(Some(&format!("Bearer {token}"))).await.map(|p| p.subject.clone())
}

/// `n` tokens with made-up kids (signed ahead, so the timed part is only their checking).
fn random_kids(key: &EncodingKey, n: usize, round: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Bearer {}", token(key, Algorithm::RS256, &format!("random-{round}-{i}"))))
        .collect()
}

/// Checks them all at once; every one must fail as an unknown key.
async fn flood(auth: &Arc<Authenticator>, headers: Vec<String>) {
    let mut set = JoinSet::new();
    for header in headers {
        let auth = Arc::clone(auth);
        set.spawn(async move { auth.authenticate(Some(&header)).await });
    }
    while let Some(result) = set.join_next().await {
        assert_eq!(result.unwrap(), Err(Denial::InvalidToken(InvalidToken::UnknownKey)));
    }
}

#[tokio::test]
async fn rotation_refetch_and_flood() {
    // Generous intervals: the checks between two fetches must fit in MIN_REFRESH on a busy CI.
    const MIN_REFRESH: f64 = 1.5;
    let past_min_refresh = Duration::from_secs_f64(MIN_REFRESH + 0.1);
    let (a, b) = (rsa_key(), rsa_key());
    let floods: Vec<Vec<String>> = (0..3).map(|round| random_kids(&b, 50, round)).collect();
    let [first, second, third]: [Vec<String>; 3] = floods.try_into().unwrap();
    let (token_a, token_b) = (token(&a, Algorithm::RS256, "A"), token(&b, Algorithm::RS256, "B"));
    let server = JwksServer::start(jwks(&[jwk(&a, Algorithm::RS256, "A")]));
    let auth = Arc::new(Authenticator::load(&settings(&server.url, 3600.0, MIN_REFRESH)).unwrap());
    assert_eq!(server.hits(), 0, "fetched lazily (or by refresh_jwks at boot)");

    assert_eq!(check(&auth, &token_a).await, Ok("alice".into()));
    assert_eq!(check(&auth, &token_a).await, Ok("alice".into()));
    assert_eq!(server.hits(), 1, "cached");

    // Rotation: the issuer now publishes only B.
    server.serve(jwks(&[jwk(&b, Algorithm::RS256, "B")]));
    tokio::time::sleep(past_min_refresh).await;
    assert_eq!(check(&auth, &token_b).await, Ok("alice".into()));
    assert_eq!(server.hits(), 2, "the unknown kid B made exactly one refetch");
    assert_eq!(
        check(&auth, &token_a).await,
        Err(Denial::InvalidToken(InvalidToken::UnknownKey)),
        "A is gone from the refetched set"
    );
    assert_eq!(server.hits(), 2, "within the minimum interval: no refetch for A");

    // A flood of random kids right after a fetch: no fetch at all.
    flood(&auth, first).await;
    assert_eq!(server.hits(), 2);
    // Once the interval has passed: one fetch for the whole flood, not one per kid.
    tokio::time::sleep(past_min_refresh).await;
    flood(&auth, second).await;
    assert_eq!(server.hits(), 3);
    flood(&auth, third).await;
    assert_eq!(server.hits(), 3);
    assert_eq!(check(&auth, &token_b).await, Ok("alice".into()));
    assert_eq!(check(&auth, &token_a).await, Err(Denial::InvalidToken(InvalidToken::UnknownKey)));
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn cache_expiry_drops_rotated_keys() {
    let (a, b) = (rsa_key(), rsa_key());
    let server = JwksServer::start(jwks(&[jwk(&a, Algorithm::RS256, "A")]));
    let auth = Authenticator::load(&settings(&server.url, 1.0, 0.9)).unwrap();
    assert_eq!(auth.refresh_jwks().await, Ok(1), "warmed at boot");
    assert_eq!(server.hits(), 1);
    server.serve(jwks(&[jwk(&b, Algorithm::RS256, "B")]));
    assert_eq!(check(&auth, &token(&a, Algorithm::RS256, "A")).await, Ok("alice".into()), "still cached");
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        check(&auth, &token(&a, Algorithm::RS256, "A")).await,
        Err(Denial::InvalidToken(InvalidToken::UnknownKey)),
        "the expired cache was refetched and A is gone"
    );
    assert_eq!(server.hits(), 2);
    assert_eq!(check(&auth, &token(&b, Algorithm::RS256, "B")).await, Ok("alice".into()));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn key_types_use_and_alg() {
    let rsa = rsa_key();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let ec = EncodingKey::from_ec_der(
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref(),
    );
    let ed = EncodingKey::from_ed_der(Ed25519KeyPair::generate().unwrap().to_pkcs8v1().unwrap().as_ref());
    let mut enc = jwk(&rsa, Algorithm::RS256, "R-enc");
    enc["use"] = json!("enc");
    let mut sig = jwk(&rsa, Algorithm::RS256, "R-sig");
    sig["use"] = json!("sig");
    let mut any_rsa = jwk(&rsa, Algorithm::RS256, "R-any");
    any_rsa.as_object_mut().unwrap().remove("alg");
    let server = JwksServer::start(jwks(&[
        jwk(&ec, Algorithm::ES256, "E"),
        jwk(&ed, Algorithm::EdDSA, "D"),
        enc,
        sig,
        any_rsa,
        json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "H"}),
    ]));
    let auth = Authenticator::load(&settings(&server.url, 3600.0, 60.0)).unwrap();
    assert_eq!(check(&auth, &token(&ec, Algorithm::ES256, "E")).await, Ok("alice".into()));
    assert_eq!(check(&auth, &token(&ed, Algorithm::EdDSA, "D")).await, Ok("alice".into()));
    assert_eq!(check(&auth, &token(&rsa, Algorithm::RS256, "R-sig")).await, Ok("alice".into()));
    assert_eq!(
        check(&auth, &token(&rsa, Algorithm::PS256, "R-sig")).await,
        Err(Denial::InvalidToken(InvalidToken::AlgorithmNotAccepted("PS256".into()))),
        "the JWK's alg pins RS256"
    );
    assert_eq!(check(&auth, &token(&rsa, Algorithm::PS256, "R-any")).await, Ok("alice".into()));
    assert_eq!(
        check(&auth, &token(&rsa, Algorithm::RS256, "R-enc")).await,
        Err(Denial::InvalidToken(InvalidToken::UnknownKey)),
        "an encryption key never verifies"
    );
    let hs = EncodingKey::from_secret(b"secretsecretsecretsecret");
    assert_eq!(
        check(&auth, &token(&hs, Algorithm::HS256, "H")).await,
        Err(Denial::InvalidToken(InvalidToken::AlgorithmNotAccepted("HS256".into()))),
        "symmetric keys are never taken from a JWKS"
    );
    assert_eq!(
        check(&auth, &token(&ec, Algorithm::ES256, "D")).await,
        Err(Denial::InvalidToken(InvalidToken::AlgorithmNotAccepted("ES256".into())))
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn unreachable_issuer_is_unavailable_within_the_timeout() {
    // Accepts connections and never answers; keeps each one, in the order they arrived.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let url = format!("http://{addr}/jwks");
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    // How many fetches reached the server so far: connects a marker connection of our own
    // and waits until the server has accepted it. Connections are accepted in the order they
    // were made, so every fetch made before the marker was accepted before it.
    let fetches_so_far = |held: &Arc<Mutex<Vec<TcpStream>>>| -> usize {
        let marker = TcpStream::connect(addr).unwrap();
        let marker_addr = marker.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut held = held.lock().unwrap();
            if let Some(at) = held.iter().position(|s| s.peer_addr().ok() == Some(marker_addr)) {
                held.remove(at);
                return at;
            }
            drop(held);
            assert!(Instant::now() < deadline, "the server never accepted the marker connection");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let auth =
        Authenticator::load(&AuthSettings { jwks_timeout: 0.3, ..settings(&url, 300.0, 10.0) }).unwrap();
    let started = Instant::now();
    let denial = check(&auth, &token(&rsa_key(), Algorithm::RS256, "A")).await.unwrap_err();
    assert_eq!(denial, Denial::Unavailable);
    assert_eq!(denial.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(fetches_so_far(&held), 1, "the unknown kid made one fetch, which timed out");
    assert_eq!(auth.refresh_jwks().await, Ok(0), "within the minimum interval: no keys, no error");
    assert_eq!(fetches_so_far(&held), 1, "within the minimum interval nothing is fetched");

    // A port nobody listens on: connection refused, same answer.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let auth = Authenticator::load(&settings(&url, 300.0, 10.0)).unwrap();
    assert!(auth.refresh_jwks().await.is_err());
}
