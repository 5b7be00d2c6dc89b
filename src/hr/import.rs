//! The pure import: the existing Identity files and an HR feed in, the files to write and
//! a report out. No I/O: the CLI reads the feed and the tree and writes or commits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use jiff::civil::Date;
use serde::Deserialize;
use serde_yaml::Value;

use super::feed::Feed;
use super::mapping::{Field, FieldSpec, Mapping, Source, parse_status, parse_type, to_object_name};
use super::yaml;

/// An existing manifest file under `--path`.
#[derive(Clone, Debug)]
pub struct ExistingFile {
    /// Path relative to `--path`, with `/`.
    pub path: String,
    /// Its text.
    pub text: String,
}

/// What to do with an identity a full feed no longer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Missing {
    /// Leave it as it is and warn.
    Keep,
    /// Set it Terminated (end date today unless earlier).
    Terminate,
}

/// The mass-change brake's threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// At most this many.
    Count(usize),
    /// At most this percentage of the existing human identities.
    Percent(f64),
}

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--max-changes {s:?}: give a number (25) or a percentage (10%)");
        match s.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(Limit::Percent(p))
            }
            None => s.trim().parse().map(Limit::Count).map_err(|_| bad()),
        }
    }
}

/// Import options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Today (UTC), for PreHire and future terminations.
    pub today: Date,
    /// The feed carries only changed records: absent records are left alone.
    pub delta: bool,
    /// What to do with identities a full feed no longer carries.
    pub missing: Missing,
    /// The mass-change brake.
    pub max_changes: Limit,
}

/// A record the import cannot take, with the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    /// Where: `line 7`, `record 3`, ...
    pub record: String,
    /// The employee id, when it could be read.
    pub employee_id: Option<String>,
    /// The Identity field (and column) at fault.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.record)?;
        if let Some(id) = &self.employee_id {
            write!(f, " (employee {id})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a change means for the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A new Identity.
    Joiner,
    /// Department, location, title or manager changed.
    Mover,
    /// Became Terminated.
    Leaver,
    /// Got an end date where there was none (leaving on that day).
    ScheduledLeaver,
    /// A Terminated (or past end date) identity back to work.
    Rehire,
    /// Employment type changed, e.g. Contractor to Employee.
    Conversion,
    /// Other HR fields changed (name, e-mail, dates, attributes).
    Updated,
    /// Terminated because a full feed no longer carries it (`--missing terminate`).
    Missing,
    /// A non-human identity whose owner leaves in this import: its `spec.owner` set to
    /// the owner's manager (the proposed interim owner).
    Reowned,
}

impl Kind {
    /// Lower-case label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Joiner => "joiner",
            Kind::Mover => "mover",
            Kind::Leaver => "leaver",
            Kind::ScheduledLeaver => "scheduled leaver",
            Kind::Rehire => "rehire",
            Kind::Conversion => "conversion",
            Kind::Updated => "updated",
            Kind::Missing => "missing from feed, terminated",
            Kind::Reowned => "re-owned (owner leaves)",
        }
    }
}

/// One Identity file written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// `metadata.name`.
    pub name: String,
    /// Path under `--path`.
    pub path: String,
    /// The employee id.
    pub employee_id: String,
    /// The feed record, if any (none for `--missing terminate`).
    pub record: Option<String>,
    /// What it means, in [`Kind`] order.
    pub kinds: BTreeSet<Kind>,
    /// (field, old, new).
    pub fields: Vec<(Field, Option<String>, Option<String>)>,
    /// The new file.
    pub text: String,
    /// A new file.
    pub created: bool,
    /// The file was re-serialised, losing its comments and layout.
    pub rewritten: bool,
}

/// Something a reviewer should know that is not a change: ambiguous matches, vanished ids,
/// identities the import does not manage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Notice {
    /// Who or what.
    pub subject: String,
    /// What and what to do.
    pub message: String,
}

/// The import's outcome.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Files to write, sorted by path.
    pub changes: Vec<Change>,
    /// Bad records.
    pub errors: Vec<InputError>,
    /// Bad records skipped (all of `errors`' records), by label.
    pub invalid_records: BTreeSet<String>,
    /// Things to review.
    pub notices: Vec<Notice>,
    /// Records read.
    pub records: usize,
    /// Records that matched an identity with nothing to change.
    pub unchanged: usize,
    /// Existing human identities (the brake's percentage base).
    pub population: usize,
    /// Terminations and scheduled terminations this import makes.
    pub terminations: usize,
    /// The most the brake allows.
    pub limit: usize,
}

