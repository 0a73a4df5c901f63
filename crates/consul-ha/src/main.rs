//! The `consul-ha` command: a demo on the embedded sim, a dev agent, and real nodes.

fn main() {}
