//! The gateway's integration tests: one binary, real sockets on 127.0.0.1:0,
//! the simulator as the upstream. Each test asserts on what the client got and
//! on what the upstream saw (`/_sim/requests`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

mod binary;
mod breaker;
mod browser;
mod cache;
mod cluster;
mod conformance;
mod credentials;
mod deadlines;
mod encoded;
mod errors;
mod faults;
mod goodput;
mod hostile;
mod keys;
mod keys_cli;
mod leaks;
mod left;
mod ops;
mod overhead;
mod page;
mod proxy;
mod reload;
mod retries;
mod routes;
mod shaping;
mod streaming;
mod support;
mod upstream_proxy;
