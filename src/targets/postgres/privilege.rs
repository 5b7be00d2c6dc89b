//! The privilege rule: which group roles may never be an entitlement. A role is
//! *powerful* when it is a built-in `pg_*` role, has SUPERUSER, CREATEROLE, BYPASSRLS,
//! REPLICATION or LOGIN, or is a gatehouse account (of any tenant or target). A group role is
//! *tainted* when it is powerful or a member, directly or through other roles, of a powerful
//! role: its members could use that role's powers, by inheritance or `SET ROLE`.
//!
//! Granting a tainted role is refused with a permanent error that names why
//! ([`GRANTABLE_SQL`], [`Postgres::check_group`]). Memberships in tainted roles are observed
//! like any other and reported as findings ([`OBSERVE_SQL`]), so the planner revokes them
//! whenever they are not wanted (a leaver's above all): revoking is always allowed.

use super::{EntitlementRef, Postgres, TargetError, quote_ident};

impl Postgres {
    /// Refuses a group role whose membership would give more than an entitlement may: a
    /// built-in `pg_*` role; one with SUPERUSER, CREATEROLE, BYPASSRLS, REPLICATION or LOGIN;
    /// a gatehouse account (of any tenant or target); or one that is, directly or through
    /// other roles, a member of such a role (its members could use that role's powers, by
    /// inheritance or `SET ROLE`). [`OBSERVE_SQL`] marks held memberships by the same rule. A
    /// group that does not exist passes (the caller reports it).
    pub(super) async fn check_group(
        &self,
        client: &deadpool_postgres::Object,
        group: &str,
        entitlement: &EntitlementRef,
    ) -> Result<(), TargetError> {
        const WHAT: &str = "checking a group role";
        let statement = client
            .prepare_cached(GRANTABLE_SQL)
            .await
            .map_err(|e| self.classify(e, "preparing"))?;
        let Some(row) = client
            .query_opt(&statement, &[&group])
            .await
            .map_err(|e| self.classify(e, WHAT))?
        else {
            return Ok(());
        };
        let refusal = Refusal {
            role: self.column(&row, 0, WHAT)?,
            superuser: self.column(&row, 1, WHAT)?,
            createrole: self.column(&row, 2, WHAT)?,
            bypassrls: self.column(&row, 3, WHAT)?,
            replication: self.column(&row, 4, WHAT)?,
            login: self.column(&row, 5, WHAT)?,
            account: self.column(&row, 6, WHAT)?,
        };
        // From the group to the powerful role, each a member of the next.
        let chain: Vec<String> = self.column(&row, 7, WHAT)?;
        let why = refusal.reasons();
        let (what, undo) = match chain.as_slice() {
            [.., member, _] => (
                format!(
                    "it is a member of role {:?} (through {}), which {why}, so every member of \
                     {group:?} could use that role's privileges",
                    refusal.role,
                    chain
                        .iter()
                        .map(|r| format!("{r:?}"))
                        .collect::<Vec<_>>()
                        .join(" -> ")
                ),
                format!(
                    ", or end that membership (REVOKE {} FROM {})",
                    quote_ident(&refusal.role).unwrap_or_else(|_| format!("{:?}", refusal.role)),
                    quote_ident(member).unwrap_or_else(|_| format!("{member:?}"))
                ),
            ),
            _ => (format!("it {why}"), String::new()),
        };
        Err(TargetError::Permanent(format!(
            "role {group:?} on target {} cannot be an entitlement: {what}. gatehouse grants and \
             revokes only plain group roles: NOLOGIN, not a built-in pg_* role, without SUPERUSER, \
             CREATEROLE, BYPASSRLS or REPLICATION, not a gatehouse account, and not a member of any \
             such role. Remove the entitlement {entitlement} from the policy or exception that \
             names it and name a plain group role instead{undo}; a role this powerful is granted by \
             hand, outside gatehouse, if it is really meant",
            self.target
        )))
    }
}

/// SQL truth value: role `$r` may not be an entitlement itself, nor be reached through one
/// (a built-in `pg_*` role, SUPERUSER, CREATEROLE, BYPASSRLS, REPLICATION, LOGIN, or a
/// gatehouse account of any tenant).
macro_rules! powerful {
    ($r:literal) => {
        concat!(
            "(",
            $r,
            ".rolsuper OR ",
            $r,
            ".rolcreaterole OR ",
            $r,
            ".rolbypassrls OR ",
            $r,
            ".rolreplication OR ",
            $r,
            ".rolcanlogin OR pg_catalog.starts_with(",
            $r,
            ".rolname::text, 'pg_') OR coalesce(pg_catalog.shobj_description(",
            $r,
            ".oid, 'pg_authid'), '') LIKE 'managed-by=gatehouse %')"
        )
    };
}

/// Why role $1 cannot be an entitlement: the nearest of itself and the roles it is a member
/// of (directly or through others) that is [`powerful!`], with its attributes and the chain
/// of memberships from $1 to it; no row if none is (or $1 does not exist). PostgreSQL
/// forbids membership cycles; the chain check would stop one anyway.
const GRANTABLE_SQL: &str = concat!(
    "WITH RECURSIVE up(oid, chain, oids) AS ( \
         SELECT r.oid, ARRAY[r.rolname::text], ARRAY[r.oid] \
         FROM pg_catalog.pg_roles r WHERE r.rolname = $1 \
         UNION ALL \
         SELECT m.roleid, up.chain || g.rolname::text, up.oids || m.roleid \
         FROM up JOIN pg_catalog.pg_auth_members m ON m.member = up.oid \
         JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
         WHERE m.roleid <> ALL (up.oids)) \
     SELECT d.rolname::text, d.rolsuper, d.rolcreaterole, d.rolbypassrls, d.rolreplication, \
            d.rolcanlogin, \
            coalesce(pg_catalog.shobj_description(d.oid, 'pg_authid'), '') LIKE 'managed-by=gatehouse %', \
            up.chain \
     FROM up JOIN pg_catalog.pg_roles d ON d.oid = up.oid \
     WHERE ",
    powerful!("d"),
    " ORDER BY pg_catalog.cardinality(up.chain), d.rolname LIMIT 1"
);

