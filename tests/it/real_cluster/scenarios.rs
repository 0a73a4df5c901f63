//! The scenarios. Each runs on its own Consul cluster and ends with the checker's verdict.

use std::time::Duration;

use consul_api::txn::{KvOp, TxnOutcome};

use super::procs::mono_ns;
use super::{Harness, Report, Settings};

fn crashes() -> usize {
    std::env::var("REAL_CLUSTER_CRASHES").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// How long real Consul takes to reap `n` sessions of TTL `ttl` that are never renewed
/// (bound to the node's serfHealth only), from the creation's answer to the first read that
/// no longer finds them. Consul promises between 1× and 2× the TTL.
async fn session_reaps(h: &Harness, ttl: Duration, n: usize) -> Vec<f64> {
    let c = h.observer().clone();
    let reaps = (0..n).map(|i| {
        let c = c.clone();
        async move {
            // Spread the creations over a second, so they do not share one timer tick.
            tokio::time::sleep(Duration::from_millis(250 * i as u64)).await;
            let req = consul_api::session::SessionRequest {
                name: format!("reap-{i}"),
                ttl: Some(ttl),
                ..Default::default()
            };
            let id = c.session().create(&req).await.expect("session create");
            let created = mono_ns();
            let q = consul_api::QueryOptions::default();
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if matches!(c.session().info(&id, &q).await, Ok((None, _))) {
                    return secs(mono_ns() - created);
                }
                assert!(secs(mono_ns() - created) < 60.0, "session {id:?} never reaped");
            }
        }
    });
    let mut out = futures_util::future::join_all(reaps).await;
    out.sort_by(f64::total_cmp);
    out
}

/// 1. Member crash: SIGKILL of followers (the leader stays) and of the leader, ≥ 30 times
/// (the crash-failover figure); then, with a short rebalance delay, the time from a member's
/// death to every shard healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Consul cluster; run by `cargo xtask real-cluster`"]
async fn member_crash() {
    let s = Settings::fast("60s");
    let mut r = Report::new("member_crash", &s);
    let (mut h, cold) = Harness::start("member_crash", 4, s.clone()).await;
    r.cold_start_s.push(cold);
    r.session_reap_s = session_reaps(&h, s.ttl, 4).await;

    // Followers: the leader must stay.
    for round in 0..2 {
        let (leader, token) = h.leader().await.expect("a leader");
        let victim = (h.index(&leader) + 1 + round) % h.members.len();
        h.crash(victim);
        tokio::time::sleep(s.ttl * 2 + s.lock_delay).await;
        match h.leader().await {
            Some((_, t)) if t == token => {}
            other => r
                .failures
                .push(format!("a follower's crash moved leadership: token {token} → {other:?}")),
        }
        h.start_member(victim);
        h.wait_healthy(Duration::from_secs(30)).await;
    }

    // The leader, again and again.
    for round in 0..crashes() {
        let (leader, token) = h.leader().await.expect("a leader");
        let i = h.index(&leader);
        let changes = |h: &Harness| -> Vec<Option<f64>> {
            h.members.iter().map(|m| m.metric("consul_ha_leadership_changes_total")).collect()
        };
        let before = changes(&h);
        let killed = h.crash(i);
        let (next, next_token) = h.wait_leader(Some(token), Duration::from_secs(30)).await;
        r.crash_failover_s.push(h.elected_at(&next, next_token) - secs(killed));
        if round == 0 {
            // The metrics must have moved with the failover (refreshed every 250 ms).
            tokio::time::sleep(Duration::from_millis(600)).await;
            let after = changes(&h);
            let n = h.index(&next);
            let new_leader = &h.members[n];
            let is_leader = new_leader.metric("consul_ha_is_leader");
            let fencing = new_leader.metric("consul_ha_fencing_token");
            let moved = (0..h.members.len())
                .filter(|&j| j != i)
                .all(|j| matches!((before[j], after[j]), (Some(b), Some(a)) if a > b));
            r.notes.push(format!(
                "metrics over a failover: leadership changes {before:?} → {after:?}; new leader is_leader {is_leader:?}, fencing token {fencing:?} (key's {next_token})"
            ));
            if !moved || is_leader != Some(1.0) || fencing != Some(next_token as f64) {
                r.failures.push("the metrics did not follow the failover".into());
            }
        }
        h.start_member(i);
        h.wait_healthy(Duration::from_secs(30)).await;
    }

    // Shard recovery: re-replication after a short rebalance delay.
    let mut cfg = s.shards.clone();
    cfg["version"] = 2.into();
    cfg["rebalance_delay"] = "1s".into();
    h.observer().kv().put("prod-config/rc/config", cfg.to_string()).await.expect("config v2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for round in 0..3 {
        let (leader, _) = h.leader().await.expect("a leader");
        let victim = (h.index(&leader) + 1 + round) % h.members.len();
        let killed = h.crash(victim);
        let healthy = h.wait_healthy(Duration::from_secs(60)).await;
        r.shard_recovery_s.push(secs(healthy - killed));
        h.start_member(victim);
        h.wait_healthy(Duration::from_secs(60)).await;
    }
    r.notes.push("shard recovery with rebalance_delay 1s, copy time 1s".into());
    r.judge(&h.verdict());
    h.clean_up();
    r.finish();
}

