//! The workspace's one integration-test binary: behaviour of every crate, on consul-sim.
