//! The workspace's one integration-test binary: behaviour of every crate, on consul-sim.

mod cli;
mod cluster;
mod cluster_sim;
mod conformance;
mod locks;
mod rs_consul;
mod shards;
mod sim_agent;
mod sim_model;
mod sim_server;
mod sim_wire;
mod support;
