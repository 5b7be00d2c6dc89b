//! `MAPPING.yaml`: how an HR feed's columns become Identity fields. Parsed and checked as a
//! whole, so that every bad line is reported at once with its fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::api::{EmploymentStatus, EmploymentType};

/// The label that holds the employee id when `correlation.store` is `label`.
pub const EMPLOYEE_ID_LABEL: &str = "gatehouse.dev/employee-id";

/// One problem in the mapping file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    /// 1-based line in MAPPING.yaml, when known.
    pub line: Option<usize>,
    /// The key at fault, e.g. `fields.department.values`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Where the employee id is kept in an Identity file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Store {
    /// `spec.attributes.<attribute>` (visible to policy selectors).
    Attribute,
    /// `metadata.labels["gatehouse.dev/employee-id"]` (must be a valid label value).
    Label,
}

/// An Identity field the import can own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `spec.displayName`.
    DisplayName,
    /// `spec.email`.
    Email,
    /// `spec.employment.status`.
    Status,
    /// `spec.employment.type`.
    Type,
    /// `spec.employment.department`.
    Department,
    /// `spec.employment.location`.
    Location,
    /// `spec.employment.title`.
    Title,
    /// `spec.employment.manager` (given in the feed as the manager's employee id).
    Manager,
    /// `spec.employment.startDate`.
    StartDate,
    /// `spec.employment.endDate`.
    EndDate,
    /// `spec.attributes.<key>`.
    Attribute(String),
    /// `metadata.labels.<key>`.
    Label(String),
    /// `spec.owner` of a non-human identity: never read from a feed, only proposed by the
    /// import when the owner leaves.
    Owner,
    /// The `gatehouse.dev/previous-owner` annotation written with a proposed owner: the
    /// leaving owner, whose exit still rotates the identity's credentials.
    PreviousOwner,
}

impl Field {
    /// Parses a key of `fields:`.
    pub fn parse(key: &str) -> Option<Field> {
        Some(match key {
            "displayName" => Field::DisplayName,
            "email" => Field::Email,
            "status" => Field::Status,
            "type" => Field::Type,
            "department" => Field::Department,
            "location" => Field::Location,
            "title" => Field::Title,
            "manager" => Field::Manager,
            "startDate" => Field::StartDate,
            "endDate" => Field::EndDate,
            _ => {
                let attr = key.strip_prefix("attributes.")?;
                if attr.is_empty() {
                    return None;
                }
                Field::Attribute(attr.to_string())
            }
        })
    }

    /// The path of the field in an Identity manifest.
    pub fn path(&self) -> Vec<&str> {
        match self {
            Field::DisplayName => vec!["spec", "displayName"],
            Field::Email => vec!["spec", "email"],
            Field::Status => vec!["spec", "employment", "status"],
            Field::Type => vec!["spec", "employment", "type"],
            Field::Department => vec!["spec", "employment", "department"],
            Field::Location => vec!["spec", "employment", "location"],
            Field::Title => vec!["spec", "employment", "title"],
            Field::Manager => vec!["spec", "employment", "manager"],
            Field::StartDate => vec!["spec", "employment", "startDate"],
            Field::EndDate => vec!["spec", "employment", "endDate"],
            Field::Attribute(k) => vec!["spec", "attributes", k.as_str()],
            Field::Label(k) => vec!["metadata", "labels", k.as_str()],
            Field::Owner => vec!["spec", "owner"],
            Field::PreviousOwner => vec![
                "metadata",
                "annotations",
                crate::api::annotations::PREVIOUS_OWNER,
            ],
        }
    }

    /// Whether the value is a calendar date.
    pub fn is_date(&self) -> bool {
        matches!(self, Field::StartDate | Field::EndDate)
    }
}

impl fmt::Display for Field {
    /// The key as written under `fields:` in MAPPING.yaml.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Attribute(k) => write!(f, "attributes.{k}"),
            Field::Label(k) => write!(f, "labels.{k}"),
            other => f.write_str(other.path().last().copied().unwrap_or("?")),
        }
    }
}

