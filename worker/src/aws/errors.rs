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

/// Maps an AWS error code and message to the domain's error, so every caller agrees on meanings.
pub fn classify(call: &Call<'_>, code: &str, message: &str) -> FirewallError {
    let action = call.action.to_string();
    match code {
        "InvalidPermission.Duplicate" => FirewallError::Duplicate,
        "InvalidGroup.NotFound" | "InvalidGroup.Malformed" => group_not_found(call),
        c if c.starts_with("InvalidGroupId.") => group_not_found(call),
        "InvalidPermission.NotFound" | "InvalidSecurityGroupRuleId.NotFound" => FirewallError::RuleNotFound,
        "RulesPerSecurityGroupLimitExceeded" => FirewallError::RuleLimit { group: call.group.to_string() },
        "UnauthorizedOperation" => FirewallError::PermissionDenied { action, detail: message.to_string() },
        c if c.starts_with("AccessDenied") => {
            FirewallError::PermissionDenied { action, detail: message.to_string() }
        }
        "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidAccessKeyId"
        | "UnrecognizedClientException" => FirewallError::BadCredentials(format!("{code}: {message}")),
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
                let service = call.action.split(':').next().unwrap_or("aws").to_ascii_uppercase();
                let at = call.endpoint.map_or_else(|| "its AWS endpoint".to_string(), str::to_string);
                return FirewallError::Other {
                    action: call.action.to_string(),
                    code: "EndpointUnreachable".into(),
                    message: format!(
                        "cannot reach the {service} endpoint ({at}) in region {}: {}",
                        call.region,
                        chain(err)
                    ),
                };
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

/// Why no credentials could be had: none found, a provider timed out, or AssumeRole refused.
pub fn from_credentials(call: &Call<'_>, cred: &CredentialsError) -> FirewallError {
    let detail = chain(cred);
    match cred {
        CredentialsError::CredentialsNotLoaded(_) => FirewallError::BadCredentials(format!(
            "no AWS credentials could be loaded ({detail}); configure the default chain (env, shared \
             profile, SSO, web identity, ECS, IMDS), fix the credential profile, or pass credentials"
        )),
        CredentialsError::ProviderTimedOut(_) => {
            FirewallError::Timeout { action: format!("{} (loading credentials)", call.action) }
        }
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
            FirewallError::BadCredentials(format!("the credentials provider failed: {detail}"))
        }
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
            detail: "msg".into(),
        };
        assert_eq!(c("UnauthorizedOperation"), denied);
        assert_eq!(c("AccessDenied"), denied);
        assert_eq!(c("AccessDeniedException"), denied);
        for code in ["AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"] {
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
        let cred = CredentialsError::not_loaded("no providers in chain provided credentials");
        let err: Err = SdkError::dispatch_failure(ConnectorError::other(Box::new(cred), None));
        match from_sdk(&CALL, &err) {
            FirewallError::BadCredentials(m) => {
                assert!(m.starts_with("no AWS credentials could be loaded (the credential provider"), "{m}")
            }
            e => panic!("{e:?}"),
        }
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