/// 2. Member pause: SIGSTOP longer than TTL + lock-delay, then SIGCONT. The paused leader's
/// term must end (by its own clock) before anyone else's begins, and nothing it writes
/// after resuming may commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Consul cluster; run by `cargo xtask real-cluster`"]
async fn member_pause() {
    let s = Settings::fast("60s");
    let mut r = Report::new("member_pause", &s);
    let (mut h, cold) = Harness::start("member_pause", 3, s.clone()).await;
    r.cold_start_s.push(cold);
    let pause = s.ttl + s.lock_delay + Duration::from_secs(2);
    let mut stale_rejected = 0;
    for round in 0..3 {
        let (leader, token) = h.leader().await.expect("a leader");
        // Rounds 0 and 2 pause the leader, round 1 a follower.
        let i = if round == 1 { (h.index(&leader) + 1) % 3 } else { h.index(&leader) };
        let id = h.members[i].id.clone();
        // The guards the paused leader's writes carry: its session and the key's index.
        let (held, _) = h
            .observer()
            .kv()
            .get_with("ha-cluster/rc/leader", &consul_api::QueryOptions::default())
            .await
            .expect("the leader key");
        h.checker.set_alive(&id, false);
        let paused = h.members[i].proc.signal("STOP");
        tokio::time::sleep(pause).await;
        let now = h.leader().await;
        h.members[i].proc.signal("CONT");
        h.checker.set_alive(&id, true);
        if round != 1 {
            match now {
                Some((next, t)) if t != token && next != id => {
                    r.crash_failover_s.push(h.elected_at(&next, t) - secs(paused));
                }
                other => r.failures.push(format!(
                    "no other member took over while {id} was paused {pause:?}: {other:?}"
                )),
            }
            // A write under the paused leader's guards, as it would send it on resuming,
            // must be rejected by Consul itself.
            let held = held.expect("the key was held");
            let key = "ha-cluster/rc/leader";
            let ops = [
                KvOp::check_session(key, held.session.clone().expect("a holder")),
                KvOp::check_index(key, held.modify_index),
                KvOp::set("prod-config/rc/stale-write", "from a deposed leader"),
            ];
            match h.observer().txn().execute(&ops).await {
                Ok(TxnOutcome::RolledBack(_)) => stale_rejected += 1,
                other => {
                    r.failures.push(format!("a deposed leader's write was not rejected: {other:?}"))
                }
            }
            // The paused leader's own report must end its term at or before its lease.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let own = h.terms().into_iter().find(|t| t.member == id && t.token == token);
            match own {
                Some(t) if t.end <= paused + (s.ttl).as_nanos() as u64 => {}
                other => r.failures.push(format!(
                    "{id}'s term {token} did not end within its lease after the pause: {other:?}"
                )),
            }
        } else if now.as_ref().map(|l| l.1) != Some(token) {
            r.failures.push(format!("a paused follower moved leadership: {now:?}"));
        }
        h.wait_healthy(Duration::from_secs(30)).await;
    }
    let rejected: usize =
        h.members.iter().map(|m| m.proc.log().matches("Consul rejected").count()).sum();
    r.notes.push(format!("writes Consul rejected from resumed members: {rejected}"));
    r.notes.push(format!(
        "writes sent under a paused leader's guards after the takeover: {stale_rejected}, all rejected"
    ));
    r.notes.push("crash_failover_s here: pause → next leader's term".into());
    r.judge(&h.verdict());
    h.clean_up();
    r.finish();
}