impl Outcome {
    /// Whether the mass-change brake is tripped.
    pub fn brake_tripped(&self) -> bool {
        self.terminations > self.limit
    }

    /// How many changes have this kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.changes
            .iter()
            .filter(|c| c.kinds.contains(&kind))
            .count()
    }

    /// `joiners 1, movers 2, leavers 1, rehires 1, conversions 1, errors 0`, then
    /// `, machine identities re-owned 1` when the import re-owns any.
    pub fn summary(&self) -> String {
        let reowned = self.count(Kind::Reowned);
        let reowned = if reowned > 0 {
            format!(", machine identities re-owned {reowned}")
        } else {
            String::new()
        };
        format!(
            "joiners {}, movers {}, leavers {}, scheduled leavers {}, rehires {}, conversions {}, other updates {}, errors {}{reowned}",
            self.count(Kind::Joiner),
            self.count(Kind::Mover),
            self.count(Kind::Leaver) + self.count(Kind::Missing),
            self.count(Kind::ScheduledLeaver),
            self.count(Kind::Rehire),
            self.count(Kind::Conversion),
            self.changes
                .iter()
                .filter(|c| c.kinds.iter().all(|k| *k == Kind::Updated))
                .count(),
            self.errors.len(),
        )
    }

    /// The brake's line, for the top of the plan and the commit message.
    pub fn brake_line(&self) -> String {
        format!(
            "MASS CHANGE: this import terminates {} of {} identities, over --max-changes ({})",
            self.terminations, self.population, self.limit
        )
    }
}

/// An Identity found in the tree.
struct Existing {
    path: String,
    name: String,
    human: bool,
    id: Option<String>,
    values: BTreeMap<Field, String>,
    /// `spec.owner` of a non-human identity.
    owner: Option<String>,
    /// Its `gatehouse.dev/previous-owner` annotation.
    previous_owner: Option<String>,
    /// In a file holding several documents: read, never rewritten.
    shared_file: bool,
    text_index: usize,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn read_existing(
    files: &[ExistingFile],
    mapping: &Mapping,
    notices: &mut Vec<Notice>,
) -> Vec<Existing> {
    let id_field = mapping.id_field();
    let read_one = |index: usize, file: &ExistingFile| -> Result<Vec<Existing>, String> {
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&file.text) {
            let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        let shared = docs.len() > 1;
        let mut out = Vec::new();
        for doc in docs {
            if doc.get("kind").and_then(Value::as_str) != Some("Identity") {
                continue;
            }
            let meta = doc.get("metadata");
            let namespace = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            if namespace != mapping.namespace {
                continue;
            }
            let Some(name) = meta.and_then(|m| m.get("name")).and_then(Value::as_str) else {
                continue;
            };
            let spec = doc.get("spec");
            let human = spec.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("Human");
            let mut values = BTreeMap::new();
            let get = |path: &[&str]| -> Option<String> {
                let mut node = &doc;
                for k in path {
                    node = node.get(*k)?;
                }
                text_of(node)
            };
            for field in [
                Field::DisplayName,
                Field::Email,
                Field::Status,
                Field::Type,
                Field::Department,
                Field::Location,
                Field::Title,
                Field::Manager,
                Field::StartDate,
                Field::EndDate,
            ] {
                if let Some(v) = get(&field.path()) {
                    values.insert(field, v);
                }
            }
            if let Some(Value::Mapping(attrs)) = spec.and_then(|s| s.get("attributes")) {
                for (k, v) in attrs {
                    if let (Some(k), Some(v)) = (k.as_str(), text_of(v)) {
                        values.insert(Field::Attribute(k.to_string()), v);
                    }
                }
            }
            if let Field::Label(label) = &id_field
                && let Some(v) = meta
                    .and_then(|m| m.get("labels"))
                    .and_then(|l| l.get(label.as_str()))
                    .and_then(text_of)
            {
                values.insert(id_field.clone(), v);
            }
            let id = values
                .get(&id_field)
                .cloned()
                .filter(|s| !s.trim().is_empty());
            let owner = spec
                .filter(|_| !human)
                .and_then(|s| s.get("owner"))
                .and_then(text_of);
            let previous_owner = meta
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(crate::api::annotations::PREVIOUS_OWNER))
                .and_then(text_of);
            out.push(Existing {
                path: file.path.clone(),
                name: name.to_string(),
                human,
                id,
                values,
                owner,
                previous_owner,
                shared_file: shared,
                text_index: index,
            });
        }
        Ok(out)
    };
    // Parsing dominates at 100,000 files: spread it over the cores, keeping file order.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = files.len().div_ceil(workers).max(1);
    type Parsed = (usize, Result<Vec<Existing>, String>);
    let parts: Vec<Vec<Parsed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                let read_one = &read_one;
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, f)| (c * chunk + i, read_one(c * chunk + i, f)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out = Vec::new();
    for (i, result) in parts.into_iter().flatten() {
        match result {
            Ok(found) => out.extend(found),
            Err(e) => notices.push(Notice {
                subject: files[i].path.clone(),
                message: format!("not read ({e}); its identities are not matched or changed: `gatehouse validate` shows the problem"),
            }),
        }
    }
    out
}

