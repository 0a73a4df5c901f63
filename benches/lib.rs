//! Nothing here: this package exists to hold the criterion benches under `benches/benches`.