/// The roles carrying the marker ($1, alone or followed by a rotation instant), each
/// joined with its memberships in group roles of the managed scope (name starting with $2):
/// the `FROM` and `WHERE` of [`OBSERVE_SQL`] and [`OBSERVE_ROLES_SQL`].
macro_rules! observed_roles {
    () => {
        " FROM pg_catalog.pg_roles r \
         LEFT JOIN pg_catalog.pg_auth_members m ON m.member = r.oid \
         LEFT JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
              AND pg_catalog.starts_with(g.rolname::text, $2) \
         WHERE (pg_catalog.shobj_description(r.oid, 'pg_authid') = $1 \
            OR pg_catalog.starts_with(pg_catalog.shobj_description(r.oid, 'pg_authid'), $1 || ' rotated='))"
    };
}

/// Every role carrying the marker, with its memberships in group roles of the managed
/// scope, each with whether that group is "tainted": [`powerful!`] or a member (directly
/// or through others) of a role that is (the rule of [`GRANTABLE_SQL`]). Tainted
/// memberships are observed like the others, so they are revoked whenever they are not
/// wanted (a leaver's above all); only granting them is refused.
pub(super) const OBSERVE_SQL: &str = concat!(
    "WITH RECURSIVE tainted(oid) AS ( \
         SELECT d.oid FROM pg_catalog.pg_roles d WHERE ",
    powerful!("d"),
    " UNION \
         SELECT m.member FROM pg_catalog.pg_auth_members m JOIN tainted t ON m.roleid = t.oid) \
     SELECT r.rolname::text, r.rolcanlogin, g.rolname::text, \
            EXISTS (SELECT 1 FROM tainted t WHERE t.oid = g.oid), \
            pg_catalog.shobj_description(r.oid, 'pg_authid')",
    observed_roles!()
);

/// The rows of [`OBSERVE_SQL`] for the roles named in $3 only (a targeted re-read): the
/// roles are found by name, and each group's taint is walked up from that group alone
/// rather than computed for every role.
pub(super) const OBSERVE_ROLES_SQL: &str = concat!(
    "SELECT r.rolname::text, r.rolcanlogin, g.rolname::text, \
            g.oid IS NOT NULL AND EXISTS ( \
              WITH RECURSIVE up(oid) AS ( \
                SELECT g.oid \
                UNION SELECT u.roleid FROM pg_catalog.pg_auth_members u JOIN up ON u.member = up.oid) \
              SELECT 1 FROM up JOIN pg_catalog.pg_roles d ON d.oid = up.oid WHERE ",
    powerful!("d"),
    "), pg_catalog.shobj_description(r.oid, 'pg_authid')",
    observed_roles!(),
    " AND r.rolname = ANY($3::text[])"
);

/// A role that makes a group role not grantable: the group itself or a role it is a member
/// of, as [`GRANTABLE_SQL`] found it.
struct Refusal {
    role: String,
    superuser: bool,
    createrole: bool,
    bypassrls: bool,
    replication: bool,
    login: bool,
    account: bool,
}

impl Refusal {
    /// "is a superuser and has CREATEROLE", …
    fn reasons(&self) -> String {
        let why: Vec<&str> = [
            (self.superuser, "is a superuser"),
            (
                self.role.starts_with("pg_"),
                "is a PostgreSQL built-in role (its name starts with pg_; such roles reach beyond \
                 the database: server files and programs, other sessions, all data)",
            ),
            (
                self.createrole,
                "has CREATEROLE (it can create roles and grant itself others)",
            ),
            (
                self.bypassrls,
                "has BYPASSRLS (row-level security does not apply to it)",
            ),
            (
                self.replication,
                "has REPLICATION (it can stream all of the cluster's data)",
            ),
            (self.account, "is an account managed by gatehouse"),
            (self.login, "can log in (LOGIN): it is a user, not a group"),
        ]
        .into_iter()
        .filter_map(|(applies, text)| applies.then_some(text))
        .collect();
        if why.is_empty() {
            // GRANTABLE_SQL returns only roles with one of the above.
            "is not a plain group role".to_string()
        } else {
            why.join(" and ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_why() {
        let refusal = |role: &str| Refusal {
            role: role.into(),
            superuser: false,
            createrole: false,
            bypassrls: false,
            replication: false,
            login: false,
            account: false,
        };
        assert!(
            refusal("pg_write_server_files")
                .reasons()
                .contains("built-in")
        );
        let both = Refusal {
            createrole: true,
            bypassrls: true,
            ..refusal("admins")
        };
        assert_eq!(
            both.reasons(),
            "has CREATEROLE (it can create roles and grant itself others) and \
             has BYPASSRLS (row-level security does not apply to it)"
        );
        assert!(
            Refusal {
                account: true,
                ..refusal("u_bob")
            }
            .reasons()
            .contains("account managed by gatehouse")
        );
        assert_eq!(refusal("plain").reasons(), "is not a plain group role");
    }
}
