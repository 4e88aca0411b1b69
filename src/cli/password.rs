//! Where an encrypted repository's password comes from, in this order:
//! `--password-file FILE` (or `SNAP_PASSWORD_FILE`), `--password-command
//! CMD` (or `SNAP_PASSWORD_COMMAND`), `SNAP_PASSWORD`, a prompt on the
//! terminal; a new password (`init --encrypt`, `key add`, `key passwd`)
//! from `--new-password-file`, `SNAP_NEW_PASSWORD` or a prompt asked
//! twice. As restic reads its `--password-file` and `--password-command`.
//!
//! Side effects: reads the password file, runs the password command
//! (`sh -c`), reads the terminal.

use std::path::Path;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::Cli;
use crate::error::{Error, Result};

/// A password's bytes, zeroed when dropped.
pub(super) type Secret = Zeroizing<Vec<u8>>;

/// The password of the repository `cli` names, from the first source
/// given.
///
/// # Errors
///
/// [`Error::Password`] (`E_PASSWORD`) when no source gives one, the file
/// cannot be read, or the command fails.
pub(super) fn current(cli: &Cli) -> Result<Secret> {
    if let Some(f) = &cli.password_file {
        return from_file(f);
    }
    if let Some(cmd) = &cli.password_command {
        return from_command(cmd);
    }
    if let Some(p) = std::env::var_os("SNAP_PASSWORD") {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Zeroizing::new(p.into_vec()));
    }
    prompt("enter password for repository: ")?.ok_or_else(|| Error::Password {
        path: "-".into(),
        detail: "the repository is encrypted and no password is given: set SNAP_PASSWORD, or give --password-file or --password-command".into(),
    })
}

/// The password of `snap copy`'s source repository: `--from-password-file`
/// (`SNAP_FROM_PASSWORD_FILE`), `--from-password-command`
/// (`SNAP_FROM_PASSWORD_COMMAND`), `SNAP_FROM_PASSWORD`, a prompt (restic's
/// `--from-password-*`).
///
/// # Errors
///
/// As [`current`].
pub(super) fn from_source(file: Option<&Path>, command: Option<&str>) -> Result<Secret> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(cmd) = command {
        return from_command(cmd);
    }
    if let Some(p) = std::env::var_os("SNAP_FROM_PASSWORD") {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Zeroizing::new(p.into_vec()));
    }
    prompt("enter password for the source repository: ")?.ok_or_else(|| Error::Password {
        path: "-".into(),
        detail: "the source repository is encrypted and no password is given for it: set SNAP_FROM_PASSWORD, or give --from-password-file or --from-password-command".into(),
    })
}

/// The password of a new key: from `file`, `SNAP_NEW_PASSWORD`, or a
/// prompt on the terminal asked twice; `fallback` (the current password's
/// sources) when `init --encrypt` makes the first key.
///
/// # Errors
///
/// As [`current`]; [`Error::Usage`] when the two prompts differ.
pub(super) fn new(file: Option<&Path>, fallback: Option<&Cli>) -> Result<Secret> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(p) = std::env::var_os("SNAP_NEW_PASSWORD") {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Zeroizing::new(p.into_vec()));
    }
    if let Some(cli) = fallback {
        if cli.password_file.is_some()
            || cli.password_command.is_some()
            || std::env::var_os("SNAP_PASSWORD").is_some()
        {
            return current(cli);
        }
    }
    let Some(first) = prompt("enter new password: ")? else {
        return Err(Error::Password {
            path: "-".into(),
            detail: format!(
                "no new password is given: {}",
                if fallback.is_some() {
                    "set SNAP_PASSWORD, or give --password-file or --password-command"
                } else {
                    "set SNAP_NEW_PASSWORD or give --new-password-file"
                }
            ),
        });
    };
    let again = prompt("enter the new password again: ")?.unwrap_or_default();
    if *first != *again {
        return Err(Error::Usage("the two passwords differ".into()));
    }
    Ok(first)
}

fn prompt(msg: &str) -> Result<Option<Secret>> {
    crate::sys::read_password_from_terminal(msg).map_err(|e| Error::Password {
        path: "the terminal".into(),
        detail: format!("cannot read a password: {e}"),
    })
}

/// `text` without one trailing `\n` or `\r\n`.
fn strip_newline(mut text: Vec<u8>) -> Secret {
    if text.last() == Some(&b'\n') {
        text.pop();
        if text.last() == Some(&b'\r') {
            text.pop();
        }
    }
    Zeroizing::new(text)
}

/// Most bytes a password file or command may give.
const PASSWORD_MAX: usize = 64 << 10;

fn from_file(path: &Path) -> Result<Secret> {
    use std::io::Read;
    let fail = |detail: String| Error::Password {
        path: path.display().to_string(),
        detail,
    };
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(PASSWORD_MAX as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read the password file: {e}")))?;
    if bytes.len() > PASSWORD_MAX {
        return Err(fail(format!(
            "the password file holds more than {PASSWORD_MAX} bytes"
        )));
    }
    Ok(strip_newline(std::mem::take(&mut *bytes)))
}

fn from_command(cmd: &str) -> Result<Secret> {
    let fail = |detail: String| Error::Password {
        path: format!("--password-command {cmd:?}"),
        detail,
    };
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(fail(format!("it ended with {}", out.status)));
    }
    if stdout.len() > PASSWORD_MAX {
        return Err(fail(format!("it printed more than {PASSWORD_MAX} bytes")));
    }
    Ok(strip_newline(stdout.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(&*strip_newline(b"pw\n".to_vec()), b"pw");
        assert_eq!(&*strip_newline(b"pw\r\n".to_vec()), b"pw");
        assert_eq!(&*strip_newline(b"pw\n\n".to_vec()), b"pw\n");
        assert_eq!(&*strip_newline(b" pw ".to_vec()), b" pw ");
    }

    #[test]
    fn a_command_gives_its_output_and_a_failing_one_is_e_password() {
        assert_eq!(&*from_command("printf 'a b\\n'").unwrap(), b"a b");
        let e = from_command("exit 3").unwrap_err();
        assert_eq!(e.id(), crate::error::ErrorId::E_PASSWORD);
        assert!(e.to_string().contains("exit status: 3"), "{e}");
    }
}