/// A record after the mapping: the owned fields' values.
struct Mapped {
    label: String,
    id: String,
    name: Option<String>,
    values: BTreeMap<Field, Option<String>>,
    manager_id: Option<String>,
}

fn column_of(spec: &FieldSpec) -> String {
    match &spec.source {
        Source::Column(c) => format!("column {c:?}"),
        Source::Template(_) => "template".into(),
    }
}

fn lookup<'a>(values: &'a BTreeMap<String, String>, raw: &str) -> Option<&'a String> {
    values.get(raw).or_else(|| {
        values
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(raw))
            .map(|(_, v)| v)
    })
}

fn map_record(
    mapping: &Mapping,
    columns: &HashMap<&str, usize>,
    record: &super::feed::Record,
    today: Date,
) -> Result<Mapped, (Option<String>, Vec<InputError>)> {
    let get = |c: &str| -> Option<&str> {
        columns
            .get(c)
            .and_then(|&i| record.values.get(i))
            .and_then(|v| v.as_deref())
    };
    let id = get(&mapping.employee_id).map(str::to_string);
    let mut errors = Vec::new();
    let error = |errors: &mut Vec<InputError>, field: Option<String>, message: String| {
        errors.push(InputError {
            record: record.label.clone(),
            employee_id: id.clone(),
            field,
            message,
        })
    };
    if id.is_none() {
        error(
            &mut errors,
            Some(format!("column {:?}", mapping.employee_id)),
            "no employee id: every row needs one (correlation.employeeId)".into(),
        );
    }
    let mut values: BTreeMap<Field, Option<String>> = BTreeMap::new();
    let mut manager_id = None;
    for (field, spec) in &mapping.fields {
        let raw = match &spec.source {
            Source::Column(c) => get(c).map(str::to_string),
            Source::Template(t) => {
                let v = t.render(&get);
                let v = v.trim();
                (!v.is_empty()).then(|| v.to_string())
            }
        };
        let where_ = || Some(format!("{field} ({})", column_of(spec)));
        let raw = raw.or_else(|| spec.default.clone());
        let value = match (raw, &spec.values) {
            (None, _) => None,
            (Some(raw), Some(map)) => match lookup(map, &raw) {
                Some(v) => Some(v.clone()),
                None => {
                    let known: Vec<&str> = map.keys().map(String::as_str).collect();
                    error(
                        &mut errors,
                        where_(),
                        format!(
                            "unknown value {raw:?} (known: {}): add it to fields.{field}.values in MAPPING.yaml, or correct the record",
                            known.join(", ")
                        ),
                    );
                    continue;
                }
            },
            (Some(raw), None) => Some(raw),
        };
        if value.is_none() && spec.required {
            error(
                &mut errors,
                where_(),
                "is empty but required (fields.{field}.required): fill it in HR"
                    .replace("{field}", &field.to_string()),
            );
            continue;
        }
        let value = match (field, value) {
            (_, None) => None,
            (Field::Status, Some(v)) if parse_status(&v).is_none() => {
                error(
                    &mut errors,
                    where_(),
                    format!(
                        "unknown status {v:?}: map it in fields.status.values to PreHire, Active, OnLeave or Terminated"
                    ),
                );
                continue;
            }
            (Field::Type, Some(v)) if parse_type(&v).is_none() => {
                error(
                    &mut errors,
                    where_(),
                    format!(
                        "unknown employment type {v:?}: map it in fields.type.values to Employee, Contractor, Vendor or Intern"
                    ),
                );
                continue;
            }
            (f, Some(v)) if f.is_date() => {
                match spec
                    .formats
                    .iter()
                    .find_map(|fmt| Date::strptime(fmt, &v).ok())
                {
                    Some(d) => Some(d.to_string()),
                    None => {
                        error(
                            &mut errors,
                            where_(),
                            format!(
                                "{v:?} is not a date in {}: fix the record or set fields.{field}.format",
                                spec.formats.join(" or ")
                            ),
                        );
                        continue;
                    }
                }
            }
            (Field::Manager, Some(v)) => {
                manager_id = Some(v);
                None
            }
            (_, Some(v)) => Some(v),
        };
        values.insert(field.clone(), value);
    }
    // Lifecycle from dates: a future start is a PreHire; a future termination keeps the
    // person Active until the end date.
    let date = |f: &Field| {
        values
            .get(f)
            .cloned()
            .flatten()
            .and_then(|d| d.parse::<Date>().ok())
    };
    let (start, end) = (date(&Field::StartDate), date(&Field::EndDate));
    if let Some(Some(status)) = values.get(&Field::Status).cloned() {
        let adjusted = match status.as_str() {
            "Terminated" if end.is_some_and(|e| e >= today) => "Active",
            "Active" | "PreHire" if start.is_some_and(|s| s > today) => "PreHire",
            "PreHire" => "Active",
            other => other,
        };
        values.insert(Field::Status, Some(adjusted.to_string()));
    }
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        error(
            &mut errors,
            Some("endDate".into()),
            format!("ends {e}, before it starts {s}: correct one of the dates in HR"),
        );
    }
    let employment_type = values.get(&Field::Type).cloned().flatten();
    if matches!(employment_type.as_deref(), Some("Contractor" | "Vendor"))
        && end.is_none()
        && mapping.fields.contains_key(&Field::EndDate)
    {
        error(
            &mut errors,
            Some(format!(
                "endDate ({})",
                mapping
                    .fields
                    .get(&Field::EndDate)
                    .map(column_of)
                    .unwrap_or_default()
            )),
            format!(
                "a {} needs an end date (the last working day): fill it in HR",
                employment_type.unwrap_or_default()
            ),
        );
    }
    let rendered = mapping.name.render(&get);
    let name = to_object_name(&rendered);
    if !errors.is_empty() {
        return Err((id, errors));
    }
    Ok(Mapped {
        label: record.label.clone(),
        id: id.unwrap_or_default(),
        name,
        values,
        manager_id,
    })
}