/// A template such as `{{ lower(first) }}.{{ lower(last) }}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    Column(String),
    Call(Function, Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    Lower,
    Upper,
    Trim,
    Initial,
    Ascii,
}

const FUNCTIONS: &str = "lower, upper, trim, initial, ascii";

impl Template {
    /// Parses a template; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("{{{{ at {open} is not closed with }}}}"))?;
            let inner = after[..close].trim();
            let (expr, left) = parse_expr(inner)?;
            if !left.trim().is_empty() {
                return Err(format!("unexpected {:?} in {{{{ {inner} }}}}", left.trim()));
            }
            parts.push(Part::Expr(expr));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err("}} without {{".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The columns the template reads.
    pub fn columns(&self) -> Vec<&str> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
            match e {
                Expr::Column(c) => out.push(c),
                Expr::Call(_, inner) => walk(inner, out),
            }
        }
        let mut out = Vec::new();
        for part in &self.parts {
            if let Part::Expr(e) = part {
                walk(e, &mut out);
            }
        }
        out
    }

    /// Renders with `column` giving each column's value (absent: empty).
    pub fn render<'a>(&self, column: &dyn Fn(&str) -> Option<&'a str>) -> String {
        fn eval<'a>(e: &Expr, column: &dyn Fn(&str) -> Option<&'a str>) -> String {
            match e {
                Expr::Column(c) => column(c).unwrap_or("").to_string(),
                Expr::Call(f, inner) => {
                    let v = eval(inner, column);
                    match f {
                        Function::Lower => v.to_lowercase(),
                        Function::Upper => v.to_uppercase(),
                        Function::Trim => v.trim().to_string(),
                        Function::Initial => v
                            .trim()
                            .chars()
                            .next()
                            .map(String::from)
                            .unwrap_or_default(),
                        Function::Ascii => ascii_fold(&v),
                    }
                }
            }
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => out.push_str(&eval(e, column)),
            }
        }
        out
    }
}

fn parse_expr(text: &str) -> Result<(Expr, &str), String> {
    let text = text.trim_start();
    if let Some(quoted) = text.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or_else(|| "a quoted column name is not closed".to_string())?;
        return Ok((Expr::Column(quoted[..end].to_string()), &quoted[end + 1..]));
    }
    let end = text
        .find(|c: char| c == '(' || c == ')' || c.is_whitespace())
        .unwrap_or(text.len());
    let word = &text[..end];
    if word.is_empty() {
        return Err("expected a column name or a function call".into());
    }
    let rest = text[end..].trim_start();
    if let Some(args) = rest.strip_prefix('(') {
        let function = match word {
            "lower" => Function::Lower,
            "upper" => Function::Upper,
            "trim" => Function::Trim,
            "initial" => Function::Initial,
            "ascii" => Function::Ascii,
            other => return Err(format!("unknown function {other:?}; known: {FUNCTIONS}")),
        };
        let (inner, after) = parse_expr(args)?;
        let after = after.trim_start();
        let after = after
            .strip_prefix(')')
            .ok_or_else(|| format!("{word}( is not closed with )"))?;
        return Ok((Expr::Call(function, Box::new(inner)), after));
    }
    Ok((Expr::Column(word.to_string()), rest))
}

