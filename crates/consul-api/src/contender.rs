//! What [`Lock`](crate::lock::Lock) and [`Semaphore`](crate::semaphore::Semaphore) share: a
//! contender's session, created once per acquisition attempt and renewed from the moment it
//! exists (so a contender waiting longer than its TTL keeps its place, as Go's does), and the
//! holder's state — held, uncertain (Consul did not answer for a while), lost.

use std::time::Duration;

use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::session::{Behavior, SessionRequest};
use crate::types::SessionId;
use crate::{Client, Error};

/// What a holder knows about its lock or slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    /// Consul confirmed it lately.
    Held,
    /// Consul has not answered lately (renewals or watch reads failed); it may still be
    /// held. Stop acting on it until it is `Held` again if acting wrongly is costly.
    Uncertain,
    /// It is gone: the session expired or was destroyed, or the key changed hands. Final.
    Lost,
}

/// Moves the state, never out of `Lost`.
pub(crate) fn set_state(tx: &signal::Sender<HoldState>, to: HoldState) {
    tx.send_if_modified(|s| {
        let change = *s != HoldState::Lost && *s != to;
        if change {
            *s = to;
        }
        change
    });
}

/// A session of our own, renewed every TTL/2 while it lives; destroyed when dropped unless
/// handed over with [`into_parts`](Contender::into_parts).
#[derive(Debug)]
pub(crate) struct Contender {
    client: Client,
    pub(crate) session: SessionId,
    owns_session: bool,
    pub(crate) state: signal::Sender<HoldState>,
    renew: Option<JoinHandle<()>>,
}

impl Contender {
    /// Creates a session (or adopts `existing`, which the caller renews) and starts renewing
    /// what it created.
    pub(crate) async fn start(
        client: &Client,
        existing: Option<SessionId>,
        request: SessionRequest,
    ) -> Result<Contender, Error> {
        let (state, _) = signal::channel(HoldState::Held);
        let (session, owns_session) = match existing {
            Some(s) => (s, false),
            None => (client.session().create(&request).await?, true),
        };
        let renew = match (owns_session, request.ttl) {
            (true, Some(ttl)) => {
                Some(tokio::spawn(keep_alive(client.clone(), session.clone(), ttl, state.clone())))
            }
            _ => None,
        };
        Ok(Contender { client: client.clone(), session, owns_session, state, renew })
    }

    /// A session request with Go's shape for a lock or semaphore contender.
    pub(crate) fn request(
        name: &str,
        ttl: Duration,
        lock_delay: Option<Duration>,
        behavior: Behavior,
    ) -> SessionRequest {
        SessionRequest {
            name: name.to_string(),
            ttl: Some(ttl),
            lock_delay,
            behavior,
            ..Default::default()
        }
    }

    /// Hands the session, its renewal task and the state over to a holder.
    pub(crate) fn into_parts(
        mut self,
    ) -> (SessionId, bool, signal::Sender<HoldState>, Option<JoinHandle<()>>) {
        let renew = self.renew.take();
        let owns = std::mem::replace(&mut self.owns_session, false);
        (self.session.clone(), owns, self.state.clone(), renew)
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        if self.owns_session
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (client, session) = (self.client.clone(), self.session.clone());
            rt.spawn(async move {
                if let Err(e) = client.session().destroy(&session).await {
                    tracing::debug!(%session, error = %e, "destroying a contender's session failed");
                }
            });
        }
    }
}

/// Renews `session` every `ttl / 2`. A failed renewal makes the state uncertain; Consul
/// saying the session is gone, or no renewal succeeding for a whole TTL, makes it lost.
pub(crate) async fn keep_alive(
    client: Client,
    session: SessionId,
    ttl: Duration,
    state: signal::Sender<HoldState>,
) {
    let mut last_ok = tokio::time::Instant::now();
    let mut delay = ttl / 2;
    loop {
        tokio::time::sleep(delay).await;
        match client.session().renew(&session).await {
            Ok(Some(_)) => {
                last_ok = tokio::time::Instant::now();
                delay = ttl / 2;
                set_state(&state, HoldState::Held);
            }
            Ok(None) => {
                tracing::warn!(%session, "session is gone");
                set_state(&state, HoldState::Lost);
                return;
            }
            Err(e) => {
                if last_ok.elapsed() >= ttl {
                    tracing::warn!(%session, error = %e, "no renewal within the TTL");
                    set_state(&state, HoldState::Lost);
                    return;
                }
                set_state(&state, HoldState::Uncertain);
                delay = Duration::from_secs(1).min(ttl / 4);
            }
        }
    }
}
