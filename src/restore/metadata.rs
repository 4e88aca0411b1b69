//! Applying an entry's metadata in restore order: owners (by id or by
//! name), mode, xattrs, times; inode flags in a last pass.
//!
//! Side effects: chown, chmod, setxattr, utimensat and FS_IOC_SETFLAGS on
//! restored entries.

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::facts::FieldCount;
use crate::fs::{fd, RelPath};
use crate::repo::sidecar::{EntryKind, EntryRecord};

use super::{entry_error, integrity, Restorer};

/// The inode flags bits a process may change (`FS_FL_USER_MODIFIABLE` in
/// `include/uapi/linux/fs.h`); others (extents, inline data, ...) are the
/// filesystem's own.
pub(super) const FLAGS_MODIFIABLE: u32 = 0x0003_80FF;

pub(super) fn count(c: &mut FieldCount, ok: bool) {
    if ok {
        c.applied += 1;
    } else {
        c.skipped += 1;
    }
}

/// The error for a failed `chown(2)` of `shown` to `uid:gid`, which the
/// policy's tier requires: [`Error::Ownership`] (`E_OWNERSHIP`), or, for
/// a quota (`EDQUOT`), `E_NO_SPACE`.
pub(super) fn chown_error(shown: &str, uid: u32, gid: u32, e: std::io::Error) -> Error {
    if crate::error::io_error_id(&e) == crate::error::ErrorId::E_NO_SPACE {
        return entry_error(shown, "chown", e);
    }
    Error::Ownership {
        path: shown.to_owned(),
        uid,
        gid,
        source: e,
    }
}

/// Sets the modifiable inode flags of `fd` to `want`'s, keeping the
/// filesystem's own bits.
pub(super) fn set_flags(fd: &impl std::os::fd::AsFd, want: u32) -> std::io::Result<()> {
    let current = fd::flags(fd)?;
    let new = (current & !FLAGS_MODIFIABLE) | (want & FLAGS_MODIFIABLE);
    if new != current {
        fd::set_flags(fd, new)?;
    }
    Ok(())
}

impl<'a> Restorer<'a> {
    /// The (uid, gid) to apply: by recorded name through this host's
    /// databases with `--by-name` (falling back to the recorded id), else
    /// the recorded ids. `None` when not root or the tier kept no owner.
    pub(super) fn owner(&mut self, rec: &EntryRecord) -> Option<(u32, u32)> {
        let (uid, gid) = (rec.uid?, rec.gid?);
        count(&mut self.summary.preservation_applied.owner, self.sh.chown);
        if !self.sh.chown {
            return None;
        }
        Some(match self.sh.names {
            Some((users, groups)) => (
                rec.user
                    .as_ref()
                    .and_then(|n| users.get(n))
                    .copied()
                    .unwrap_or(uid),
                rec.group
                    .as_ref()
                    .and_then(|n| groups.get(n))
                    .copied()
                    .unwrap_or(gid),
            ),
            None => (uid, gid),
        })
    }

    /// Sets every recorded xattr with `set`; failures become warnings.
    /// Runs after chown, so `security.capability` survives (chown clears
    /// it, `capabilities(7)`).
    pub(super) fn apply_xattrs(
        &mut self,
        rec: &EntryRecord,
        shown: &str,
        set: impl Fn(&[u8], &[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        let Some(x) = &rec.xattrs else { return Ok(()) };
        for (name, value) in x {
            let value = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|e| integrity(shown, format!("xattr {name}: invalid base64: {e}")))?;
            let res = set(name.as_bytes(), &value);
            let p = &mut self.summary.preservation_applied;
            let field = match name.as_str() {
                "system.posix_acl_access" | "system.posix_acl_default" => &mut p.acls,
                "security.capability" => &mut p.caps,
                "security.selinux" => &mut p.selinux,
                _ => &mut p.xattrs,
            };
            count(field, res.is_ok());
            if let Err(e) = res {
                self.warn(shown, format!("setxattr {name}"), e);
            }
        }
        Ok(())
    }

    /// chown -> chmod -> xattrs -> times on an open file or directory;
    /// queues its inode flags for the last pass.
    pub(super) fn apply_fd_metadata(
        &mut self,
        f: &impl std::os::fd::AsFd,
        rec: &EntryRecord,
        rel: &RelPath,
        order: usize,
        shown: &str,
    ) -> Result<()> {
        let ctx = |op: &str, e: std::io::Error| entry_error(shown, op, e);
        // A chown or chmod that would change nothing is skipped: on ext4
        // each is an inode update, and a chmod also looks up the inode's
        // ACL (`posix_acl_chmod`), while a new file usually has its owner
        // (this process) and mode (created with its permission bits)
        // already. Checked, not assumed: a set-group-ID or default-ACL
        // parent of the target changes what a new file gets.
        let now = fd::stat(f).map_err(|e| ctx("stat", e))?;
        let mut chowned = false;
        if let Some((uid, gid)) = self.owner(rec) {
            if (now.uid, now.gid) != (uid, gid) {
                fd::chown(f, uid, gid).map_err(|e| chown_error(shown, uid, gid, e))?;
                chowned = true;
            }
        }
        // A chown may clear set-ID bits (chown(2)): the mode is then set
        // whatever it was before.
        if chowned || now.mode & 0o7777 != rec.mode & 0o7777 {
            fd::chmod(f, rec.mode).map_err(|e| ctx("chmod", e))?;
        }
        self.summary.preservation_applied.mode.applied += 1;
        self.apply_xattrs(rec, shown, |n, v| fd::set_xattr(f, n, v))?;
        fd::set_times(f, rec.atime, rec.mtime).map_err(|e| ctx("set times", e))?;
        self.summary.preservation_applied.timestamps.applied += 1;
        if let Some(flags) = rec.flags.filter(|fl| fl & FLAGS_MODIFIABLE != 0) {
            self.flags
                .push((order, rel.clone(), flags, rec.kind == EntryKind::Dir));
        }
        Ok(())
    }

    /// Sets queued inode flags, last entries first (so a directory's come
    /// after its children's). The root's are left for after the rename (an
    /// immutable directory cannot be renamed) and returned.
    pub(super) fn apply_flags(&mut self) -> Option<u32> {
        let mut root = None;
        let mut queued = std::mem::take(&mut self.flags);
        queued.sort_by_key(|f| f.0);
        for (_, rel, want, is_dir) in queued.into_iter().rev() {
            if rel.is_root() {
                root = Some(want);
                continue;
            }
            let shown = rel.to_string();
            let opened = if is_dir {
                self.sh.staging.open_path(&rel).map(|d| d.into())
            } else {
                self.sh
                    .staging
                    .open_path(&rel.parent().unwrap_or_default())
                    .and_then(|p| p.open_file(rel.file_name().expect("non-root path")))
            };
            let res = opened.and_then(|fd: std::os::fd::OwnedFd| set_flags(&fd, want));
            count(&mut self.summary.preservation_applied.flags, res.is_ok());
            if let Err(e) = res {
                self.warn(&shown, "FS_IOC_SETFLAGS", e);
            }
        }
        root
    }
}
