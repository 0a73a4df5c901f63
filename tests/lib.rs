//! Nothing here: this package exists to hold the integration-test binary `tests/it`.
