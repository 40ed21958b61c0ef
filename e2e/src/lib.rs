//! End-to-end tests of Berth across separate processes; everything lives in `tests/`.
//!
//! `tests/cluster/` starts the real `berth-control` (on a fresh PostgreSQL database), two
//! `berth-agent`s as two hosts and two `berth-runner`s, and drives them through the HTTP APIs.
//! The binaries must be built first: `cargo build --workspace --bins`.