/// Runs the import.
pub fn import(
    mapping: &Mapping,
    feed: &Feed,
    files: &[ExistingFile],
    options: &Options,
) -> Outcome {
    let mut out = Outcome {
        records: feed.records.len() + feed.malformed.len(),
        ..Outcome::default()
    };
    let existing = read_existing(files, mapping, &mut out.notices);
    out.population = existing.iter().filter(|e| e.human).count();
    out.limit = match options.max_changes {
        Limit::Count(n) => n,
        Limit::Percent(p) => ((p / 100.0) * out.population as f64).floor() as usize,
    };
    for (label, message) in &feed.malformed {
        out.errors.push(InputError {
            record: label.clone(),
            employee_id: None,
            field: None,
            message: format!("malformed: {message}"),
        });
        out.invalid_records.insert(label.clone());
    }
    let columns: HashMap<&str, usize> = feed
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    if feed.fixed_columns {
        let missing: Vec<&str> = mapping
            .columns()
            .into_iter()
            .filter(|c| !columns.contains_key(c))
            .collect();
        if !missing.is_empty() {
            out.errors.push(InputError {
                record: "header".into(),
                employee_id: None,
                field: None,
                message: format!(
                    "no column {} (the mapping reads it; the header has {}): fix MAPPING.yaml or the export",
                    missing.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
                    feed.columns.join(", ")
                ),
            });
            out.invalid_records
                .extend(feed.records.iter().map(|r| r.label.clone()));
            return out;
        }
    }

    // Map every record; remember every id the feed carries, valid or not.
    let mut present: BTreeSet<String> = BTreeSet::new();
    let mut rows_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut mapped: Vec<Mapped> = Vec::new();
    for record in &feed.records {
        match map_record(mapping, &columns, record, options.today) {
            Ok(m) => {
                present.insert(m.id.clone());
                rows_of
                    .entry(m.id.clone())
                    .or_default()
                    .push(m.label.clone());
                mapped.push(m);
            }
            Err((id, errors)) => {
                if let Some(id) = id {
                    rows_of
                        .entry(id.clone())
                        .or_default()
                        .push(record.label.clone());
                    present.insert(id);
                }
                out.invalid_records.insert(record.label.clone());
                out.errors.extend(errors);
            }
        }
    }
    // A malformed row's person is still in the feed: not missing.
    if let Some(&i) = columns.get(mapping.employee_id.as_str()) {
        for values in &feed.malformed_values {
            if let Some(Some(id)) = values.get(i) {
                present.insert(id.clone());
            }
        }
    }
    // Duplicate employee ids: every row of that id is refused.
    let mut duplicate: BTreeSet<String> = BTreeSet::new();
    for m in &mapped {
        let rows = &rows_of[&m.id];
        if rows.len() > 1 {
            duplicate.insert(m.id.clone());
            out.errors.push(InputError {
                record: m.label.clone(),
                employee_id: Some(m.id.clone()),
                field: Some(format!("column {:?}", mapping.employee_id)),
                message: format!(
                    "duplicate employee id (rows {}): each person has one row; remove the extra rows",
                    rows.join(", ")
                ),
            });
            out.invalid_records.insert(m.label.clone());
        }
    }
    drop(rows_of);
    mapped.retain(|m| !duplicate.contains(&m.id));
    mapped.sort_by(|a, b| a.id.cmp(&b.id));

    // Existing identities by employee id.
    let mut existing_by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in existing.iter().enumerate() {
        if let Some(id) = &e.id {
            existing_by_id.entry(id.as_str()).or_default().push(i);
        }
    }
    let ambiguous = |id: &str| existing_by_id.get(id).is_some_and(|v| v.len() > 1);

    // Managers must be known employee ids; refusing one record can orphan another's
    // manager, so repeat until nothing changes.
    loop {
        let valid: BTreeSet<&str> = mapped.iter().map(|m| m.id.as_str()).collect();
        let mut refused = Vec::new();
        for (i, m) in mapped.iter().enumerate() {
            let Some(manager) = &m.manager_id else {
                continue;
            };
            if *manager == m.id {
                continue;
            }
            let message = if ambiguous(manager) {
                let names: Vec<&str> = existing_by_id[manager.as_str()]
                    .iter()
                    .map(|&i| existing[i].name.as_str())
                    .collect();
                Some(format!(
                    "manager id {manager:?} matches several Identities ({}): give each its own employee id",
                    names.join(", ")
                ))
            } else if !valid.contains(manager.as_str())
                && !existing_by_id.contains_key(manager.as_str())
            {
                Some(format!(
                    "manager id {manager:?} is not the employee id of anyone in the feed or in the Identities: correct it in HR, or import the manager's record first"
                ))
            } else {
                None
            };
            if let Some(message) = message {
                refused.push(i);
                out.errors.push(InputError {
                    record: m.label.clone(),
                    employee_id: Some(m.id.clone()),
                    field: mapping
                        .fields
                        .get(&Field::Manager)
                        .map(|s| format!("manager ({})", column_of(s))),
                    message,
                });
                out.invalid_records.insert(m.label.clone());
            }
        }
        if refused.is_empty() {
            break;
        }
        for i in refused.into_iter().rev() {
            mapped.remove(i);
        }
    }

    // Correlate: each record to its identity, or a joiner.
    enum Target {
        Existing(usize),
        Joiner(String),
    }
    let mut targets: Vec<(usize, Target)> = Vec::new(); // index into mapped
    let mut taken_names: BTreeSet<String> = existing.iter().map(|e| e.name.clone()).collect();
    let taken_paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut joiners: Vec<usize> = Vec::new();
    for (i, m) in mapped.iter().enumerate() {
        match existing_by_id.get(m.id.as_str()).map(Vec::as_slice) {
            Some([one]) => targets.push((i, Target::Existing(*one))),
            Some(many) => {
                let names: Vec<String> = many
                    .iter()
                    .map(|&e| format!("{} ({})", existing[e].name, existing[e].path))
                    .collect();
                out.notices.push(Notice {
                    subject: format!("{} (employee {})", m.label, m.id),
                    message: format!(
                        "matches several Identities: {}; not imported: keep the employee id on exactly one of them",
                        names.join(", ")
                    ),
                });
            }
            None => joiners.push(i),
        }
    }
    // Joiners in employee-id order, so row order never changes the names given.
    let unlinked: HashMap<&str, usize> = existing
        .iter()
        .enumerate()
        .filter(|(_, e)| e.id.is_none())
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut wanted: HashMap<String, usize> = HashMap::new();
    for &i in &joiners {
        if let Some(n) = &mapped[i].name {
            *wanted.entry(n.clone()).or_default() += 1;
        }
    }
    for i in joiners {
        let m = &mapped[i];
        let status = m.values.get(&Field::Status).cloned().flatten();
        let Some(base) = m.name.clone() else {
            out.errors.push(InputError {
                record: m.label.clone(),
                employee_id: Some(m.id.clone()),
                field: Some("name".into()),
                message: "the name template gives an empty name: fill the columns it reads, or change `name:` in MAPPING.yaml".into(),
            });
            out.invalid_records.insert(m.label.clone());
            continue;
        };
        if let Some(&e) = unlinked.get(base.as_str()) {
            let one = wanted.get(&base) == Some(&1);
            if mapping.adopt_by_name && one && existing[e].human && !existing[e].shared_file {
                targets.push((i, Target::Existing(e)));
                continue;
            }
            out.notices.push(Notice {
                subject: format!("{} (employee {})", m.label, m.id),
                message: if mapping.adopt_by_name && !one {
                    format!("several records would take the name {base:?} of the existing Identity without an employee id; not imported: set its spec.attributes.{} by hand", mapping.id_attribute)
                } else {
                    format!(
                        "Identity {base} ({}) has no employee id; if it is this person, add the id to it (or set correlation.adoptByName), otherwise rename it; not imported",
                        existing[e].path
                    )
                },
            });
            continue;
        }
        if status.as_deref() == Some("Terminated") {
            out.notices.push(Notice {
                subject: format!("{} (employee {})", m.label, m.id),
                message: "already Terminated and unknown here: no Identity created".into(),
            });
            continue;
        }
        let mut name = base.clone();
        let mut n = 1;
        while taken_names.contains(&name)
            || taken_paths.contains(format!("{}/{name}.yaml", mapping.directory).as_str())
        {
            n += 1;
            let suffix = format!("-{n}");
            let mut b = base.clone();
            b.truncate(63 - suffix.len());
            name = format!("{}{suffix}", b.trim_end_matches(['-', '.']));
        }
        taken_names.insert(name.clone());
        targets.push((i, Target::Joiner(name)));
    }

    // Names by employee id, for managers.
    let mut name_of: HashMap<&str, &str> = HashMap::new();
    for (id, list) in &existing_by_id {
        if let [one] = list.as_slice() {
            name_of.insert(id, existing[*one].name.as_str());
        }
    }
    for (i, t) in &targets {
        let name = match t {
            Target::Existing(e) => existing[*e].name.as_str(),
            Target::Joiner(n) => n.as_str(),
        };
        name_of.insert(mapped[*i].id.as_str(), name);
    }

    let id_field = mapping.id_field();
    let today = options.today;
    let mut changes = Vec::new();
    let mut matched: BTreeSet<usize> = BTreeSet::new();
    for (i, target) in &targets {
        let m = &mapped[*i];
        let mut desired = m.values.clone();
        if mapping.fields.contains_key(&Field::Manager) {
            let manager = m.manager_id.as_deref().map(|id| {
                if id == m.id {
                    match target {
                        Target::Existing(e) => existing[*e].name.clone(),
                        Target::Joiner(n) => n.clone(),
                    }
                } else {
                    name_of.get(id).map(|s| s.to_string()).unwrap_or_default()
                }
            });
            desired.insert(Field::Manager, manager.filter(|s| !s.is_empty()));
        }
        desired.insert(id_field.clone(), Some(m.id.clone()));
        let (existing_entry, name, path) = match target {
            Target::Existing(e) => {
                matched.insert(*e);
                let e = &existing[*e];
                (Some(e), e.name.clone(), e.path.clone())
            }
            Target::Joiner(n) => (None, n.clone(), format!("{}/{n}.yaml", mapping.directory)),
        };
        let empty = BTreeMap::new();
        let old = existing_entry.map_or(&empty, |e| &e.values);
        let diff: Vec<(Field, Option<String>, Option<String>)> = desired
            .iter()
            .filter(|(f, v)| old.get(*f) != v.as_ref())
            .map(|(f, v)| (f.clone(), old.get(f).cloned(), v.clone()))
            .collect();
        if diff.is_empty() {
            out.unchanged += 1;
            continue;
        }
        if let Some(e) = existing_entry
            && (e.shared_file || !e.human)
        {
            out.notices.push(Notice {
                subject: format!("{} ({})", e.name, e.path),
                message: if e.shared_file {
                    "the feed changes it, but its file holds several documents: split it into one file per Identity; not changed".into()
                } else {
                    "carries an employee id but is not a Human identity; not changed".into()
                },
            });
            continue;
        }
        let kinds = classify(existing_entry.is_none(), old, &desired, today);
        changes.push((
            name,
            path,
            m.id.clone(),
            Some(m.label.clone()),
            kinds,
            diff,
            existing_entry.map(|e| e.text_index),
        ));
    }

    // Identities the feed no longer carries.
    if !options.delta {
        for (i, e) in existing.iter().enumerate() {
            if matched.contains(&i) {
                continue;
            }
            let Some(id) = &e.id else {
                if e.human {
                    out.notices.push(Notice {
                        subject: format!("{} ({})", e.name, e.path),
                        message: format!("has no employee id, so the import does not manage it: add spec.attributes.{} to link it", mapping.id_attribute),
                    });
                }
                continue;
            };
            if present.contains(id) || !e.human {
                continue;
            }
            let status = e.values.get(&Field::Status).map(String::as_str);
            if status == Some("Terminated") {
                continue;
            }
            match options.missing {
                Missing::Keep => out.notices.push(Notice {
                    subject: format!("{} ({})", e.name, e.path),
                    message: format!("employee {id} is not in this full feed; kept as {} (--missing keep): check HR, or import with --missing terminate", status.unwrap_or("is")),
                }),
                Missing::Terminate if e.shared_file => out.notices.push(Notice {
                    subject: format!("{} ({})", e.name, e.path),
                    message: format!("employee {id} is not in this full feed, but its file holds several documents: not terminated"),
                }),
                Missing::Terminate => {
                    let mut diff = vec![(Field::Status, status.map(str::to_string), Some("Terminated".to_string()))];
                    let end = e.values.get(&Field::EndDate);
                    if end.and_then(|d| d.parse::<Date>().ok()).is_none_or(|d| d > today) {
                        diff.push((Field::EndDate, end.cloned(), Some(today.to_string())));
                    }
                    changes.push((e.name.clone(), e.path.clone(), id.clone(), None, BTreeSet::from([Kind::Missing]), diff, Some(e.text_index)));
                }
            }
        }
    }

    let reowned = reown(&existing, &changes, today, &mut out.notices);
    changes.extend(reowned);

    // Render the files.
    for (name, path, employee_id, record, kinds, diff, text_index) in changes {
        let (text, created) = match text_index {
            Some(t) => (files[t].text.clone(), false),
            None => (yaml::skeleton(&name, &mapping.namespace), true),
        };
        let edits: Vec<yaml::Edit> = diff
            .iter()
            .map(|(f, _, new)| {
                (
                    f.path().into_iter().map(str::to_string).collect(),
                    new.clone(),
                )
            })
            .collect();
        match yaml::apply(&text, &edits) {
            Some(edited) => {
                if kinds.contains(&Kind::Leaver)
                    || kinds.contains(&Kind::Missing)
                    || kinds.contains(&Kind::ScheduledLeaver)
                {
                    out.terminations += 1;
                }
                out.changes.push(Change {
                    name,
                    path,
                    employee_id,
                    record,
                    kinds,
                    fields: diff,
                    text: edited.text,
                    created,
                    rewritten: edited.rewritten && !created,
                });
            }
            None => out.notices.push(Notice {
                subject: format!("{name} ({path})"),
                message: "cannot be edited (not one YAML mapping); not changed".into(),
            }),
        }
    }
    out.changes.sort_by(|a, b| a.path.cmp(&b.path));
    out.notices.sort();
    out
}

