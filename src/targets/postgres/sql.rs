//! SQL text: quoting of identifiers and literals (DDL takes no bind parameters), and the
//! catalog look-up of one role.

use super::{MAX_NAME_BYTES, TargetError};

/// A PostgreSQL identifier, double-quoted (so case, spaces, quotes and keywords are kept
/// verbatim). Refuses names PostgreSQL would change or cannot hold: empty, containing NUL,
/// or longer than [`MAX_NAME_BYTES`] bytes (they would be truncated, possibly onto
/// another role's name).
pub fn quote_ident(name: &str) -> Result<String, TargetError> {
    check_name(name)?;
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

pub(super) fn check_name(name: &str) -> Result<(), TargetError> {
    if name.is_empty() {
        return Err(TargetError::Permanent("empty role name".into()));
    }
    if name.contains('\0') {
        return Err(TargetError::Permanent(format!(
            "role name {name:?} contains a NUL character, which PostgreSQL cannot store"
        )));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(TargetError::Permanent(format!(
            "role name {name:?} is {} bytes; PostgreSQL names are at most {MAX_NAME_BYTES} bytes \
             (longer ones are truncated): choose a shorter account (spec.accounts) or role name",
            name.len()
        )));
    }
    Ok(())
}

/// A SQL string literal, safe whatever `standard_conforming_strings` is (the same rule as
/// PostgreSQL's own `quote_literal`: quotes doubled, and with a backslash an `E''` literal
/// with backslashes doubled).
pub fn quote_literal(text: &str) -> Result<String, TargetError> {
    if text.contains('\0') {
        return Err(TargetError::Permanent(format!(
            "text {text:?} contains a NUL character, which PostgreSQL cannot store"
        )));
    }
    let quoted = text.replace('\'', "''");
    Ok(if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    })
}

/// One role by name: can it log in, its comment.
pub(super) const ROLE_SQL: &str = "SELECT r.rolcanlogin, pg_catalog.shobj_description(r.oid, 'pg_authid') \
                        FROM pg_catalog.pg_roles r WHERE r.rolname = $1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_never_truncated() {
        assert_eq!(quote_ident("alice").unwrap(), "\"alice\"");
        assert_eq!(quote_ident("Alice").unwrap(), "\"Alice\"");
        assert_eq!(
            quote_ident("a\"; DROP ROLE x; --").unwrap(),
            "\"a\"\"; DROP ROLE x; --\""
        );
        assert_eq!(quote_ident("o'neil").unwrap(), "\"o'neil\"");
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0b").is_err());
        assert!(quote_ident(&"x".repeat(63)).is_ok());
        let long = quote_ident(&"x".repeat(64)).unwrap_err().to_string();
        assert!(long.contains("63 bytes"), "{long}");
        // 21 three-byte characters = 63 bytes; one more is too long.
        assert!(quote_ident(&"€".repeat(21)).is_ok());
        assert!(quote_ident(&"€".repeat(22)).is_err());
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(quote_literal("a b").unwrap(), "'a b'");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("a\\'b").unwrap(), "E'a\\\\''b'");
        assert!(quote_literal("a\0").is_err());
    }
}
