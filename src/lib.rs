//! slotgate: a gRPC service that takes restaurant seat reservations and stays
//! fast and exact when thousands of clients hit one slot at the same instant.
//!
//! A request is decided by one Lua script in Redis (the *gate*): refusals
//! (sold out, duplicate click, replay) are answered from there and never
//! touch the database. Admitted requests hold their seats in Redis and commit
//! one PostgreSQL transaction, which is the final arbiter: a conditional
//! `UPDATE` plus a `CHECK` constraint make overbooking impossible even when
//! Redis is wrong.
//!
//! # Layout
//!
//! - [`config`]: every setting, from flags and environment, one clap struct.
//! - [`domain`]: validated request types, slot keys, ids; no I/O.
//! - [`gate`]: the Redis side; Lua scripts live next to it as `.lua` files.
//! - [`pools`]: what the Redis and PostgreSQL pools share: failing fast
//!   while the dependency behind them is down.
//! - [`store`]: the PostgreSQL side: migrations, queries, the winner's
//!   transaction.
//! - [`booking`]: the use cases (create, replay, cancel, open, warm,
//!   reconcile) that combine gate and store.
//! - [`lifecycle`]: background work: the expiry sweeper and the periodic
//!   reconciler.
//! - [`clock`]: the time deposit deadlines are read from.
//! - [`service`]: the gRPC handlers and the one place errors become
//!   `tonic::Status`.
//! - [`auth`]: bearer-token authentication of calling services.
//! - [`overload`]: the tower layers that refuse excess load at once
//!   (deadline, concurrency limit with load shedding, rate limit) and the
//!   per-user click guard.
//! - [`server`]: [`server::Application`], the builder `main` and the tests
//!   both use.
//! - [`telemetry`]: the tracing subscriber, set up once by the binary.
//! - [`pb`]: the code generated from `proto/slotgate/v1/reservations.proto`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod booking;
pub mod clock;
pub mod config;
pub mod domain;
pub mod gate;
pub mod lifecycle;
pub mod overload;
pub mod pools;
pub mod server;
pub mod service;
pub mod stats;
pub mod store;
pub mod telemetry;

/// Generated protobuf types, server traits and clients.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("slotgate.v1");

    /// Encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("slotgate_descriptor");
}
