//! The two sources of what an agent serves — its local configuration file and the control
//! plane — merged into one snapshot whenever either changes. A control-plane policy replaces a
//! local one of the same kind and name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyphae_policies::watch::PolicyRecord;
use hyphae_policies::{LoadOptions, Policy, load_str};

use crate::config::AgentConfig;
use crate::model::Snapshot;
use crate::proxy::Proxy;
use crate::watch::{Origin, Remote};

/// A control-plane document as read: the revision it was read at and its objects.
type ParsedDocument = (u64, Vec<Policy>);

/// Merges the local file and the control plane into the proxy's snapshot.
pub struct Sources {
    proxy: Arc<Proxy>,
    local: Mutex<AgentConfig>,
    remote: Mutex<Option<(Vec<Policy>, u64, Origin)>>,
    /// Each control-plane document as last read, with the revision it was read at.
    parsed: Mutex<BTreeMap<(String, String), ParsedDocument>>,
    generation: AtomicU64,
}

impl Sources {
    /// Sources serving `local` through `proxy` (whose first snapshot is generation 1).
    pub fn new(proxy: Arc<Proxy>, local: AgentConfig) -> Arc<Self> {
        Arc::new(Sources {
            proxy,
            local: Mutex::new(local),
            remote: Mutex::new(None),
            parsed: Mutex::new(BTreeMap::new()),
            generation: AtomicU64::new(1),
        })
    }

    /// A new local configuration (SIGHUP); returns the new snapshot's generation.
    pub fn set_local(&self, local: AgentConfig) -> u64 {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = local;
        self.rebuild()
    }

    /// A new state from the control plane. Each stored document is read with the policy
    /// loader once per revision: a delta re-reads only what it changed. One that fails (it
    /// never should: the control plane validated it) is skipped and logged.
    pub fn set_remote(&self, remote: &Remote) -> u64 {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = BTreeMap::new();
        for (key, record) in &remote.policies {
            let cached = parsed
                .remove(key)
                .filter(|(revision, _)| *revision == record.revision);
            let policies = cached.map_or_else(|| parse(record), |(_, policies)| policies);
            fresh.insert(key.clone(), (record.revision, policies));
        }
        let policies: Vec<Policy> = fresh
            .values()
            .flat_map(|(_, p)| p.iter().cloned())
            .collect();
        *parsed = fresh;
        drop(parsed);
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

/// Reads one stored document; a document that does not read (the control plane validated it,
/// so this means a version mismatch) is logged and yields nothing.
fn parse(record: &PolicyRecord) -> Vec<Policy> {
    let name = format!("control-plane:{}/{}", record.kind, record.name);
    match load_str(&name, &record.source, LoadOptions::default()).into_policies() {
        Ok(parsed) => parsed,
        Err(diagnostics) => {
            for diagnostic in diagnostics {
                tracing::error!("{}", diagnostic.to_string().trim_end());
            }
            Vec::new()
        }
    }
}
