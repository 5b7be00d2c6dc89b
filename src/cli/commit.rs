//! Writing files as one (optionally signed) commit on a branch, for a pull request:
//! Git objects only, the working tree and index are not touched. Shared by `hr import`
//! and `review open`.

use std::path::Path;

use git2::{ObjectType, Oid, Repository};

/// Where to commit: a branch, created from `base` when missing.
pub struct Target<'a> {
    /// Branch name (without `refs/heads/`).
    pub branch: &'a str,
    /// The revision a new branch starts from.
    pub base: &'a str,
}

impl Target<'_> {
    /// `refs/heads/<branch>`.
    pub fn reference(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// The commit to build on: the branch's tip, else `base`. Refuses an invalid name and
    /// a branch checked out in a non-bare repository (its working tree would be left behind).
    pub fn parent<'r>(&self, repo: &'r Repository) -> Result<git2::Commit<'r>, String> {
        let reference = self.reference();
        if !git2::Reference::is_valid_name(&reference) {
            return Err(format!(
                "--branch {:?} is not a valid branch name",
                self.branch
            ));
        }
        if let Ok(head) = repo.head()
            && head.name().ok() == Some(reference.as_str())
            && !repo.is_bare()
        {
            return Err(format!(
                "--branch {} is checked out here; committing on it would leave the working tree behind: check out another branch or pick another --branch",
                self.branch
            ));
        }
        match repo.find_reference(&reference) {
            Ok(r) => r.peel_to_commit(),
            Err(_) => repo
                .revparse_single(self.base)
                .and_then(|o| o.peel_to_commit()),
        }
        .map_err(|e| {
            format!(
                "cannot resolve --branch {} or --base {}: {}",
                self.branch,
                self.base,
                e.message()
            )
        })
    }
}

/// What to commit.
pub struct Change<'a> {
    /// Folder inside the repository the paths are relative to (`None`: its root).
    pub subdir: Option<&'a str>,
    /// (path, blob) of every file written (see [`blob`]).
    pub files: Vec<(String, Oid)>,
    /// `Name <mail>`.
    pub author: &'a str,
    /// The commit message.
    pub message: String,
    /// An OpenSSH private key to sign with, in git's SSH format.
    pub sign_with: Option<&'a Path>,
    /// The reflog message.
    pub reflog: &'a str,
}

/// Writes a file's content as a blob, for [`Change::files`].
pub fn blob(repo: &Repository, content: &str) -> Result<Oid, String> {
    repo.blob(content.as_bytes())
        .map_err(|e| e.message().to_string())
}

/// Commits `change` on top of `parent` and moves `target`'s branch to it. `Ok(None)` when
/// the branch already holds exactly these files.
pub fn commit(
    repo: &Repository,
    parent: &git2::Commit<'_>,
    target: &Target<'_>,
    change: &Change<'_>,
) -> Result<Option<Oid>, String> {
    let text = |e: git2::Error| e.message().to_string();
    let prefix: Vec<String> = change
        .subdir
        .map(|s| s.split('/').map(str::to_string).collect())
        .unwrap_or_default();
    let mut blobs = Vec::with_capacity(change.files.len());
    for (path, oid) in &change.files {
        let mut parts = prefix.clone();
        parts.extend(path.split('/').map(str::to_string));
        blobs.push((parts, *oid));
    }
    blobs.sort();
    let base_tree = parent.tree().map_err(text)?;
    let tree_id = write_tree(repo, Some(&base_tree), &blobs).map_err(text)?;
    if tree_id == base_tree.id() {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id).map_err(text)?;
    let (name, mail) = split_person(change.author)?;
    let who = git2::Signature::now(&name, &mail).map_err(text)?;
    let id = match change.sign_with {
        None => repo
            .commit(None, &who, &who, &change.message, &tree, &[parent])
            .map_err(text)?,
        Some(key_path) => {
            let content = repo
                .commit_create_buffer(&who, &who, &change.message, &tree, &[parent])
                .map_err(text)?;
            let content = std::str::from_utf8(&content)
                .map_err(|_| "the commit is not UTF-8".to_string())?
                .to_string();
            let signature = sign(key_path, &content)?;
            repo.commit_signed(&content, &signature, None)
                .map_err(text)?
        }
    };
    let reference = target.reference();
    repo.reference(&reference, id, true, change.reflog)
        .map_err(|e| format!("cannot move {reference}: {}", e.message()))?;
    Ok(Some(id))
}

fn split_person(person: &str) -> Result<(String, String), String> {
    match (person.find('<'), person.rfind('>')) {
        (Some(open), Some(close)) if open < close => Ok((
            person[..open].trim().to_string(),
            person[open + 1..close].trim().to_string(),
        )),
        _ => Err(format!("--author {person:?}: write it as \"Name <mail>\"")),
    }
}

/// Writes a tree equal to `base` with `blobs` (paths split in components, sorted) set.
fn write_tree(
    repo: &Repository,
    base: Option<&git2::Tree<'_>>,
    blobs: &[(Vec<String>, Oid)],
) -> Result<Oid, git2::Error> {
    let mut builder = repo.treebuilder(base)?;
    let mut i = 0;
    while i < blobs.len() {
        let head = &blobs[i].0[0];
        let mut j = i;
        while j < blobs.len() && &blobs[j].0[0] == head {
            j += 1;
        }
        let group = &blobs[i..j];
        if group.len() == 1 && group[0].0.len() == 1 {
            builder.insert(head, group[0].1, 0o100644)?;
        } else {
            let sub: Vec<(Vec<String>, Oid)> = group
                .iter()
                .filter(|(p, _)| p.len() > 1)
                .map(|(p, o)| (p[1..].to_vec(), *o))
                .collect();
            let existing = base
                .and_then(|t| t.get_name(head))
                .filter(|e| e.kind() == Some(ObjectType::Tree))
                .and_then(|e| repo.find_tree(e.id()).ok());
            let oid = write_tree(repo, existing.as_ref(), &sub)?;
            builder.insert(head, oid, 0o040000)?;
        }
        i = j;
    }
    builder.write()
}

/// Signs a commit buffer with an OpenSSH private key, as `git -c gpg.format=ssh` does.
fn sign(key_path: &Path, content: &str) -> Result<String, String> {
    let key = ssh_key::PrivateKey::read_openssh_file(key_path).map_err(|e| {
        format!(
            "--sign-with {}: not an OpenSSH private key ({e})",
            key_path.display()
        )
    })?;
    if key.is_encrypted() {
        return Err(format!(
            "--sign-with {}: the key is passphrase-protected; use an unencrypted deploy key kept in the CI secret store",
            key_path.display()
        ));
    }
    let signature = key
        .sign("git", ssh_key::HashAlg::Sha512, content.as_bytes())
        .map_err(|e| format!("cannot sign with {}: {e}", key_path.display()))?;
    signature
        .to_pem(ssh_key::LineEnding::LF)
        .map_err(|e| format!("cannot encode the signature: {e}"))
}
