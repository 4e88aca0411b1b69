//! What `statx(2)` says of an entry: [`Time`], [`FileKind`], [`Stat`].
//! No side effects.

use rustix::fs::{FileType, StatxFlags};

/// The `statx(2)` fields snap asks for.
pub(super) const STATX_MASK: StatxFlags = StatxFlags::BASIC_STATS;

/// A time as seconds and nanoseconds since the Unix epoch, as `statx(2)`
/// reports it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct Time {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub sec: i64,
    /// Nanoseconds, 0..=999_999_999.
    pub nsec: u32,
}

/// The kind of a directory entry, from the `S_IFMT` bits of `st_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Unix domain socket.
    Socket,
}

/// What one `statx(2)` call reports about an entry; taken once per entry
/// during the walk and carried with it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Entry kind.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated (`st_blocks`); fewer than `size / 512`
    /// means the file has holes.
    pub blocks: u64,
    /// Hard link count.
    pub nlink: u32,
    /// Inode number.
    pub ino: u64,
    /// Device holding the inode, as (major, minor).
    pub dev: (u32, u32),
    /// Device number of a char/block device, as (major, minor).
    pub rdev: (u32, u32),
    /// Last access.
    pub atime: Time,
    /// Last content modification.
    pub mtime: Time,
    /// Last status change.
    pub ctime: Time,
}

impl Stat {
    pub(super) fn from_statx(s: &rustix::fs::Statx) -> Self {
        let t = |x: rustix::fs::StatxTimestamp| Time {
            sec: x.tv_sec,
            nsec: x.tv_nsec,
        };
        let fmt = u32::from(s.stx_mode) & 0o170_000;
        let kind = match FileType::from_raw_mode(fmt) {
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::CharacterDevice => FileKind::Char,
            FileType::BlockDevice => FileKind::Block,
            FileType::Socket => FileKind::Socket,
            _ => FileKind::File,
        };
        Self {
            kind,
            mode: u32::from(s.stx_mode) & 0o7777,
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            blocks: s.stx_blocks,
            nlink: s.stx_nlink,
            ino: s.stx_ino,
            dev: (s.stx_dev_major, s.stx_dev_minor),
            rdev: (s.stx_rdev_major, s.stx_rdev_minor),
            atime: t(s.stx_atime),
            mtime: t(s.stx_mtime),
            ctime: t(s.stx_ctime),
        }
    }
}
