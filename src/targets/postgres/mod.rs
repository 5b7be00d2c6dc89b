//! PostgreSQL: one `LOGIN` role per account; an entitlement `{target: db, name: ledger_read}`
//! is membership in the existing group role `ledger_read` (`GRANT ledger_read TO alice`).
//!
//! **Managed scope.** A login role is managed only when its comment is exactly this
//! target's marker, `managed-by=gatehouse tenant=<namespace> target=<name>` (set in the same
//! transaction that creates it), and its name is `spec.postgresql.managedRolePrefix` + the
//! account name. Entitlements are memberships of managed roles in plain group roles: when
//! `groupRolePrefix` is set, whose names start with it; never a built-in `pg_*` role, a role
//! with `LOGIN`, `SUPERUSER`, `CREATEROLE`, `BYPASSRLS` or `REPLICATION`, a gatehouse account
//! (of any tenant), nor a role that is a member, directly or through others, of such a role
//! (its members could use that role's powers). Granting one of those fails with a permanent
//! error saying why. Nothing else is read as held, and nothing else is ever changed: a role
//! without the marker is refused, never adopted.
//!
//! **Owner exit.** A machine account whose owner left gets `PASSWORD NULL` and its backends
//! ended, once; the comment then reads `<marker> rotated=<instant>` (still this target's
//! marker, see [`rotate`]).
//!
//! **Leaver.** `ALTER ROLE … NOLOGIN` (a new login fails at once), `pg_terminate_backend` on
//! every backend of the role (waiting up to 5 s for each to end), `REVOKE` of each managed
//! membership. With `onLeave: Delete`: `REASSIGN OWNED BY` the account `TO`
//! `reassignOwnedTo`, `DROP OWNED`, `DROP ROLE`, in one transaction.
//!
//! **Privileges.** The controller's database user needs `CREATEROLE` (create, alter, comment
//! on, grant and drop non-superuser roles) and membership in `pg_signal_backend` (end other
//! roles' sessions); not superuser. To reassign a deleted account's objects it grants itself
//! membership in the account (and, if it is not a member yet, in `reassignOwnedTo`) inside
//! the deleting transaction, and gives the latter back before committing. On PostgreSQL 16+,
//! `CREATEROLE` no longer covers roles the controller did not create: it then needs
//! `ADMIN OPTION` on every group role it grants (`GRANT grp TO gatehouse WITH ADMIN OPTION`)
//! and membership in `reassignOwnedTo`; this connector is tested on PostgreSQL 15 only.
//!
//! **Commits.** Each operation is one transaction sent in one round trip (after a look-up
//! of the roles involved). Steps that give access (create, enable, grant) commit with
//! `synchronous_commit = off`: one lost to a server crash is seen as missing by the next
//! observe and redone. Steps that take access away always commit durably.
//!
//! **Connections.** A deadpool pool of at most [`POOL_SIZE`] connections (the controller
//! applies one operation at a time, so one is busy in practice; broken connections are
//! replaced on the next checkout). TLS is rustls: `verify-full` by default, with the CA from
//! the Secret's `ca.crt`.
//!
//! **SQL.** Values travel as bind parameters. Role names cannot (DDL takes no parameters):
//! every one is double-quoted by [`quote_ident`], and names PostgreSQL would truncate (over
//! 63 bytes) or cannot store (NUL) are refused.

mod error;
mod privilege;
mod rotate;
mod sql;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use self::error::{classify, describe, message};
use self::privilege::{OBSERVE_ROLES_SQL, OBSERVE_SQL};
use self::sql::{ROLE_SQL, check_name};
pub use self::sql::{quote_ident, quote_literal};
use self::tls::{Tls, client_tls};
use super::{
    Applied, Capabilities, Connector, Observed, Reread, Subject, TargetConfig, TargetError,
};
use crate::api::{EntitlementRef, OnLeave};
use crate::engine::IdentityKey;
use crate::plan::{AccessState, AccountState, Action, Operation};