/// 5. Rolling restart, graceful, one member at a time; then the leader restarted a few more
/// times for the handover figure. Every shard stays routable and never below `min_live`
/// running in-sync copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Consul cluster; run by `cargo xtask real-cluster`"]
async fn rolling_restart() {
    let s = Settings::fast("60s");
    let min_live = s.shards["min_live"].as_u64().unwrap_or(2) as usize;
    let mut r = Report::new("rolling_restart", &s);
    let (mut h, cold) = Harness::start("rolling_restart", 4, s.clone()).await;
    r.cold_start_s.push(cold);
    let from = mono_ns();
    let n = h.members.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Then the leader, five more times.
    order.extend([usize::MAX; 5]);
    for step in order {
        let (leader, token) = h.leader().await.expect("a leader");
        let i = if step == usize::MAX { h.index(&leader) } else { step };
        let was_leader = h.members[i].id == leader;
        let stopped = h.stop(i);
        if was_leader {
            let (next, t) = h.wait_leader(Some(token), Duration::from_secs(10)).await;
            r.handover_ms.push((h.elected_at(&next, t) - secs(stopped)) * 1e3);
        }
        h.start_member(i);
        h.wait_healthy(Duration::from_secs(30)).await;
    }
    let (failed, low) = h.checker.with(|rec| {
        let window = rec.samples.iter().filter(|x| x.at >= from);
        window.fold((0, usize::MAX), |(f, l), x| (f + x.failed_routes, l.min(x.min_live_in_sync)))
    });
    r.failed_routes = failed;
    r.min_live_in_sync = Some(low);
    if failed > 0 {
        r.failures.push(format!("{failed} shard-samples had no running in-sync primary"));
    }
    if low < min_live {
        r.failures
            .push(format!("a shard fell to {low} running in-sync copies (min_live {min_live})"));
    }
    r.judge(&h.verdict());
    h.clean_up();
    r.finish();
}

/// 3. Consul servers: the raft leader SIGKILLed and restarted; a minority (one follower
/// server) lost and restarted; then quorum lost (two servers down) for longer than the
/// TTL, and regained. Members keep or hand over leadership safely, and a leader cut off
/// from quorum stops acting within its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Consul cluster; run by `cargo xtask real-cluster`"]
async fn consul_servers() {
    let s = Settings::fast("60s");
    let mut r = Report::new("consul_servers", &s);
    let (mut h, cold) = Harness::start("consul_servers", 3, s.clone()).await;
    r.cold_start_s.push(cold);
    let ready = Duration::from_secs(60);

    // The raft leader, then a follower server.
    for what in ["raft leader", "follower server"] {
        let leader = h.consul.raft_leader().await.expect("a raft leader");
        let i = if what == "raft leader" { leader } else { (leader + 1) % 3 };
        h.consul.servers[i].proc.kill();
        tokio::time::sleep(s.ttl * 2).await;
        if h.leader().await.is_none() {
            // Two servers keep quorum: someone must lead within the failover bound.
            tokio::time::sleep(s.ttl + s.lock_delay).await;
            if h.leader().await.is_none() {
                r.failures.push(format!("no member leads with the {what} down"));
            }
        }
        h.consul.servers[i].proc.start();
        h.consul.wait_ready(ready).await;
        h.wait_healthy(ready).await;
    }

    // Quorum lost: two servers down for TTL + lock-delay + 3 s.
    let leader = h.consul.raft_leader().await.expect("a raft leader");
    let down = [leader, (leader + 1) % 3];
    let before = h.leader().await;
    let mut lost = 0;
    for &i in &down {
        lost = h.consul.servers[i].proc.kill();
    }
    tokio::time::sleep(s.ttl + s.lock_delay + Duration::from_secs(3)).await;
    // Nobody may act as leader once every lease has run out (they cannot be renewed).
    let acting_at = lost + (s.ttl + s.lock_delay).as_nanos() as u64;
    let acting: Vec<String> = h
        .terms()
        .iter()
        .filter(|t| t.start <= acting_at && t.end > acting_at)
        .map(|t| format!("{} (token {})", t.member, t.token))
        .collect();
    if !acting.is_empty() {
        r.failures.push(format!("acting as leader without quorum past the lease: {acting:?}"));
    }
    for &i in &down {
        h.consul.servers[i].proc.start();
    }
    h.consul.wait_ready(ready).await;
    let regained = mono_ns();
    let (id, token) = h.wait_leader(None, ready).await;
    // Time from quorum back to a member acting as leader (0 if its term spans the loss).
    let acting = (h.elected_at(&id, token) - secs(regained)).max(0.0);
    r.notes.push(format!(
        "leader before quorum loss {before:?}, after {id} (token {token}); a member acts {acting:.2} s after quorum is back"
    ));
    h.wait_healthy(ready).await;
    r.judge(&h.verdict());
    h.clean_up();
    r.finish();
}

