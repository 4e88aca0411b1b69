//! `snap key add|list|remove|passwd`: the key files of an encrypted
//! repository (`docs/FORMAT.md`, "Encryption"), as `restic key` manages
//! its keys. Each command opens the repository with the current password
//! first; adding and removing hold the exclusive lock.
//!
//! Side effects: writes and removes key files; emits `key.result`.

use super::args::{KeyCmd, LockArgs, NewPasswordArgs};
use super::common::lock_fact;
use super::{open_repo, password, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event, KeyInfo};
use crate::repo::storage::FileKind;
use crate::repo::{crypto::KdfParams, Repo, Syncs};

/// Runs `snap key …`.
///
/// # Errors
///
/// As [`open_repo`]; [`Error::Usage`] for a repository that is not
/// encrypted, a key id that names no key file or the one in use; write,
/// remove and sync errors with the path; [`Error::AfterCommit`]
/// (`E_UNCONFIRMED`) when `passwd` added the new key and could not remove
/// the old one.
pub(super) fn run(cli: &Cli, facts: &mut Emitter, out: &Out, what: &KeyCmd) -> Result<i32> {
    let repo = open_repo(cli)?;
    let Some(current) = repo.key_id().map(str::to_owned) else {
        return Err(Error::Usage(format!(
            "{} is not encrypted: it has no keys (create an encrypted one with `snap init --encrypt`)",
            repo.path.display()
        )));
    };
    let (action, lock, exclusive) = match what {
        KeyCmd::Add { lock, .. } => ("add", lock, true),
        KeyCmd::List { lock } => ("list", lock, false),
        KeyCmd::Remove { lock, .. } => ("remove", lock, true),
        KeyCmd::Passwd { lock, .. } => ("passwd", lock, true),
    };
    let lk = repo.lock(exclusive, LockArgs::ms(lock))?;
    lock_fact(facts, &repo, &lk)?;
    let (mut added, mut removed) = (None, None);
    match what {
        KeyCmd::List { .. } => {}
        KeyCmd::Add { new, .. } => {
            let id = add(&repo, new)?;
            out.note(&format!("added key {}", short(&id)))?;
            added = Some(id);
        }
        KeyCmd::Remove { id, .. } => {
            let id = resolve(&repo, id)?;
            if id == current {
                return Err(Error::Usage(format!(
                    "key {} is the one the password opened: remove it with another key's password, or change it with `snap key passwd`",
                    short(&id)
                )));
            }
            remove(&repo, &id)?;
            out.note(&format!("removed key {}", short(&id)))?;
            removed = Some(id);
        }
        KeyCmd::Passwd { new, .. } => {
            let id = add(&repo, new)?;
            // The new key is durable: a failure now leaves both passwords
            // working, and the error says so (E_UNCONFIRMED).
            remove(&repo, &current).map_err(|e| {
                e.after_commit(format!(
                    "key {} for the new password was added; key {} was not removed, so the old password still opens the repository",
                    short(&id),
                    short(&current)
                ))
            })?;
            out.note(&format!(
                "changed the password: key {} replaces key {}",
                short(&id),
                short(&current)
            ))?;
            added = Some(id);
            removed = Some(current.clone());
        }
    }
    let keys = list(&repo)?;
    if matches!(what, KeyCmd::List { .. }) {
        out.line(&format!(
            " {:<12}  {:<25}  {:<20}  kdf",
            "id", "created", "user@host"
        ))?;
        for k in &keys {
            out.line(&format!(
                "{}{:<12}  {:<25}  {:<20}  argon2id {} MiB x{}",
                if k.id == current { "*" } else { " " },
                short(&k.id),
                crate::human::local_time(&k.created),
                format!("{}@{}", k.user, k.host),
                k.m_cost / 1024,
                k.t_cost
            ))?;
        }
    }
    facts.emit(
        Decision::Success,
        None,
        Event::KeyResult {
            repo: repo.path.display().to_string(),
            action: action.into(),
            current,
            added,
            removed,
            keys,
        },
    )?;
    Ok(0)
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Writes a key file for the new password; returns its id.
fn add(repo: &Repo, new: &NewPasswordArgs) -> Result<String> {
    let pw = password::new(new.new_password_file.as_deref(), None)?;
    let master = repo
        .master_key()
        .ok_or_else(|| Error::Internal("an encrypted repository without its key".into()))?;
    crate::repo::commit::put_key(repo.store(), master, &pw, KdfParams::DEFAULT)
}

/// Removes key file `id` and makes the removal durable.
fn remove(repo: &Repo, id: &str) -> Result<()> {
    let path = repo.file_path(FileKind::Key, id);
    repo.store()
        .remove(FileKind::Key, id)
        .map_err(|e| Error::io("remove", &path, e))?;
    repo.store()
        .barrier(&mut Syncs::on())
        .map_err(|e| Error::io("syncfs", &path, e))
}

/// The key file ids, sorted.
fn ids(repo: &Repo) -> Result<Vec<String>> {
    Ok(repo
        .list(FileKind::Key)?
        .iter()
        .filter_map(|n| crate::repo::layout::id_of(FileKind::Key, n).map(str::to_owned))
        .collect())
}

/// The one key id `query` is, or is a prefix of.
fn resolve(repo: &Repo, query: &str) -> Result<String> {
    let hits: Vec<String> = ids(repo)?
        .into_iter()
        .filter(|id| !query.is_empty() && id.starts_with(query))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Usage(format!("no key file has the id {query:?}"))),
        _ => Err(Error::Usage(format!(
            "{} key files share the prefix {query:?}; give more digits",
            hits.len()
        ))),
    }
}

/// Every key file that matches its id and parses, by id; one that does
/// not is named on stderr.
fn list(repo: &Repo) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for id in ids(repo)? {
        let path = repo.file_path(FileKind::Key, &id);
        match crate::repo::read_key_file(repo.store(), &id) {
            Ok(k) => out.push(KeyInfo {
                id,
                created: k.created,
                user: k.user,
                host: k.host,
                m_cost: k.kdf.m_cost,
                t_cost: k.kdf.t_cost,
            }),
            Err(e) => eprintln!("snap: warning: key file {path}: {e}"),
        }
    }
    Ok(out)
}