/// Secret key of the controller's database user.
pub const USERNAME_KEY: &str = "username";
/// Secret key of its password.
pub const PASSWORD_KEY: &str = "password";
/// Secret key of the PEM CA certificate(s) the server certificate must chain to.
pub const CA_KEY: &str = "ca.crt";
/// Connections kept open per TargetSystem.
pub const POOL_SIZE: usize = 4;
/// PostgreSQL keeps at most NAMEDATALEN - 1 bytes of a name and silently cuts the rest.
pub const MAX_NAME_BYTES: usize = 63;
/// How long `pg_terminate_backend` waits for each backend to exit, in milliseconds.
const TERMINATE_WAIT_MS: i64 = 5_000;
/// Every gatehouse marker starts so; roles carrying one are accounts, never groups.
const MARKER_PREFIX: &str = "managed-by=gatehouse ";

/// The comment that marks a login role as managed for `target` of tenant `tenant`.
pub fn marker(tenant: &str, target: &str) -> String {
    format!("{MARKER_PREFIX}tenant={tenant} target={target}")
}

/// What the catalog says about one role.
#[derive(Clone, Debug)]
struct Role {
    can_login: bool,
    comment: Option<String>,
}

/// Whether a transaction's commit waits for its WAL flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    Durable,
    Relaxed,
}

/// The PostgreSQL connector for one TargetSystem of one tenant namespace.
pub struct Postgres {
    pool: Pool,
    tenant: String,
    target: String,
    database: String,
    marker: String,
    role_prefix: String,
    group_prefix: String,
    reassign_to: Option<String>,
}

