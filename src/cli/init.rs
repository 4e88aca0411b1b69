//! `snap init`: create an empty repository.
//!
//! Side effects: creates the repository directory and its files.

use super::common::announce_init;
use super::{repo_path, Cli, Out};
use crate::error::Result;
use crate::facts::Emitter;
use crate::repo::Repo;

/// Runs `snap init`.
///
/// # Errors
///
/// A repository or anything else already at the location; I/O errors.
pub(super) fn run(cli: &Cli, facts: &mut Emitter, out: &Out) -> Result<i32> {
    let path = repo_path(cli)?;
    let repo = Repo::init(&path)?;
    announce_init(facts, out, &repo, "")?;
    Ok(0)
}
