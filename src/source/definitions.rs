//! The one duplicate check: names are unique per kind and namespace. The directory walk,
//! the controller's sync and `audit`'s replay all record where each object is defined
//! here, so they agree on which definition counts and report the others alike.

use std::collections::BTreeMap;

use super::Diagnostic;
use crate::api::ObjectKey;
use crate::engine::Severity;

/// Where each object is defined. The definition that counts is the first in path order
/// (the order of a Git tree, whatever order the files were read in); every other one,
/// including a second in the same file, is a duplicate.
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    /// The files defining each object, in path order (a file defining it twice is listed
    /// twice).
    files: BTreeMap<ObjectKey, Vec<String>>,
}

impl Definitions {
    /// Records that `file` defines `key`.
    pub fn define(&mut self, key: ObjectKey, file: &str) {
        let files = self.files.entry(key).or_default();
        let at = files.partition_point(|f| f.as_str() <= file);
        files.insert(at, file.to_string());
    }

    /// Forgets every definition of `key` in `file`.
    pub fn forget(&mut self, key: &ObjectKey, file: &str) {
        if let Some(files) = self.files.get_mut(key) {
            files.retain(|f| f != file);
            if files.is_empty() {
                self.files.remove(key);
            }
        }
    }

    /// The file whose definition of `key` counts.
    pub fn first(&self, key: &ObjectKey) -> Option<&str> {
        self.files.get(key)?.first().map(String::as_str)
    }

    /// Whether `key` is defined more than once.
    pub fn is_duplicate(&self, key: &ObjectKey) -> bool {
        self.files.get(key).is_some_and(|f| f.len() > 1)
    }

    /// The files defining `key`, in path order: the first counts.
    pub fn defined_in(&self, key: &ObjectKey) -> &[String] {
        self.files.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every object defined, with the files defining it in path order (the first counts).
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &[String])> {
        self.files
            .iter()
            .map(|(key, files)| (key, files.as_slice()))
    }

    /// The error for each definition of `key` that does not count.
    pub fn errors_of(&self, key: &ObjectKey) -> Vec<Diagnostic> {
        let Some((first, later)) = self.files.get(key).and_then(|f| f.split_first()) else {
            return Vec::new();
        };
        later
            .iter()
            .map(|file| duplicate(key, file, first))
            .collect()
    }

    /// The error for each definition that does not count, by object.
    pub fn errors(&self) -> Vec<Diagnostic> {
        self.files
            .keys()
            .flat_map(|key| self.errors_of(key))
            .collect()
    }
}

/// The error for a definition of `key` in `file` when `first` already defines it.
fn duplicate(key: &ObjectKey, file: &str, first: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        object: Some(key.to_string()),
        field: Some("metadata.name".into()),
        message: format!(
            "duplicate: {key} is also defined in {first}; names are unique per kind and namespace"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;

    #[test]
    fn the_first_definition_in_path_order_counts() {
        let eve = ObjectKey::new(Kind::Identity, "default", "eve");
        let mut definitions = Definitions::default();
        definitions.define(eve.clone(), "nested/dup2.yaml");
        assert!(!definitions.is_duplicate(&eve));
        definitions.define(eve.clone(), "dup1.yaml");
        assert_eq!(definitions.first(&eve), Some("dup1.yaml"));
        assert_eq!(
            definitions.defined_in(&eve),
            ["dup1.yaml", "nested/dup2.yaml"]
        );
        let errors = definitions.errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "error: nested/dup2.yaml: Identity/default/eve: metadata.name: duplicate: \
             Identity/default/eve is also defined in dup1.yaml; names are unique per kind and namespace"
        );
        definitions.forget(&eve, "dup1.yaml");
        assert_eq!(definitions.first(&eve), Some("nested/dup2.yaml"));
        assert!(definitions.errors().is_empty());
        definitions.forget(&eve, "nested/dup2.yaml");
        assert_eq!(definitions.first(&eve), None);
    }

    #[test]
    fn twice_in_one_file_is_a_duplicate_too() {
        let p = ObjectKey::new(Kind::AccessPolicy, "t", "p");
        let mut definitions = Definitions::default();
        definitions.define(p.clone(), "a.yaml");
        definitions.define(p.clone(), "a.yaml");
        assert!(definitions.is_duplicate(&p));
        assert_eq!(definitions.errors_of(&p)[0].file, "a.yaml");
        definitions.forget(&p, "a.yaml");
        assert!(!definitions.is_duplicate(&p));
    }
}
