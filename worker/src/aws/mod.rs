//! EC2 behind the domain's [`Firewall`](crate::whitelist::Firewall) trait, on the AWS SDK:
//! credentials, region and endpoint resolution, timeouts and retries, and AWS errors mapped to
//! [`FirewallError`](crate::whitelist::FirewallError)s. The only module that names SDK types.
//!
//! May import: `whitelist` (the trait it implements), `metrics`. Imported by: `app`, `settings`.
//!
//! Credentials for a call ([`Scope`](crate::whitelist::Scope)): per-call keys when given (and
//! allowed), checked once with STS and remembered only as a hash; else the named profile
//! (its `source_profile` or the default chain, then its `role_arn` through AssumeRole, cached
//! until expiry); else the SDK's default chain. Region: the call's, the profile's, the
//! settings', or whatever the SDK resolves. The endpoint override applies to EC2 and STS alike.
//!
//! Managed prefix lists are read and written in `prefix_lists.rs`; every change call notes
//! its AWS request id and account for the audit (`receipts.rs`, see
//! [`crate::whitelist::receipts`]), and a change's client names its caller in the user agent
//! and, for a role assumed without a fixed session name, in the role session name (`clients.rs`).
//!
//! [`identity`] tells `doctor` who the service is on AWS: the credential source, the account, and
//! how far our clock is from AWS's. Imported by the binary's `doctor` too.

mod clients;
pub mod ec2;
pub mod errors;
pub mod identity;
mod prefix_lists;
mod receipts;
pub mod settings;

pub use ec2::Ec2Firewall;
pub use identity::Identity;
pub use settings::{AwsSettings, CredentialProfile};