/// One file to write: name, path, employee id, record, kinds, (field, old, new), index of
/// the existing text.
type Planned = (
    String,
    String,
    String,
    Option<String>,
    BTreeSet<Kind>,
    Vec<(Field, Option<String>, Option<String>)>,
    Option<usize>,
);

/// How far up a manager chain an interim owner is looked for.
const MAX_CHAIN: usize = 16;

/// The owner-exit playbook's part of the import: every non-human identity whose owner
/// leaves in this import (a leaver, or missing from a full feed) gets `spec.owner` set to
/// the owner's manager, or the first one up the chain who is not leaving too, and the
/// `gatehouse.dev/previous-owner` annotation naming the leaver (so the controller still
/// rotates its credentials once for that exit). Without one, a notice asks for an owner by
/// hand.
fn reown(
    existing: &[Existing],
    changes: &[Planned],
    today: Date,
    notices: &mut Vec<Notice>,
) -> Vec<Planned> {
    let leavers: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.4.contains(&Kind::Leaver) || c.4.contains(&Kind::Missing))
        .map(|c| c.0.as_str())
        .collect();
    if leavers.is_empty() {
        return Vec::new();
    }
    // Each human's manager after this import, and whether they are gone.
    let mut people: HashMap<&str, (Option<&str>, bool)> = HashMap::new();
    for e in existing.iter().filter(|e| e.human) {
        let gone = e.values.get(&Field::Status).map(String::as_str) == Some("Terminated")
            || e.values
                .get(&Field::EndDate)
                .and_then(|d| d.parse::<Date>().ok())
                .is_some_and(|d| d < today);
        let manager = e.values.get(&Field::Manager).map(String::as_str);
        people.insert(e.name.as_str(), (manager, gone));
    }
    for (name, _, _, _, kinds, diff, _) in changes {
        let entry = people.entry(name.as_str()).or_insert((None, false));
        if let Some((_, _, new)) = diff.iter().find(|(f, _, _)| *f == Field::Manager) {
            entry.0 = new.as_deref();
        }
        if kinds.contains(&Kind::Leaver) || kinds.contains(&Kind::Missing) {
            entry.1 = true;
        } else if kinds.contains(&Kind::Rehire) {
            entry.1 = false;
        }
    }
    let proposed = |owner: &str| -> Option<&str> {
        let mut current = owner;
        for _ in 0..MAX_CHAIN {
            let manager = people.get(current)?.0?;
            if manager == current || manager == owner {
                return None;
            }
            match people.get(manager) {
                Some((_, false)) => return Some(manager),
                Some((_, true)) => current = manager,
                None => return None,
            }
        }
        None
    };
    let mut out = Vec::new();
    for nhi in existing.iter().filter(|e| !e.human) {
        let Some(owner) = nhi.owner.as_deref().filter(|o| leavers.contains(o)) else {
            continue;
        };
        let subject = format!("{} ({})", nhi.name, nhi.path);
        match proposed(owner) {
            _ if nhi.shared_file => notices.push(Notice {
                subject,
                message: format!("its owner {owner} leaves in this import, but its file holds several documents: set spec.owner by hand"),
            }),
            None => notices.push(Notice {
                subject,
                message: format!("its owner {owner} leaves in this import and has no active manager to take it over: set spec.owner to an active human, or its access is revoked after the owner grace period"),
            }),
            Some(manager) => out.push((
                nhi.name.clone(),
                nhi.path.clone(),
                String::new(),
                None,
                BTreeSet::from([Kind::Reowned]),
                vec![
                    (
                        Field::Owner,
                        Some(owner.to_string()),
                        Some(manager.to_string()),
                    ),
                    (
                        Field::PreviousOwner,
                        nhi.previous_owner.clone(),
                        Some(owner.to_string()),
                    ),
                ],
                Some(nhi.text_index),
            )),
        }
    }
    out
}

