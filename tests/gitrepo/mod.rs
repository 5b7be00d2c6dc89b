//! Real Git repositories for tests and benchmarks: built with the `git` CLI in temporary
//! directories, signed with ed25519 keys made by `ssh-keygen` or OpenPGP keys made by `gpg`
//! (each in a throw-away `GNUPGHOME`), and served over smart HTTP on loopback by
//! `git http-backend` behind a small axum server: plain HTTP, or HTTPS with a certificate
//! from a throw-away CA made by `openssl` ([`TestCa`]), optionally requiring an
//! `Authorization` header (basic or bearer).
//!
//! Use from a test binary with `mod gitrepo;` (or `#[path = "gitrepo/mod.rs"] mod gitrepo;`)
//! and from a benchmark with `#[path = "../tests/gitrepo/mod.rs"] mod gitrepo;`. No test
//! harness dependency: every helper panics with the failing command and its stderr.
//!
//! Every `git` run is isolated from the user's configuration (`GIT_CONFIG_GLOBAL=/dev/null`,
//! `GIT_CONFIG_NOSYSTEM=1`), so results do not depend on the machine.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A `git` command with the user's and the system's configuration shut out.
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    cmd
}

/// Runs a command, panicking with its stderr when it fails; returns its stdout.
fn run(mut cmd: Command) -> String {
    let out = output(&mut cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Runs `git args...` in `dir` and returns its stdout; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let mut cmd = git_command(dir);
    cmd.args(args);
    run(cmd)
}

/// Runs `git args...` in `dir` and returns the whole outcome, failing or not.
pub fn git_output(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = git_command(dir);
    cmd.args(args);
    output(&mut cmd)
}

/// Splits `"Name <mail>"` into its parts.
fn split_person(person: &str) -> (String, String) {
    match (person.find('<'), person.rfind('>')) {
        (Some(open), Some(close)) if open < close => (
            person[..open].trim().to_string(),
            person[open + 1..close].trim().to_string(),
        ),
        _ => panic!("{person:?} is not of the form \"Name <mail>\""),
    }
}

/// An ed25519 SSH key pair made by `ssh-keygen`, for signing commits.
#[derive(Clone, Debug)]
pub struct SigningKey {
    /// The key's name (also its comment and its principal in allowed-signers files).
    pub name: String,
    /// The private key file (no passphrase).
    pub private_key_path: PathBuf,
    /// The OpenSSH public key line: `ssh-ed25519 AAAA... name`.
    pub public_key: String,
}

impl SigningKey {
    /// Generates a key pair in `dir` (files `<name>` and `<name>.pub`).
    pub fn generate(dir: &Path, name: &str) -> SigningKey {
        std::fs::create_dir_all(dir).expect("key directory");
        let private_key_path = dir.join(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private_key_path);
        run(cmd);
        let public_key = std::fs::read_to_string(dir.join(format!("{name}.pub")))
            .expect("ssh-keygen wrote the public key")
            .trim()
            .to_string();
        SigningKey {
            name: name.to_string(),
            private_key_path,
            public_key,
        }
    }

    /// `<name> ssh-ed25519 AAAA...`: one line of git's allowed-signers format.
    pub fn allowed_signers_line(&self) -> String {
        let mut parts = self.public_key.split_whitespace();
        let (kind, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        format!("{} {kind} {key}", self.name)
    }
}

/// Writes an allowed-signers file naming each key, and returns its path.
pub fn write_allowed_signers(path: &Path, keys: &[&SigningKey]) -> PathBuf {
    let text: String = keys
        .iter()
        .map(|k| format!("{}\n", k.allowed_signers_line()))
        .collect();
    std::fs::write(path, text).expect("write allowed signers");
    path.to_path_buf()
}

/// An OpenPGP key made by `gpg` in its own throw-away `GNUPGHOME` (no passphrase). The
/// home's gpg-agent is stopped when the key is dropped.
#[derive(Debug)]
pub struct PgpKey {
    /// The user ID, `"Name <mail>"`.
    pub user_id: String,
    /// The `GNUPGHOME` holding the secret key.
    pub home: PathBuf,
    /// The primary key's fingerprint (upper-case hex).
    pub fingerprint: String,
    /// When set, gpg runs at this Unix time (`--faked-system-time`), signing included.
    pub faked_time: Option<i64>,
}

impl PgpKey {
    /// `gpg --quick-gen-key user_id ed25519 sign never` in a new home under `dir`.
    pub fn generate(dir: &Path, user_id: &str) -> PgpKey {
        Self::generate_with(dir, user_id, "never", None)
    }

    /// Like [`PgpKey::generate`], expiring after `expire` (gpg's syntax: `1d`, `never`),
    /// generated (and later signing) at the Unix time `faked_time` when given.
    pub fn generate_with(
        dir: &Path,
        user_id: &str,
        expire: &str,
        faked_time: Option<i64>,
    ) -> PgpKey {
        let home = Self::new_home(dir);
        let mut key = PgpKey {
            user_id: user_id.to_string(),
            home,
            fingerprint: String::new(),
            faked_time,
        };
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            user_id,
            "ed25519",
            "sign",
            expire,
        ]);
        let listing = key.gpg(&["--with-colons", "--list-keys", user_id]);
        key.fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .expect("gpg lists the new key's fingerprint")
            .to_string();
        key
    }

    /// A new, empty `GNUPGHOME` under `dir`.
    fn new_home(dir: &Path) -> PathBuf {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let home = dir.join(format!("gnupg{}", COUNT.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&home).expect("GNUPGHOME");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
            .expect("GNUPGHOME mode");
        home
    }

    /// Like [`PgpKey::generate`], naming `revoker` as a designated revoker (a Revocation
    /// Key subpacket in the self-signature: that key may revoke this one). gpg names a
    /// revoker only in unattended generation (`gpg --gen-key` with a parameter file).
    pub fn generate_with_revoker(dir: &Path, user_id: &str, revoker: &PgpKey) -> PgpKey {
        let mut key = PgpKey {
            user_id: user_id.to_string(),
            home: Self::new_home(dir),
            fingerprint: String::new(),
            faked_time: None,
        };
        let (name, mail) = split_person(user_id);
        let params = key.home.join("params");
        std::fs::write(
            &params,
            format!(
                "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: {name}\nName-Email: {mail}\nExpire-Date: 0\nRevoker: 22:{}\n%commit\n",
                revoker.fingerprint
            ),
        )
        .expect("key parameters");
        key.gpg(&["--gen-key", params.to_str().expect("utf-8 path")]);
        let listing = key.gpg(&["--with-colons", "--list-keys", &mail]);
        key.fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .expect("the new key's fingerprint")
            .to_string();
        key
    }

    /// Revokes `key` with this key as its designated revoker (`gpg --desig-revoke`), and
    /// returns `key`'s armored public key carrying that revocation.
    pub fn designated_revoke(&self, key: &PgpKey) -> String {
        let exported = self.home.join("revokee.asc");
        std::fs::write(&exported, key.public_key()).expect("write revokee");
        self.gpg(&["--import", exported.to_str().expect("utf-8 path")]);
        // --desig-revoke refuses --batch: answer its questions on the command fd.
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home)
            .args([
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--command-fd",
                "0",
                "--armor",
                "--desig-revoke",
                &key.fingerprint,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("gpg starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"y\n1\n\ny\n")
            .expect("answers");
        let out = child.wait_with_output().expect("gpg runs");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "gpg --desig-revoke: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let revocation = self.home.join("designated.rev");
        std::fs::write(&revocation, &out.stdout).expect("write revocation");
        self.gpg(&["--import", revocation.to_str().expect("utf-8 path")]);
        self.gpg(&["--armor", "--export", &key.fingerprint])
    }

    /// Runs `gpg --batch args...` in this key's home; returns stdout.
    pub fn gpg(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"]);
        if let Some(t) = self.faked_time {
            cmd.arg("--faked-system-time").arg(t.to_string());
        }
        cmd.args(args);
        run(cmd)
    }

    /// The armored public key (`gpg --armor --export`), subkeys and revocations included.
    pub fn public_key(&self) -> String {
        self.gpg(&["--armor", "--export", &self.fingerprint])
    }

    /// Adds an ed25519 signing subkey and returns its fingerprint; gpg signs with it from
    /// now on.
    pub fn add_signing_subkey(&self) -> String {
        self.gpg(&[
            "--passphrase",
            "",
            "--quick-add-key",
            &self.fingerprint,
            "ed25519",
            "sign",
            "never",
        ]);
        let listing = self.gpg(&["--with-colons", "--list-keys", &self.fingerprint]);
        listing
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .filter_map(|l| l.split(':').find(|f| !f.is_empty()))
            .next_back()
            .expect("the subkey's fingerprint")
            .to_string()
    }

    /// Revokes the key with the revocation certificate gpg made with it.
    pub fn revoke(&self) {
        let path = self
            .home
            .join("openpgp-revocs.d")
            .join(format!("{}.rev", self.fingerprint));
        let text = std::fs::read_to_string(&path).expect("gpg's revocation certificate");
        // gpg guards the certificate against accidental import with a leading ':'.
        let text = text.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let cert = self.home.join("revocation.asc");
        std::fs::write(&cert, text).expect("write revocation");
        self.gpg(&["--import", cert.to_str().expect("utf-8 path")]);
    }

    /// A `gpg.program` for git: gpg in this key's home (at the faked time, if any).
    fn program(&self) -> PathBuf {
        let script = self.home.join("gpg-for-git");
        if !script.exists() {
            let faked = self
                .faked_time
                .map(|t| format!(" --faked-system-time {t}"))
                .unwrap_or_default();
            let text = format!(
                "#!/bin/sh\nGNUPGHOME='{}' exec gpg{faked} \"$@\"\n",
                self.home.display()
            );
            std::fs::write(&script, text).expect("write gpg wrapper");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("gpg wrapper mode");
        }
        script
    }
}

impl Drop for PgpKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// How a commit is signed: not at all, with an SSH key, or with an OpenPGP key.
#[derive(Clone, Copy, Debug)]
pub enum Sign<'a> {
    /// Unsigned.
    No,
    /// `gpg.format=ssh` with this key.
    Ssh(&'a SigningKey),
    /// `gpg.format=openpgp` with this key (its primary key, or the newest signing subkey).
    Pgp(&'a PgpKey),
}

impl<'a> From<Option<&'a SigningKey>> for Sign<'a> {
    fn from(key: Option<&'a SigningKey>) -> Self {
        key.map_or(Sign::No, Sign::Ssh)
    }
}

impl Sign<'_> {
    /// The `-c` options for git that select the key (and whether to pass `-S`).
    fn git_options(&self, cmd: &mut Command) -> bool {
        match self {
            Sign::No => false,
            Sign::Ssh(key) => {
                cmd.arg("-c").arg("gpg.format=ssh").arg("-c").arg(format!(
                    "user.signingkey={}",
                    key.private_key_path.display()
                ));
                true
            }
            Sign::Pgp(key) => {
                cmd.arg("-c")
                    .arg("gpg.format=openpgp")
                    .arg("-c")
                    .arg(format!("gpg.program={}", key.program().display()))
                    .arg("-c")
                    .arg(format!("user.signingkey={}", key.fingerprint));
                true
            }
        }
    }
}

/// One commit for [`Repo::fast_import`].
#[derive(Clone, Debug, Default)]
pub struct BulkCommit {
    /// Commit message.
    pub message: String,
    /// `"Name <mail>"`; also the committer.
    pub author: String,
    /// Seconds since the epoch (UTC); author and committer time.
    pub time: i64,
    /// Files written (path, content).
    pub files: Vec<(String, String)>,
    /// Files deleted.
    pub deletes: Vec<String>,
}

/// A non-bare repository on branch `main`, built with the git CLI.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    /// `GIT_AUTHOR_DATE` / `GIT_COMMITTER_DATE` for the following commits, when set.
    date: Option<String>,
}

impl Repo {
    /// `git init` in `dir` (created if missing): branch `main`, a local committer identity,
    /// `commit.gpgsign=false`.
    pub fn init(dir: &Path) -> Repo {
        std::fs::create_dir_all(dir).expect("repository directory");
        git(dir, &["init", "-q", "-b", "main"]);
        for (key, value) in [
            ("user.name", "Fixture Committer"),
            ("user.email", "committer@fixture.example"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
        ] {
            git(dir, &["config", key, value]);
        }
        Repo {
            path: dir.to_path_buf(),
            date: None,
        }
    }

    /// Opens an existing repository made by [`Repo::init`] (or any non-bare repository).
    pub fn open(dir: &Path) -> Repo {
        Repo {
            path: dir.to_path_buf(),
            date: None,
        }
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `file://` URL of the repository.
    pub fn url_file(&self) -> String {
        let path = self
            .path
            .canonicalize()
            .unwrap_or_else(|_| self.path.clone());
        format!("file://{}", path.display())
    }

    /// Sets the author and committer date of the following commits (anything git accepts,
    /// e.g. `"2026-01-05T10:00:00Z"` or `"@1767607200 +0000"`); `None` uses the clock.
    pub fn set_date(&mut self, date: Option<&str>) {
        self.date = date.map(str::to_string);
    }

    /// Writes a file in the working tree (parents created).
    pub fn write(&self, path: &str, text: &str) {
        let full = self.path.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("parent directory");
        }
        std::fs::write(&full, text).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
    }

    /// Deletes a file from the working tree.
    pub fn remove(&self, path: &str) {
        let full = self.path.join(path);
        std::fs::remove_file(&full).unwrap_or_else(|e| panic!("remove {}: {e}", full.display()));
    }

    /// Creates a symbolic link `path -> target` in the working tree.
    pub fn symlink(&self, path: &str, target: &str) {
        let full = self.path.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("parent directory");
        }
        std::os::unix::fs::symlink(target, &full)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", full.display()));
    }

    /// Stages a submodule (gitlink) entry at `path`, pointing at a made-up commit; its
    /// working-tree directory stays empty, as for an uninitialised submodule, so that the
    /// `git add -A` of the next commit keeps it.
    pub fn add_submodule_entry(&self, path: &str) {
        std::fs::create_dir_all(self.path.join(path)).expect("submodule directory");
        let cacheinfo = format!("160000,{},{path}", "1".repeat(40));
        git(
            &self.path,
            &["update-index", "--add", "--cacheinfo", &cacheinfo],
        );
    }

    /// Stages everything (`git add -A`) and commits as `author` (`"Name <mail>"`), signed
    /// with `signer`'s SSH key when given. Returns the full commit id.
    pub fn commit(&self, message: &str, author: &str, signer: Option<&SigningKey>) -> String {
        self.commit_signed(message, author, signer.into())
    }

    /// Like [`Repo::commit`], signed as `sign` says (SSH, OpenPGP or not at all).
    pub fn commit_signed(&self, message: &str, author: &str, sign: Sign<'_>) -> String {
        git(&self.path, &["add", "-A"]);
        let (name, mail) = split_person(author);
        let mut cmd = git_command(&self.path);
        cmd.env("GIT_AUTHOR_NAME", &name)
            .env("GIT_AUTHOR_EMAIL", &mail);
        if let Some(date) = &self.date {
            cmd.env("GIT_AUTHOR_DATE", date)
                .env("GIT_COMMITTER_DATE", date);
        }
        let signed = sign.git_options(&mut cmd);
        cmd.args([
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
        ]);
        if signed {
            cmd.arg("-S");
        }
        run(cmd);
        self.head()
    }

    /// Merges `branch` into the current branch with a merge commit (`--no-ff`), as a forge's
    /// merge button does, committed by `committer` and signed as `sign` says. `files` are
    /// written into the merge (as a conflict resolution would be). Returns its id.
    pub fn merge(
        &self,
        branch: &str,
        message: &str,
        committer: &str,
        sign: Sign<'_>,
        files: &[(&str, &str)],
    ) -> String {
        let (name, mail) = split_person(committer);
        let mut cmd = git_command(&self.path);
        cmd.env("GIT_COMMITTER_NAME", &name)
            .env("GIT_COMMITTER_EMAIL", &mail)
            .env("GIT_AUTHOR_NAME", &name)
            .env("GIT_AUTHOR_EMAIL", &mail);
        if let Some(date) = &self.date {
            cmd.env("GIT_AUTHOR_DATE", date)
                .env("GIT_COMMITTER_DATE", date);
        }
        cmd.args(["merge", "-q", "--no-ff", "--no-commit", branch]);
        run(cmd);
        for (path, text) in files {
            self.write(path, text);
        }
        git(&self.path, &["add", "-A"]);
        let mut cmd = git_command(&self.path);
        cmd.env("GIT_COMMITTER_NAME", &name)
            .env("GIT_COMMITTER_EMAIL", &mail)
            .env("GIT_AUTHOR_NAME", &name)
            .env("GIT_AUTHOR_EMAIL", &mail);
        if let Some(date) = &self.date {
            cmd.env("GIT_AUTHOR_DATE", date)
                .env("GIT_COMMITTER_DATE", date);
        }
        let signed = sign.git_options(&mut cmd);
        cmd.args(["commit", "-q", "--no-verify", "-m", message]);
        if signed {
            cmd.arg("-S");
        }
        run(cmd);
        self.head()
    }

    /// Writes many files at once (no process per file), then commits like [`Repo::commit`].
    pub fn commit_files(
        &self,
        files: &[(String, String)],
        message: &str,
        author: &str,
        signer: Option<&SigningKey>,
    ) -> String {
        for (path, text) in files {
            self.write(path, text);
        }
        self.commit(message, author, signer)
    }

    /// Appends unsigned commits to `main` with one `git fast-import` process (for large
    /// histories), then checks the result out. Returns the commit ids, in order.
    pub fn fast_import(&self, commits: &[BulkCommit]) -> Vec<String> {
        let parent = git_output(
            &self.path,
            &["rev-parse", "--verify", "-q", "refs/heads/main"],
        );
        let parent = String::from_utf8_lossy(&parent.stdout).trim().to_string();
        let mut stream = Vec::new();
        for (i, c) in commits.iter().enumerate() {
            let (name, mail) = split_person(&c.author);
            let _ = writeln!(stream, "commit refs/heads/main\nmark :{}", i + 1);
            let _ = writeln!(stream, "author {name} <{mail}> {} +0000", c.time);
            let _ = writeln!(stream, "committer {name} <{mail}> {} +0000", c.time);
            let _ = writeln!(stream, "data {}\n{}", c.message.len(), c.message);
            if i == 0 && !parent.is_empty() {
                let _ = writeln!(stream, "from {parent}");
            }
            for path in &c.deletes {
                let _ = writeln!(stream, "D {path}");
            }
            for (path, text) in &c.files {
                let _ = writeln!(stream, "M 100644 inline {path}\ndata {}", text.len());
                stream.extend_from_slice(text.as_bytes());
                stream.push(b'\n');
            }
            stream.push(b'\n');
        }
        let mut marks = self.path.join(".git").join("fast-import-marks");
        if !self.path.join(".git").is_dir() {
            marks = std::env::temp_dir().join(format!("fast-import-marks-{}", std::process::id()));
        }
        let mut cmd = git_command(&self.path);
        cmd.args(["fast-import", "--quiet", "--force"])
            .arg(format!("--export-marks={}", marks.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("git fast-import starts");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&stream));
        let out = child.wait_with_output().expect("git fast-import runs");
        writer
            .join()
            .expect("writer thread")
            .expect("fast-import reads its input");
        assert!(
            out.status.success(),
            "git fast-import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&marks).expect("marks file");
        let _ = std::fs::remove_file(&marks);
        let mut ids = vec![String::new(); commits.len()];
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            if let (Some(mark), Some(id)) = (parts.next(), parts.next())
                && let Ok(n) = mark.trim_start_matches(':').parse::<usize>()
                && (1..=commits.len()).contains(&n)
            {
                ids[n - 1] = id.to_string();
            }
        }
        if !commits.is_empty() {
            git(&self.path, &["reset", "-q", "--hard", "refs/heads/main"]);
        }
        ids
    }

    /// The full id of `HEAD`.
    pub fn head(&self) -> String {
        git(&self.path, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Moves `main` (the served branch) and the working tree to `oid`: a force-push.
    pub fn reset_hard(&self, oid: &str) {
        git(&self.path, &["reset", "-q", "--hard", oid]);
    }
}

/// A throw-away certificate authority made with the `openssl` CLI (EC P-256), and server
/// certificates it signs.
pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate (PEM).
    pub cert_pem: String,
}

impl TestCa {
    /// Makes a CA named `name` in `dir/name/`.
    pub fn generate(dir: &Path, name: &str) -> TestCa {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("CA directory");
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&dir).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
        ]);
        cmd.arg(format!("/CN={name}"));
        run(cmd);
        let cert_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
        TestCa { dir, cert_pem }
    }

    /// A server certificate for `127.0.0.1` and `localhost` signed by this CA:
    /// (certificate PEM, PKCS#8 private key PEM).
    pub fn server_certificate(&self) -> (String, String) {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&self.dir).args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(cmd);
        std::fs::write(
            self.dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext.cnf");
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&self.dir).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        run(cmd);
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).expect("server files");
        (read("server.crt"), read("server.key"))
    }
}

