//! The attribute template language: literal text with `{{ path | function }}` holes over
//! an Identity. A closed vocabulary, so every template is checked when the TargetSystem is
//! read (`gatehouse validate`), never when an account is written.

use super::Profile;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Hole(Expr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Expr {
    value: Operand,
    functions: Vec<Function>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Operand {
    Path(Path),
    Literal(String),
}

/// A value of the Identity a template can read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Path {
    Name,
    Namespace,
    Account,
    Type,
    DisplayName,
    Email,
    Owner,
    Status,
    EmploymentType,
    Department,
    Location,
    Title,
    ManagerName,
    StartDate,
    EndDate,
    ProofingLevel,
    Attribute(String),
    ManagerAccount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Function {
    Lower,
    Upper,
    Trim,
    /// The part at an index (negative: from the end) after splitting on a separator.
    Split(String, i64),
    /// The operand when the value is empty.
    Default(Operand),
}

/// The paths a template may name, for error messages.
const PATHS: &str = "name, namespace, account, type, displayName, email, owner, \
employment.status, employment.type, employment.department, employment.location, \
employment.title, employment.manager, employment.startDate, employment.endDate, \
proofing.level, attributes.<key>, manager.account";

impl Template {
    /// Parses a template; the error says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("`{{{{` at byte {open} is never closed with `}}}}`"))?;
            parts.push(Part::Hole(parse_expr(after[..close].trim())?));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err("`}}` without an opening `{{`".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Whether the template is exactly `{{ manager.account }}`: its value is a reference
    /// to the manager's account, which the connector writes in the target's own form (a
    /// DN, a SCIM id).
    pub fn is_manager_reference(&self) -> bool {
        matches!(self.parts.as_slice(), [Part::Hole(Expr { value: Operand::Path(Path::ManagerAccount), functions })] if functions.is_empty())
    }

    /// Whether the template reads the manager's account anywhere.
    pub fn uses_manager(&self) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Hole(e) => {
                e.value == Operand::Path(Path::ManagerAccount)
                    || e.functions.iter().any(|f| {
                        matches!(f, Function::Default(Operand::Path(Path::ManagerAccount)))
                    })
            }
            Part::Text(_) => false,
        })
    }

    /// Renders the template for one identity on one target. `manager_account` is the
    /// manager's account on the same target, when the manager has one.
    pub fn render(&self, profile: &Profile, target: &str, manager_account: Option<&str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hole(e) => out.push_str(&e.eval(profile, target, manager_account)),
            }
        }
        out.trim().to_string()
    }
}

impl Expr {
    fn eval(&self, profile: &Profile, target: &str, manager: Option<&str>) -> String {
        let mut value = self.value.eval(profile, target, manager);
        for f in &self.functions {
            value = match f {
                Function::Lower => value.to_lowercase(),
                Function::Upper => value.to_uppercase(),
                Function::Trim => value.trim().to_string(),
                Function::Split(sep, index) => {
                    let parts: Vec<&str> = if sep == " " {
                        value.split_whitespace().collect()
                    } else {
                        value.split(sep.as_str()).collect()
                    };
                    let i = if *index < 0 {
                        parts.len() as i64 + index
                    } else {
                        *index
                    };
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| parts.get(i))
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                }
                Function::Default(other) => {
                    if value.trim().is_empty() {
                        other.eval(profile, target, manager)
                    } else {
                        value
                    }
                }
            };
        }
        value
    }
}

impl Operand {
    fn eval(&self, profile: &Profile, target: &str, manager: Option<&str>) -> String {
        match self {
            Self::Literal(s) => s.clone(),
            Self::Path(p) => {
                let s = |v: &Option<String>| v.clone().unwrap_or_default();
                let e = profile.employment.as_ref();
                match p {
                    Path::Name => profile.name.clone(),
                    Path::Namespace => profile.namespace.clone(),
                    Path::Account => profile.account(target).to_string(),
                    Path::Type => profile.identity_type.clone(),
                    Path::DisplayName => s(&profile.display_name),
                    Path::Email => s(&profile.email),
                    Path::Owner => s(&profile.owner),
                    Path::Status => e.map(|e| e.status.clone()).unwrap_or_default(),
                    Path::EmploymentType => {
                        e.map(|e| e.employment_type.clone()).unwrap_or_default()
                    }
                    Path::Department => e.map(|e| s(&e.department)).unwrap_or_default(),
                    Path::Location => e.map(|e| s(&e.location)).unwrap_or_default(),
                    Path::Title => e.map(|e| s(&e.title)).unwrap_or_default(),
                    Path::ManagerName => e.map(|e| s(&e.manager)).unwrap_or_default(),
                    Path::StartDate => e.map(|e| s(&e.start_date)).unwrap_or_default(),
                    Path::EndDate => e.map(|e| s(&e.end_date)).unwrap_or_default(),
                    Path::ProofingLevel => s(&profile.proofing),
                    Path::Attribute(key) => {
                        profile.attributes.get(key).cloned().unwrap_or_default()
                    }
                    Path::ManagerAccount => manager.unwrap_or_default().to_string(),
                }
            }
        }
    }
}

