//! slotgate's integration tests: one binary, one module per feature, each
//! test against a real slotgate over real gRPC, with real PostgreSQL and
//! Redis behind it.

mod admin;
mod bursts;
mod cancel;
mod cluster;
mod concurrent;
mod deployment;
mod deposits;
mod discovery;
mod docs;
mod events;
mod exactness;
mod fault_kit;
mod faults;
mod helpers;
mod idempotency;
mod links;
mod listing;
mod lookup;
mod model;
mod overload;
mod pki;
mod preorder;
mod reaper;
mod reconcile;
mod relay;
mod security;
mod shutdown;
mod strategies;
mod telemetry;
mod tls_kit;
mod validation;
mod waitlist;
mod waitlist_audit;
mod waitlist_faults;
mod waitlist_load;
mod waitlist_rules;
mod windows;
