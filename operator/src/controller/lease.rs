//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it: one replica
//! holds the lease and renews it; the others wait until it expires. Writes are replaces that
//! carry the resourceVersion read, so two candidates never both win the same round.
//!
//! A leader that cannot renew in time stops its controllers and exits (the pod restarts as a
//! candidate), so at most one replica reconciles once the lease has expired.

use std::time::Duration;

use flywheel_core::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use flywheel_core::k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::error::{Error, KubeContext};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's name (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews and candidates retry.
    pub retry: Duration,
}

impl LeaseSettings {
    pub fn new(name: String, namespace: String, identity: String) -> Self {
        Self {
            name,
            namespace,
            identity,
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do about the lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// This replica holds it: renew.
    Renew,
    /// Another replica holds a valid lease.
    Follow { holder: String },
}

/// The rule, without I/O.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let valid_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = match &spec.renew_time {
        Some(renewed) => renewed.0 + valid_for < now,
        None => true,
    };
    if expired {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// The lease spec after this replica acquires or renews it.
pub fn claimed(
    previous: Option<&LeaseSpec>,
    settings: &LeaseSettings,
    now: Timestamp,
) -> LeaseSpec {
    let renewing = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&settings.identity);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: if renewing {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// One round: read, decide, write. `Ok(true)` while this replica holds the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let name = &self.settings.name;
        let current = self
            .api
            .get_opt(name)
            .await
            .doing(|| format!("read lease {name}"))?;
        let now = Timestamp::now();
        match decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.settings.identity,
            now,
        ) {
            Decision::Follow { .. } => Ok(false),
            Decision::Acquire | Decision::Renew => {
                let spec = claimed(
                    current.as_ref().and_then(|l| l.spec.as_ref()),
                    &self.settings,
                    now,
                );
                let result = match current {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(name.clone()),
                                namespace: Some(self.settings.namespace.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(spec),
                        };
                        self.api.create(&PostParams::default(), &lease).await
                    }
                    Some(mut lease) => {
                        // The resourceVersion read makes this a compare-and-swap.
                        lease.spec = Some(spec);
                        self.api.replace(name, &PostParams::default(), &lease).await
                    }
                };
                match result {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(source) => Err(Error::Kube {
                        action: format!("write lease {name}"),
                        source,
                    }),
                }
            }
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.settings.name, identity = %self.settings.identity, "became leader");
                    return;
                }
                Ok(false) if !announced => {
                    info!(lease = %self.settings.name, "another replica leads; waiting");
                    announced = true;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election round failed"),
            }
            tokio::time::sleep(self.settings.retry).await;
        }
    }

    /// Renews until the lease is lost (another holder, or no successful renewal within the
    /// lease duration); returns then.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.settings.name, "lost the lease to another replica");
                    return;
                }
                Err(error) => {
                    warn!(%error, "failed to renew the lease");
                    // Stop a little before the lease can expire, so the next leader never
                    // overlaps with this one.
                    if last_renewal.elapsed() + self.settings.retry >= self.settings.duration {
                        warn!(lease = %self.settings.name, "could not renew the lease in time");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on shutdown, so a standby takes over without waiting for expiry.
    pub async fn release(&self) {
        let name = &self.settings.name;
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.settings.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(error) = self.api.replace(name, &PostParams::default(), &lease).await {
            warn!(%error, "failed to release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn candidates_follow_a_valid_lease_and_take_an_expired_one() {
        assert_eq!(decide(None, "b", at(100)), Decision::Acquire);
        let lease = held_by("a", 100);
        assert_eq!(decide(Some(&lease), "a", at(110)), Decision::Renew);
        assert_eq!(
            decide(Some(&lease), "b", at(110)),
            Decision::Follow { holder: "a".into() }
        );
        assert_eq!(decide(Some(&lease), "b", at(116)), Decision::Acquire);
        let released = LeaseSpec {
            holder_identity: None,
            ..lease
        };
        assert_eq!(decide(Some(&released), "b", at(101)), Decision::Acquire);
    }

    #[test]
    fn a_takeover_counts_a_transition_and_a_renewal_does_not() {
        let settings = LeaseSettings::new("l".into(), "ns".into(), "b".into());
        let taken = claimed(Some(&held_by("a", 100)), &settings, at(120));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(120))));
        let renewed = claimed(Some(&taken), &settings, at(125));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(120))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(125))));
        assert_eq!(claimed(None, &settings, at(1)).lease_transitions, Some(0));
    }
}
