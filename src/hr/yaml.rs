//! Editing Identity files in place: HR-owned scalars are replaced, inserted (in canonical
//! key order) or removed line by line, so comments, key order and quoting of everything
//! else stay as they were. Every edit is checked by parsing the result; a file the line
//! editor cannot handle (flow mappings, multi-line values at the edited place) is rewritten
//! from its parsed form instead, which drops its comments, and the caller is told.

use serde_yaml::{Mapping, Value};

/// One change to a file: a path of mapping keys and the new text, or `None` to remove.
pub type Edit = (Vec<String>, Option<String>);

/// The result of [`apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    /// The new file.
    pub text: String,
    /// Whether the file had to be re-serialised (comments and original layout lost).
    pub rewritten: bool,
}

/// A new Identity file's skeleton, to which the HR fields are then applied.
pub fn skeleton(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  type: Human\n",
        scalar(name),
        scalar(namespace)
    )
}

/// A string as a YAML scalar that reads back as the same string: plain when unambiguous,
/// otherwise double-quoted (JSON escaping, which YAML reads the same way).
pub fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, ' ' | '_' | '.' | '@' | '/' | '+' | '-' | '(' | ')')
        })
        && !s.ends_with(' ')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | "nan" | "inf"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

/// Applies edits to a single-document YAML file. `None` when the text is not one YAML
/// mapping document.
pub fn apply(text: &str, edits: &[Edit]) -> Option<Edited> {
    let mut expected: Value = serde_yaml::from_str(text).ok()?;
    if !expected.is_mapping() {
        return None;
    }
    for (path, value) in edits {
        set_value(&mut expected, path, value.as_deref())?;
    }
    let mut lines = Lines::new(text);
    let mut ok = true;
    for (path, value) in edits {
        if lines.set(path, value.as_deref()).is_none() {
            ok = false;
            break;
        }
    }
    if ok {
        let patched = lines.finish();
        if serde_yaml::from_str::<Value>(&patched).ok().as_ref() == Some(&expected) {
            return Some(Edited {
                text: patched,
                rewritten: false,
            });
        }
    }
    Some(Edited {
        text: serde_yaml::to_string(&expected).ok()?,
        rewritten: true,
    })
}

/// Keys whose children are kept sorted when inserting.
fn sorted_parent(path: &[String]) -> bool {
    matches!(
        path,
        [a, b] if (a == "spec" && b == "attributes") || (a == "metadata" && (b == "labels" || b == "annotations"))
    )
}

fn canonical(path: &[String]) -> &'static [&'static str] {
    match path {
        [] => &["apiVersion", "kind", "metadata", "spec"],
        [m] if m == "metadata" => &["name", "namespace", "labels", "annotations"],
        [s] if s == "spec" => &[
            "type",
            "displayName",
            "email",
            "employment",
            "owner",
            "proofing",
            "accounts",
            "attributes",
        ],
        [s, e] if s == "spec" && e == "employment" => &[
            "status",
            "type",
            "department",
            "location",
            "title",
            "manager",
            "startDate",
            "endDate",
        ],
        _ => &[],
    }
}

