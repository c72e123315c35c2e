//! The two sources of what an agent serves — its local configuration file and the control
//! plane — merged into one snapshot whenever either changes. A control-plane policy replaces a
//! local one of the same kind and name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyphae_policies::{LoadOptions, Policy, load_str};

use crate::config::AgentConfig;
use crate::model::Snapshot;
use crate::proxy::Proxy;
use crate::watch::{Origin, Remote};

/// Merges the local file and the control plane into the proxy's snapshot.
pub struct Sources {
    proxy: Arc<Proxy>,
    local: Mutex<AgentConfig>,
    remote: Mutex<Option<(Vec<Policy>, u64, Origin)>>,
    generation: AtomicU64,
}

impl Sources {
    /// Sources serving `local` through `proxy` (whose first snapshot is generation 1).
    pub fn new(proxy: Arc<Proxy>, local: AgentConfig) -> Arc<Self> {
        Arc::new(Sources {
            proxy,
            local: Mutex::new(local),
            remote: Mutex::new(None),
            generation: AtomicU64::new(1),
        })
    }

    /// A new local configuration (SIGHUP); returns the new snapshot's generation.
    pub fn set_local(&self, local: AgentConfig) -> u64 {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = local;
        self.rebuild()
    }

    /// A new state from the control plane. Each stored document is read with the policy
    /// loader; one that fails (it never should: the control plane validated it) is skipped
    /// and logged.
    pub fn set_remote(&self, remote: &Remote) -> u64 {
        let mut policies = Vec::with_capacity(remote.policies.len());
        for record in remote.policies.values() {
            let name = format!("control-plane:{}/{}", record.kind, record.name);
            match load_str(&name, &record.source, LoadOptions::default()).into_policies() {
                Ok(parsed) => policies.extend(parsed),
                Err(diagnostics) => {
                    for diagnostic in diagnostics {
                        tracing::error!("{}", diagnostic.to_string().trim_end());
                    }
                }
            }
        }
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((policies, remote.revision, remote.origin));
        self.rebuild()
    }

    fn rebuild(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut config = self.local.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let remote = self
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((policies, _, _)) = &remote {
            let mut merged: BTreeMap<(String, String), Policy> = config
                .policies
                .drain(..)
                .map(|p| ((p.kind().name().to_string(), p.name().to_string()), p))
                .collect();
            for policy in policies {
                merged.insert(
                    (policy.kind().name().to_string(), policy.name().to_string()),
                    policy.clone(),
                );
            }
            config.policies = merged.into_values().collect();
        }
        let mut snapshot = Snapshot::from_config(&config, generation);
        if let Some((_, revision, origin)) = remote {
            snapshot.control_plane_revision = Some(revision);
            snapshot.source = match origin {
                Origin::ControlPlane => crate::model::Source::ControlPlane,
                Origin::Disk => crate::model::Source::Disk,
            };
        }
        self.proxy.snapshot.store(Arc::new(snapshot));
        crate::metrics::revision(generation);
        generation
    }
}
