//! Builds every service of the server once, from the typed settings: the host's shared files
//! (audit log, cache counters), EC2, the whitelist domain, the tool registry and the dispatcher,
//! and the expiry sweeper. `serve` (each worker process) and `stdio` build through here, so the
//! two cannot drift apart.
//!
//! May import: everything below the transports (`tools`, `whitelist`, `aws`, `host`, `mcp`,
//! `settings`). Imported by: `process` and the binary's `stdio`.

use std::sync::Arc;

use crate::aws::Ec2Firewall;
use crate::fleet::Fleet;
use crate::host::{marker_key, sweeper};
use crate::host::{AuditLog, ChangeCounters, FleetVersions, GroupLockFiles, NonceFiles, ReadFiles};
use crate::host::{FleetGroupLocks, FleetNonces, FleetReads};
use crate::mcp::{Dispatcher, RegistryError, ServerInfo};
use crate::settings::WhitelistSettings;
use crate::whitelist::cache::Versions;
use crate::whitelist::flight::SharedReads;
use crate::whitelist::{
    consent_token, ConsentSeal, Defaults, GroupLocks, MarkerKey, NonceStore, Parts, Whitelist,
};
use crate::Settings;

/// Why the services could not be built; each names the file or the part at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A state file could not be created or opened.
    #[error("{0}")]
    State(#[from] std::io::Error),
    /// The tool registry refused a tool (a programming error caught at boot).
    #[error("tool registry: {0}")]
    Registry(#[from] RegistryError),
}

/// The services of one process.
pub struct App {
    /// MCP with every tool registered.
    pub dispatcher: Dispatcher,
    /// The whitelist domain (the tools and the sweeper call it).
    pub service: Arc<Whitelist>,
    /// The audit log, reopened on USR1.
    pub audit: Arc<AuditLog>,
    /// The marker key, from which the transports derive theirs (one secret to manage).
    marker_key: MarkerKey,
    sweeper: sweeper::Config,
    fleet: Option<Arc<Fleet>>,
}

impl App {
    /// Builds everything; a file that cannot be opened stops the boot with a message naming it.
    /// `info` gets the instructions the policy generates.
    /// With `fleet` (`[redis]`), cache counters, consent records, group locks, the read single
    /// flight and the sweeper are fleet-wide.
    pub fn build(
        settings: &Settings,
        info: ServerInfo,
        fleet: Option<Arc<Fleet>>,
    ) -> Result<App, BuildError> {
        let wl = &settings.whitelist;
        crate::host::state_file::prepare_dir(&wl.state_dir)?;
        let audit = Arc::new(AuditLog::open(&wl.audit_log)?.with_expiry_index(wl.state_dir.clone()));
        let local = ChangeCounters::open(&wl.state_dir.join("cache-versions"))?;
        let versions: Arc<dyn Versions> = match fleet.clone() {
            Some(fleet) => Arc::new(FleetVersions::new(local, fleet)),
            None => Arc::new(local),
        };
        let marker_key = marker_key::load(&wl.marker_key, &wl.state_dir)?;
        // Consent states are sealed with a key derived from the marker key: one secret to manage,
        // the same on every worker and every host that shares it.
        // With [redis], consent records, group locks and read leads are fleet-wide, the host's
        // files their fallback.
        let host_nonces = NonceFiles::open(&wl.state_dir)?;
        let (host_locks, host_reads) =
            (GroupLockFiles::new(wl.state_dir.clone()), ReadFiles::new(wl.state_dir.clone()));
        let (nonces, group_locks, reads): (Arc<dyn NonceStore>, Arc<dyn GroupLocks>, Arc<dyn SharedReads>) =
            match &fleet {
                Some(f) => (
                    Arc::new(FleetNonces::new(f.clone(), host_nonces)),
                    Arc::new(FleetGroupLocks::new(f.clone(), host_locks)),
                    Arc::new(FleetReads::new(f.clone(), host_reads, wl.cache_ttl)),
                ),
                None => (Arc::new(host_nonces), Arc::new(host_locks), Arc::new(host_reads)),
            };
        let seal = ConsentSeal::new(&marker_key.derive(consent_token::KEY_LABEL), wl.consent_ttl, nonces);
        let service = Arc::new(
            Whitelist::new(Parts {
                firewall: Arc::new(Ec2Firewall::new(settings.aws.clone())),
                policy: wl.policy.clone(),
                defaults: Defaults {
                    port: wl.default_port.clone(),
                    protocol: wl.default_protocol,
                    description_template: wl.description_template.clone(),
                    user: wl.default_user.clone(),
                    reason: wl.default_reason.clone(),
                },
                port_mappings: wl.port_mappings.clone(),
                cache_ttl: wl.cache_ttl,
                versions,
                recorder: audit.clone(),
                marker_key: marker_key.clone(),
                group_locks,
            })
            .with_shared_reads(reads),
        );
        let registry =
            crate::tools::register_all(settings.mcp.page_size, service.clone(), Some(Arc::new(seal)))?;
        let info = ServerInfo {
            instructions: Some(crate::whitelist::instructions::sentences(&wl.policy).join(" ")),
            ..info
        };
        Ok(App {
            dispatcher: Dispatcher::new(info, registry).with_resources(Arc::new(
                crate::tools::resources::HistoryResources::new(service.clone(), settings.mcp.page_size),
            )),
            service,
            audit,
            marker_key,
            sweeper: sweeper_config(wl),
            fleet,
        })
    }

    /// A secret for `label`'s use, derived from the marker key (`Mcp-Session-Id` signing).
    pub fn derive_key(&self, label: &str) -> [u8; 32] {
        self.marker_key.derive(label)
    }

    /// Starts the expiry sweeper on the current runtime (it runs only while this process holds
    /// the host's sweeper lock and, in a fleet, the fleet's lease, which it gives up when
    /// `drain` turns true, and then ends: await the handle to know it is given up).
    pub fn spawn_sweeper(
        &self,
        drain: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(sweeper::run(self.service.clone(), self.sweeper.clone(), self.fleet.clone(), drain))
    }
}

/// The groups swept: `sweep_groups`, plus the exact ids in `allowed_security_groups` and
/// `allowed_prefix_lists` (patterns are swept through the expiry index, which records every
/// group and prefix list given an expiring rule or entry).
fn sweeper_config(wl: &WhitelistSettings) -> sweeper::Config {
    sweeper::Config {
        state_dir: wl.state_dir.clone(),
        interval: wl.sweep_interval,
        groups: wl
            .sweep_groups
            .iter()
            .chain(&wl.policy.allowed_security_groups)
            .chain(&wl.policy.allowed_prefix_lists)
            .filter(|g| !g.contains(['*', '?']))
            .cloned()
            .collect(),
    }
}
