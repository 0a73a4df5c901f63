//! An in-memory Consul: a sans-IO state machine with injected time, reachable in-process and over HTTP.
