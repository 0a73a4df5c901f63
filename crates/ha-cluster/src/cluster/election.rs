//! The election task: watch the leader key, acquire it when free (a `lock` + `get`
//! transaction, so the fencing token comes back atomically), step down when the lease runs
//! out or the key changes hands.

use super::*;

/// Where the election loop's read of the leader key left it.
pub(super) enum KeyState {
    /// Held by our session (at this `LockIndex` / `ModifyIndex`).
    Ours(Index, Index),
    /// Held by another member.
    Other(LeaderInfo),
    /// Nobody holds it.
    Free,
}

pub(super) fn key_state(pair: Option<&KvPair>, ours: Option<&SessionId>) -> KeyState {
    let Some(pair) = pair else { return KeyState::Free };
    let Some(session) = &pair.session else { return KeyState::Free };
    if Some(session) == ours {
        return KeyState::Ours(pair.lock_index, pair.modify_index);
    }
    let value = pair.value.as_deref().and_then(|v| serde_json::from_slice::<LeaderValue>(v).ok());
    let (node_id, address) =
        value.map_or_else(|| (String::new(), String::new()), |v| (v.node_id, v.address));
    KeyState::Other(LeaderInfo {
        node_id,
        address,
        fencing_token: pair.lock_index,
        since: pair.modify_index,
        session: session.clone(),
    })
}

pub(super) async fn election_task(shared: Arc<Shared>) {
    let c = shared.config.clone();
    let key = c.leader_key();
    let mut wake = shared.wake.subscribe();
    let mut backoff = Backoff::new(c.retry_min, c.retry_max, c.seed ^ 0x454c);
    let mut leader_key = shared.client.watch_key(key.clone(), shared.watch_options(0x454c));
    // Consul refused our last attempt on a free key: it is in lock-delay.
    let mut refused = false;
    loop {
        // Wait for the key to change, a wake-up, or the end of our lease, whichever comes
        // first; the lease timer re-arms as heartbeats extend the lease, without dropping the
        // read.
        let result = {
            let read = leader_key.next();
            tokio::pin!(read);
            loop {
                let deadline = {
                    let inner = shared.lock();
                    inner.term.as_ref().and(shared.lease_until(&inner))
                };
                let lease_end = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = &mut read => break Some(r),
                    _ = wake.changed() => break None,
                    () = lease_end => {
                        let now = Instant::now();
                        let mut inner = shared.lock();
                        if !shared.lease_valid(&inner, now) {
                            shared.step_down(&mut inner, now, "the lease ran out before a renewal was confirmed");
                        }
                    }
                }
            }
        };
        // Woken: our session or lease changed, so the key must be judged again now, with a
        // read that does not block.
        let Some(result) = result else {
            leader_key.reset();
            continue;
        };
        let pair = match result {
            Ok((pair, _)) => {
                backoff.reset();
                pair
            }
            Err(e) => {
                // The watcher backs off before its next read.
                tracing::debug!(node = %c.node_id, error = %e, "reading the leader key failed");
                continue;
            }
        };

        let now = Instant::now();
        // Decide under the lock; acquire (which awaits) outside it.
        let attempt = {
            let mut inner = shared.lock();
            match key_state(pair.as_ref(), inner.session.as_ref()) {
                KeyState::Ours(token, modify_index) => {
                    let held = inner.term.as_ref().is_some_and(|t| t.token == token);
                    if let (false, true, Some(session)) =
                        (held, shared.lease_valid(&inner, now), inner.session.clone())
                    {
                        take_office(&shared, &mut inner, token, modify_index, session, now);
                    }
                    None
                }
                KeyState::Other(leader) => {
                    shared.step_down(&mut inner, now, "another member holds the leader key");
                    if inner.leader.as_ref() != Some(&leader) {
                        inner.leader = Some(leader.clone());
                        shared.emit(Event::LeaderElected { leader, is_self: false, at: now });
                    }
                    None
                }
                KeyState::Free => {
                    shared.step_down(&mut inner, now, "the leader key was released");
                    inner.leader = None;
                    inner.session.clone().filter(|_| shared.lease_valid(&inner, now))
                }
            }
        };
        let Some(session) = attempt.filter(|_| !shared.stopped() && !shared.resigned()) else {
            refused = false;
            continue;
        };
        if std::mem::take(&mut refused) {
            // Refused, and still free when read again: the lock-delay of an invalidated
            // holder. Waiting it out once is always enough.
            tokio::time::sleep(c.lock_delay + backoff.spread(c.retry_min)).await;
        }
        match try_acquire(&shared, &key, &session).await {
            Ok(true) => {}
            Ok(false) => {
                refused = true;
                leader_key.reset();
            }
            Err(e) => {
                tracing::debug!(node = %c.node_id, error = %e, "acquiring the leader key failed");
                tokio::time::sleep(backoff.next_delay()).await;
                leader_key.reset();
            }
        }
    }
}

fn take_office(
    shared: &Shared,
    inner: &mut Inner,
    token: Index,
    modify_index: Index,
    session: SessionId,
    now: Instant,
) {
    let c = &shared.config;
    inner.term = Some(Term { token, modify_index, session: session.clone() });
    let leader = LeaderInfo {
        node_id: c.node_id.clone(),
        address: c.node_address.clone(),
        fencing_token: token,
        since: modify_index,
        session,
    };
    inner.leader = Some(leader.clone());
    shared.emit(Event::LeaderElected { leader, is_self: true, at: now });
}

/// Tries to take the leader key; `Ok(false)` if Consul refused (held, or in lock-delay).
async fn try_acquire(
    shared: &Shared,
    key: &str,
    session: &SessionId,
) -> Result<bool, consul_api::Error> {
    let c = &shared.config;
    let value = serde_json::to_vec(&LeaderValue {
        node_id: c.node_id.clone(),
        address: c.node_address.clone(),
    })
    .expect("a struct of strings serializes");
    let ops = [KvOp::lock(key, Bytes::from(value), session.clone()), KvOp::get(key)];
    match shared.client.txn().execute(&ops).await? {
        TxnOutcome::Committed(results) => {
            let Some(pair) = results.last() else {
                return Err(consul_api::Error::decode("the lock transaction returned no entry"));
            };
            let now = Instant::now();
            let mut inner = shared.lock();
            if inner.session.as_ref() == Some(session)
                && shared.lease_valid(&inner, now)
                && !shared.stopped()
                && !shared.resigned()
            {
                take_office(
                    shared,
                    &mut inner,
                    pair.lock_index,
                    pair.modify_index,
                    session.clone(),
                    now,
                );
            }
            Ok(true)
        }
        TxnOutcome::RolledBack(errors) => {
            tracing::debug!(node = %c.node_id, ?errors, "the leader key was not acquired");
            Ok(false)
        }
    }
}