impl Postgres {
    /// Builds the pool from the TargetSystem and its Secret (`username`, `password`,
    /// `ca.crt`), and checks one connection: the credentials work and the user has
    /// `CREATEROLE`.
    pub async fn connect(config: &TargetConfig) -> Result<Self, TargetError> {
        let pg = config.block(&config.spec.postgresql, "postgresql")?;
        let username = config.credentials.required(USERNAME_KEY)?;
        let password = config.credentials.required(PASSWORD_KEY)?;
        let tls = match pg.ssl_mode.as_deref() {
            None | Some("verify-full") => Tls::VerifyFull,
            Some("verify-ca") => Tls::VerifyCa,
            Some("disable") => Tls::Disable,
            Some(other) => {
                return Err(TargetError::Config(format!(
                    "TargetSystem {}/{}: spec.postgresql.sslMode {other:?} is not supported; use \
                     verify-full (default), verify-ca, or disable (loopback or private networks only)",
                    config.namespace, config.name
                )));
            }
        };
        let field = |f: &str, value: &Option<String>| -> Result<String, TargetError> {
            let value = value.clone().unwrap_or_default();
            if value.contains('\0') || value.len() >= MAX_NAME_BYTES {
                return Err(TargetError::Config(format!(
                    "TargetSystem {}/{}: spec.postgresql.{f} must be shorter than {MAX_NAME_BYTES} bytes, without NUL",
                    config.namespace, config.name
                )));
            }
            Ok(value)
        };
        let role_prefix = field("managedRolePrefix", &pg.managed_role_prefix)?;
        let group_prefix = field("groupRolePrefix", &pg.group_role_prefix)?;
        let reassign_to = pg.reassign_owned_to.clone().filter(|r| !r.is_empty());
        if let Some(role) = &reassign_to {
            check_name(role).map_err(|e| {
                TargetError::Config(format!(
                    "TargetSystem {}/{}: spec.postgresql.reassignOwnedTo: {}",
                    config.namespace,
                    config.name,
                    message(&e)
                ))
            })?;
        } else if config.spec.on_leave == OnLeave::Delete {
            return Err(TargetError::Config(format!(
                "TargetSystem {}/{}: spec.postgresql.reassignOwnedTo is required with onLeave: Delete \
                 (the role that receives the objects of a deleted account)",
                config.namespace, config.name
            )));
        }

        let mut pg_config = tokio_postgres::Config::new();
        pg_config
            .host(&pg.host)
            .port(pg.port)
            .dbname(&pg.database)
            .user(username)
            .password(password)
            .application_name("gatehouse")
            .connect_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(60))
            // Never wait long on a lock held by someone's open transaction: retry later.
            .options("-c lock_timeout=10s -c statement_timeout=120s")
            .ssl_mode(if tls == Tls::Disable {
                tokio_postgres::config::SslMode::Disable
            } else {
                tokio_postgres::config::SslMode::Require
            });
        let connector = MakeRustlsConnect::new(client_tls(config, tls)?);
        let manager = Manager::from_config(
            pg_config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| TargetError::Config(format!("connection pool: {e}")))?;
        let this = Self {
            pool,
            tenant: config.namespace.clone(),
            target: config.name.clone(),
            database: pg.database.clone(),
            marker: marker(&config.namespace, &config.name),
            role_prefix,
            group_prefix,
            reassign_to,
        };
        this.check_privileges(username, config).await?;
        Ok(this)
    }

    async fn check_privileges(
        &self,
        username: &str,
        config: &TargetConfig,
    ) -> Result<(), TargetError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT r.rolsuper, r.rolcreaterole, \
                        pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| self.classify(e, "reading the controller's privileges"))?;
        const WHAT: &str = "reading the controller's privileges";
        let (superuser, createrole, signal): (bool, bool, bool) = (
            self.column(&row, 0, WHAT)?,
            self.column(&row, 1, WHAT)?,
            self.column(&row, 2, WHAT)?,
        );
        if !superuser && !createrole {
            return Err(TargetError::Permanent(format!(
                "database user {username:?} of TargetSystem {}/{} lacks CREATEROLE: run ALTER ROLE {} CREATEROLE",
                config.namespace,
                config.name,
                quote_ident(username).unwrap_or_else(|_| username.to_string())
            )));
        }
        if !signal {
            tracing::warn!(
                namespace = %config.namespace, target = %config.name,
                "the database user is not a member of pg_signal_backend: a leaver's sessions cannot be ended"
            );
        }
        Ok(())
    }

    /// The login role of an account.
    pub fn role_name(&self, account: &str) -> String {
        format!("{}{account}", self.role_prefix)
    }

    /// The marker comment of this target's roles.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Whether a role carries this target's marker (with or without a rotation instant).
    fn is_ours(&self, role: &Role) -> bool {
        rotate::marked(&self.marker, role.comment.as_deref()).is_some()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, TargetError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => self.classify(e, "connecting"),
            PoolError::Timeout(_) => TargetError::Transient(format!(
                "PostgreSQL {}: timed out waiting for a connection",
                self.target
            )),
            other => TargetError::Transient(format!("PostgreSQL {}: {other}", self.target)),
        })
    }

    /// Classifies a database error, with what was being done.
    fn classify(&self, error: tokio_postgres::Error, what: &str) -> TargetError {
        classify(&error, &format!("PostgreSQL {} ({what})", self.target))
    }

    async fn role(
        &self,
        client: &deadpool_postgres::Object,
        name: &str,
    ) -> Result<Option<Role>, TargetError> {
        let statement = client
            .prepare_cached(ROLE_SQL)
            .await
            .map_err(|e| self.classify(e, "preparing"))?;
        let row = client
            .query_opt(&statement, &[&name])
            .await
            .map_err(|e| self.classify(e, "reading a role"))?;
        row.map(|r| {
            Ok(Role {
                can_login: self.column(&r, 0, "reading a role")?,
                comment: self.column(&r, 1, "reading a role")?,
            })
        })
        .transpose()
    }

    /// The account's role if it is one of ours; `None` if it does not exist; an error if
    /// it exists without this target's marker.
    async fn managed(
        &self,
        client: &deadpool_postgres::Object,
        role: &str,
    ) -> Result<Option<Role>, TargetError> {
        match self.role(client, role).await? {
            None => Ok(None),
            Some(r) if self.is_ours(&r) => Ok(Some(r)),
            Some(r) => Err(self.foreign(role, &r)),
        }
    }

    fn foreign(&self, role: &str, found: &Role) -> TargetError {
        let owner = match found.comment.as_deref() {
            Some(c) if c.starts_with(MARKER_PREFIX) => format!("it is managed elsewhere ({c})"),
            _ => "it has no gatehouse marker comment".to_string(),
        };
        TargetError::Permanent(format!(
            "role {role:?} exists in PostgreSQL {} but is not managed by this target: {owner}; \
             gatehouse never adopts or changes it (choose another account name in spec.accounts, \
             or mark the role with COMMENT ON ROLE … IS '{}')",
            self.target, self.marker
        ))
    }

    /// Checks that `entitlement` names a group role gatehouse may grant, and returns its
    /// name and whether it exists.
    fn group_of<'e>(&self, entitlement: &'e EntitlementRef) -> Result<&'e str, TargetError> {
        if entitlement.kind.is_some() || entitlement.namespace.is_some() {
            return Err(TargetError::Permanent(format!(
                "{entitlement}: PostgreSQL entitlements are group role names, without kind or namespace"
            )));
        }
        let group = entitlement.name.as_str();
        check_name(group)?;
        if !group.starts_with(&self.group_prefix) {
            return Err(TargetError::Permanent(format!(
                "role {group:?} is outside spec.postgresql.groupRolePrefix {:?} of target {}: \
                 gatehouse does not grant or revoke it",
                self.group_prefix, self.target
            )));
        }
        Ok(group)
    }

    /// Column `index` of a catalog row. A NULL or a value of an unexpected type is an error,
    /// never a panic.
    fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
        &self,
        row: &'a tokio_postgres::Row,
        index: usize,
        what: &str,
    ) -> Result<T, TargetError> {
        row.try_get(index).map_err(|e| {
            TargetError::Permanent(format!(
                "PostgreSQL {} ({what}): unexpected reply from the server: {}",
                self.target,
                describe(&e)
            ))
        })
    }

    /// Runs `statements` (each ending in `;`) in one transaction, in one round trip. A
    /// `Relaxed` commit does not wait for its WAL flush: used only for steps that give access
    /// (a commit lost to a server crash is seen as missing by the next observe and redone);
    /// everything that takes access away commits durably.
    async fn transaction(
        &self,
        client: &deadpool_postgres::Object,
        statements: &str,
        commit: Commit,
        what: &str,
    ) -> Result<(), TargetError> {
        let relax = match commit {
            Commit::Durable => "",
            Commit::Relaxed => "SET LOCAL synchronous_commit = off; ",
        };
        let result = client
            .batch_execute(&format!("BEGIN; {relax}{statements} COMMIT;"))
            .await
            .map_err(|e| self.classify(e, what));
        if result.is_err() {
            // The failed transaction must not linger on a pooled connection.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        result
    }

    /// Ends every backend of `role`; errors if one outlived the wait.
    async fn terminate(
        &self,
        client: &deadpool_postgres::Object,
        role: &str,
    ) -> Result<(), TargetError> {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE NOT pg_catalog.pg_terminate_backend(pid, $2)) \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()",
                &[&role, &TERMINATE_WAIT_MS],
            )
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::INSUFFICIENT_PRIVILEGE) => TargetError::Permanent(format!(
                    "PostgreSQL {}: cannot end the sessions of {role:?}: the controller's database user \
                     needs membership in pg_signal_backend (GRANT pg_signal_backend TO <user>): {}",
                    self.target,
                    describe(&e)
                )),
                _ => self.classify(e, "ending sessions"),
            })?;
        let alive: i64 = self.column(&row, 0, "ending sessions")?;
        if alive > 0 {
            return Err(TargetError::Transient(format!(
                "PostgreSQL {}: {alive} session(s) of {role:?} did not end within {} s",
                self.target,
                TERMINATE_WAIT_MS / 1000
            )));
        }
        Ok(())
    }

    async fn create(
        &self,
        role: &str,
        enabled: bool,
        rotated_for: Option<jiff::Timestamp>,
    ) -> Result<(), TargetError> {
        let client = self.client().await?;
        match self.managed(&client, role).await? {
            Some(found) if found.can_login == enabled => Ok(()),
            Some(_) => self.set_login(&client, role, enabled).await,
            None => {
                // The marker comes with the role, in the same transaction: a role of ours
                // never exists unmarked.
                let sql = format!(
                    "CREATE ROLE {q} {login}; COMMENT ON ROLE {q} IS {marker};",
                    q = quote_ident(role)?,
                    login = if enabled { "LOGIN" } else { "NOLOGIN" },
                    marker = quote_literal(&match rotated_for {
                        Some(at) => format!("{}{}{at}", self.marker, rotate::ROTATED),
                        None => self.marker.clone(),
                    })?,
                );
                self.transaction(&client, &sql, Commit::Relaxed, "creating a role")
                    .await
            }
        }
    }

    async fn set_login(
        &self,
        client: &deadpool_postgres::Object,
        role: &str,
        enabled: bool,
    ) -> Result<(), TargetError> {
        let sql = format!(
            "ALTER ROLE {} {};",
            quote_ident(role)?,
            if enabled { "LOGIN" } else { "NOLOGIN" }
        );
        let commit = if enabled {
            Commit::Relaxed
        } else {
            Commit::Durable
        };
        self.transaction(client, &sql, commit, "altering a role")
            .await
    }

    async fn enable(&self, role: &str, enabled: bool) -> Result<(), TargetError> {
        let client = self.client().await?;
        match self.managed(&client, role).await? {
            None if !enabled => Ok(()), // nothing left to lock
            None => Err(TargetError::Transient(format!(
                "PostgreSQL {}: role {role:?} does not exist (dropped by hand?); the next sync creates it",
                self.target
            ))),
            Some(found) if found.can_login == enabled => Ok(()),
            Some(_) => self.set_login(&client, role, enabled).await,
        }
    }

    async fn grant(&self, role: &str, entitlement: &EntitlementRef) -> Result<(), TargetError> {
        let group = self.group_of(entitlement)?;
        let client = self.client().await?;
        // The look-ups and the check go out together (tokio-postgres pipelines them).
        let (account, found, grantable) = tokio::join!(
            self.role(&client, role),
            self.role(&client, group),
            self.check_group(&client, group, entitlement)
        );
        match account? {
            None => {
                return Err(TargetError::Transient(format!(
                    "PostgreSQL {}: role {role:?} does not exist yet; the next sync creates it",
                    self.target
                )));
            }
            Some(r) if !self.is_ours(&r) => {
                return Err(self.foreign(role, &r));
            }
            Some(_) => {}
        }
        if found?.is_none() {
            return Err(TargetError::Permanent(format!(
                "group role {group:?} does not exist in PostgreSQL {} (database {:?}): create it, or fix \
                 the entitlement {entitlement} in the policy or exception that names it",
                self.target, self.database
            )));
        }
        grantable?;
        let sql = format!("GRANT {} TO {};", quote_ident(group)?, quote_ident(role)?);
        self.transaction(&client, &sql, Commit::Relaxed, "granting a group role")
            .await
    }

    async fn revoke(&self, role: &str, entitlement: &EntitlementRef) -> Result<(), TargetError> {
        let group = self.group_of(entitlement)?;
        let client = self.client().await?;
        // Unlike a grant, a revocation is never refused for the group's powers: taking a
        // powerful membership away is always allowed.
        let (account, found) = tokio::join!(self.role(&client, role), self.role(&client, group));
        match account? {
            None => return Ok(()), // no account, no membership
            Some(r) if !self.is_ours(&r) => {
                return Err(self.foreign(role, &r));
            }
            Some(_) => {}
        }
        if found?.is_none() {
            return Ok(()); // the group is gone, and the membership with it
        }
        // Revoking a membership that is not there only warns: idempotent.
        let sql = format!(
            "REVOKE {} FROM {};",
            quote_ident(group)?,
            quote_ident(role)?
        );
        self.transaction(&client, &sql, Commit::Durable, "revoking a group role")
            .await
    }

    async fn delete(&self, role: &str) -> Result<(), TargetError> {
        let Some(heir) = &self.reassign_to else {
            return Err(TargetError::Config(format!(
                "TargetSystem {}/{}: spec.postgresql.reassignOwnedTo is required with onLeave: Delete",
                self.tenant, self.target
            )));
        };
        let client = self.client().await?;
        if self.managed(&client, role).await?.is_none() {
            return Ok(());
        }
        self.terminate(&client, role).await?;
        const WHAT: &str = "reading spec.postgresql.reassignOwnedTo";
        let Some(row) = client
            .query_opt(
                "SELECT pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
                &[&heir.as_str()],
            )
            .await
            .map_err(|e| self.classify(e, WHAT))?
        else {
            return Err(TargetError::Config(format!(
                "TargetSystem {}/{}: spec.postgresql.reassignOwnedTo names role {heir:?}, which does \
                 not exist in PostgreSQL: create it, or name an existing role",
                self.tenant, self.target
            )));
        };
        let member: bool = self.column(&row, 0, WHAT)?;
        let (q, h) = (quote_ident(role)?, quote_ident(heir)?);
        // REASSIGN OWNED needs the privileges of both roles: borrow them for this transaction.
        let (borrow, give_back) = if member {
            (String::new(), String::new())
        } else {
            (
                format!("GRANT {h} TO CURRENT_USER; "),
                format!("REVOKE {h} FROM CURRENT_USER; "),
            )
        };
        let sql = format!(
            "{borrow}GRANT {q} TO CURRENT_USER; REASSIGN OWNED BY {q} TO {h}; DROP OWNED BY {q}; \
             DROP ROLE {q}; {give_back}"
        );
        self.transaction(&client, &sql, Commit::Durable, "deleting a role")
            .await
    }
}

