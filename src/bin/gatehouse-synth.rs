//! Writes a synthetic organisation as a policy repository, for scale runs of the CLI:
//! `gatehouse-synth DIR IDENTITIES POLICIES EXCEPTIONS [--movers EVERY]`.

use std::path::PathBuf;

use gatehouse::synthetic::{OrgSize, identity_yaml, rules_yaml};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gatehouse-synth DIR IDENTITIES POLICIES EXCEPTIONS [--movers EVERY]";
    let [dir, identities, policies, exceptions, rest @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let number = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("{s:?} is not a number; {usage}"))
    };
    let size = OrgSize {
        identities: number(identities)?,
        policies: number(policies)?,
        exceptions: number(exceptions)?,
    };
    let movers = match rest {
        [flag, every] if flag == "--movers" => Some(number(every)?),
        [] => None,
        _ => return Err(usage.into()),
    };
    let root = PathBuf::from(dir);
    let write = |path: &str, body: &str| -> Result<(), String> {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("has parent")).map_err(|e| e.to_string())?;
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))
    };
    for (path, body) in rules_yaml(size) {
        write(&path, &body)?;
    }
    for i in 0..size.identities {
        let shift = movers.map_or(0, |every| usize::from(i % every == 0));
        write(
            &format!("identities/{}.yaml", gatehouse::synthetic::identity_name(i)),
            &identity_yaml(i, shift),
        )?;
    }
    Ok(())
}
