//! `snap init`: create an empty repository; `snap migrate`: upgrade one
//! to the newest format.
//!
//! Side effects: creates the repository directory and its files;
//! replaces `config.json`.

use super::args::LockArgs;
use super::common::{announce_init, lock_fact};
use super::{open_repo, repo_path, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};
use crate::repo::crypto::KdfParams;
use crate::repo::{NewKey, Repo, FORMAT_VERSION};

/// Runs `snap init` (`--encrypt`: with a first key for the password
/// [`super::password::new`] gives).
///
/// # Errors
///
/// A repository or anything else already at the location; no password
/// (`E_PASSWORD`); I/O errors.
pub(super) fn run(cli: &Cli, facts: &mut Emitter, out: &Out, encrypt: bool) -> Result<i32> {
    let path = repo_path(cli)?;
    let repo = if encrypt {
        let pw = super::password::new(None, Some(cli))?;
        Repo::init(
            &path,
            Some(&NewKey {
                password: &pw,
                params: KdfParams::DEFAULT,
            }),
        )?
    } else {
        Repo::init(&path, None)?
    };
    announce_init(facts, out, &repo, "")?;
    Ok(0)
}

/// Runs `snap migrate`: under the exclusive lock, rewrites `config.json`
/// with the newest version ([`FORMAT_VERSION`]) when it is older. Format 3
/// reads every format-2 file as it is (`docs/FORMAT.md`, "Versions"), so
/// nothing else changes; the replacement is atomic and durable (a crash
/// leaves the repository at one version or the other).
///
/// # Errors
///
/// As [`Repo::open`] and [`Repo::lock`]; write, sync and rename errors of
/// the new `config.json`.
pub(super) fn migrate(cli: &Cli, facts: &mut Emitter, out: &Out, lock: &LockArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lk = repo.lock(true, lock.ms())?;
    lock_fact(facts, &repo, &lk)?;
    let from = repo.config.version;
    let changed = from < FORMAT_VERSION;
    if changed {
        let mut config = repo.config.clone();
        config.version = FORMAT_VERSION;
        let path = repo.display(crate::repo::layout::CONFIG);
        repo.store()
            .replace_config(&config.to_bytes()?, &mut crate::repo::Syncs::on())
            .map_err(|e| Error::io("replace", path, e))?;
        out.note(&format!(
            "migrated {} from format {from} to {FORMAT_VERSION}",
            repo.path.display()
        ))?;
    } else {
        out.note(&format!(
            "{} is already format {from}; nothing to do",
            repo.path.display()
        ))?;
    }
    facts.emit(
        Decision::Success,
        None,
        Event::MigrateResult {
            repo: repo.path.display().to_string(),
            from_version: from,
            to_version: FORMAT_VERSION.max(from),
            changed,
        },
    )?;
    Ok(0)
}
