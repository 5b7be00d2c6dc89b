//! Classifying database errors: transient, permanent or configuration.

use tokio_postgres::error::SqlState;

use super::{CA_KEY, PASSWORD_KEY, TargetError, USERNAME_KEY};

/// A server error as one line: message, SQLSTATE, detail and hint.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {}", detail.replace('\n', "; ")));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// The rustls error behind a failed handshake, if that is what failed.
fn tls_failure(error: &tokio_postgres::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        source = s.source();
    }
    None
}

/// Server-side failures a retry can cure (connection loss, shutdown, overload, lock and
/// serialization conflicts, timeouts) are transient; authentication, privilege and
/// object errors need a person; a database or TLS set-up that cannot work is configuration.
pub(super) fn classify(error: &tokio_postgres::Error, context: &str) -> TargetError {
    let text = describe(error);
    if let Some(db) = error.as_db_error() {
        return classify_sqlstate(db.code(), &format!("{context}: {text}"));
    }
    if let Some(tls) = tls_failure(error) {
        return TargetError::Config(format!(
            "{context}: TLS handshake failed: {tls}; check key {CA_KEY:?} of the credentials Secret \
             (the CA of the server certificate) and that spec.postgresql.host is a name the certificate carries"
        ));
    }
    if text.contains("server does not support TLS") {
        return TargetError::Config(format!(
            "{context}: {text}; enable ssl on the server, or set spec.postgresql.sslMode: disable \
             (loopback or private networks only)"
        ));
    }
    if text.contains("password missing") || text.contains("invalid configuration") {
        return TargetError::Config(format!("{context}: {text}"));
    }
    // I/O errors, closed connections, timeouts.
    TargetError::Transient(format!("{context}: {text}"))
}

/// Classifies a server error by its SQLSTATE. `message` is the operation and the server's
/// text. The service login failing is configuration (the Secret); conflicts, shutdowns,
/// overload and lost connections are transient; everything else (privileges, missing or
/// duplicate objects, bad input, a feature the server does not have) needs a person.
fn classify_sqlstate(code: &SqlState, message: &str) -> TargetError {
    let class = sqlstate_class(code.code());
    match code {
        c if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            TargetError::Config(format!(
                "{message}: authentication failed; check keys {USERNAME_KEY:?} and {PASSWORD_KEY:?} \
                 of the credentials Secret and the server's pg_hba.conf"
            ))
        }
        c if *c == SqlState::INVALID_CATALOG_NAME => {
            TargetError::Config(format!("{message}; check spec.postgresql.database"))
        }
        c if *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::QUERY_CANCELED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::IDLE_SESSION_TIMEOUT
            || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            TargetError::Transient(message.to_string())
        }
        // Connection exceptions, insufficient resources, operator intervention, system errors.
        _ if matches!(class, "08" | "53" | "57" | "58") => {
            TargetError::Transient(message.to_string())
        }
        // 0A feature not supported, 42 privileges and syntax, 23 constraints, 2B dependents,
        // 55 object in use (a role owning objects), 22 data: retrying cannot help.
        _ => TargetError::Permanent(message.to_string()),
    }
}

/// The class of a SQLSTATE (its first two characters). The code is what the server sent:
/// it is not trusted to be five ASCII characters.
fn sqlstate_class(code: &str) -> &str {
    code.get(..2).unwrap_or("")
}

pub(super) fn message(error: &TargetError) -> String {
    error.message().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified_by_sqlstate() {
        use TargetError as E;
        type Expect = fn(&E) -> bool;
        let cases: [(&str, Expect); 16] = [
            (
                "28P01",
                |e| matches!(e, E::Config(m) if m.contains("Secret")),
            ), // invalid_password
            ("28000", |e| matches!(e, E::Config(_))), // invalid_authorization_specification
            (
                "3D000",
                |e| matches!(e, E::Config(m) if m.contains("spec.postgresql.database")),
            ),
            ("55P03", E::is_transient), // lock_not_available
            ("57014", E::is_transient), // query_canceled (statement_timeout)
            ("40001", E::is_transient), // serialization_failure
            ("40P01", E::is_transient), // deadlock_detected
            ("57P01", E::is_transient), // admin_shutdown
            ("08006", E::is_transient), // connection_failure
            ("53300", E::is_transient), // too_many_connections
            ("42501", |e| matches!(e, E::Permanent(_))), // insufficient_privilege
            ("0A000", |e| matches!(e, E::Permanent(_))), // feature_not_supported
            ("2BP01", |e| matches!(e, E::Permanent(_))), // dependent_objects_still_exist
            ("42704", |e| matches!(e, E::Permanent(_))), // undefined_object
            ("23505", |e| matches!(e, E::Permanent(_))), // unique_violation
            ("XX000", |e| matches!(e, E::Permanent(_))), // internal_error
        ];
        for (code, expected) in cases {
            let error = classify_sqlstate(&SqlState::from_code(code), "grant x: refused");
            assert!(expected(&error), "{code}: {error}");
            assert!(
                error.message().starts_with("grant x: refused"),
                "{code}: {error}"
            );
        }
    }

    #[test]
    fn a_sqlstate_of_any_shape_has_a_class_and_never_panics() {
        assert_eq!(sqlstate_class("08006"), "08");
        assert_eq!(sqlstate_class("53"), "53");
        assert_eq!(sqlstate_class("5"), "");
        assert_eq!(sqlstate_class(""), "");
        // A multi-byte character across the cut is no class rather than a panic.
        assert_eq!(sqlstate_class("0€123"), "");
        assert_eq!(sqlstate_class("€"), "");
    }
}
