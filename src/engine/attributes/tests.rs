use super::*;
use crate::api::TargetSystemSpec;

fn profile() -> Profile {
    Profile {
        name: "adoe".into(),
        namespace: "acme".into(),
        identity_type: "Human".into(),
        display_name: Some("Alice  van Doe".into()),
        email: Some("alice@acme.example".into()),
        employment: Some(ProfileEmployment {
            status: "Active".into(),
            employment_type: "Employee".into(),
            department: Some("Finance".into()),
            title: Some("Accountant".into()),
            manager: Some("bob".into()),
            ..Default::default()
        }),
        attributes: [("costCenter".to_string(), "4100".to_string())].into(),
        accounts: [("ldap".to_string(), "alice.doe".to_string())].into(),
        ..Default::default()
    }
}

fn render(template: &str) -> String {
    Template::parse(template)
        .unwrap()
        .render(&profile(), "ldap", Some("bob"))
}

#[test]
fn templates_render_paths_functions_and_text() {
    for (template, want) in [
        ("{{ displayName }}", "Alice  van Doe"),
        ("{{displayName|upper}}", "ALICE  VAN DOE"),
        ("{{ employment.department | lower }}", "finance"),
        ("{{ displayName | split(\" \", 0) }}", "Alice"),
        ("{{ displayName | split(\" \", -1) }}", "Doe"),
        (
            "{{ displayName | split(\" \", 9) | default(account) }}",
            "alice.doe",
        ),
        ("{{ email | split(\"@\", 1) }}", "acme.example"),
        ("{{ account }}@corp.example", "alice.doe@corp.example"),
        ("{{ attributes.costCenter }}", "4100"),
        ("{{ attributes.missing | default(\"none\") }}", "none"),
        ("{{ attributes.missing }}", ""),
        ("cc-{{ attributes.costCenter }}-{{ name }}", "cc-4100-adoe"),
        ("{{ manager.account | upper }}", "BOB"),
        ("{{ employment.endDate }}", ""),
        ("{{ \"a|b\" }}", "a|b"),
        ("plain", "plain"),
    ] {
        assert_eq!(render(template), want, "{template}");
    }
}

#[test]
fn bad_templates_say_what_is_wrong() {
    for (template, says) in [
        ("{{ displayname }}", "unknown field `displayname`"),
        ("{{ employment.salary }}", "unknown field"),
        (
            "{{ displayName | capitalize }}",
            "unknown function `capitalize`",
        ),
        (
            "{{ displayName | split(\" \") }}",
            "split(\"separator\", index)",
        ),
        ("{{ displayName | split(\" \", x) }}", "whole number"),
        ("{{ displayName", "never closed"),
        ("displayName }}", "without an opening"),
        ("{{ }}", "empty"),
        ("{{ \"open }}", "unterminated"),
        ("{{ attributes. }}", "unknown field"),
    ] {
        let err = Template::parse(template).unwrap_err();
        assert!(err.contains(says), "{template}: {err}");
    }
}

