//! Active health checks of the instances this host runs: an HTTP GET (2xx passes) or a TCP
//! connect, every `interval`, with `rise` passes in a row to become passing and `fall` failures
//! in a row to become critical. An instance with a check starts critical and its first result
//! decides at once; one without a check is always passing. The results feed the registration
//! client, which reports only changes to the control plane.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use hyphae_policies::registry::Health;
use hyphae_policies::{HealthCheck, LocalService};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Identifies a local instance: its service and port.
pub type InstanceKey = (String, u16);

/// The current health of every local instance, with a signal that fires on each change.
#[derive(Debug)]
pub struct HealthTable {
    states: Mutex<BTreeMap<InstanceKey, Health>>,
    changed: watch::Sender<u64>,
}

impl Default for HealthTable {
    fn default() -> Self {
        HealthTable {
            states: Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl HealthTable {
    /// The health of every instance now.
    pub fn current(&self) -> BTreeMap<InstanceKey, Health> {
        self.lock().clone()
    }

    /// A receiver that wakes after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Makes the table hold exactly `services`: an unchecked one is passing; a checked one keeps
    /// its state if it had one, and starts critical if new.
    fn reset(&self, services: &[LocalService]) {
        let mut states = self.lock();
        let fresh: BTreeMap<InstanceKey, Health> = services
            .iter()
            .map(|s| {
                let key = (s.name.clone(), s.port);
                let health = match s.check {
                    None => Health::Passing,
                    Some(_) => states.get(&key).copied().unwrap_or(Health::Critical),
                };
                (key, health)
            })
            .collect();
        if *states != fresh {
            *states = fresh;
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn set(&self, key: &InstanceKey, health: Health) {
        let mut states = self.lock();
        if let Some(state) = states.get_mut(key)
            && *state != health
        {
            *state = health;
            drop(states);
            tracing::info!(service = %key.0, port = key.1, ?health, "local instance health changed");
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<InstanceKey, Health>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts results in a row and says when they flip an instance's health.
#[derive(Debug)]
struct Thresholds {
    rise: u32,
    fall: u32,
    health: Option<Health>,
    streak: u32,
}

impl Thresholds {
    fn new(check: &HealthCheck) -> Self {
        Thresholds {
            rise: check.rise.max(1),
            fall: check.fall.max(1),
            health: None,
            streak: 0,
        }
    }

    /// Takes one result; returns the health it leads to.
    fn observe(&mut self, passed: bool) -> Health {
        let result = if passed {
            Health::Passing
        } else {
            Health::Critical
        };
        match self.health {
            None => {
                self.health = Some(result);
                self.streak = 0;
            }
            Some(current) if current == result => self.streak = 0,
            Some(_) => {
                self.streak += 1;
                let needed = if passed { self.rise } else { self.fall };
                if self.streak >= needed {
                    self.health = Some(result);
                    self.streak = 0;
                }
            }
        }
        self.health.unwrap_or(result)
    }
}

/// Runs the checks of `services` until `stop`, writing results into `table` (which is first
/// reset to exactly these services), in tasks `tasks` owns.
pub fn spawn_checks(
    services: &[LocalService],
    table: &Arc<HealthTable>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) {
    table.reset(services);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    for service in services {
        let Some(check) = service.check.clone() else {
            continue;
        };
        let key = (service.name.clone(), service.port);
        let address = SocketAddr::new(service.address, service.port);
        let table = Arc::clone(table);
        let client = client.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut thresholds = Thresholds::new(&check);
            loop {
                // A reload may stop this check mid-probe: its result then belongs to nobody.
                let passed = tokio::select! {
                    () = stop.cancelled() => return,
                    passed = probe(&client, &check, address) => passed,
                };
                table.set(&key, thresholds.observe(passed));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(check.interval.get()) => {}
                }
            }
        });
    }
}

/// One check, within its timeout: true when it passes.
async fn probe(
    client: &Client<HttpConnector, Empty<Bytes>>,
    check: &HealthCheck,
    address: SocketAddr,
) -> bool {
    let timeout = check.timeout.get();
    let attempt = async {
        match &check.http {
            Some(path) => {
                let Ok(request) = http::Request::get(format!("http://{address}{path}"))
                    .header(http::header::USER_AGENT, "hyphae-health-check")
                    .body(Empty::new())
                else {
                    return false;
                };
                client
                    .request(request)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
            None => tokio::net::TcpStream::connect(address).await.is_ok(),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            rise,
            fall,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn the_first_result_decides_then_rise_and_fall_take_streaks() {
        let mut t = Thresholds::new(&check(2, 3));
        assert_eq!(t.observe(true), Health::Passing, "first result decides");
        assert_eq!(t.observe(false), Health::Passing);
        assert_eq!(t.observe(false), Health::Passing);
        assert_eq!(t.observe(true), Health::Passing, "a pass resets the streak");
        assert_eq!(t.observe(false), Health::Passing);
        assert_eq!(t.observe(false), Health::Passing);
        assert_eq!(
            t.observe(false),
            Health::Critical,
            "three failures in a row"
        );
        assert_eq!(t.observe(true), Health::Critical);
        assert_eq!(t.observe(true), Health::Passing, "two passes in a row");
    }

    #[test]
    fn reset_keeps_known_instances_and_starts_checked_ones_critical() {
        let service = |name: &str, checked: bool| LocalService {
            name: name.into(),
            port: 80,
            address: "127.0.0.1".parse().unwrap(),
            protocol: hyphae_policies::Protocol::Http,
            tags: BTreeMap::new(),
            check: checked.then(HealthCheck::default),
        };
        let table = HealthTable::default();
        table.reset(&[service("a", true), service("b", false)]);
        let key = |n: &str| (n.to_string(), 80);
        assert_eq!(table.current()[&key("a")], Health::Critical);
        assert_eq!(table.current()[&key("b")], Health::Passing);
        table.set(&key("a"), Health::Passing);
        table.reset(&[service("a", true)]);
        assert_eq!(table.current().len(), 1);
        assert_eq!(table.current()[&key("a")], Health::Passing);
        // A check removed on reload: nothing checks it any more, so it passes.
        table.set(&key("a"), Health::Critical);
        table.reset(&[service("a", false)]);
        assert_eq!(table.current()[&key("a")], Health::Passing);
    }
}
