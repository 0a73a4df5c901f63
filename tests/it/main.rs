//! The workspace's one integration-test binary: behaviour of every crate, on consul-sim and,
//! where a test claims a Consul behaviour, on a real Consul 1.8.7 too.

mod cli;
mod client;
mod cluster;
mod cluster_sim;
mod conformance;
mod differential;
mod encoding;
mod go_parity;
mod locks;
mod metrics;
mod real_cluster;
mod real_consul;
mod request_path;
mod rs_consul;
mod shards;
mod sim_agent;
mod sim_blocking;
mod sim_catalog;
mod sim_kv_txn;
mod sim_model;
mod sim_server;
mod sim_wire;
mod support;
mod tls;
mod tls_certs;
mod tls_cli;
mod tls_real;