fn spec(yaml: &str) -> TargetSystemSpec {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn defaults_per_type_and_overrides() {
    let (m, errors) = Mapping::compile(&spec(
        "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=acme,dc=example'}}",
    ));
    assert!(errors.is_empty());
    assert_eq!(
        m.names().collect::<Vec<_>>(),
        [
            "cn",
            "departmentNumber",
            "displayName",
            "givenName",
            "mail",
            "manager",
            "sn",
            "title"
        ]
    );
    let attrs = m.render(&profile(), "ldap", Some("bob"));
    assert_eq!(attrs["sn"], AttrValue::Text("Doe".into()));
    assert_eq!(attrs["givenName"], AttrValue::Text("Alice".into()));
    assert_eq!(
        attrs["manager"],
        AttrValue::Account {
            account: "bob".into()
        }
    );
    // Without a manager account the reference is left unset.
    assert!(!m.render(&profile(), "ldap", None).contains_key("manager"));

    let (m, _) = Mapping::compile(&spec(
        "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=acme,dc=example', flavor: ActiveDirectory}}",
    ));
    let attrs = m.render(&profile(), "ldap", None);
    assert_eq!(
        attrs["userPrincipalName"],
        AttrValue::Text("alice.doe@acme.example".into())
    );
    assert_eq!(attrs["department"], AttrValue::Text("Finance".into()));
    assert!(
        !attrs.contains_key("employeeID"),
        "unset attributes are absent"
    );

    let (m, _) = Mapping::compile(&spec(
        "{type: SCIM, scim: {url: 'http://x'}, defaultAttributes: false, attributes: {title: '{{ employment.title | upper }}'}}",
    ));
    assert_eq!(m.names().collect::<Vec<_>>(), ["title"]);
    assert!(Mapping::compile(&spec("{type: Kubernetes}")).0.is_empty());
    assert!(
        Mapping::compile(&spec(
            "{type: PostgreSQL, postgresql: {host: h, database: d}}"
        ))
        .0
        .is_empty()
    );
}

#[test]
fn mapping_errors_name_the_field_and_the_fix() {
    for (yaml, field, says) in [
        (
            "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a'}, attributes: {title: '{{ job }}'}}",
            "spec.attributes.title",
            "unknown field `job`",
        ),
        (
            "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a'}, attributes: {userPassword: x}}",
            "spec.attributes.userPassword",
            "managed by gatehouse itself",
        ),
        (
            "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a'}, attributes: {uid: x}}",
            "spec.attributes.uid",
            "managed by gatehouse itself",
        ),
        (
            "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a', flavor: ActiveDirectory}, attributes: {cn: x}}",
            "spec.attributes.cn",
            "managed by gatehouse itself",
        ),
        (
            "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a'}, attributes: {'bad name': x}}",
            "spec.attributes.bad name",
            "not an LDAP attribute name",
        ),
        (
            "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a'}, attributes: {manager: 'x {{ manager.account }}'}}",
            "spec.attributes.manager",
            "write exactly",
        ),
        (
            "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a', attributes: {title: x}}, attributes: {title: y}}",
            "spec.attributes.title",
            "also in spec.ldap.attributes",
        ),
        (
            "{type: SCIM, scim: {url: 'http://x'}, attributes: {password: x}}",
            "spec.attributes.password",
            "not a SCIM User attribute",
        ),
        (
            "{type: PostgreSQL, postgresql: {host: h, database: d}, attributes: {title: x}}",
            "spec.attributes.title",
            "ownership marker",
        ),
        (
            "{type: Kubernetes, attributes: {title: x}}",
            "spec.attributes.title",
            "no attributes",
        ),
    ] {
        let (m, errors) = Mapping::compile(&spec(yaml));
        let e = errors
            .iter()
            .find(|e| e.field == field)
            .unwrap_or_else(|| panic!("{yaml}: no error on {field}: {errors:?}"));
        assert!(e.message.contains(says), "{yaml}: {}", e.message);
        assert!(
            !m.names().any(|n| format!("spec.attributes.{n}") == field),
            "a broken entry is left out"
        );
    }
}

#[test]
fn creation_only_ldap_attributes_are_not_owned() {
    let (m, errors) = Mapping::compile(&spec(
        "{type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a', attributes: {cn: '{account}'}}}",
    ));
    assert!(errors.is_empty());
    assert!(!m.names().any(|n| n == "cn"));
}

#[test]
fn diff_replaces_adds_and_unsets() {
    let t = |s: &str| AttrValue::Text(s.into());
    let have: Attributes = [("title".into(), t("Clerk")), ("mail".into(), t("a@x"))].into();
    let want: Attributes = [("title".into(), t("Accountant")), ("cn".into(), t("A"))].into();
    let changes = diff(Some(&have), &want);
    assert_eq!(
        changes.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        [
            "cn: (unset) → \"A\"",
            "mail: \"a@x\" → (unset)",
            "title: \"Clerk\" → \"Accountant\""
        ]
    );
    assert!(diff(Some(&want), &want).is_empty());
}