/// 4. A member's local Consul agent SIGKILLed and restarted (the leader's, then a
/// follower's): the member cannot renew, so it stops acting within its lease; Consul marks
/// the node failed and invalidates its session; another member takes over; on restart the
/// member registers again and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Consul cluster; run by `cargo xtask real-cluster`"]
async fn agent_restart() {
    let s = Settings::fast("60s");
    let mut r = Report::new("agent_restart", &s);
    let (mut h, cold) = Harness::start("agent_restart", 3, s.clone()).await;
    r.cold_start_s.push(cold);
    let ready = Duration::from_secs(60);
    for round in 0..2 {
        let (leader, token) = h.leader().await.expect("a leader");
        let i = if round == 0 { h.index(&leader) } else { (h.index(&leader) + 1) % 3 };
        let id = h.members[i].id.clone();
        let killed = h.consul.clients[i].proc.kill();
        if round == 0 {
            let (next, t) = h.wait_leader(Some(token), Duration::from_secs(60)).await;
            r.notes.push(format!(
                "leader's agent killed: {next} leads {:.2} s later (serf failure detection + lock-delay)",
                h.elected_at(&next, t) - secs(killed)
            ));
            let own = h.terms().into_iter().find(|t| t.member == id && t.token == token);
            match own {
                Some(t) if t.end <= killed + s.ttl.as_nanos() as u64 => {}
                other => r
                    .failures
                    .push(format!("{id} kept acting past its lease without its agent: {other:?}")),
            }
        } else {
            tokio::time::sleep(s.ttl * 3).await;
            if h.leader().await.map(|l| l.1) != Some(token) {
                r.failures.push("a follower's agent loss moved leadership".into());
            }
        }
        h.consul.clients[i].proc.start();
        h.consul.wait_ready(ready).await;
        h.wait_healthy(ready).await;
    }
    r.judge(&h.verdict());
    h.clean_up();
    r.finish();
}

/// 6. A member partitioned from the servers: it and its agent run in a network namespace
/// joined by a veth pair, whose inner end goes down for 8 s and comes back. As the leader,
/// it must stop acting within its lease while the others take over once Consul declares its
/// node failed; as a follower, leadership stays put. Healed, it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Consul cluster in a network namespace (root); run by `cargo xtask real-cluster`"]
async fn partition() {
    let s = Settings::fast("60s");
    let mut r = Report::new("partition", &s);
    let ns = match super::netns::Netns::create() {
        Ok(ns) => ns,
        Err(e) => panic!("cannot create a network namespace (this scenario needs root): {e}"),
    };
    let (mut h, cold) = Harness::start_in("partition", 3, s.clone(), Some((ns, 0))).await;
    r.cold_start_s.push(cold);
    let isolated = h.members[0].id.clone();
    let mut roles = Vec::new();
    for round in 0..2 {
        // The first round wants the isolated member leading: the others leave gracefully
        // (it is then the only candidate) and come back. After that round's failover it
        // follows, which is what the second round wants.
        if round == 0 && h.leader().await.is_none_or(|(l, _)| l != isolated) {
            for i in 1..h.members.len() {
                h.stop(i);
            }
            let (leader, _) = h.wait_leader(None, Duration::from_secs(10)).await;
            assert_eq!(leader, isolated, "the only member left must lead");
            for i in 1..h.members.len() {
                h.start_member(i);
            }
            h.wait_healthy(Duration::from_secs(60)).await;
        }
        let (leader, token) = h.leader().await.expect("a leader");
        let was_leader = leader == isolated;
        roles.push(if was_leader { "leader" } else { "follower" });
        h.checker.set_alive(&isolated, false);
        let cut = mono_ns();
        h.netns.as_ref().expect("netns").set_connected(false).expect("partition");
        tokio::time::sleep(Duration::from_secs(8)).await;
        let during = h.leader().await;
        h.netns.as_ref().expect("netns").set_connected(true).expect("heal");
        h.checker.set_alive(&isolated, true);
        if was_leader {
            match during {
                Some((next, t)) if t != token && next != isolated => {
                    r.notes.push(format!(
                        "partitioned leader: {next} leads {:.2} s after the cut (serf failure detection + lock-delay)",
                        h.elected_at(&next, t) - secs(cut)
                    ));
                }
                other => r.failures.push(format!(
                    "nobody took over from the partitioned leader {isolated}: {other:?}"
                )),
            }
            let own = h.terms().into_iter().find(|t| t.member == isolated && t.token == token);
            match own {
                Some(t) if t.end <= cut + s.ttl.as_nanos() as u64 => {}
                other => r
                    .failures
                    .push(format!("the partitioned leader kept acting past its lease: {other:?}")),
            }
        } else if during.as_ref().map(|l| l.1) != Some(token) {
            r.failures.push(format!("a partitioned follower moved leadership: {during:?}"));
        }
        h.wait_healthy(Duration::from_secs(60)).await;
    }
    r.notes.push(format!("partitioned as: {roles:?}"));
    r.judge(&h.verdict());
    h.clean_up();
    r.finish();
}
