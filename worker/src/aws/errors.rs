//! AWS failures turned into [`FirewallError`]s a person can act on. The heart of it,
//! [`classify`], is a pure function of the error code so it can be tested without AWS.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;

use crate::whitelist::FirewallError;

/// What a failed call was doing: enough context for a message that names the group and region.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The IAM action, e.g. `ec2:AuthorizeSecurityGroupIngress`.
    pub action: &'a str,
    /// The security group the call was about (may be empty, e.g. for STS).
    pub group: &'a str,
    /// The region the call went to.
    pub region: &'a str,
    /// The endpoint override in force, if any (named when it cannot be reached).
    pub endpoint: Option<&'a str>,
}

/// Where the SDK's default chain looks for credentials, in its order (named when it found none).
pub const CREDENTIAL_SOURCES: &str = "environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), \
     shared profile (AWS_PROFILE in ~/.aws/config and ~/.aws/credentials, with its SSO session or \
     credential_process), web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), ECS \
     container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI), EC2 instance \
     metadata (IMDS)";

/// How the region is chosen, first match wins (named when it is missing or unknown).
pub const REGION_SOURCES: &str = "the call's `region` argument, the credential profile's `region`, \
     [aws] region in the configuration (AWSWHITELIST_AWS__REGION), AWS_REGION or AWS_DEFAULT_REGION, \
     the `region` of the shared profile (AWS_PROFILE in ~/.aws/config), EC2 instance metadata";

/// Maps an AWS error code and message to the domain's error, so every caller agrees on meanings.
pub fn classify(call: &Call<'_>, code: &str, message: &str) -> FirewallError {
    let action = call.action.to_string();
    match code {
        "InvalidPermission.Duplicate" => FirewallError::Duplicate,
        "InvalidGroup.NotFound" | "InvalidGroup.Malformed" => group_not_found(call),
        c if c.starts_with("InvalidGroupId.") => group_not_found(call),
        c if c.starts_with("InvalidPrefixListID.") || c.starts_with("InvalidPrefixListId.") => {
            group_not_found(call)
        }
        "InvalidPermission.NotFound" | "InvalidSecurityGroupRuleId.NotFound" => FirewallError::RuleNotFound,
        "RulesPerSecurityGroupLimitExceeded" => FirewallError::RuleLimit { group: call.group.to_string() },
        "UnauthorizedOperation" => denied(call, message),
        c if c.starts_with("AccessDenied") => denied(call, message),
        "ExpiredToken" | "ExpiredTokenException" => FirewallError::BadCredentials(format!(
            "the session token has expired ({code}: {message}); temporary credentials must be renewed: \
             `aws sso login --profile …` for an SSO profile, or a fresh AWS_SESSION_TOKEN (with its key \
             pair) in the service's environment, then restart it; an instance role or a configured \
             role_arn renews itself"
        )),
        "RequestExpired" => FirewallError::BadCredentials(format!(
            "the request expired before AWS saw it ({code}: {message}): this host's clock is more than \
             5 minutes off AWS's, or the signed request was held too long; fix the clock (NTP; \
             `awswhitelist doctor` shows the offset)"
        )),
        "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "InvalidAccessKeyId"
        | "UnrecognizedClientException" => FirewallError::BadCredentials(format!(
            "{code}: {message} (check the key pair the service uses; `awswhitelist doctor` shows where \
             it comes from)"
        )),
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException" => {
            FirewallError::Throttled { action }
        }
        _ => FirewallError::Other {
            action,
            code: if code.is_empty() { "Unknown".into() } else { code.to_string() },
            message: message.to_string(),
        },
    }
}

/// IAM refused `call`: names the action and the resource a policy must grant it on.
fn denied(call: &Call<'_>, message: &str) -> FirewallError {
    // Describe* and STS calls have no resource-level permissions: they are granted on "*".
    let resource = if call.group.is_empty() || call.action.starts_with("ec2:Describe") {
        "*".to_string()
    } else {
        format!("arn:aws:ec2:{}:<account>:security-group/{}", call.region, call.group)
    };
    let message = message.trim();
    let detail = if message.is_empty() {
        format!("resource {resource}")
    } else {
        format!("resource {resource}; AWS says: {message}")
    };
    FirewallError::PermissionDenied { action: call.action.to_string(), detail }
}

fn group_not_found(call: &Call<'_>) -> FirewallError {
    FirewallError::GroupNotFound { group: call.group.to_string(), region: call.region.to_string() }
}

