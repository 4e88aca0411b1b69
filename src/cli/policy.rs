//! `snap policy show`: the effective policy as JSON.
//!
//! Side effects: reads a `--policy` file; emits `policy.show`.

use super::args::BackupPolicyArgs;
use super::Out;
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};
use crate::policy::Overrides;

/// Runs `snap policy show`.
///
/// # Errors
///
/// An unreadable or invalid policy file.
pub(super) fn show(
    facts: &mut Emitter,
    out: &Out,
    policy: &BackupPolicyArgs,
    untrusted: bool,
) -> Result<i32> {
    let (policy, _) = policy.common.resolve_with(Overrides {
        no_durability: policy.no_durability,
        excludes: policy.excludes.clone(),
        untrusted,
        ..Overrides::default()
    })?;
    let text =
        serde_json::to_string_pretty(&policy).map_err(|e| Error::serialise("the policy", e))?;
    out.line(&text)?;
    facts.emit(Decision::Success, None, Event::PolicyShow { policy })?;
    Ok(0)
}
