//! Which SDK client a call runs with. One SDK config and EC2 client per (profile, region) is
//! built on first use and kept (the connection pool and cached AssumeRole credentials live
//! there). Per-call keys are never kept: each such call gets a throwaway client derived from
//! the cached config; the keys are checked with STS GetCallerIdentity once per
//! `per_call_cache_ttl` and remembered only as a SHA-256 hash with the time of the check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use aws_config::identity::IdentityCache;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::{AppName, Credentials, SharedCredentialsProvider};
use tokio::sync::OnceCell;

use super::errors::{from_sdk, scrub, Call, REGION_SOURCES};
use super::settings::{AwsSettings, CredentialProfile};
use crate::whitelist::{receipts, FirewallError, Keys, Scope};

/// Most cached (profile, region) configs; past that the cache starts over (they are rebuildable).
const MAX_BASES: usize = 64;
/// Most cached per-caller role sessions; past that the cache starts over.
const MAX_ROLE_SESSIONS: usize = 1024;

/// What a cached config is built for: the configured profile (or the default chain) and region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BaseKey {
    profile: Option<String>,
    region: Option<String>,
}

/// A loaded SDK config and the EC2 client made from it.
#[derive(Clone)]
struct Base {
    key: BaseKey,
    sdk: SdkConfig,
    ec2: aws_sdk_ec2::Client,
    region: String,
    /// A profile whose `role_arn` is assumed with a session name per caller (it names no
    /// `session_name` of its own): the role, and the config of the credentials that assume it.
    per_caller_role: Option<(CredentialProfile, SdkConfig)>,
}

/// An EC2 client ready for one call, with what error messages need to know about it.
pub struct Session {
    /// The client.
    pub ec2: aws_sdk_ec2::Client,
    /// The region it talks to.
    pub region: String,
    /// The endpoint override, if any.
    pub endpoint: Option<String>,
    /// The per-call access key id, to be scrubbed from error messages.
    access_key_id: Option<String>,
    /// For a change's calls (see `whitelist::receipts`): the AWS account they run in.
    pub account: Option<String>,
}

impl Session {
    /// The context of a call about `group` for error messages.
    pub fn call<'a>(&'a self, action: &'a str, group: &'a str) -> Call<'a> {
        Call { action, group, region: &self.region, endpoint: self.endpoint.as_deref() }
    }

    /// Maps an SDK failure of this session's client, never repeating per-call keys.
    pub fn fail<E, R>(&self, call: &Call<'_>, err: &aws_sdk_ec2::error::SdkError<E, R>) -> FirewallError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let mapped = from_sdk(call, err);
        match &self.access_key_id {
            Some(id) => scrub(mapped, id),
            None => mapped,
        }
    }
}

/// When per-call keys were last checked with STS, and the account they belong to.
type Verified = (Instant, Option<String>);

/// Builds, caches and hands out clients per [`Scope`].
pub struct Clients {
    settings: AwsSettings,
    bases: tokio::sync::Mutex<HashMap<BaseKey, Arc<OnceCell<Base>>>>,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    sts_verifications: AtomicU64,
    /// The account of each cached config's credentials (asked of STS once, for a change).
    accounts: Mutex<HashMap<BaseKey, String>>,
    /// Role credentials per (profile, role session name): each provider keeps its own cache.
    roles: tokio::sync::Mutex<HashMap<(BaseKey, String), SharedCredentialsProvider>>,
}

