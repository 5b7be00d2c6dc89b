//! A real PostgreSQL server for tests and the benchmark: Debian's `initdb` and `pg_ctl`,
//! started on a free loopback port in a temporary directory by `scripts/start-postgres.sh`
//! (TLS on, with a throw-away CA), once per test binary, and stopped by PID when the binary
//! exits. Each test takes its own [`Scope`] (tenant, role-name prefix) so tests in one
//! binary never see each other's roles.
//!
//! The connector always logs in as [`CONTROLLER`]: a role with `LOGIN CREATEROLE` and
//! membership in `pg_signal_backend`, not a superuser. The superuser is used only to set the
//! scene and to check the server's real state.

#![allow(dead_code)] // the tests and the benchmark use different parts

#[path = "../peer_script.rs"]
mod peer_script;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatehouse::api::TargetSystemSpec;
use gatehouse::targets::{Credentials, TargetConfig};

/// The controller's (non-superuser) database role.
pub const CONTROLLER: &str = "gatehouse_ctl";
/// Its password.
pub const CONTROLLER_PASSWORD: &str = "ctl-secret-4d1f9a";
/// The database the connector works in.
pub const DATABASE: &str = "postgres";

/// The running server of this test binary.
pub struct Peer {
    /// Directory holding the data, the certificates, the socket and the log.
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Password of the `postgres` superuser.
    pub superuser_password: String,
    /// PEM of the CA that signed the server certificate (SANs 127.0.0.1 and localhost).
    pub ca_pem: Vec<u8>,
    /// Server major version.
    pub version: u32,
}

/// Starts the server on first use (and creates the controller role); it is stopped when
/// this process exits.
pub fn peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gatehouse-pg-{}", std::process::id()));
        let name = "start-postgres.sh";
        let vars = peer_script::run(name, &dir, &[], "see stderr above");
        let var = |k: &str| peer_script::var(&vars, name, k);
        peer_script::stop_at_exit(name, &dir);
        let peer = Peer {
            port: var("PGPORT").parse().expect("PGPORT is a port"),
            superuser_password: var("PGPASSWORD"),
            ca_pem: std::fs::read(var("PG_CA_CERT")).expect("the CA certificate is readable"),
            version: var("PG_VERSION").parse().unwrap_or(0),
            dir,
        };
        // The controller role, created once, from a thread with its own runtime (this may
        // run inside a test's runtime).
        let (port, password) = (peer.port, peer.superuser_password.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let db = connect_as(port, "postgres", &password).await;
                    db.batch_execute(&format!(
                        "CREATE ROLE {CONTROLLER} LOGIN CREATEROLE PASSWORD '{CONTROLLER_PASSWORD}';
                         GRANT pg_signal_backend TO {CONTROLLER};"
                    ))
                    .await
                    .expect("the controller role is created");
                })
        })
        .join()
        .expect("controller role set-up");
        peer
    })
}

/// A plain-TCP session as `user` (the server allows it on loopback; the connector itself
/// uses TLS).
pub async fn connect_as(port: u16, user: &str, password: &str) -> tokio_postgres::Client {
    try_connect_as(port, user, password)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

/// Like [`connect_as`], returning the error.
pub async fn try_connect_as(
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .dbname(DATABASE)
        .user(user)
        .password(password)
        .application_name("gatehouse-tests");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A superuser session, to set the scene and check the server's state.
pub async fn superuser() -> tokio_postgres::Client {
    let peer = peer();
    connect_as(peer.port, "postgres", &peer.superuser_password).await
}

/// One test's corner of the server: its tenant namespace and the prefix of every role it
/// creates (login roles and group roles alike).
#[derive(Clone, Debug)]
pub struct Scope {
    /// Tenant namespace (goes into the marker comment).
    pub tenant: String,
    /// Prefix of the test's role names, e.g. `t3_`.
    pub prefix: String,
}

impl Scope {
    /// A fresh scope; `name` makes logs readable.
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Self {
            tenant: format!("{name}-{n}"),
            prefix: format!("t{n}_"),
        }
    }

    /// A role name in this scope.
    pub fn role(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// The Secret data the connector reads: the non-superuser controller and the CA.
pub fn credentials() -> Credentials {
    credentials_with(CONTROLLER, CONTROLLER_PASSWORD, Some(&peer().ca_pem))
}

/// Secret data with the given values (`ca` absent when `None`).
pub fn credentials_with(username: &str, password: &str, ca: Option<&[u8]>) -> Credentials {
    let mut data = BTreeMap::from([
        ("username".to_string(), username.as_bytes().to_vec()),
        ("password".to_string(), password.as_bytes().to_vec()),
    ]);
    if let Some(ca) = ca {
        data.insert("ca.crt".to_string(), ca.to_vec());
    }
    Credentials::new("db-admin", data)
}

/// The TargetSystem YAML spec of a PostgreSQL target on the test server; `extra` is added
/// inside `spec.postgresql` and `spec_extra` inside `spec` (both flow-style, may be empty).
pub fn spec_yaml(extra: &str, spec_extra: &str) -> String {
    format!(
        "{{type: PostgreSQL, postgresql: {{host: 127.0.0.1, port: {port}, database: {DATABASE}, sslMode: verify-full{sep}{extra}}}, credentialsSecretRef: {{name: db-admin}}{sep2}{spec_extra}}}",
        port = peer().port,
        sep = if extra.is_empty() { "" } else { ", " },
        sep2 = if spec_extra.is_empty() { "" } else { ", " },
    )
}

/// A TargetConfig for target `name` of the scope's tenant.
pub fn config(scope: &Scope, name: &str, spec: &str, credentials: Credentials) -> TargetConfig {
    let spec: TargetSystemSpec =
        serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{e}: {spec}"));
    TargetConfig {
        namespace: scope.tenant.clone(),
        name: name.to_string(),
        spec,
        credentials,
    }
}
