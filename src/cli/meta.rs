//! `snap version`, `snap completions SHELL` (clap_complete) and `snap man`
//! (clap_mangen): text about snap itself, written to stdout whatever
//! `--json` says.
//!
//! Side effects: writes to stdout.

use std::io::Write;

use clap::CommandFactory;

use super::Cli;
use crate::error::{Error, Result};
use crate::facts::STDOUT;

/// Writes `bytes` to stdout.
///
/// # Errors
///
/// The write error (`EPIPE` when the reader has gone: a quiet exit 141).
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write", STDOUT, e))
}

/// `snap version`: the version, and the repository format it writes.
///
/// # Errors
///
/// The write error.
pub(super) fn version() -> Result<()> {
    write_stdout(
        format!(
            "snap {} (writes repository format {}, reads {} to {})\n",
            env!("CARGO_PKG_VERSION"),
            crate::repo::format::config::FORMAT_VERSION,
            crate::repo::format::config::FORMAT_OLDEST,
            crate::repo::format::config::FORMAT_VERSION
        )
        .as_bytes(),
    )
}

/// `snap completions SHELL`: the completion script clap_complete makes
/// for SHELL. Made in memory first: clap_complete panics on a write error.
///
/// # Errors
///
/// The write error.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "snap", &mut buf);
    write_stdout(&buf)
}

/// `snap man`: the roff man page (section 1) clap_mangen makes from the
/// command line, with every command's page after the main one.
///
/// # Errors
///
/// A render error; the write error.
pub(super) fn man() -> Result<()> {
    let cmd = Cli::command();
    let mut buf = Vec::new();
    let render = |c: clap::Command, buf: &mut Vec<u8>| {
        clap_mangen::Man::new(c)
            .render(buf)
            .map_err(|e| Error::io("render", "man page", e))
    };
    render(cmd.clone(), &mut buf)?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        let name = format!("snap-{}", sub.get_name());
        let sub = sub.clone().display_name(name.clone()).bin_name(name);
        render(sub, &mut buf)?;
    }
    write_stdout(&buf)
}