/// Replaces common Latin letters with diacritics by their ASCII base letters.
pub fn ascii_fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let s = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
            'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
            'æ' => "ae",
            'Æ' => "AE",
            'ç' | 'ć' | 'č' => "c",
            'Ç' | 'Ć' | 'Č' => "C",
            'ď' | 'đ' => "d",
            'Ď' | 'Đ' => "D",
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => "e",
            'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ę' | 'Ě' => "E",
            'ğ' => "g",
            'Ğ' => "G",
            'ì' | 'í' | 'î' | 'ï' | 'ı' | 'ī' => "i",
            'Ì' | 'Í' | 'Î' | 'Ï' | 'İ' | 'Ī' => "I",
            'ł' | 'ľ' | 'ĺ' => "l",
            'Ł' | 'Ľ' | 'Ĺ' => "L",
            'ñ' | 'ń' | 'ň' => "n",
            'Ñ' | 'Ń' | 'Ň' => "N",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ő' | 'ō' => "o",
            'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ő' | 'Ō' => "O",
            'œ' => "oe",
            'Œ' => "OE",
            'ř' | 'ŕ' => "r",
            'Ř' | 'Ŕ' => "R",
            'ś' | 'š' | 'ş' | 'ș' => "s",
            'Ś' | 'Š' | 'Ş' | 'Ș' => "S",
            'ß' => "ss",
            'ť' | 'ţ' | 'ț' => "t",
            'Ť' | 'Ţ' | 'Ț' => "T",
            'ù' | 'ú' | 'û' | 'ü' | 'ů' | 'ű' | 'ū' => "u",
            'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ů' | 'Ű' | 'Ū' => "U",
            'ý' | 'ÿ' => "y",
            'Ý' | 'Ÿ' => "Y",
            'ź' | 'ż' | 'ž' => "z",
            'Ź' | 'Ż' | 'Ž' => "Z",
            c if c.is_ascii() => {
                out.push(c);
                continue;
            }
            _ => continue,
        };
        out.push_str(s);
    }
    out
}

/// Turns a rendered name template into a valid `metadata.name` (lower case, ASCII letters,
/// digits, `-` and `.`, at most 63 characters); `None` when nothing is left.
pub fn to_object_name(text: &str) -> Option<String> {
    let folded = ascii_fold(text).to_lowercase();
    let mut out = String::with_capacity(folded.len());
    for c in folded.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            c
        } else {
            '-'
        };
        let last = out.chars().last();
        if (c == '-' || c == '.') && matches!(last, None | Some('-') | Some('.')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(63);
    let trimmed = out.trim_end_matches(['-', '.']).to_string();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// Where one Identity field's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSpec {
    /// The value before the value map.
    pub source: Source,
    /// Feed value → Identity value; when set, any other value is an error.
    pub values: Option<BTreeMap<String, String>>,
    /// Used when the feed's value is empty.
    pub default: Option<String>,
    /// Date formats (strftime), tried in order; the first that parses wins.
    pub formats: Vec<String>,
    /// An empty value is an error.
    pub required: bool,
}

/// A column or a template.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// One column, trimmed.
    Column(String),
    /// A template over columns.
    Template(Template),
}

/// A checked mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    /// Namespace of the Identities written.
    pub namespace: String,
    /// Column holding the employee id.
    pub employee_id: String,
    /// Where the employee id is kept in the file.
    pub store: Store,
    /// The attribute key for [`Store::Attribute`].
    pub id_attribute: String,
    /// On the first import, link a record to an existing Identity without an employee id
    /// whose `metadata.name` equals the rendered name template.
    pub adopt_by_name: bool,
    /// The `metadata.name` template for joiners.
    pub name: Template,
    /// Folder (under `--path`) for new Identity files.
    pub directory: String,
    /// The fields the import owns.
    pub fields: BTreeMap<Field, FieldSpec>,
}

impl Mapping {
    /// The field that holds the employee id in the file.
    pub fn id_field(&self) -> Field {
        match self.store {
            Store::Attribute => Field::Attribute(self.id_attribute.clone()),
            Store::Label => Field::Label(EMPLOYEE_ID_LABEL.to_string()),
        }
    }