/// Whether `new` goes before the existing sibling `existing` under `parent`.
fn goes_before(parent: &[String], new: &str, existing: &str) -> bool {
    if sorted_parent(parent) {
        return new < existing;
    }
    let order = canonical(parent);
    match (
        order.iter().position(|k| *k == new),
        order.iter().position(|k| *k == existing),
    ) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

fn set_value(root: &mut Value, path: &[String], value: Option<&str>) -> Option<()> {
    let (last, parents) = path.split_last()?;
    match value {
        Some(v) => {
            let mut node = root;
            for key in parents {
                let map = node.as_mapping_mut()?;
                let k = Value::String(key.clone());
                if !map.get(&k).is_some_and(Value::is_mapping) {
                    if map.get(&k).is_some_and(|v| !v.is_null()) {
                        return None;
                    }
                    map.insert(k.clone(), Value::Mapping(Mapping::new()));
                }
                node = map.get_mut(&k)?;
            }
            node.as_mapping_mut()?
                .insert(Value::String(last.clone()), Value::String(v.to_string()));
        }
        None => {
            // Remove, then drop parents left empty (never the top-level keys).
            fn remove(node: &mut Value, path: &[String], depth: usize) -> Option<()> {
                let map = node.as_mapping_mut()?;
                if path.len() == 1 {
                    map.remove(path[0].as_str());
                    return Some(());
                }
                let child = map.get_mut(path[0].as_str())?;
                remove(child, &path[1..], depth + 1)?;
                if depth >= 1 && child.as_mapping().is_some_and(Mapping::is_empty) {
                    map.remove(path[0].as_str());
                }
                Some(())
            }
            // A missing parent means nothing to remove.
            let _ = remove(root, path, 0);
        }
    }
    Some(())
}

/// One parsed line of a block mapping.
#[derive(Clone, Debug)]
struct Entry {
    line: usize,
    indent: usize,
    path: Vec<String>,
    /// Text of the key as written (quotes kept).
    raw_key: String,
    /// The value text after `key:` (comment excluded), trimmed.
    value: String,
    /// The comment after the value, with its leading spaces.
    comment: String,
    /// Index of the last line of this entry's subtree.
    end: usize,
}

struct Lines {
    lines: Vec<String>,
    trailing_newline: bool,
}

fn parse_key(rest: &str) -> Option<(String, String, &str)> {
    // Returns (key, raw key, text after the colon).
    if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"')?;
        let after = q[end + 1..].strip_prefix(':')?;
        return Some((q[..end].to_string(), rest[..end + 2].to_string(), after));
    }
    if let Some(q) = rest.strip_prefix('\'') {
        let end = q.find('\'')?;
        let after = q[end + 1..].strip_prefix(':')?;
        return Some((q[..end].to_string(), rest[..end + 2].to_string(), after));
    }
    let colon = rest.find(':')?;
    let key = &rest[..colon];
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        return None;
    }
    let after = &rest[colon + 1..];
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    Some((key.to_string(), key.to_string(), after))
}

/// Splits `  value  # comment` into (value, comment).
fn split_comment(after: &str) -> Option<(String, String)> {
    let t = after.trim_start();
    let value_end = if let Some(q) = t.strip_prefix('"') {
        let mut escaped = false;
        let mut end = None;
        for (i, c) in q.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i + 2);
                    break;
                }
                _ => escaped = false,
            }
        }
        end?
    } else if t.starts_with('\'') {
        let bytes = t.as_bytes();
        let mut i = 1;
        loop {
            if i >= bytes.len() {
                return None;
            }
            if bytes[i] == b'\'' {
                if bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                break i + 1;
            }
            i += 1;
        }
    } else if t.starts_with('#') {
        0
    } else {
        t.find(" #").unwrap_or(t.len())
    };
    let value = t[..value_end].trim_end().to_string();
    let rest = &t[value.len()..];
    let comment = if rest.trim_start().starts_with('#') {
        rest.to_string()
    } else if rest.trim().is_empty() {
        String::new()
    } else {
        return None;
    };
    Some((value, comment))
}

impl Lines {
    fn new(text: &str) -> Self {
        Self {
            lines: text.lines().map(str::to_string).collect(),
            trailing_newline: text.ends_with('\n') || text.is_empty(),
        }
    }

    fn finish(self) -> String {
        let mut out = self.lines.join("\n");
        if self.trailing_newline {
            out.push('\n');
        }
        out
    }