/// What rows of [`OBSERVE_SQL`] (or [`OBSERVE_ROLES_SQL`]) show.
struct Rows {
    held: AccessState,
    orphans: BTreeSet<String>,
    /// Tainted group roles, with the accounts holding them.
    tainted: BTreeMap<String, BTreeSet<String>>,
}

impl Postgres {
    /// Reads observation rows into the state of the `subjects` they belong to; a managed
    /// role no subject has is an orphan.
    fn read_rows<'a>(
        &self,
        rows: Vec<tokio_postgres::Row>,
        subjects: impl IntoIterator<Item = &'a Subject>,
    ) -> Result<Rows, TargetError> {
        const WHAT: &str = "observing roles";
        let by_role: HashMap<String, &IdentityKey> = subjects
            .into_iter()
            .map(|s| (self.role_name(&s.account), &s.identity))
            .collect();
        let mut out = Rows {
            held: AccessState::default(),
            orphans: BTreeSet::new(),
            tainted: BTreeMap::new(),
        };
        for row in rows {
            let role: String = self.column(&row, 0, WHAT)?;
            let can_login: bool = self.column(&row, 1, WHAT)?;
            let group: Option<String> = self.column(&row, 2, WHAT)?;
            let powerful: Option<bool> = self.column(&row, 3, WHAT)?;
            let comment: Option<String> = self.column(&row, 4, WHAT)?;
            let account = role.strip_prefix(&self.role_prefix).unwrap_or(&role);
            let Some(identity) = by_role.get(&role) else {
                out.orphans.insert(account.to_string());
                continue;
            };
            let holding = out.held.identities.entry((*identity).clone()).or_default();
            let state = if can_login {
                AccountState::Enabled
            } else {
                AccountState::Disabled
            };
            holding.accounts.insert(self.target.clone(), state);
            if let Some(Some(at)) = rotate::marked(&self.marker, comment.as_deref()) {
                holding.rotated.insert(self.target.clone(), at);
            }
            if let Some(group) = group {
                if powerful == Some(true) {
                    out.tainted
                        .entry(group.clone())
                        .or_default()
                        .insert(account.to_string());
                }
                let entitlement = EntitlementRef {
                    target: self.target.clone(),
                    kind: None,
                    namespace: None,
                    name: group,
                };
                holding
                    .entitlements
                    .insert(Arc::new(entitlement), Default::default());
            }
        }
        Ok(out)
    }
}

