//! The membership task: watch the service's health entries and rebuild the ring whenever
//! the healthy set changes.

use super::*;

pub(super) async fn membership_task(shared: Arc<Shared>) {
    let c = shared.config.clone();
    let mut members = shared.client.watch_service(
        c.service.clone(),
        HealthFilter::default(),
        shared.watch_options(0x4d42),
    );
    loop {
        match members.next().await {
            Ok((entries, _)) => apply_membership(&shared, members_of(&entries)),
            Err(e) => {
                tracing::debug!(node = %c.node_id, error = %e, "reading the members failed");
            }
        }
    }
}

/// The cluster members among a service's health entries, one per id (its healthiest
/// registration), sorted by id.
pub(super) fn members_of(entries: &[consul_api::catalog::ServiceEntry]) -> Vec<Member> {
    let mut members: Vec<Member> = entries.iter().filter_map(Member::from_entry).collect();
    members.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| rank(a.health).cmp(&rank(b.health))));
    members.dedup_by(|later, first| later.id == first.id);
    members
}

fn rank(h: Health) -> u8 {
    match h {
        Health::Passing => 0,
        Health::Warning => 1,
        Health::Critical => 2,
        Health::Maintenance => 3,
    }
}

pub(super) fn build_ring(members: &[Member], vnodes_per_weight: u32) -> Ring {
    let healthy = members.iter().filter(|m| m.health == Health::Passing).map(Member::ring_member);
    let config = RingConfig { vnodes_per_weight };
    // Members are deduplicated by id and weights are ≥ 1, so this cannot fail; an empty ring
    // is the safe fallback regardless.
    Ring::with_config(healthy, config)
        .unwrap_or_else(|_| Ring::with_config([], config).expect("an empty ring always builds"))
}

fn apply_membership(shared: &Shared, members: Vec<Member>) {
    let mut inner = shared.lock();
    let mut events = Vec::new();
    for m in &members {
        let before = inner.members.iter().find(|o| o.id == m.id);
        let was_healthy = before.is_some_and(|o| o.health == Health::Passing);
        match (was_healthy, m.health == Health::Passing) {
            (false, true) => events.push(Event::MemberJoined(m.clone())),
            (true, false) => events.push(Event::MemberFailed(m.clone())),
            (false, false) if before.is_none() => events.push(Event::MemberFailed(m.clone())),
            _ => {}
        }
    }
    for old in &inner.members {
        if !members.iter().any(|m| m.id == old.id) {
            events.push(Event::MemberLeft(old.id.clone()));
        }
    }
    let version = membership_version(&members);
    if version != inner.version || inner.members.is_empty() {
        inner.ring = build_ring(&members, shared.config.vnodes_per_weight);
        inner.version = version;
        events.push(Event::RingChanged { version, members: inner.ring.members().len() });
    }
    inner.members = members;
    drop(inner);
    for e in events {
        shared.emit(e);
    }
}
