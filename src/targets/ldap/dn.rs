//! Distinguished names (RFC 4514): parsed, unescaped and normalised, so DNs compare as the
//! directory compares them.

/// A DN as RDNs, each a list of (attribute, value) with escapes resolved. `None` when
/// it is not a DN.
pub(super) fn parse_dn(dn: &str) -> Option<Vec<Vec<(String, String)>>> {
    let dn = dn.trim();
    if dn.is_empty() {
        return Some(Vec::new());
    }
    let mut rdns = Vec::new();
    let mut rdn = Vec::new();
    let mut attr = String::new();
    let mut value: Vec<u8> = Vec::new();
    let mut in_value = false;
    let bytes = dn.as_bytes();
    let mut i = 0;
    let finish = |attr: &mut String, value: &mut Vec<u8>, rdn: &mut Vec<(String, String)>| {
        let a = attr.trim().to_string();
        let v = String::from_utf8_lossy(value).trim().to_string();
        attr.clear();
        value.clear();
        if a.is_empty() {
            return false;
        }
        rdn.push((a, v));
        true
    };
    while i < bytes.len() {
        let c = bytes[i];
        if !in_value {
            match c {
                b'=' => in_value = true,
                b',' | b'+' => return None,
                _ => attr.push(c as char),
            }
            i += 1;
            continue;
        }
        match c {
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                // Two hex digits exactly (`from_str_radix` alone would also take `+1`).
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        value.push(byte);
                        i += 3;
                    }
                    None => {
                        value.push(next);
                        i += 2;
                    }
                }
            }
            b',' | b';' => {
                if !finish(&mut attr, &mut value, &mut rdn) {
                    return None;
                }
                rdns.push(std::mem::take(&mut rdn));
                in_value = false;
                i += 1;
            }
            b'+' => {
                if !finish(&mut attr, &mut value, &mut rdn) {
                    return None;
                }
                in_value = false;
                i += 1;
            }
            _ => {
                value.push(c);
                i += 1;
            }
        }
    }
    if !in_value || !finish(&mut attr, &mut value, &mut rdn) {
        return None;
    }
    rdns.push(rdn);
    Some(rdns)
}

pub(super) fn join_normalized(rdns: &[Vec<(String, String)>]) -> String {
    rdns.iter()
        .map(|rdn| {
            let mut parts: Vec<String> = rdn
                .iter()
                .map(|(a, v)| format!("{}={}", a.to_lowercase(), v.to_lowercase()))
                .collect();
            parts.sort();
            parts.join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A DN in a form where equal DNs (for the case-insensitive naming attributes used here)
/// compare equal: attributes and values lowercased, spaces around separators and escapes
/// resolved. A string that is no DN is kept as it is.
pub fn normalize_dn(dn: &str) -> String {
    match parse_dn(dn) {
        Some(rdns) => join_normalized(&rdns),
        None => dn.trim().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_normalize_across_case_spaces_and_escapes() {
        assert_eq!(
            normalize_dn("uid=Alice, OU=People,dc=acme,dc=example"),
            "uid=alice,ou=people,dc=acme,dc=example"
        );
        assert_eq!(
            normalize_dn("cn=a\\,b,dc=x"),
            normalize_dn("CN=a\\2Cb,DC=x")
        );
        assert_eq!(normalize_dn(""), "");
        assert_eq!(
            parse_dn("cn=x+uid=y,dc=z").unwrap()[0],
            vec![
                ("cn".to_string(), "x".to_string()),
                ("uid".into(), "y".into())
            ]
        );
        assert!(parse_dn("not a dn").is_none());
        assert!(parse_dn("=x").is_none());
        // Escaped names round-trip through dn_escape.
        let dn = format!("cn={},dc=x", ldap3::dn_escape("a,b+c \"d\""));
        assert_eq!(parse_dn(&dn).unwrap()[0][0].1, "a,b+c \"d\"");
        // `\+1` is an escaped `+` followed by `1`, not the byte 0x01; likewise `\-1`.
        assert_eq!(parse_dn("cn=a\\+1,dc=x").unwrap()[0][0].1, "a+1");
        assert_eq!(parse_dn("cn=a\\-1,dc=x").unwrap()[0][0].1, "a-1");
        assert_eq!(parse_dn("cn=a\\2b1,dc=x").unwrap()[0][0].1, "a+1");
    }

    proptest::proptest! {
        #[test]
        fn any_string_parses_or_is_refused_without_panicking(dn in "\\PC{0,40}") {
            let _ = normalize_dn(&dn);
            if let Some(rdns) = parse_dn(&dn) {
                proptest::prop_assert!(rdns.iter().all(|rdn| !rdn.is_empty()));
            }
        }

        #[test]
        fn an_escaped_character_then_a_digit_is_that_character(
            c in "[^0-9a-fA-F]",
            d in "[0-9]",
        ) {
            let c = c.chars().next().unwrap();
            let rdns = parse_dn(&format!("cn=x\\{c}{d},dc=y")).unwrap();
            proptest::prop_assert_eq!(&rdns[0][0].1, &format!("x{c}{d}"));
        }
    }
}