impl Connector for Postgres {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            disable: true,
            delete: true,
            revoke_sessions: true,
            case_insensitive_names: false,
        }
    }

    async fn observe(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) -> Result<Observed, TargetError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(OBSERVE_SQL)
            .await
            .map_err(|e| self.classify(e, "preparing"))?;
        let rows = client
            .query(&statement, &[&self.marker, &self.group_prefix])
            .await
            .map_err(|e| self.classify(e, "observing roles"))?;
        let read = self.read_rows(rows, expected.values())?;
        let findings = read
            .tainted
            .into_iter()
            .map(|(group, accounts)| {
                format!(
                    "group role {group:?} gives more than an entitlement may (it is powerful, or a member of a role that is: `gatehouse plan` names why on a grant); held by {}: kept only while a policy names it, revoked otherwise and for every leaver, never granted again",
                    accounts.into_iter().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        Ok(Observed {
            held: read.held,
            orphans: read.orphans.into_iter().collect(),
            findings,
        })
    }

    fn reads_accounts(&self) -> bool {
        true
    }

    /// One query, whatever the number of roles on the server: the roles are looked up by
    /// name.
    async fn observe_accounts(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        only: &BTreeSet<IdentityKey>,
    ) -> Result<Reread, TargetError> {
        let asked: Vec<&Subject> = only.iter().filter_map(|k| expected.get(k)).collect();
        let names: Vec<String> = asked.iter().map(|s| self.role_name(&s.account)).collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(OBSERVE_ROLES_SQL)
            .await
            .map_err(|e| self.classify(e, "preparing"))?;
        let rows = client
            .query(&statement, &[&self.marker, &self.group_prefix, &names])
            .await
            .map_err(|e| self.classify(e, "re-reading roles"))?;
        let mut held = self.read_rows(rows, asked)?.held;
        held.identities.retain(|k, _| only.contains(k));
        Ok(Reread::Accounts(held))
    }

    async fn apply(
        &self,
        operation: &Operation,
        subject: &Subject,
    ) -> Result<Applied, TargetError> {
        let role = self.role_name(&subject.account);
        check_name(&role)?;
        match &operation.action {
            Action::CreateAccount {
                enabled,
                rotated_for,
                ..
            } => self.create(&role, *enabled, *rotated_for).await?,
            // PostgreSQL roles have no mappable attributes (a mapping is refused), so this
            // is never planned here.
            Action::UpdateAttributes { .. } => return Ok(Applied::Unsupported),
            Action::EnableAccount => self.enable(&role, true).await?,
            Action::DisableAccount => self.enable(&role, false).await?,
            Action::RevokeSessions => {
                let client = self.client().await?;
                if self.managed(&client, &role).await?.is_some() {
                    self.terminate(&client, &role).await?;
                }
            }
            Action::Grant { entitlement } => self.grant(&role, entitlement).await?,
            Action::Revoke { entitlement } => self.revoke(&role, entitlement).await?,
            Action::DeleteAccount => self.delete(&role).await?,
            Action::RotateCredentials { owner_left_at } => {
                self.rotate(&role, *owner_left_at).await?
            }
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_tenant_and_target() {
        assert_eq!(
            marker("acme", "ledger-db"),
            "managed-by=gatehouse tenant=acme target=ledger-db"
        );
        assert!(marker("a", "b").starts_with(MARKER_PREFIX));
    }
}
