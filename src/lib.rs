//! gatehouse: the joiner / mover / leaver lifecycle of every identity, from Git.
//!
//! Data flows one way: manifests ([`source`]) become a [`engine::Snapshot`], the pure
//! [`engine`] turns it into desired access with provenance and violations, and the pure
//! [`plan`] diffs desired against a base state into ordered operations.

pub mod api;
pub mod cli;
pub mod controller;
pub mod crds;
pub mod engine;
pub mod hr;
pub mod http;
pub mod plan;
pub mod source;
pub mod synthetic;
pub mod targets;
