//! `token` and `keygen`: credentials for the `[auth]` section.
//!
//! `token` loads the configuration exactly as `serve` does (file, then `AWSWHITELIST_*`), so it
//! signs with the secret the server verifies with.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use worker::auth::{self, apikey, ApiKeyConfig, TokenRequest};

use crate::config::{Config, Sources};
use crate::EXIT_CONFIG;

/// Issue an HS256 token signed with the configured shared secret.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The token's subject (`sub`): who it is for.
    #[arg(long, value_name = "NAME")]
    pub sub: String,
    /// Space- or comma-separated scopes: whitelist:read, whitelist:write.
    #[arg(long, default_value = auth::SCOPE_READ, value_name = "SCOPES")]
    pub scope: String,
    /// Lifetime: 1h, 30m, 7d or seconds.
    #[arg(long, default_value = "1h", value_parser = auth::parse_ttl, value_name = "DURATION")]
    pub ttl: Duration,
    /// Restrict the token to these security groups (ids or sg-0abc* patterns), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SG,...")]
    pub groups: Option<Vec<String>>,
    /// TOML config file whose [auth] section holds the secret, issuer and audience (read with
    /// the AWSWHITELIST_* overrides, as `serve` reads it).
    #[arg(short, long, env = "AWSWHITELIST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Make an API key: prints the key once and the config entry with its hash.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// The key's id (letters, digits, '.', '-'); the caller's identity in logs and audit.
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Space- or comma-separated scopes: whitelist:read, whitelist:write.
    #[arg(long, default_value = auth::SCOPE_READ, value_name = "SCOPES")]
    pub scopes: String,
    /// Restrict the key to these security groups (ids or sg-0abc* patterns), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SG,...")]
    pub groups: Vec<String>,
    /// Mark the key read-only: it may list and check, never add or remove, whatever its scopes.
    #[arg(long)]
    pub read_only: bool,
}

fn split_scopes(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()).map(String::from).collect()
}

fn fail(command: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("awswhitelist {command}: {message}");
    ExitCode::from(EXIT_CONFIG)
}

/// `awswhitelist token`: prints only the token.
pub fn token_main(args: &TokenArgs) -> ExitCode {
    let sources = Sources { file: args.config.clone(), flags: Default::default() };
    let settings = match Config::load(&sources) {
        Ok(config) => config.auth,
        Err(e) => return fail("token", e),
    };
    let request = TokenRequest {
        subject: args.sub.clone(),
        scopes: split_scopes(&args.scope),
        ttl: args.ttl,
        security_groups: args.groups.clone(),
    };
    match auth::issue_hs256(&settings, &request) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail("token", e),
    }
}

#[derive(Serialize)]
struct Snippet {
    auth: SnippetAuth,
}

#[derive(Serialize)]
struct SnippetAuth {
    api_keys: Vec<ApiKeyConfig>,
}

/// `awswhitelist keygen`: the key (shown once) and the `[[auth.api_keys]]` entry.
pub fn keygen_main(args: &KeygenArgs) -> ExitCode {
    let scopes = split_scopes(&args.scopes);
    if let Some(bad) = scopes.iter().find(|s| !auth::SCOPES.contains(&s.as_str())) {
        return fail("keygen", format!("unknown scope {bad:?}; known: {}", auth::SCOPES.join(", ")));
    }
    let id = match args.id.clone().map_or_else(apikey::random_id, Ok) {
        Ok(id) => id,
        Err(e) => return fail("keygen", e),
    };
    let made = match apikey::generate(&id) {
        Ok(made) => made,
        Err(e) => return fail("keygen", e),
    };
    let entry = ApiKeyConfig {
        id: made.id.clone(),
        hash: made.hash.clone(),
        scopes,
        security_groups: args.groups.iter().map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect(),
        read_only: args.read_only,
    };
    let snippet = match toml::to_string(&Snippet { auth: SnippetAuth { api_keys: vec![entry] } }) {
        Ok(s) => s,
        Err(e) => return fail("keygen", e),
    };
    println!("# API key {:?}: shown only now; give it to the client (Authorization: Bearer …).", made.id);
    println!("{}", made.key);
    println!();
    println!("# The server keeps only its hash; add this to the configuration:");
    print!("{snippet}");
    ExitCode::SUCCESS
}
