//! Membership, leader election with fencing tokens, and failover for a service on Consul.
