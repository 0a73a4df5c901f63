//! The heartbeat task: pass the TTL check (warn it once resigned) and renew the session
//! every `heartbeat_interval`, registering again or creating a new session when Consul has
//! forgotten them; each success moves the lease.

use super::*;

impl Shared {
    fn session_request(&self) -> SessionRequest {
        let c = &self.config;
        SessionRequest {
            name: format!("ha-cluster {}/{}", c.service, c.node_id),
            lock_delay: Some(c.lock_delay),
            behavior: Behavior::Release,
            ttl: Some(c.session_ttl),
            service_checks: vec![ServiceCheckRef { id: c.check_id(), namespace: String::new() }],
            ..Default::default()
        }
    }

    pub(super) async fn register(&self) -> Result<(), consul_api::Error> {
        let c = &self.config;
        let (host, port) = c.host_port().map_err(|e| consul_api::Error::invalid(e.to_string()))?;
        let mut reg = ServiceRegistration::new(c.service.clone(), c.service_id());
        reg.address = host;
        reg.port = Some(port);
        reg.tags = c.tags.clone();
        reg.meta.insert(META_NODE_ID.into(), c.node_id.clone());
        reg.meta.insert(META_WEIGHT.into(), c.weight.to_string());
        if let Some(zone) = &c.zone {
            reg.meta.insert(META_ZONE.into(), zone.clone());
        }
        let mut check = CheckDefinition::ttl(c.session_ttl);
        check.check_id = c.check_id();
        check.name = format!("ha-cluster heartbeat of {}", c.node_id);
        check.status = Some(CheckStatus::Passing);
        check.deregister_critical_service_after = c.deregister_critical_after;
        reg.checks = vec![check];
        self.client.agent().register_service(&reg).await
    }

    /// One heartbeat: pass the check, then renew (or create) the session.
    pub(super) async fn beat(&self) -> Result<(), consul_api::Error> {
        let check = self.config.check_id();
        let sent = Instant::now();
        // A resigned member warns: still alive (its session holds), but off every ring.
        let update = || async {
            if self.resigned() {
                self.client.agent().warn_ttl(&check, "resigned: leaving").await
            } else {
                self.client.agent().pass_ttl(&check, "heartbeat").await
            }
        };
        if let Err(e) = update().await {
            if !forgot_check(&e) || self.stopped() {
                return Err(e);
            }
            tracing::warn!(node = %self.config.node_id, error = %e, "Consul forgot this member; registering again");
            self.register().await?;
            update().await?;
        }
        self.lock().pass_sent = Some(sent);

        let session = self.lock().session.clone();
        let sent = Instant::now();
        match session {
            Some(id) => match self.client.session().renew(&id).await? {
                Some(_) => {
                    let mut inner = self.lock();
                    if inner.session.as_ref() == Some(&id) {
                        inner.renew_sent = Some(sent);
                    }
                }
                None => {
                    let mut inner = self.lock();
                    if inner.session.as_ref() == Some(&id) {
                        tracing::warn!(node = %self.config.node_id, "session expired; creating a new one");
                        self.step_down(&mut inner, Instant::now(), "the session was invalidated");
                        inner.session = None;
                        inner.renew_sent = None;
                        drop(inner);
                        self.wake();
                    }
                }
            },
            None if self.stopped() => {}
            None => {
                let id = self.client.session().create(&self.session_request()).await?;
                let mut inner = self.lock();
                inner.session = Some(id);
                inner.renew_sent = Some(sent);
                drop(inner);
                self.wake();
            }
        }
        Ok(())
    }
}

/// Whether a failed check update means Consul no longer knows the check.
fn forgot_check(e: &consul_api::Error) -> bool {
    let m = e.message().to_ascii_lowercase();
    e.is_not_found() || m.contains("unknown check") || m.contains("does not have associated ttl")
}

pub(super) async fn heartbeat_task(shared: Arc<Shared>) {
    let c = &shared.config;
    let mut backoff = Backoff::new(c.retry_min, c.heartbeat_interval, c.seed ^ 0x4842);
    loop {
        let before = shared.lease_valid(&shared.lock(), Instant::now());
        let delay = match shared.beat().await {
            Ok(()) => {
                backoff.reset();
                c.heartbeat_interval
            }
            Err(e) => {
                tracing::warn!(node = %c.node_id, error = %e, "heartbeat failed");
                backoff.next_delay()
            }
        };
        if !before && shared.lease_valid(&shared.lock(), Instant::now()) {
            shared.wake();
        }
        tokio::time::sleep(delay).await;
    }
}