fn classify(
    created: bool,
    old: &BTreeMap<Field, String>,
    new: &BTreeMap<Field, Option<String>>,
    today: Date,
) -> BTreeSet<Kind> {
    let mut kinds = BTreeSet::new();
    if created {
        kinds.insert(Kind::Joiner);
        return kinds;
    }
    let old_of = |f: &Field| old.get(f).map(String::as_str);
    let new_of = |f: &Field| match new.get(f) {
        Some(v) => v.as_deref(),
        None => old_of(f),
    };
    let ended = |status: Option<&str>, end: Option<&str>| {
        status == Some("Terminated")
            || end
                .and_then(|d| d.parse::<Date>().ok())
                .is_some_and(|d| d < today)
    };
    let was_gone = ended(old_of(&Field::Status), old_of(&Field::EndDate));
    let is_gone = ended(new_of(&Field::Status), new_of(&Field::EndDate));
    if was_gone && !is_gone {
        kinds.insert(Kind::Rehire);
    }
    if !was_gone && is_gone {
        kinds.insert(Kind::Leaver);
    }
    if !is_gone && old_of(&Field::EndDate).is_none() && new_of(&Field::EndDate).is_some() {
        kinds.insert(Kind::ScheduledLeaver);
    }
    if let (Some(a), Some(b)) = (old_of(&Field::Type), new_of(&Field::Type))
        && a != b
    {
        kinds.insert(Kind::Conversion);
    }
    let moved = [
        Field::Department,
        Field::Location,
        Field::Title,
        Field::Manager,
    ]
    .iter()
    .any(|f| old_of(f) != new_of(f));
    if moved {
        kinds.insert(Kind::Mover);
    }
    if kinds.is_empty() {
        kinds.insert(Kind::Updated);
    }
    kinds
}
