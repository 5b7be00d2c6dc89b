//! The committed CRDs in `crds/` must equal what the code generates.

#[test]
fn committed_crds_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, crd) in gatehouse::crds::all() {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert_eq!(
            committed,
            gatehouse::crds::to_yaml(&crd),
            "crds/{file} is stale: run `cargo run -- crds --write-dir crds` and commit the result"
        );
    }
}

#[test]
fn committed_bundle_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(gatehouse::crds::BUNDLE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed,
        gatehouse::crds::bundle_yaml(),
        "{} is stale: run `cargo run -- crds > {}` and commit the result",
        gatehouse::crds::BUNDLE,
        gatehouse::crds::BUNDLE
    );
}

#[test]
fn crds_carry_names_columns_and_cel_rules() {
    for (_, crd) in gatehouse::crds::all() {
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, "gatehouse.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            names.categories.as_deref(),
            Some(&["gatehouse".to_string()][..]),
            "{}",
            names.kind
        );
        assert_eq!(
            names.short_names.as_ref().map(Vec::len),
            Some(1),
            "{}",
            names.kind
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            columns.contains(&"Ready") && columns.contains(&"Age"),
            "{}: {columns:?}",
            names.kind
        );
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            "{} has a status subresource",
            names.kind
        );
    }
    let yaml = gatehouse::crds::to_yaml(&gatehouse::crds::all()[2].1);
    assert!(
        yaml.contains("x-kubernetes-validations"),
        "Exception CRD carries its CEL rules"
    );
    assert!(yaml.contains("the subject may not approve their own exception"));
}