/// Maps any SDK failure (service error, timeout, unreachable endpoint, missing credentials).
pub fn from_sdk<E, R>(call: &Call<'_>, err: &SdkError<E, R>) -> FirewallError
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => match err.code() {
            Some(code) => classify(call, code, err.message().unwrap_or("")),
            None => other(call, "InvalidResponse", err),
        },
        SdkError::TimeoutError(_) => FirewallError::Timeout { action: call.action.to_string() },
        SdkError::DispatchFailure(d) => {
            if let Some(cred) = credentials_error(err) {
                return from_credentials(call, cred);
            }
            if d.is_timeout() {
                return FirewallError::Timeout { action: call.action.to_string() };
            }
            if d.is_io() {
                return unreachable(call, &chain(err));
            }
            other(call, "DispatchFailure", err)
        }
        SdkError::ConstructionFailure(_) => match credentials_error(err) {
            Some(cred) => from_credentials(call, cred),
            None => other(call, "RequestNotBuilt", err),
        },
        _ => other(call, err.code().unwrap_or("Unknown"), err),
    }
}

/// The endpoint could not be reached: a name that does not resolve is, without an endpoint
/// override, an unknown region; anything else names the endpoint and what to check.
fn unreachable(call: &Call<'_>, detail: &str) -> FirewallError {
    let service = call.action.split(':').next().unwrap_or("aws").to_ascii_uppercase();
    let dns = detail.contains("dns error") || detail.contains("lookup address");
    let message = match call.endpoint {
        None if dns => format!(
            "cannot resolve the {service} endpoint of region {region:?} ({detail}): is {region:?} an AWS \
             region this account can use? The region is taken from, first match wins: {REGION_SOURCES}",
            region = call.region,
        ),
        None => format!(
            "cannot reach the {service} endpoint of region {} ({detail}); check this host's network, \
             its DNS and any HTTPS_PROXY, or set aws.endpoint_url",
            call.region
        ),
        Some(at) => format!(
            "cannot reach the {service} endpoint ({at}) in region {} ({detail}); check aws.endpoint_url \
             (or AWS_ENDPOINT_URL) and that something serves it, and the network in between",
            call.region
        ),
    };
    FirewallError::Other { action: call.action.to_string(), code: "EndpointUnreachable".into(), message }
}

fn other(call: &Call<'_>, code: &str, err: &(dyn StdError + 'static)) -> FirewallError {
    FirewallError::Other { action: call.action.to_string(), code: code.to_string(), message: chain(err) }
}

/// Every message in `err`'s source chain, outermost first, each said once.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The credentials failure somewhere in `err`'s chain, if that is why the call failed.
fn credentials_error<'e>(err: &'e (dyn StdError + 'static)) -> Option<&'e CredentialsError> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(cred) = e.downcast_ref::<CredentialsError>() {
            return Some(cred);
        }
        next = e.source();
    }
    None
}

