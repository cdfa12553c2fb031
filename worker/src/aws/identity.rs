//! The service's own AWS identity, as `awswhitelist doctor` reports it: which source of the
//! credential chain answered, the region, the account and ARN (STS GetCallerIdentity), and
//! AWS's clock (the `Date` of that answer) against ours. Nothing here changes anything.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_sts::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sts::primitives::{DateTime, DateTimeFormat};

use super::ec2::Ec2Firewall;
use super::errors::{from_credentials, Call};
use crate::whitelist::{FirewallError, Scope};

/// Who the service is on AWS, and how far our clock is from AWS's.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Where the credentials came from, e.g. "environment variables (AWS_ACCESS_KEY_ID)".
    pub source: String,
    /// The region calls go to.
    pub region: String,
    /// The endpoint override, if any.
    pub endpoint: Option<String>,
    /// The account id.
    pub account: String,
    /// The caller's ARN (user or assumed role).
    pub arn: String,
    /// AWS's clock minus ours, in seconds (positive: we are behind), when AWS sent a `Date`.
    pub clock_offset: Option<f64>,
}

impl Ec2Firewall {
    /// Loads `scope`'s credentials (naming the source that had them) and asks STS who they are.
    pub async fn identity(&self, scope: &Scope) -> Result<Identity, FirewallError> {
        let (sdk, region) = self.clients().sdk_config(scope).await?;
        let endpoint = sdk.endpoint_url().map(str::to_string);
        let call = Call { action: "sts:GetCallerIdentity", group: "", region: &region, endpoint: None };
        let provider = sdk.credentials_provider().ok_or_else(|| FirewallError::Refused {
            code: "NoCredentials".into(),
            message: "no AWS credentials provider is configured".into(),
        })?;
        let creds = provider.provide_credentials().await.map_err(|e| from_credentials(&call, &e))?;
        let source = source_of(creds.get_property::<Vec<AwsCredentialFeature>>().map(Vec::as_slice));
        let date = Arc::new(Mutex::new(None));
        let sent = SystemTime::now();
        let sts = aws_sdk_sts::Client::new(&sdk);
        let call = Call { endpoint: endpoint.as_deref(), ..call };
        let who = sts
            .get_caller_identity()
            .customize()
            .interceptor(DateHeader(date.clone()))
            .send()
            .await
            .map_err(|e| super::errors::from_sdk(&call, &e))?;
        let received = SystemTime::now();
        let header = date.lock().unwrap_or_else(|e| e.into_inner()).take();
        let clock_offset = header.and_then(|d: String| offset(&d, sent, received));
        Ok(Identity {
            source,
            region,
            endpoint,
            account: who.account().unwrap_or("(none)").to_string(),
            arn: who.arn().unwrap_or("(none)").to_string(),
            clock_offset,
        })
    }
}

/// AWS's `Date` minus the middle of our request, in seconds; `None` if it does not parse.
/// `Date` has whole seconds, so an offset under a second or two means nothing.
fn offset(date: &str, sent: SystemTime, received: SystemTime) -> Option<f64> {
    let theirs = DateTime::from_str(date, DateTimeFormat::HttpDate).ok()?;
    let theirs = SystemTime::try_from(theirs).ok()?;
    let half = received.duration_since(sent).unwrap_or(Duration::ZERO) / 2;
    let ours = sent + half;
    Some(match theirs.duration_since(ours) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    })
}

/// The chain's source in words, from the features the provider recorded on the credentials.
fn source_of(features: Option<&[AwsCredentialFeature]>) -> String {
    use AwsCredentialFeature as F;
    let names: Vec<&str> = features
        .unwrap_or_default()
        .iter()
        .filter_map(|f| {
            Some(match f {
                F::CredentialsEnvVars => "environment variables (AWS_ACCESS_KEY_ID)",
                F::CredentialsProfile => "shared profile (AWS_PROFILE, ~/.aws)",
                F::CredentialsProfileSourceProfile => "a profile's source_profile",
                F::CredentialsSso | F::CredentialsProfileSso => "SSO",
                F::CredentialsProcess | F::CredentialsProfileProcess => "credential_process",
                F::CredentialsEnvVarsStsWebIdToken
                | F::CredentialsProfileStsWebIdToken
                | F::CredentialsStsAssumeRoleWebId => "web identity token",
                F::CredentialsHttp => "ECS container credentials",
                F::CredentialsImds => "EC2 instance metadata (IMDS instance role)",
                F::CredentialsStsAssumeRole => "AssumeRole",
                F::CredentialsCode => "static keys",
                _ => return None,
            })
        })
        .collect();
    if names.is_empty() {
        "a provider that does not say which".to_string()
    } else {
        names.join(", then ")
    }
}

/// Keeps the `Date` header of the answer.
#[derive(Debug)]
struct DateHeader(Arc<Mutex<Option<String>>>);

impl Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "DateHeader"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(date) = context.response().headers().get("date") {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(date.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_the_date_header() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let date = DateTime::from(at).fmt(DateTimeFormat::HttpDate).unwrap();
        let later = at + Duration::from_secs(2);
        assert_eq!(offset(&date, at, at), Some(0.0));
        assert_eq!(offset(&date, later, later), Some(-2.0), "we are ahead");
        assert_eq!(offset(&date, at - Duration::from_secs(400), at - Duration::from_secs(400)), Some(400.0));
        assert_eq!(offset("yesterday", at, at), None);
    }

    #[test]
    fn sources_in_words() {
        use AwsCredentialFeature as F;
        assert_eq!(source_of(Some(&[F::CredentialsEnvVars])), "environment variables (AWS_ACCESS_KEY_ID)");
        assert_eq!(
            source_of(Some(&[F::CredentialsImds, F::CredentialsStsAssumeRole])),
            "EC2 instance metadata (IMDS instance role), then AssumeRole"
        );
        assert_eq!(source_of(None), "a provider that does not say which");
    }
}