impl Clients {
    /// Nothing is loaded until the first call.
    pub fn new(settings: AwsSettings) -> Self {
        Clients {
            settings,
            bases: tokio::sync::Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            sts_verifications: AtomicU64::new(0),
            accounts: Mutex::new(HashMap::new()),
            roles: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// How many times per-call keys were checked with STS (each check is one GetCallerIdentity).
    pub fn sts_verifications(&self) -> u64 {
        self.sts_verifications.load(Ordering::Relaxed)
    }

    /// The SDK config (and EC2 client) of `scope`'s profile and region, loaded once and kept;
    /// per-call keys play no part here.
    async fn base(&self, scope: &Scope) -> Result<Base, FirewallError> {
        let refuse = |code: &str, message: String| FirewallError::Refused { code: code.to_string(), message };
        let profile = match scope.profile.as_deref() {
            None => None,
            Some(name) => Some(self.settings.profile(name).ok_or_else(|| {
                let known: Vec<&str> = self.settings.profiles.iter().map(|p| p.name.as_str()).collect();
                refuse(
                    "UnknownProfile",
                    format!(
                        "credential profile {name:?} is not configured on this server (configured: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                )
            })?),
        };
        let region = scope
            .region
            .clone()
            .or_else(|| profile.and_then(|p| p.region.clone()))
            .or_else(|| self.settings.region.clone());
        if let Some(r) = &region {
            check_region(r).map_err(|m| refuse("InvalidRegion", m))?;
        }
        let key = BaseKey { profile: profile.map(|p| p.name.clone()), region: region.clone() };
        let cell = {
            let mut bases = self.bases.lock().await;
            if bases.len() >= MAX_BASES && !bases.contains_key(&key) {
                bases.clear();
            }
            bases.entry(key.clone()).or_default().clone()
        };
        cell.get_or_try_init(|| self.load(key.clone(), profile, region.as_deref()))
            .await
            .map_err(|m| refuse("NoRegion", m))
            .cloned()
    }

    /// The SDK config `scope` (without per-call keys) runs with, and its region: for `doctor`.
    pub async fn sdk_config(&self, scope: &Scope) -> Result<(SdkConfig, String), FirewallError> {
        let base = self.base(scope).await?;
        Ok((base.sdk, base.region))
    }

    /// The client for `scope`, for a call on `group` (named in messages only).
    pub async fn session(&self, scope: &Scope, group: &str) -> Result<Session, FirewallError> {
        let refuse = |code: &str, message: String| FirewallError::Refused { code: code.to_string(), message };
        if scope.keys.is_some() && !self.settings.allow_per_call_credentials {
            return Err(refuse(
                "PerCallCredentialsDisabled",
                "per-call credentials are disabled on this server (they would pass through the \
                 assistant's context; the operator may set aws.allow_per_call_credentials = true); \
                 omit `credentials` to use the server's own AWS identity or a configured profile"
                    .into(),
            ));
        }
        let base = self.base(scope).await?;
        let endpoint = base.sdk.endpoint_url().map(str::to_string);
        let caller = receipts::caller();
        let Some(keys) = &scope.keys else {
            let (ec2, account) = match &caller {
                Some(who) => (self.on_behalf(&base, who).await?, self.account(&base).await),
                None => (base.ec2.clone(), None),
            };
            return Ok(Session { ec2, region: base.region.clone(), endpoint, access_key_id: None, account });
        };
        let creds = Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.clone(),
            keys.session_token.clone(),
            None,
            "per-call",
        );
        let sdk = base
            .sdk
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .identity_cache(IdentityCache::no_cache())
            .build();
        let mut session = Session {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            region: base.region.clone(),
            endpoint,
            access_key_id: Some(keys.access_key_id.clone()),
            account: None,
        };
        let account = self.verify(&sdk, keys, &session, group).await?;
        if let Some(who) = &caller {
            session.ec2 = with_app_name(&session.ec2, who);
            session.account = account;
        }
        Ok(session)
    }

    /// The EC2 client of a change made for `caller`: its user agent names the caller; for a
    /// profile that assumes a role without a fixed `session_name`, through a role session named
    /// after the caller (credentials kept per caller until they expire).
    async fn on_behalf(&self, base: &Base, caller: &str) -> Result<aws_sdk_ec2::Client, FirewallError> {
        let Some((profile, source)) = &base.per_caller_role else {
            return Ok(with_app_name(&base.ec2, caller));
        };
        let name = role_session_name(caller);
        let provider = {
            let mut roles = self.roles.lock().await;
            if roles.len() >= MAX_ROLE_SESSIONS {
                roles.clear();
            }
            match roles.get(&(base.key.clone(), name.clone())) {
                Some(p) => p.clone(),
                None => {
                    let arn = profile.role_arn.as_deref().unwrap_or_default();
                    let mut role = AssumeRoleProvider::builder(arn).configure(source).session_name(&name);
                    if let Some(id) = &profile.external_id {
                        role = role.external_id(id);
                    }
                    let p = SharedCredentialsProvider::new(role.build().await);
                    roles.insert((base.key.clone(), name), p.clone());
                    p
                }
            }
        };
        let sdk = base.sdk.to_builder().credentials_provider(provider).build();
        Ok(with_app_name(&aws_sdk_ec2::Client::new(&sdk), caller))
    }

    /// The account `base`'s credentials belong to, asked of STS once and kept; `None` (and a
    /// debug line) when STS cannot say: the change goes ahead, its audit entry without it.
    async fn account(&self, base: &Base) -> Option<String> {
        if let Some(a) = lock(&self.accounts).get(&base.key) {
            return Some(a.clone());
        }
        let sts = aws_sdk_sts::Client::new(&base.sdk);
        match sts.get_caller_identity().send().await {
            Ok(who) => {
                let account = who.account()?.to_string();
                lock(&self.accounts).insert(base.key.clone(), account.clone());
                Some(account)
            }
            Err(e) => {
                tracing::debug!(error = %aws_sdk_sts::error::DisplayErrorContext(&e), "no account for the audit");
                None
            }
        }
    }

    /// Loads the SDK config of a profile (or the default chain) in a region.
    async fn load(
        &self,
        key: BaseKey,
        profile: Option<&CredentialProfile>,
        region: Option<&str>,
    ) -> Result<Base, String> {
        let s = &self.settings;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(TimeoutConfig::builder().operation_timeout(s.operation_timeout()).build())
            .retry_config(RetryConfig::standard().with_max_attempts(s.max_attempts.max(1)));
        if let Some(r) = region {
            loader = loader.region(Region::new(r.to_string()));
        }
        if let Some(url) = &s.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let source = profile.and_then(|p| p.source_profile.as_deref());
        if let Some(source) = source {
            // Its region (when nothing closer names one) comes from the shared profile too.
            loader = loader.profile_name(source);
        }
        let mut sdk = loader.load().await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            format!(
                "no AWS region found; it is taken from, first match wins: {REGION_SOURCES}; set one, \
                 e.g. [aws] region = \"eu-west-1\""
            )
        })?;
        if let Some(source) = source {
            // Only that shared-config profile: the default chain would let env keys win.
            let conf = ProviderConfig::default().with_region(Some(Region::new(region.clone())));
            let provider =
                ProfileFileCredentialsProvider::builder().configure(&conf).profile_name(source).build();
            sdk = sdk.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build();
        }
        let mut per_caller_role = None;
        if let Some(p) = profile {
            if let Some(arn) = &p.role_arn {
                if p.session_name.is_none() {
                    per_caller_role = Some((p.clone(), sdk.clone()));
                }
                let mut role = AssumeRoleProvider::builder(arn).configure(&sdk);
                if let Some(id) = &p.external_id {
                    role = role.external_id(id);
                }
                if let Some(name) = &p.session_name {
                    role = role.session_name(name);
                }
                // The provider asks STS on demand; the client's identity cache keeps the
                // credentials until shortly before they expire.
                let provider = SharedCredentialsProvider::new(role.build().await);
                sdk = sdk.into_builder().credentials_provider(provider).build();
            }
        }
        tracing::debug!(profile = profile.map(|p| p.name.as_str()), region = %region, "AWS client configured");
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        Ok(Base { key, sdk, ec2, region, per_caller_role })
    }

    /// Checks per-call keys with STS unless they were checked less than the TTL ago; returns
    /// their account.
    async fn verify(
        &self,
        sdk: &SdkConfig,
        keys: &Keys,
        session: &Session,
        group: &str,
    ) -> Result<Option<String>, FirewallError> {
        let hash = key_hash(keys);
        let ttl = self.settings.per_call_cache_ttl();
        if let Some((_, account)) = lock(&self.verified).get(&hash).filter(|(at, _)| at.elapsed() < ttl) {
            return Ok(account.clone());
        }
        self.sts_verifications.fetch_add(1, Ordering::Relaxed);
        let sts = aws_sdk_sts::Client::new(sdk);
        let call = session.call("sts:GetCallerIdentity", group);
        let who = sts.get_caller_identity().send().await.map_err(|e| session.fail(&call, &e))?;
        tracing::debug!(account = who.account(), "per-call credentials verified with STS");
        let account = who.account().map(str::to_string);
        let mut verified = lock(&self.verified);
        verified.retain(|_, (at, _)| at.elapsed() < ttl);
        verified.insert(hash, (Instant::now(), account.clone()));
        Ok(account)
    }
}

/// `client` with the user agent's app name `awswl.<caller>` (AWS's characters, 50 at most),
/// so CloudTrail's `userAgent` names who a change was made for.
fn with_app_name(client: &aws_sdk_ec2::Client, caller: &str) -> aws_sdk_ec2::Client {
    let name = format!("awswl.{}", receipts::sanitized(caller, "!#$%&'*+-.^_`|~", 44));
    match AppName::new(name) {
        Ok(app) => aws_sdk_ec2::Client::from_conf(client.config().to_builder().app_name(app).build()),
        Err(_) => client.clone(),
    }
}

/// The role session name of a change made for `caller`: `awswl-<caller>` in AWS's characters
/// (`[\w+=,.@-]`), 64 at most.
fn role_session_name(caller: &str) -> String {
    format!("awswl-{}", receipts::sanitized(caller, "_+=,.@-", 58))
}

/// A lock that survives a panic elsewhere (the map stays consistent: single inserts/removes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SHA-256 over the key id, secret and token, each length-prefixed so no two triples collide.
fn key_hash(keys: &Keys) -> [u8; 32] {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    h.update(b"awswhitelist per-call keys v1");
    let token = keys.session_token.as_deref();
    for part in [Some(keys.access_key_id.as_str()), Some(keys.secret_access_key.as_str()), token] {
        match part {
            Some(p) => {
                h.update(&[1u8]);
                h.update(&(p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => h.update(&[0u8]),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// Refuses region names that cannot be AWS regions (they would each cost a cached config).
fn check_region(region: &str) -> Result<(), String> {
    let ok = (2..=32).contains(&region.len())
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("{region:?} is not an AWS region name (like eu-west-1)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(id: &str, secret: &str, token: Option<&str>) -> Keys {
        Keys {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            session_token: token.map(str::to_string),
        }
    }

    #[test]
    fn hashes_separate_every_part() {
        let a = key_hash(&keys("AKIA1", "secret", None));
        assert_eq!(a, key_hash(&keys("AKIA1", "secret", None)));
        assert_ne!(a, key_hash(&keys("AKIA1", "secreT", None)));
        assert_ne!(a, key_hash(&keys("AKIA1", "secret", Some(""))));
        assert_ne!(key_hash(&keys("AB", "C", None)), key_hash(&keys("A", "BC", None)));
    }

    #[test]
    fn caller_names_fit_aws_limits() {
        let long = "x".repeat(200);
        let name = role_session_name(&long);
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("awswl-"));
        assert_eq!(role_session_name("alice@example.com/ops"), "awswl-alice@example.com_ops");
        let client = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::Config::builder().behavior_version(BehaviorVersion::latest()).build(),
        );
        let named = with_app_name(&client, "bob smith <b@x>");
        assert_eq!(
            named.config().app_name().map(|a| a.to_string()).as_deref(),
            Some("awswl.bob_smith__b_x_")
        );
        let app = with_app_name(&client, &long);
        assert_eq!(app.config().app_name().map(|a| a.as_ref().len()), Some(50));
    }

    #[test]
    fn region_names() {
        assert!(check_region("eu-west-1").is_ok());
        assert!(check_region("us-gov-west-1").is_ok());
        for bad in ["", "EU-WEST-1", "eu west", "x", "../etc", &"a".repeat(40)] {
            assert!(check_region(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refusals_before_any_aws_call() {
        let settings = AwsSettings { allow_per_call_credentials: false, ..AwsSettings::default() };
        let clients = Clients::new(settings);
        let scope = |profile: Option<&str>, k: Option<Keys>| Scope {
            profile: profile.map(str::to_string),
            region: Some("eu-west-1".into()),
            keys: k,
        };
        let unknown = clients.session(&scope(Some("prod"), None), "sg-1").await.err();
        assert!(
            matches!(&unknown, Some(FirewallError::Refused { code, message })
                if code == "UnknownProfile" && message.contains("\"prod\"") && message.contains("none")),
            "{unknown:?}"
        );
        let k = keys("AKIAEXAMPLE", "s3cr3t", None);
        let disabled = clients.session(&scope(None, Some(k)), "sg-1").await.err();
        match disabled {
            Some(FirewallError::Refused { code, message }) => {
                assert_eq!(code, "PerCallCredentialsDisabled");
                assert!(!message.contains("s3cr3t") && !message.contains("AKIAEXAMPLE"));
            }
            e => panic!("{e:?}"),
        }
        let bad_region = Scope { region: Some("Mars".into()), ..scope(None, None) };
        assert!(clients.session(&bad_region, "sg-1").await.is_err());
        assert_eq!(clients.sts_verifications(), 0);
    }
}
