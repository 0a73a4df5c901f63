//! Shards and replicas over an ha-cluster: placement, routing, rebalancing and recovery.
