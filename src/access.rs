//! Authorization: who may do what to which keyspace.
//!
//! Identity comes from the client's verified certificate (its common name and the role in
//! its organizational unit, see [`crate::tls`]); permissions come from the keyspace
//! definition's grants ([`KeyspaceDef::readers`], [`KeyspaceDef::writers`]). The
//! coordinator checks a request here before doing anything else with it, so a refused
//! request costs one catalog look-up and touches no replica. Replicas do not re-check:
//! peer messages are accepted only from node certificates, and a node is trusted.
//!
//! The rules (docs/SECURITY.md states them for operators):
//! - creating and dropping keyspaces needs an admin certificate;
//! - reads (get, scan) need the client's name in the keyspace's `readers`, writes (put,
//!   delete, batch, CRDT updates) in its `writers`; a grant list that is absent means
//!   every client certificate, an empty one means admins only;
//! - admin and node certificates are not limited by grants (an admin can re-create any
//!   keyspace anyway, and a node can write replicas directly);
//! - listing keyspaces, status, stats, replicas and ping need any valid certificate.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use crate::keyspace::KeyspaceDef;
use crate::proto::ClientRequest;
use crate::tls::Role;

/// Who sent a client request: from the connection's verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate's common name.
    pub name: String,
    /// The certificate's role.
    pub role: Role,
}

impl ClientIdentity {
    /// An admin identity, for in-process callers that act as the cluster's operator
    /// (tests, tools driving a [`crate::node::Node`] directly).
    pub fn admin(name: &str) -> Self {
        ClientIdentity {
            name: name.to_string(),
            role: Role::Admin,
        }
    }

    /// A plain client identity.
    pub fn client(name: &str) -> Self {
        ClientIdentity {
            name: name.to_string(),
            role: Role::Client,
        }
    }

    /// Whether grants do not apply to this identity.
    fn unrestricted(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Node)
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read the keyspace's keys (`readers`).
    Read,
    /// Write the keyspace's keys (`writers`).
    Write,
    /// Create or drop keyspaces (an admin certificate).
    Admin,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        })
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The client lacks a keyspace grant.
    #[error("client {client:?} may not {permission} keyspace {keyspace:?}: it is not in the keyspace's {list} (ask an admin to re-create the keyspace with it, or use an admin certificate)")]
    NoGrant {
        /// The certificate's name.
        client: String,
        /// The keyspace.
        keyspace: String,
        /// Read or write.
        permission: Permission,
        /// `readers` or `writers`.
        list: &'static str,
    },
    /// The request needs an admin certificate.
    #[error("client {client:?} may not {action} keyspace {keyspace:?}: that needs the admin permission (an admin certificate: `quorumkv certs --admin NAME`); this connection presented a {role} certificate")]
    NotAdmin {
        /// The certificate's name.
        client: String,
        /// The certificate's role.
        role: Role,
        /// `create` or `drop`.
        action: &'static str,
        /// The keyspace.
        keyspace: String,
    },
}

/// What `req` needs: `(permission, keyspace name)`, or `None` if any certificate may send
/// it.
pub fn needed(req: &ClientRequest) -> Option<(Permission, &str)> {
    match req {
        ClientRequest::Get(g) | ClientRequest::ReplicaGet(g) => {
            Some((Permission::Read, &g.keyspace))
        }
        ClientRequest::Scan(s) => Some((Permission::Read, &s.keyspace)),
        ClientRequest::Put(p) => Some((Permission::Write, &p.keyspace)),
        ClientRequest::Batch(b) => Some((Permission::Write, &b.keyspace)),
        ClientRequest::Update(u) => Some((Permission::Write, &u.keyspace)),
        ClientRequest::CreateKeyspace(def) => Some((Permission::Admin, &def.name)),
        ClientRequest::DropKeyspace(name) => Some((Permission::Admin, name)),
        ClientRequest::SetClockOffset { .. }
        | ClientRequest::ClusterStage(_)
        | ClientRequest::ClusterCommit
        | ClientRequest::ClusterAbort => Some((Permission::Admin, "")),
        ClientRequest::ListKeyspaces
        | ClientRequest::Replicas { .. }
        | ClientRequest::Status
        | ClientRequest::AaeStatus
        | ClientRequest::Stats
        | ClientRequest::Ping
        | ClientRequest::ClusterStatus
        | ClientRequest::ClusterPlan => None,
    }
}

/// Check an admin request (create or drop `keyspace`).
pub fn check_admin(
    who: &ClientIdentity,
    action: &'static str,
    keyspace: &str,
) -> Result<(), AccessError> {
    if who.unrestricted() {
        return Ok(());
    }
    Err(AccessError::NotAdmin {
        client: who.name.clone(),
        role: who.role,
        action,
        keyspace: keyspace.to_string(),
    })
}

/// Check a read or write of `ks` against its grants.
pub fn check_grant(
    who: &ClientIdentity,
    permission: Permission,
    ks: &KeyspaceDef,
) -> Result<(), AccessError> {
    if who.unrestricted() {
        return Ok(());
    }
    let (grant, list) = match permission {
        Permission::Read => (&ks.readers, "readers"),
        Permission::Write | Permission::Admin => (&ks.writers, "writers"),
    };
    match grant {
        None => Ok(()),
        Some(names) if names.contains(&who.name) => Ok(()),
        Some(_) => Err(AccessError::NoGrant {
            client: who.name.clone(),
            keyspace: ks.name.clone(),
            permission,
            list,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: absent grants let every client through; a list lets only its names through
    /// and the refusal names the client, the keyspace and the permission; an empty list
    /// refuses every client; admins pass every grant; only admins (and nodes) pass the
    /// admin check.
    #[test]
    fn grants_and_roles() {
        let open = KeyspaceDef::new("open", 1, 1, 1);
        let alice = ClientIdentity::client("alice");
        let bob = ClientIdentity::client("bob");
        assert_eq!(check_grant(&alice, Permission::Read, &open), Ok(()));
        assert_eq!(check_grant(&alice, Permission::Write, &open), Ok(()));

        let mut ks = KeyspaceDef::new("orders", 1, 1, 1);
        ks.readers = Some(vec!["alice".into(), "bob".into()]);
        ks.writers = Some(vec!["alice".into()]);
        assert_eq!(check_grant(&bob, Permission::Read, &ks), Ok(()));
        assert_eq!(check_grant(&alice, Permission::Write, &ks), Ok(()));
        let e = check_grant(&bob, Permission::Write, &ks).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("\"bob\"") && m.contains("write") && m.contains("\"orders\""),
            "{m}"
        );
        ks.readers = Some(vec![]);
        assert!(check_grant(&alice, Permission::Read, &ks).is_err());
        assert_eq!(
            check_grant(&ClientIdentity::admin("ops"), Permission::Read, &ks),
            Ok(())
        );

        let m = check_admin(&alice, "create", "orders")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("\"alice\"") && m.contains("admin") && m.contains("\"orders\""),
            "{m}"
        );
        assert_eq!(
            check_admin(&ClientIdentity::admin("ops"), "drop", "orders"),
            Ok(())
        );
    }
}
