//! The authentication keys: the secret and PEM files load (offline), and the JWKS, when
//! configured, is reachable and gives usable keys.

use worker::auth::{AuthSettings, Authenticator};

use super::Check;

/// Loads the authenticator as a worker would; a line only when auth is on.
pub fn load(settings: &AuthSettings) -> (Option<Authenticator>, Option<Check>) {
    if !settings.enabled {
        return (None, None);
    }
    match Authenticator::load(settings) {
        Ok(auth) => (Some(auth), Some(Check::ok("auth", "enabled; its secret and key files load"))),
        Err(e) => (
            None,
            Some(Check::fail(
                "auth",
                e.to_string(),
                "fix the [auth] key named (the file must exist and be readable)",
            )),
        ),
    }
}

/// Fetches the JWKS once, if one is configured.
pub async fn jwks(auth: &Authenticator, url: Option<&str>) -> Option<Check> {
    let url = url?;
    let shown = url.split('?').next().unwrap_or(url);
    Some(match auth.refresh_jwks().await {
        Ok(0) => Check::fail(
            "auth.jwks_url",
            format!("{shown} has no key this server can use"),
            "check the URL is the issuer's jwks_uri (from its /.well-known/openid-configuration)",
        ),
        Ok(n) => Check::ok("auth.jwks_url", format!("{shown}: {n} usable keys")),
        Err(e) => Check::fail(
            "auth.jwks_url",
            format!("{shown}: {e}"),
            "check the URL and that this host can reach the issuer (tokens signed with its keys are refused meanwhile)",
        ),
    })
}