    /// The block-mapping entries; `None` if the layout is not one the editor understands.
    fn entries(&self) -> Option<Vec<Entry>> {
        let mut out: Vec<Entry> = Vec::new();
        let mut stack: Vec<(usize, String, usize)> = Vec::new(); // (indent, key, entry index)
        let mut skip_deeper_than: Option<usize> = None;
        for (i, line) in self.lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(limit) = skip_deeper_than {
                if indent > limit {
                    if let Some(&(_, _, e)) = stack.last() {
                        out[e].end = i;
                    }
                    for &(_, _, e) in &stack {
                        out[e].end = i;
                    }
                    continue;
                }
                skip_deeper_than = None;
            }
            if trimmed == "---" && i == 0 {
                continue;
            }
            if trimmed.starts_with("---") || trimmed.starts_with("...") || line.contains('\t') {
                return None;
            }
            while stack.last().is_some_and(|(d, _, _)| *d >= indent) {
                stack.pop();
            }
            let parsed = if trimmed.starts_with("- ") || trimmed == "-" {
                None
            } else {
                parse_key(trimmed)
            };
            let Some((key, raw_key, after)) = parsed else {
                // A list item or a continuation line: part of the enclosing entry, opaque.
                for &(_, _, e) in &stack {
                    out[e].end = i;
                }
                if stack.is_empty() {
                    return None;
                }
                skip_deeper_than = Some(stack.last().map_or(0, |s| s.0));
                continue;
            };
            let (value, comment) =
                split_comment(after).unwrap_or((after.trim().to_string(), String::new()));
            let mut path: Vec<String> = stack.iter().map(|(_, k, _)| k.clone()).collect();
            path.push(key.clone());
            for &(_, _, e) in &stack {
                out[e].end = i;
            }
            let opaque = value.starts_with('|')
                || value.starts_with('>')
                || value.starts_with('{')
                || value.starts_with('[')
                || value.starts_with('&')
                || value.starts_with('*')
                || value.starts_with('!');
            out.push(Entry {
                line: i,
                indent,
                path,
                raw_key,
                value: value.clone(),
                comment,
                end: i,
            });
            if value.is_empty() {
                stack.push((indent, key, out.len() - 1));
            } else if opaque || value.starts_with('"') && !value.ends_with('"') {
                skip_deeper_than = Some(indent);
                stack.push((indent, key, out.len() - 1));
            }
        }
        Some(out)
    }

    fn set(&mut self, path: &[String], value: Option<&str>) -> Option<()> {
        let entries = self.entries()?;
        let found = entries.iter().find(|e| e.path == path);
        let has_children = |e: &Entry| {
            entries
                .iter()
                .any(|c| c.path.len() > e.path.len() && c.path.starts_with(&e.path))
        };
        match (found, value) {
            (Some(e), Some(v)) => {
                if has_children(e) || e.value.is_empty() && e.end != e.line {
                    return None;
                }
                self.lines[e.line] = format!(
                    "{}{}: {}{}",
                    " ".repeat(e.indent),
                    e.raw_key,
                    scalar(v),
                    e.comment
                );
                Some(())
            }
            (Some(e), None) => {
                if has_children(e) || e.end != e.line {
                    return None;
                }
                let parent_path = &path[..path.len() - 1];
                self.lines.remove(e.line);
                // Drop a parent mapping left empty (attributes, labels), never spec or metadata.
                if parent_path.len() >= 2 {
                    let entries = self.entries()?;
                    let parent = entries.iter().find(|p| p.path == parent_path)?;
                    if !entries.iter().any(|c| {
                        c.path.len() > parent_path.len() && c.path.starts_with(parent_path)
                    }) && parent.value.is_empty()
                    {
                        return self.set(parent_path, None);
                    }
                }
                Some(())
            }
            (None, None) => Some(()),
            (None, Some(v)) => self.insert_entry(path, Some(&scalar(v))),
        }
    }

    /// Inserts `key: value` (or the block `key:` when `value` is `None`) at `path`,
    /// creating missing parent blocks first.
    fn insert_entry(&mut self, path: &[String], value: Option<&str>) -> Option<()> {
        let entries = self.entries()?;
        let (key, parent_path) = path.split_last()?;
        let parent = if parent_path.is_empty() {
            None
        } else {
            match entries.iter().find(|e| e.path == parent_path) {
                Some(p) => Some(p.clone()),
                None => {
                    // Create the parent block first, then insert into it.
                    self.insert_entry(parent_path, None)?;
                    return self.insert_entry(path, value);
                }
            }
        };
        if parent.as_ref().is_some_and(|p| !p.value.is_empty()) {
            return None; // a flow mapping or a scalar in the way
        }
        let text = match value {
            Some(v) => format!("{key}: {v}"),
            None => format!("{key}:"),
        };
        self.insert_child(&entries, parent.as_ref(), parent_path, key, text)
    }

    fn insert_child(
        &mut self,
        entries: &[Entry],
        parent: Option<&Entry>,
        parent_path: &[String],
        key: &str,
        text: String,
    ) -> Option<()> {
        let children: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.path.len() == parent_path.len() + 1 && e.path.starts_with(parent_path))
            .collect();
        let indent = match (children.first(), parent) {
            (Some(c), _) => c.indent,
            (None, Some(p)) => p.indent + 2,
            (None, None) => 0,
        };
        let position = match children
            .iter()
            .find(|c| goes_before(parent_path, key, c.path.last().map_or("", String::as_str)))
        {
            Some(next) => {
                // Before the comments directly above that sibling.
                let mut at = next.line;
                while at > 0 && self.lines[at - 1].trim_start().starts_with('#') {
                    at -= 1;
                }
                at
            }
            None => match (children.last(), parent) {
                (Some(last), _) => last.end + 1,
                (None, Some(p)) => p.end + 1,
                (None, None) => self.lines.len(),
            },
        };
        self.lines.insert(
            position.min(self.lines.len()),
            format!("{}{text}", " ".repeat(indent)),
        );
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> Vec<String> {
        path.split('.').map(str::to_string).collect()
    }

    #[test]
    fn edits_keep_comments_and_order() {
        let text = "# Alice: finance\napiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: alice\n  namespace: acme\nspec:\n  type: Human\n  displayName: Alice Doe  # legal name\n  employment:\n    status: Active\n    department: finance\n    # she reports to sofia\n    manager: sofia\n  proofing:\n    level: IAL2\n  attributes:\n    costCenter: \"4100\"\n";
        let edited = apply(
            text,
            &[
                (p("spec.displayName"), Some("Alice Smith".into())),
                (p("spec.employment.type"), Some("Employee".into())),
                (p("spec.employment.title"), Some("Senior Accountant".into())),
                (p("spec.employment.startDate"), Some("2024-01-12".into())),
                (p("spec.attributes.employeeId"), Some("E1001".into())),
                (p("spec.email"), Some("alice@acme.example".into())),
            ],
        )
        .unwrap();
        assert!(!edited.rewritten);
        assert_eq!(
            edited.text,
            "# Alice: finance\napiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: alice\n  namespace: acme\nspec:\n  type: Human\n  displayName: Alice Smith  # legal name\n  email: alice@acme.example\n  employment:\n    status: Active\n    type: Employee\n    department: finance\n    title: Senior Accountant\n    # she reports to sofia\n    manager: sofia\n    startDate: \"2024-01-12\"\n  proofing:\n    level: IAL2\n  attributes:\n    costCenter: \"4100\"\n    employeeId: E1001\n"
        );
        // Removing the last attribute drops the empty block.
        let removed = apply(
            &edited.text,
            &[
                (p("spec.attributes.costCenter"), None),
                (p("spec.attributes.employeeId"), None),
            ],
        )
        .unwrap();
        assert!(!removed.text.contains("attributes"), "{}", removed.text);
        assert!(!removed.rewritten);
    }

    #[test]
    fn new_files_and_flow_fallback() {
        let text = skeleton("new.person", "acme");
        let edited = apply(
            &text,
            &[
                (p("spec.employment.status"), Some("PreHire".into())),
                (
                    vec![
                        "metadata".into(),
                        "labels".into(),
                        "gatehouse.dev/employee-id".into(),
                    ],
                    None,
                ),
                (p("spec.attributes.employeeId"), Some("007".into())),
            ],
        )
        .unwrap();
        assert_eq!(
            edited.text,
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: new.person\n  namespace: acme\nspec:\n  type: Human\n  employment:\n    status: PreHire\n  attributes:\n    employeeId: \"007\"\n"
        );
        let flow = "kind: Identity\nmetadata: {name: u1}\nspec:\n  type: Human\n  attributes: {costCenter: c1}\n";
        let edited = apply(
            flow,
            &[(p("spec.attributes.costCenter"), Some("c2".into()))],
        )
        .unwrap();
        assert!(edited.rewritten);
        let v: Value = serde_yaml::from_str(&edited.text).unwrap();
        assert_eq!(
            v["spec"]["attributes"]["costCenter"],
            Value::String("c2".into())
        );
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("O'Neil: x"), "\"O'Neil: x\"");
        assert_eq!(scalar("Head of People"), "Head of People");
    }
}