/// How a [`GitHttpServer`] serves.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// HTTPS with this certificate and private key (PEM) instead of plain HTTP.
    pub tls: Option<(String, String)>,
    /// Every request must carry exactly this `Authorization` header value (`Basic …` or
    /// `Bearer …`); others get 401 with a matching `WWW-Authenticate` challenge.
    pub authorization: Option<String>,
}

/// A smart-HTTP Git server on 127.0.0.1 (random port) serving every repository under a
/// root directory through `git http-backend` (CGI, one process per request).
///
/// Repositories are served where they are: a non-bare repository at `<root>/<name>` is
/// fetched from `url(name)` = `http://127.0.0.1:PORT/<name>` (http-backend finds its
/// `.git`); a bare one at `<root>/<name>.git` from `url("<name>.git")`. Read-only: tests
/// change repositories directly, never by pushing.
///
/// The server runs on its own thread with its own Tokio runtime, so synchronous and
/// asynchronous tests can both use it; it stops when dropped.
pub struct GitHttpServer {
    port: u16,
    scheme: &'static str,
    state: Arc<ServerState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct ServerState {
    root: PathBuf,
    backend: PathBuf,
    requests: AtomicUsize,
    unauthorized: AtomicUsize,
    handshakes_failed: Arc<AtomicUsize>,
    down: AtomicBool,
    authorization: Option<String>,
}

/// Accepts TLS connections; a handshake the client aborts (a certificate it refuses) is
/// counted and skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failed: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, address),
                Err(_) => {
                    self.failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("server certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key PEM");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl GitHttpServer {
    /// Starts serving `root` over plain HTTP, to anyone.
    pub fn start(root: &Path) -> GitHttpServer {
        Self::start_with(root, ServeOptions::default())
    }

    /// Starts serving `root` as `options` say.
    pub fn start_with(root: &Path, options: ServeOptions) -> GitHttpServer {
        let exec_path = run({
            let mut c = git_command(root);
            c.arg("--exec-path");
            c
        });
        let backend = Path::new(exec_path.trim()).join("git-http-backend");
        assert!(
            backend.exists(),
            "{} is missing: install git's http-backend",
            backend.display()
        );
        let state = Arc::new(ServerState {
            root: root.canonicalize().expect("server root exists"),
            backend,
            requests: AtomicUsize::new(0),
            unauthorized: AtomicUsize::new(0),
            handshakes_failed: Arc::new(AtomicUsize::new(0)),
            down: AtomicBool::new(false),
            authorization: options.authorization.clone(),
        });
        let acceptor = options
            .tls
            .as_ref()
            .map(|(cert, key)| tls_acceptor(cert, key));
        let failed = state.handshakes_failed.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local address").port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread =
            std::thread::Builder::new()
                .name("git-http-server".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = axum::Router::new().fallback(move |request| {
                        let state = served.clone();
                        async move { handle(state, request).await }
                    });
                    match acceptor {
                        None => tokio::select! {
                            result = axum::serve(listener, app) => {
                                if let Err(e) = result { eprintln!("git http server: {e}"); }
                            }
                            _ = rx => {}
                        },
                        Some(acceptor) => {
                            let listener = TlsListener { tcp: listener, acceptor, failed };
                            tokio::select! {
                                result = axum::serve(listener, app) => {
                                    if let Err(e) = result { eprintln!("git https server: {e}"); }
                                }
                                _ = rx => {}
                            }
                        }
                    }
                });
                    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                })
                .expect("server thread");
        GitHttpServer {
            port,
            scheme: if options.tls.is_some() {
                "https"
            } else {
                "http"
            },
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The URL of the repository at `<root>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "{}://127.0.0.1:{}/{}",
            self.scheme,
            self.port,
            name.trim_matches('/')
        )
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests received so far (including those refused while down).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests refused for a missing or wrong `Authorization` header.
    pub fn unauthorized(&self) -> usize {
        self.state.unauthorized.load(Ordering::SeqCst)
    }

    /// TLS handshakes that did not complete (the client refused the certificate).
    pub fn handshakes_failed(&self) -> usize {
        self.state.handshakes_failed.load(Ordering::SeqCst)
    }

    /// While down, every request gets `503 Service Unavailable` and nothing is served.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs one request through `git http-backend` as CGI.
async fn handle(
    state: Arc<ServerState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::{HeaderName, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for a fault test\n").into_response();
    }
    let (parts, body) = request.into_parts();
    if let Some(expected) = &state.authorization {
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            state.unauthorized.fetch_add(1, Ordering::SeqCst);
            let scheme = expected.split_whitespace().next().unwrap_or("Basic");
            let mut response =
                (StatusCode::UNAUTHORIZED, "authorization required\n").into_response();
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&format!("{scheme} realm=\"git\"")).expect("header value"),
            );
            return response;
        }
    }
    let body = match axum::body::to_bytes(body, 256 * 1024 * 1024).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("body: {e}\n")).into_response(),
    };
    let mut env: Vec<(String, String)> = vec![
        ("GIT_PROJECT_ROOT".into(), state.root.display().to_string()),
        ("GIT_HTTP_EXPORT_ALL".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("PATH_INFO".into(), parts.uri.path().to_string()),
        (
            "QUERY_STRING".into(),
            parts.uri.query().unwrap_or("").to_string(),
        ),
        ("REQUEST_METHOD".into(), parts.method.as_str().to_string()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("CONTENT_LENGTH".into(), body.len().to_string()),
    ];
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else { continue };
        match name.as_str() {
            "content-type" => env.push(("CONTENT_TYPE".into(), value.into())),
            "content-length" => {}
            other => env.push((
                format!("HTTP_{}", other.to_ascii_uppercase().replace('-', "_")),
                value.into(),
            )),
        }
    }
    let backend = state.backend.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(&backend);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        Ok::<_, std::io::Error>(out)
    })
    .await;
    let output = match output {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("backend: {e}\n")).into_response();
        }
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("backend: {e}\n")).into_response();
        }
    };
    let stdout = output.stdout;
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        });
    let Some((head_end, body_start)) = split else {
        return (
            StatusCode::BAD_GATEWAY,
            format!(
                "http-backend gave no CGI headers: {}\n",
                String::from_utf8_lossy(&output.stderr)
            ),
        )
            .into_response();
    };
    let head = String::from_utf8_lossy(&stdout[..head_end]).into_owned();
    let mut response =
        axum::response::Response::new(axum::body::Body::from(stdout[body_start..].to_vec()));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            if let Ok(status) = code.parse::<u16>().map(StatusCode::from_u16) {
                *response.status_mut() = status.unwrap_or(StatusCode::BAD_GATEWAY);
            }
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