    /// Every column the mapping reads.
    pub fn columns(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::from([self.employee_id.as_str()]);
        out.extend(self.name.columns());
        for spec in self.fields.values() {
            match &spec.source {
                Source::Column(c) => {
                    out.insert(c);
                }
                Source::Template(t) => out.extend(t.columns()),
            }
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMapping {
    #[serde(default)]
    namespace: Option<String>,
    correlation: RawCorrelation,
    name: String,
    #[serde(default)]
    directory: Option<String>,
    #[serde(default)]
    date_formats: Option<OneOrMany>,
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCorrelation {
    employee_id: String,
    #[serde(default)]
    store: Option<Store>,
    #[serde(default)]
    attribute: Option<String>,
    #[serde(default)]
    adopt_by_name: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawField {
    Column(String),
    Full(RawFieldSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFieldSpec {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    values: Option<BTreeMap<String, String>>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    format: Option<OneOrMany>,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The 1-based line of the first `key:` at or after `from` (a best effort for messages).
fn line_of(text: &str, key: &str, after_line: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(after_line)
        .find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(key)
                .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| t.strip_prefix(&format!("'{key}'")))
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map(|(i, _)| i + 1)
}

/// The 1-based line of the first line at or after `after_line` containing `needle`.
fn line_containing(text: &str, needle: &str, after_line: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(after_line)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
}

fn is_label_key_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Mapping {
    /// Parses and checks MAPPING.yaml; every problem is returned.
    pub fn parse(text: &str) -> Result<Mapping, Vec<MappingError>> {
        let raw: RawMapping = match serde_yaml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let line = e.location().map(|l| l.line());
                let message = e.to_string();
                let hint = if message.contains("unknown field") {
                    "; the keys are namespace, correlation, name, directory, dateFormats, fields (see README, \"From your HR system\")"
                } else if message.contains("data did not match any variant") {
                    "; a field is either a column name or {from|template, values, default, format, required}"
                } else {
                    ""
                };
                return Err(vec![MappingError {
                    line,
                    field: "MAPPING.yaml".into(),
                    message: format!("{message}{hint}"),
                }]);
            }
        };
        let mut errors = Vec::new();
        let err = |errors: &mut Vec<MappingError>, line, field: &str, message: String| {
            errors.push(MappingError {
                line,
                field: field.to_string(),
                message,
            })
        };
        let namespace = raw.namespace.unwrap_or_else(|| "default".into());
        if to_object_name(&namespace).as_deref() != Some(namespace.as_str()) {
            err(
                &mut errors,
                line_of(text, "namespace", 0),
                "namespace",
                format!(
                    "{namespace:?} is not a valid namespace name: use lower-case letters, digits and '-'"
                ),
            );
        }
        if raw.correlation.employee_id.trim().is_empty() {
            err(
                &mut errors,
                line_of(text, "employeeId", 0),
                "correlation.employeeId",
                "name the column that holds the employee id".into(),
            );
        }
        let store = raw.correlation.store.unwrap_or(Store::Attribute);
        let id_attribute = raw
            .correlation
            .attribute
            .unwrap_or_else(|| "employeeId".into());
        if store == Store::Label && id_attribute != "employeeId" {
            err(
                &mut errors,
                line_of(text, "attribute", 0),
                "correlation.attribute",
                format!(
                    "only used with store: attribute; with store: label the id is kept in the label {EMPLOYEE_ID_LABEL}"
                ),
            );
        }
        let name = match Template::parse(&raw.name) {
            Ok(t) if t.columns().is_empty() => {
                err(
                    &mut errors,
                    line_of(text, "name", 0),
                    "name",
                    "the name template reads no column: every joiner would get the same name; use e.g. \"{{ lower(first) }}.{{ lower(last) }}\"".into(),
                );
                t
            }
            Ok(t) => t,
            Err(e) => {
                err(
                    &mut errors,
                    line_of(text, "name", 0),
                    "name",
                    format!("{e}; write e.g. \"{{{{ lower(first) }}}}.{{{{ lower(last) }}}}\""),
                );
                Template { parts: vec![] }
            }
        };
        let directory = raw
            .directory
            .unwrap_or_else(|| "identities".into())
            .trim_matches('/')
            .to_string();
        if directory
            .split('/')
            .any(|p| p == ".." || p.starts_with('.'))
        {
            err(
                &mut errors,
                line_of(text, "directory", 0),
                "directory",
                "must be a plain folder under --path (no '..' and no hidden folders)".into(),
            );
        }
        let default_formats = raw
            .date_formats
            .map(OneOrMany::into_vec)
            .unwrap_or_else(|| vec!["%Y-%m-%d".into()]);
        let fields_line = line_of(text, "fields", 0).unwrap_or(0);
        let mut fields = BTreeMap::new();
        for (key, raw_field) in raw.fields {
            let line = line_of(text, &key, fields_line);
            let where_ = format!("fields.{key}");
            let Some(field) = Field::parse(&key) else {
                err(
                    &mut errors,
                    line,
                    &where_,
                    "unknown field; known: displayName, email, status, type, department, location, title, manager, startDate, endDate, attributes.<key> (proofing and accounts are IAM's, never imported)".into(),
                );
                continue;
            };
            if let Field::Attribute(a) = &field {
                if store == Store::Attribute && *a == id_attribute {
                    err(
                        &mut errors,
                        line,
                        &where_,
                        format!(
                            "attributes.{a} holds the employee id (correlation.employeeId): remove this field"
                        ),
                    );
                    continue;
                }
                if !is_label_key_part(a) {
                    err(
                        &mut errors,
                        line,
                        &where_,
                        "an attribute key uses letters, digits, '-', '_' and '.' (at most 63)"
                            .into(),
                    );
                    continue;
                }
            }
            let spec = match raw_field {
                RawField::Column(c) => RawFieldSpec {
                    from: Some(c),
                    template: None,
                    values: None,
                    default: None,
                    format: None,
                    required: false,
                },
                RawField::Full(spec) => spec,
            };
            let source = match (spec.from, spec.template) {
                (Some(c), None) if !c.trim().is_empty() => Source::Column(c.trim().to_string()),
                (None, Some(t)) => match Template::parse(&t) {
                    Ok(t) => Source::Template(t),
                    Err(e) => {
                        err(&mut errors, line, &format!("{where_}.template"), e);
                        continue;
                    }
                },
                (Some(_), Some(_)) => {
                    err(
                        &mut errors,
                        line,
                        &where_,
                        "set either from (a column) or template, not both".into(),
                    );
                    continue;
                }
                _ => {
                    err(
                        &mut errors,
                        line,
                        &where_,
                        "set from: <column> or template: \"{{ column }}\"".into(),
                    );
                    continue;
                }
            };
            let allowed: Option<&[&str]> = match field {
                Field::Status => Some(&["PreHire", "Active", "OnLeave", "Terminated"]),
                Field::Type => Some(&["Employee", "Contractor", "Vendor", "Intern"]),
                _ => None,
            };
            if let Some(allowed) = allowed {
                let check = |v: &str| allowed.contains(&v);
                for (from, to) in spec.values.iter().flatten() {
                    if !check(to) {
                        err(
                            &mut errors,
                            line_of(text, from, line.unwrap_or(0))
                                .or_else(|| {
                                    line_containing(
                                        text,
                                        &format!("{from}:"),
                                        line.unwrap_or(1) - 1,
                                    )
                                })
                                .or(line),
                            &format!("{where_}.values"),
                            format!(
                                "{from:?} maps to {to:?}, which is not one of {}",
                                allowed.join(", ")
                            ),
                        );
                    }
                }
                if let Some(d) = &spec.default
                    && !check(d)
                    && spec.values.as_ref().is_none_or(|v| !v.contains_key(d))
                {
                    err(
                        &mut errors,
                        line,
                        &format!("{where_}.default"),
                        format!("{d:?} is not one of {}", allowed.join(", ")),
                    );
                }
            }
            let formats = match spec.format {
                Some(f) if field.is_date() => f.into_vec(),
                Some(_) => {
                    err(
                        &mut errors,
                        line,
                        &format!("{where_}.format"),
                        "format is for startDate and endDate only".into(),
                    );
                    continue;
                }
                None => default_formats.clone(),
            };
            if field.is_date() {
                for f in &formats {
                    if jiff::fmt::strtime::format(f, jiff::civil::date(2026, 1, 31)).is_err() {
                        err(
                            &mut errors,
                            line,
                            &format!("{where_}.format"),
                            format!("{f:?} is not a strftime format like %Y-%m-%d or %m/%d/%Y"),
                        );
                    }
                }
            }
            fields.insert(
                field,
                FieldSpec {
                    source,
                    values: spec.values,
                    default: spec.default,
                    formats,
                    required: spec.required,
                },
            );
        }
        if !fields.contains_key(&Field::Status)
            && !errors.iter().any(|e| e.field == "fields.status")
        {
            // Without a status column every carried record is Active; say so only if asked.
            fields.insert(
                Field::Status,
                FieldSpec {
                    source: Source::Template(Template { parts: vec![] }),
                    values: None,
                    default: Some("Active".into()),
                    formats: vec![],
                    required: false,
                },
            );
        }
        if errors.is_empty() {
            Ok(Mapping {
                namespace,
                employee_id: raw.correlation.employee_id.trim().to_string(),
                store,
                id_attribute,
                adopt_by_name: raw.correlation.adopt_by_name,
                name,
                directory,
                fields,
            })
        } else {
            Err(errors)
        }
    }
}

/// Parses a status value already mapped to the Identity vocabulary.
pub fn parse_status(value: &str) -> Option<EmploymentStatus> {
    Some(match value {
        "PreHire" => EmploymentStatus::PreHire,
        "Active" => EmploymentStatus::Active,
        "OnLeave" => EmploymentStatus::OnLeave,
        "Terminated" => EmploymentStatus::Terminated,
        _ => return None,
    })
}

/// Parses an employment type already mapped to the Identity vocabulary.
pub fn parse_type(value: &str) -> Option<EmploymentType> {
    Some(match value {
        "Employee" => EmploymentType::Employee,
        "Contractor" => EmploymentType::Contractor,
        "Vendor" => EmploymentType::Vendor,
        "Intern" => EmploymentType::Intern,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_names_are_valid() {
        let t = Template::parse("{{ lower(first) }}.{{ lower(ascii(last)) }}").unwrap();
        let get = |c: &str| match c {
            "first" => Some("Zoë"),
            "last" => Some("Müller-Lüdenscheidt"),
            _ => None,
        };
        assert_eq!(t.render(&get), "zoë.muller-ludenscheidt");
        assert_eq!(
            to_object_name(&t.render(&get)).as_deref(),
            Some("zoe.muller-ludenscheidt")
        );
        assert_eq!(
            to_object_name("  O'Brien, Seán ").as_deref(),
            Some("o-brien-sean")
        );
        assert_eq!(to_object_name("---"), None);
        assert_eq!(t.columns(), vec!["first", "last"]);
        assert!(
            Template::parse("{{ shout(first) }}")
                .unwrap_err()
                .contains("unknown function")
        );
        assert!(Template::parse("{{ first").is_err());
        let quoted = Template::parse("{{ initial(\"First Name\") }}x").unwrap();
        assert_eq!(
            quoted.render(&|c| (c == "First Name").then_some("Ada")),
            "Ax"
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_line() {
        let text = "namespace: acme\ncorrelation:\n  employeeId: id\nname: \"{{ lower(first) }}\"\nfields:\n  status:\n    from: status\n    values: {Gone: Deleted}\n  shoeSize: shoe\n  startDate: {from: start, format: \"%Q\"}\n  title: {from: a, template: \"{{ b }}\"}\n";
        let errors = Mapping::parse(text).unwrap_err();
        let show: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 4, "{show:#?}");
        assert!(
            show.iter()
                .any(|e| e.starts_with("line 8: fields.status.values") && e.contains("Deleted")),
            "{show:#?}"
        );
        assert!(
            show.iter()
                .any(|e| e.starts_with("line 9: fields.shoeSize: unknown field")),
            "{show:#?}"
        );
        assert!(
            show.iter()
                .any(|e| e.starts_with("line 10: fields.startDate.format")),
            "{show:#?}"
        );
        assert!(
            show.iter()
                .any(|e| e.starts_with("line 11: fields.title") && e.contains("not both")),
            "{show:#?}"
        );
        let unknown_key =
            Mapping::parse("correlation: {employeeId: id}\nname: x\nfieldz: {}\n").unwrap_err();
        assert_eq!(unknown_key[0].line, Some(3), "{unknown_key:?}");
    }
}
