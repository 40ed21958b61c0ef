//! The events benchmark (written next): relay throughput and cross-replica wake-ups.
fn main() {}
