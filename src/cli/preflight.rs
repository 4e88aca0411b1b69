//! `snap preflight`: the preflight checks of a backup or restore, alone.
//!
//! Side effects: reads the source, target and repository; probes the
//! filesystems (a probe file for xattr support); takes no lock.

use super::args::PreflightCmd;
use super::common::{damaged_facts, gate};
use super::restore::{restore_load, restore_preflight};
use super::{repo_path, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::Emitter;
use crate::preflight::LockState;
use crate::repo::Repo;

/// Runs `snap preflight`; returns the exit code (10, `E_POLICY`, on a
/// stop, as an error).
///
/// # Errors
///
/// [`Error::Policy`] on a stop; a missing repository or snapshot.
pub(super) fn run(cli: &Cli, facts: &mut Emitter, out: &Out, what: &PreflightCmd) -> Result<i32> {
    let path = repo_path(cli)?;
    let (op, report, policy) = match what {
        PreflightCmd::Backup { policy, sources } => {
            let (policy, _) = policy.resolve()?;
            let src = &sources.paths()?;
            (
                "backup",
                crate::preflight::backup(&path, src, &policy, LockState::Probe),
                policy,
            )
        }
        PreflightCmd::Restore {
            snapshot,
            target,
            filter,
            policy,
        } => {
            let (mut policy, explicit) = policy.resolve()?;
            let repo = Repo::open(&path, &|| super::password::current(cli))?;
            let abs = std::path::absolute(target)
                .map_err(|e| Error::io("resolve", target.display(), e))?;
            let replacing = crate::fs::lstat_path(&abs).ok().flatten().is_some();
            let loaded = restore_load(
                &repo,
                snapshot,
                &filter.filter(),
                None,
                &mut policy,
                explicit,
            );
            damaged_facts(facts, &repo)?;
            let loaded = loaded?;
            let report = restore_preflight(&repo, &loaded, &abs, &policy, false, replacing);
            ("restore", report, policy)
        }
    };
    for c in &report.checks {
        out.line(&format!(
            "{:<5} {:<10} {} ({})",
            format!("{:?}", c.result).to_lowercase(),
            c.check,
            c.path,
            c.detail
        ))?;
    }
    gate(facts, op, report, &policy)?;
    Ok(0)
}
