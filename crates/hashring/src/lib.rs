//! A fast, stable consistent-hash ring: keys to members, replicas over zones, bounded loads.