fn parse_expr(text: &str) -> Result<Expr, String> {
    if text.is_empty() {
        return Err("empty `{{ }}`: name a value, e.g. `{{ displayName }}`".into());
    }
    let mut pieces = split_pipes(text)?.into_iter();
    let value = parse_operand(pieces.next().unwrap_or_default().trim())?;
    let functions = pieces
        .map(|f| parse_function(f.trim()))
        .collect::<Result<_, _>>()?;
    Ok(Expr { value, functions })
}

/// Splits on `|` outside string literals.
fn split_pipes(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '|' if !quoted => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(format!("unterminated string in `{text}`"));
    }
    out.push(&text[start..]);
    Ok(out)
}

fn parse_operand(text: &str) -> Result<Operand, String> {
    if let Some(inner) = text.strip_prefix('"') {
        return inner
            .strip_suffix('"')
            .map(|s| Operand::Literal(s.to_string()))
            .ok_or_else(|| format!("unterminated string {text}"));
    }
    parse_path(text).map(Operand::Path)
}

fn parse_path(text: &str) -> Result<Path, String> {
    let path = match text {
        "name" => Path::Name,
        "namespace" => Path::Namespace,
        "account" => Path::Account,
        "type" => Path::Type,
        "displayName" => Path::DisplayName,
        "email" => Path::Email,
        "owner" => Path::Owner,
        "employment.status" => Path::Status,
        "employment.type" => Path::EmploymentType,
        "employment.department" => Path::Department,
        "employment.location" => Path::Location,
        "employment.title" => Path::Title,
        "employment.manager" => Path::ManagerName,
        "employment.startDate" => Path::StartDate,
        "employment.endDate" => Path::EndDate,
        "proofing.level" => Path::ProofingLevel,
        "manager.account" => Path::ManagerAccount,
        _ => match text.strip_prefix("attributes.") {
            Some(key) if !key.is_empty() && !key.contains(char::is_whitespace) => {
                Path::Attribute(key.to_string())
            }
            _ => {
                return Err(format!(
                    "unknown field `{text}`; a template can read {PATHS}"
                ));
            }
        },
    };
    Ok(path)
}

fn parse_function(text: &str) -> Result<Function, String> {
    let (name, args) = match text.find('(') {
        Some(open) => {
            let args = text[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| format!("`{text}`: missing `)`"))?;
            (text[..open].trim(), Some(args))
        }
        None => (text, None),
    };
    let usage = "functions: lower, upper, trim, split(\"sep\", index), default(value)";
    match (name, args) {
        ("lower", None) => Ok(Function::Lower),
        ("upper", None) => Ok(Function::Upper),
        ("trim", None) => Ok(Function::Trim),
        ("split", Some(args)) => {
            let (sep, index) = args
                .rsplit_once(',')
                .ok_or_else(|| format!("`{text}`: write split(\"separator\", index)"))?;
            let Operand::Literal(sep) = parse_operand(sep.trim())? else {
                return Err(format!("`{text}`: the separator is a quoted string"));
            };
            if sep.is_empty() {
                return Err(format!("`{text}`: the separator is empty"));
            }
            let index = index.trim().parse::<i64>().map_err(|_| {
                format!("`{text}`: the index is a whole number (-1 is the last part)")
            })?;
            Ok(Function::Split(sep, index))
        }
        ("default", Some(arg)) => Ok(Function::Default(parse_operand(arg.trim())?)),
        _ => Err(format!("unknown function `{text}`; {usage}")),
    }
}
