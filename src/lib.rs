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
//! # Seats going back
//!
//! Seats return in three ways, each with its own verb:
//!
//! - **release**: a hold whose reservation did not commit ends, and its
//!   seats go back to the gate's counter ([`gate::Gate::release`]).
//! - **free**: a reservation that ends (cancelled, expired) gives its seats
//!   back to its slot in the database, in the transaction that ends it
//!   ([`store::manage`]).
//! - **give back**: after the database freed them, the same seats go back to
//!   the gate's counter ([`gate::Gate::give_back`]).
//!
//! Each happens at most once per hold or reservation: the scripts act only
//! for the attempt (nonce) or user entry that still holds the seats, and the
//! database frees seats only in the statement that moves the reservation out
//! of an active status.
//!
//! # Layout
//!
//! - [`config`]: every setting, from flags and environment, one clap struct;
//!   the [`config::Strategy`] that decides requests.
//! - [`domain`]: validated request types, slot keys, ids, codes; no I/O.
//! - [`gate`]: the Redis side: the scripts a reservation's way through
//!   calls (`mod.rs`), counter upkeep (`upkeep.rs`), the key layout
//!   (`keys.rs`), connections and the namespace's owner (`conn.rs`); the
//!   Lua scripts as `.lua` files.
//! - [`store`]: the PostgreSQL side: the winner's transaction (`create.rs`),
//!   reading reservations (`reservations.rs`), the deployment a database
//!   belongs to (`deployment.rs`), cancel, confirm, expire
//!   (`manage.rs`), slots (`slots.rs`), menus (`menus.rs`), the
//!   database-only comparison strategies (`strategies.rs`) and statements
//!   prepared once per connection (`prepared.rs`).
//! - [`links`]: how the dependencies are reached: PostgreSQL and Redis
//!   URLs, TLS over rustls, secrets given as files and read again on
//!   SIGHUP.
//! - [`booking`]: the use cases that combine gate and store: create
//!   (`create.rs`), manage a reservation (`manage.rs`), run the slots and
//!   their counters (`upkeep.rs`).
//! - [`service`]: the gRPC handlers, one file per proto service.
//! - [`overload`], [`auth`]: the tower layers in front of the business
//!   services (deadline, load shedding, concurrency and rate limits, the
//!   per-user click guard; bearer tokens); [`precheck`], the layer that
//!   runs the checks (authentication, rate limit) that decide a call before
//!   the service sees it.
//! - [`status`]: the one place a `tonic::Status` is built, with its
//!   machine-readable reason; used by the handlers and the layers alike.
//! - [`lifecycle`]: background passes: the lease reaper, the expiry sweeper
//!   and the periodic reconciler.
//! - [`relay`]: reservation events published to RabbitMQ, by one replica
//!   at a time.
//! - [`telemetry`], [`metrics`], [`pools`]: logs and traces (set up once, by
//!   the binary); what the service counts; the connection pools and their
//!   timed checkout.
//! - [`clock`]: the time deposit deadlines are read from.
//! - [`server`]: [`server::Application`], the builder `main` and the tests
//!   both use.
//! - [`pb`]: the code generated from `proto/slotgate/v1/reservations.proto`.

pub mod auth;
pub mod booking;
pub mod clock;
pub mod config;
pub mod domain;
pub mod gate;
pub mod lifecycle;
pub mod links;
pub mod metrics;
pub mod overload;
pub mod pools;
pub mod precheck;
pub mod relay;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod telemetry;

/// Generated protobuf types, server traits and clients.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("slotgate.v1");

    /// Encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("slotgate_descriptor");
}