/// Why no credentials could be had: none found (the default chain came up empty, or ended on
/// an instance metadata service that does not answer), or a provider or AssumeRole failed.
pub fn from_credentials(call: &Call<'_>, cred: &CredentialsError) -> FirewallError {
    let detail = chain(cred);
    match cred {
        CredentialsError::CredentialsNotLoaded(_) if detail.contains("no credentials found in chain") => {
            no_credentials(imds_reason(&detail).unwrap_or("not found"))
        }
        CredentialsError::CredentialsNotLoaded(_) => FirewallError::Refused {
            code: "NoCredentials".into(),
            message: format!(
                "no AWS credentials found ({detail}); fix the credential profile's source_profile in \
                 ~/.aws/config, or `awswhitelist doctor` to see what the service finds"
            ),
        },
        CredentialsError::ProviderTimedOut(t) => no_credentials(&format!(
            "the search gave up after {} s, most likely waiting for IMDS, which answers only on EC2",
            t.timeout_duration().as_secs_f64()
        )),
        _ => {
            let mut next: Option<&(dyn StdError + 'static)> = Some(cred);
            while let Some(e) = next {
                if let Some(sts) = e.downcast_ref::<aws_sdk_sts::error::SdkError<AssumeRoleError>>() {
                    let role_call = Call { action: "sts:AssumeRole", ..*call };
                    return match from_sdk(&role_call, sts) {
                        FirewallError::BadCredentials(m) => {
                            FirewallError::BadCredentials(format!("the base credentials for AssumeRole: {m}"))
                        }
                        mapped => mapped,
                    };
                }
                next = e.source();
            }
            // IMDS is asked last: failing there means nothing before it had credentials.
            if detail.contains("IMDS") {
                return no_credentials(&format!("IMDS failed: {detail}"));
            }
            FirewallError::BadCredentials(format!("the credentials provider failed: {detail}"))
        }
    }
}

/// What the chain said about IMDS, its last stop (the others only say "not set").
fn imds_reason(detail: &str) -> Option<&str> {
    let line = detail.lines().find(|l| l.trim_start().starts_with("Ec2InstanceMetadata:"))?;
    Some(line.trim())
}

/// Nothing in the default chain had credentials: where it looked and the one setting to fix.
fn no_credentials(why: &str) -> FirewallError {
    FirewallError::Refused {
        code: "NoCredentials".into(),
        message: format!(
            "no AWS credentials found; looked in: {CREDENTIAL_SOURCES} ({why}). Give the service one \
             source: AWS_PROFILE=<profile> (or the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY pair) in \
             its environment (under systemd: Environment= in a drop-in), or an instance role on EC2; \
             `awswhitelist doctor` shows which source the service finds"
        ),
    }
}

/// Replaces `needle` (an access key id) wherever an error message repeats it.
pub fn scrub(err: FirewallError, needle: &str) -> FirewallError {
    if needle.is_empty() {
        return err;
    }
    let s = |m: String| m.replace(needle, "<access key id>");
    match err {
        FirewallError::PermissionDenied { action, detail } => {
            FirewallError::PermissionDenied { action, detail: s(detail) }
        }
        FirewallError::BadCredentials(m) => FirewallError::BadCredentials(s(m)),
        FirewallError::Other { action, code, message } => {
            FirewallError::Other { action, code, message: s(message) }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ConnectorError;

    const CALL: Call<'static> = Call {
        action: "ec2:AuthorizeSecurityGroupIngress",
        group: "sg-1",
        region: "eu-west-1",
        endpoint: None,
    };

    #[test]
    fn codes_map_to_domain_errors() {
        let c = |code: &str| classify(&CALL, code, "msg");
        assert_eq!(c("InvalidPermission.Duplicate"), FirewallError::Duplicate);
        let nf = FirewallError::GroupNotFound { group: "sg-1".into(), region: "eu-west-1".into() };
        assert_eq!(c("InvalidGroup.NotFound"), nf);
        assert_eq!(c("InvalidGroupId.Malformed"), nf);
        assert_eq!(c("InvalidGroupId.NotFound"), nf);
        assert_eq!(c("InvalidPermission.NotFound"), FirewallError::RuleNotFound);
        assert_eq!(c("InvalidSecurityGroupRuleId.NotFound"), FirewallError::RuleNotFound);
        assert_eq!(
            c("RulesPerSecurityGroupLimitExceeded"),
            FirewallError::RuleLimit { group: "sg-1".into() }
        );
        let denied = FirewallError::PermissionDenied {
            action: "ec2:AuthorizeSecurityGroupIngress".into(),
            detail: "resource arn:aws:ec2:eu-west-1:<account>:security-group/sg-1; AWS says: msg".into(),
        };
        assert_eq!(c("UnauthorizedOperation"), denied);
        assert_eq!(c("AccessDenied"), denied);
        assert_eq!(c("AccessDeniedException"), denied);
        for code in
            ["AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired"]
        {
            assert!(matches!(c(code), FirewallError::BadCredentials(m) if m.contains(code)), "{code}");
        }
        for code in ["Throttling", "RequestLimitExceeded"] {
            assert_eq!(
                c(code),
                FirewallError::Throttled { action: "ec2:AuthorizeSecurityGroupIngress".into() }
            );
        }
        assert_eq!(
            c("InvalidParameterValue"),
            FirewallError::Other {
                action: "ec2:AuthorizeSecurityGroupIngress".into(),
                code: "InvalidParameterValue".into(),
                message: "msg".into()
            }
        );
        assert!(matches!(c(""), FirewallError::Other { code, .. } if code == "Unknown"));
    }

    #[test]
    fn messages_name_what_to_do() {
        let denied = classify(&CALL, "UnauthorizedOperation", "You are not authorized");
        assert!(denied.to_string().contains("grant the IAM action ec2:AuthorizeSecurityGroupIngress"));
        let nf = classify(&CALL, "InvalidGroup.NotFound", "x").to_string();
        assert!(nf.contains("sg-1") && nf.contains("eu-west-1"), "{nf}");
    }

    type Err = SdkError<aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsError, ()>;

    #[test]
    fn transport_failures() {
        let timeout: Err = SdkError::timeout_error("slow");
        assert_eq!(from_sdk(&CALL, &timeout), FirewallError::Timeout { action: CALL.action.into() });
        let refused: Err = SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
        let call = Call { endpoint: Some("http://127.0.0.1:1"), ..CALL };
        match from_sdk(&call, &refused) {
            FirewallError::Other { code, message, .. } => {
                assert_eq!(code, "EndpointUnreachable");
                assert!(message.contains("cannot reach the EC2 endpoint (http://127.0.0.1:1)"), "{message}");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn missing_credentials() {
        let cred = CredentialsError::not_loaded(
            "no credentials found in chain. Attempted:\n  Environment: not set\n  Ec2InstanceMetadata: could not communicate with IMDS",
        );
        let err: Err = SdkError::dispatch_failure(ConnectorError::other(Box::new(cred), None));
        let m = from_sdk(&CALL, &err).to_string();
        assert!(m.starts_with("no AWS credentials found; looked in: environment (AWS_ACCESS_KEY_ID"), "{m}");
        assert!(m.contains("Ec2InstanceMetadata: could not communicate with IMDS"), "{m}");
        // IMDS, asked last, timing out or failing: still "none found", never "rejected".
        for cred in [
            CredentialsError::provider_timed_out(std::time::Duration::from_secs(5)),
            CredentialsError::provider_error("failed to load IMDS session token"),
        ] {
            let m = from_credentials(&CALL, &cred).to_string();
            assert!(m.starts_with("no AWS credentials found") && m.contains("AWS_PROFILE"), "{m}");
        }
        let other = from_credentials(&CALL, &CredentialsError::provider_error("sso token file unreadable"));
        assert!(other.to_string().contains("sso token file unreadable"), "{other}");
    }

    #[test]
    fn what_each_aws_refusal_tells_the_user() {
        let expired =
            classify(&CALL, "ExpiredToken", "The security token included in the request is expired");
        let m = expired.to_string();
        assert!(m.contains("session token has expired") && m.contains("aws sso login"), "{m}");
        let skew = classify(&CALL, "RequestExpired", "Request has expired.").to_string();
        assert!(skew.contains("clock") && skew.contains("doctor"), "{skew}");
        let denied = classify(&CALL, "UnauthorizedOperation", "You are not authorized").to_string();
        assert!(
            denied.contains("ec2:AuthorizeSecurityGroupIngress")
                && denied.contains("arn:aws:ec2:eu-west-1:<account>:security-group/sg-1"),
            "{denied}"
        );
        let describe = Call { action: "ec2:DescribeSecurityGroups", ..CALL };
        let denied = classify(&describe, "UnauthorizedOperation", "no").to_string();
        assert!(denied.contains("resource *"), "Describe* has no resource-level permissions: {denied}");
        let throttled = classify(&CALL, "RequestLimitExceeded", "Request limit exceeded.").to_string();
        assert!(throttled.contains("retried") && throttled.contains("aws.max_attempts"), "{throttled}");
    }

    #[test]
    fn an_unknown_region_is_a_name_that_does_not_resolve() {
        let dns: Err = SdkError::dispatch_failure(ConnectorError::io(
            "dns error: failed to lookup address information: Name or service not known".into(),
        ));
        let call = Call { region: "eu-nowhere-9", ..CALL };
        let m = from_sdk(&call, &dns).to_string();
        assert!(m.contains("\"eu-nowhere-9\" an AWS region") && m.contains("AWS_REGION"), "{m}");
        // With an endpoint override the endpoint is at fault, whatever the region.
        let call = Call { endpoint: Some("http://moto.invalid:5000"), ..call };
        let m = from_sdk(&call, &dns).to_string();
        assert!(m.contains("(http://moto.invalid:5000)") && m.contains("aws.endpoint_url"), "{m}");
    }

    #[test]
    fn keys_are_scrubbed() {
        let e = FirewallError::BadCredentials("key AKIAEXAMPLE is invalid".into());
        assert_eq!(
            scrub(e, "AKIAEXAMPLE"),
            FirewallError::BadCredentials("key <access key id> is invalid".into())
        );
    }
}
