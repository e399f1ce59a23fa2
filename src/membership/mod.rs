//! Cluster membership: who is a member and how each member is doing.
//!
//! Today the members are fixed by node.toml (`cluster.nodes`); this module holds what a
//! node learns about them at run time. [`detector`] is the failure detector, whose view
//! drives routing only (skip a down replica, pick a stand-in, replay hints): ownership is
//! never detector output. A staged, versioned layout of who owns what (issue 15) is meant
//! to sit beside it here, as its own module.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

pub mod detector;
