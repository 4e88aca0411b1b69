//! [`LocalBackend`]: a repository in a local directory, reached only
//! through dirfds (`crate::fs`).
//!
//! Promises (`docs/FORMAT.md`, "The commit protocol"): a file is written
//! in `tmp/` (mode `0600`), made durable (`fsync`, or the caller's batched
//! `syncfs` barrier), and only then given its name with
//! `renameat2(RENAME_NOREPLACE)` (a name never points at bytes not yet on
//! disk, and an existing name is never replaced); the directory that
//! gained the name is `fsync`ed ([`Backend::sync_names`]) or covered by
//! the next barrier. Directories are created `0700`. Every repository
//! file is opened `O_NOFOLLOW|O_NONBLOCK` and must be a regular file.
//! `config.json` is staged beside the root, not in `tmp/`, which a lock
//! holder empties.
//!
//! Side effects: creates, renames and removes files under the root; the
//! barrier is a `syncfs(2)`, which also writes out other dirty data of
//! that filesystem.

use std::any::Any;
use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{own, valid, Backend, FileKind, Put, Ranged, Staged, Syncs};
use crate::fs::{fd, Dir, Name, RelPath};
use crate::repo::layout::{self, CONFIG, DIRS, LOCK, STAGING};

/// Most bytes of a lock holder's note read for a message.
pub const LOCK_NOTE_MAX: u64 = 4096;

/// A repository directory.
#[derive(Debug)]
pub struct LocalBackend {
    path: PathBuf,
    root: Dir,
    /// Fan-out directories created and not yet synced into their parent:
    /// `(kind, fan-out name)`.
    new_dirs: Mutex<HashSet<(FileKind, String)>>,
}

fn name(s: &str) -> io::Result<Name> {
    Name::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A read-only open file of the repository.
struct LocalFile(OwnedFd);

impl Ranged for LocalFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        crate::fs::read_at(&self.0, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(fd::stat(&self.0)?.size)
    }

    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        crate::fs::read_vec_at(&self.0, offset, len)
    }
}

/// A file being written under `tmp/` (or beside the root, for the config);
/// also a remote backend's staged file, in its cache directory.
pub(super) struct LocalStaged {
    dir: Dir,
    name: Name,
    fd: OwnedFd,
    len: u64,
}

/// Removes the staged file `name` in `dir`, warning on stderr when it
/// cannot (the next staging cleanup will: prune, `check --repair-tmp`).
fn remove_staged(dir: &Dir, name: &Name) {
    if let Err(u) = dir.unlink(name) {
        eprintln!("snap: warning: could not remove staged file {name}: {u}");
    }
}

impl LocalStaged {
    /// A new staged file `<random>.tmp` in `dir`, mode `0600`.
    ///
    /// # Errors
    ///
    /// Create errors.
    pub(super) fn create(dir: Dir) -> io::Result<LocalStaged> {
        let n = name(&format!("{}.tmp", crate::sys::random_hex(12)?))?;
        let fd = dir.create_file(&n, 0o600)?;
        Ok(LocalStaged {
            dir,
            name: n,
            fd,
            len: 0,
        })
    }

    /// Every byte appended, read back from the file.
    ///
    /// # Errors
    ///
    /// Open and read errors; `UnexpectedEof` when the file is shorter than
    /// what was appended.
    pub(super) fn read_back(&self) -> io::Result<Vec<u8>> {
        let fd = self.dir.open_file(&self.name)?;
        let bytes = crate::fs::read_vec_at(&fd, 0, self.len as usize)?;
        if (bytes.len() as u64) < self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "staged file {}: {} of {} bytes",
                    self.name,
                    bytes.len(),
                    self.len
                ),
            ));
        }
        Ok(bytes)
    }

    fn remove(&self) {
        remove_staged(&self.dir, &self.name);
    }
}

impl Staged for LocalStaged {
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let n: u64 = parts.iter().map(|p| p.len() as u64).sum();
        match fd::write_parts_at(&self.fd, parts, self.len) {
            Ok(()) => {
                self.len += n;
                Ok(())
            }
            Err(e) => {
                // Give the space back now (a full disk is the usual cause).
                self.remove();
                Err(e)
            }
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        fd::start_writeback(&self.fd)
    }

    fn discard(self: Box<Self>) {
        self.remove();
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl LocalBackend {
    /// Opens the directory `path` (it must exist).
    ///
    /// # Errors
    ///
    /// The open error (`NotFound` when there is no directory).
    pub fn open(path: &Path) -> io::Result<LocalBackend> {
        Ok(LocalBackend {
            path: path.to_owned(),
            root: Dir::open_root(path)?,
            new_dirs: Mutex::default(),
        })
    }

    /// Creates the directory `path` (and its parents, `0700`) when
    /// missing, and opens it. This is the one step that uses a path rather
    /// than a dirfd.
    ///
    /// # Errors
    ///
    /// Create and open errors.
    pub fn create(path: &Path) -> io::Result<LocalBackend> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        Self::open(path)
    }

    /// The directory holding `kind`/`id`: (the kind's directory, the
    /// fan-out name when the kind fans out).
    fn dir_path(kind: FileKind, id: &str) -> io::Result<RelPath> {
        let mut rel = RelPath::root();
        if !kind.dir().is_empty() {
            rel = rel.join(name(kind.dir())?);
        }
        if let Some(sub) = layout::fanout(kind, id) {
            rel = rel.join(name(sub)?);
        }
        Ok(rel)
    }

    fn dir_of(&self, kind: FileKind, id: &str) -> io::Result<Dir> {
        self.root.open_path(&Self::dir_path(kind, id)?)
    }

    fn file_name(kind: FileKind, id: &str) -> io::Result<Name> {
        valid(kind, id)?;
        name(&layout::file_name(kind, id))
    }

    fn staging_dir(&self) -> io::Result<Dir> {
        self.root.open_dir(&name(STAGING)?)
    }

    /// `tmp/`, made again when missing (a copy of the repository made by a
    /// tool that drops empty directories, git or an object-store sync, is
    /// still the repository).
    fn staging_dir_made(&self) -> io::Result<Dir> {
        match self.staging_dir() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.root.ensure_dir(&name(STAGING)?, 0o700)?;
                self.staging_dir()
            }
            other => other,
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn prepare(&self, fresh: bool) -> io::Result<Option<String>> {
        if fresh {
            if let Some(n) = self.root.list()?.first() {
                return Ok(Some(n.to_string()));
            }
        }
        for d in DIRS {
            self.root.ensure_dir(&name(d)?, 0o700)?;
        }
        drop(self.root.open_or_create_rw(&name(LOCK)?, 0o600)?);
        Ok(None)
    }

    fn list(&self, kind: FileKind) -> io::Result<Vec<String>> {
        let top = if kind.dir().is_empty() {
            return Ok(match self.root.stat_opt(&name(CONFIG)?)? {
                Some(_) => vec![CONFIG.to_owned()],
                None => Vec::new(),
            });
        } else {
            // A kind's directory that is missing holds nothing: a copy made
            // by a tool that drops empty directories (git, object-store
            // sync) is still the repository.
            match self.root.open_dir(&name(kind.dir())?) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        };
        let mut out = Vec::new();
        for n in top.list()? {
            if kind.fans_out() {
                let sub = top.open_dir(&n)?;
                for f in sub.list()? {
                    out.push(format!("{n}/{f}"));
                }
            } else {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    fn exists(&self, kind: FileKind, id: &str) -> io::Result<bool> {
        let file = Self::file_name(kind, id)?;
        let dir = match self.dir_of(kind, id) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(dir.stat_opt(&file)?.is_some())
    }

    fn read(&self, kind: FileKind, id: &str, max: u64) -> io::Result<Vec<u8>> {
        let file = Self::file_name(kind, id)?;
        self.dir_of(kind, id)?.read_all(&file, max)
    }

    fn open(&self, kind: FileKind, id: &str) -> io::Result<Box<dyn Ranged>> {
        let file = Self::file_name(kind, id)?;
        Ok(Box::new(LocalFile(
            self.dir_of(kind, id)?.open_file(&file)?,
        )))
    }

    fn stage(&self, kind: FileKind) -> io::Result<Box<dyn Staged>> {
        let rand = crate::sys::random_hex(12)?;
        let (dir, n) = if kind == FileKind::Config {
            (
                self.root.open_path(&RelPath::root())?,
                name(&format!(".{CONFIG}.{rand}.tmp"))?,
            )
        } else {
            return Ok(Box::new(LocalStaged::create(self.staging_dir_made()?)?));
        };
        let fd = dir.create_file(&n, 0o600)?;
        Ok(Box::new(LocalStaged {
            dir,
            name: n,
            fd,
            len: 0,
        }))
    }

    fn put_staged(
        &self,
        staged: Box<dyn Staged>,
        kind: FileKind,
        id: &str,
        sync_data: bool,
        syncs: &mut Syncs,
    ) -> io::Result<Put> {
        let LocalStaged {
            dir: tmp_dir,
            name: tmp,
            fd: file_fd,
            len,
        } = *own::<LocalStaged>(staged)?;
        let placed = (|| {
            let file = Self::file_name(kind, id)?;
            if sync_data {
                syncs.run(|| fd::fsync(&file_fd))?;
            }
            // Closed before it is named, its error checked.
            fd::close(file_fd)?;
            let mut dest = if kind.dir().is_empty() {
                self.root.open_path(&RelPath::root())?
            } else {
                self.root.open_dir(&name(kind.dir())?)?
            };
            if let Some(sub) = layout::fanout(kind, id) {
                if dest.ensure_dir(&name(sub)?, 0o700)? {
                    self.new_dirs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((kind, sub.to_owned()));
                }
                dest = dest.open_dir(&name(sub)?)?;
            }
            match tmp_dir.rename(&tmp, &dest, &file, true) {
                Ok(()) => Ok(Put::Created(len)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    tmp_dir.unlink(&tmp)?;
                    Ok(Put::Existed)
                }
                Err(e) => Err(e),
            }
        })();
        if placed.is_err() {
            remove_staged(&tmp_dir, &tmp);
        }
        placed
    }

    fn replace_config(&self, bytes: &[u8], syncs: &mut Syncs) -> io::Result<()> {
        let mut staged = self.stage(FileKind::Config)?;
        staged.append(&[bytes])?;
        let LocalStaged {
            dir,
            name: tmp,
            fd: file_fd,
            ..
        } = *own::<LocalStaged>(staged)?;
        let placed = (|| {
            syncs.run(|| fd::fsync(&file_fd))?;
            fd::close(file_fd)?;
            dir.rename(&tmp, &dir, &name(CONFIG)?, false)?;
            syncs.run(|| dir.sync())
        })();
        if placed.is_err() {
            remove_staged(&dir, &tmp);
        }
        placed
    }

    fn sync_names(&self, kind: FileKind, id: &str, syncs: &mut Syncs) -> io::Result<()> {
        valid(kind, id)?;
        if let Some(sub) = layout::fanout(kind, id) {
            let key = (kind, sub.to_owned());
            let mut new = self.new_dirs.lock().unwrap_or_else(|p| p.into_inner());
            if new.contains(&key) {
                let top = self.root.open_dir(&name(kind.dir())?)?;
                syncs.run(|| top.sync())?;
                new.remove(&key);
            }
        }
        let dir = self.dir_of(kind, id)?;
        syncs.run(|| dir.sync())
    }

    fn remove(&self, kind: FileKind, id: &str) -> io::Result<()> {
        let file = Self::file_name(kind, id)?;
        self.dir_of(kind, id)?.unlink(&file)
    }

    fn barrier(&self, syncs: &mut Syncs) -> io::Result<()> {
        syncs.run(|| self.root.syncfs())?;
        if syncs.enabled {
            self.new_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        Ok(())
    }

    fn try_lock(&self, exclusive: bool) -> io::Result<Option<Box<dyn Send + Sync>>> {
        let lock = name(LOCK)?;
        let fd = match self.root.open_or_create_rw(&lock, 0o600) {
            Ok(fd) => fd,
            // A read-only repository can still be locked shared.
            Err(e) if !exclusive && e.kind() == io::ErrorKind::PermissionDenied => {
                self.root.open_file(&lock)?
            }
            Err(e) => return Err(e),
        };
        if !fd::try_flock(&fd, exclusive)? {
            return Ok(None);
        }
        if exclusive {
            let note = format!(
                "pid={} host={} started={}\n",
                std::process::id(),
                crate::sys::hostname(),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            );
            fd::truncate(&fd, 0)?;
            fd::write_all_at(&fd, note.as_bytes(), 0)?;
        }
        Ok(Some(Box::new(fd)))
    }

    fn lock_note(&self) -> String {
        name(LOCK)
            .and_then(|n| self.root.read_all(&n, LOCK_NOTE_MAX))
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .map(|n| {
                if n.is_empty() {
                    "holder wrote no note".to_owned()
                } else {
                    n
                }
            })
            .unwrap_or_else(|e| format!("holder unknown: {e}"))
    }

    fn staging(&self) -> io::Result<Vec<String>> {
        let tmp = match self.staging_dir() {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(tmp.list()?.iter().map(ToString::to_string).collect())
    }

    fn clean_staging(&self) -> io::Result<u64> {
        // Every writer starts here (under the exclusive lock): a copy of
        // the repository that lost its empty directories gets them back.
        for d in DIRS {
            self.root.ensure_dir(&name(d)?, 0o700)?;
        }
        let tmp = self.staging_dir()?;
        let mut removed = 0;
        for n in tmp.list()? {
            tmp.remove_tree(&n)
                .map_err(|e| io::Error::new(e.kind(), format!("{STAGING}/{n}: {e}")))?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::create(&dir.path().join("repo")).unwrap();
        assert_eq!(b.prepare(true).unwrap(), None);
        (dir, b)
    }

    #[test]
    fn conformance() {
        let (_dir, b) = backend();
        crate::repo::storage::conformance::run(&b);
    }

    #[test]
    fn files_are_0600_directories_0700_and_staging_is_empty_after_puts() {
        let (dir, b) = backend();
        let id = "cd".repeat(32);
        b.put(FileKind::Pack, &id, b"x", &mut Syncs::on()).unwrap();
        let repo = dir.path().join("repo");
        let f = std::fs::metadata(repo.join(layout::path(FileKind::Pack, &id))).unwrap();
        assert_eq!(f.permissions().mode() & 0o777, 0o600);
        for d in ["packs", "packs/cd", "index", "entries", "snapshots", "tmp"] {
            let m = std::fs::metadata(repo.join(d)).unwrap().mode();
            assert_eq!(m & 0o777, 0o700, "{d}");
        }
        assert!(b.staging().unwrap().is_empty());
    }

    #[test]
    fn a_symlink_or_fifo_at_a_file_name_is_refused() {
        let (dir, b) = backend();
        let repo = dir.path().join("repo");
        let id = "ab".repeat(32);
        std::os::unix::fs::symlink("/etc/hostname", repo.join(format!("index/{id}.idx"))).unwrap();
        let e = b.read(FileKind::Index, &id, 1 << 20).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        let fifo = repo.join(format!("snapshots/{id}.json"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = b.read(FileKind::Snapshot, &id, 1 << 20).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn a_durable_put_syncs_the_file_its_directory_and_a_new_fanout_parent() {
        let (_dir, b) = backend();
        let mut syncs = Syncs::on();
        b.put(FileKind::Entries, &"ef".repeat(32), b"{}\n", &mut syncs)
            .unwrap();
        // File, entries/ef/, entries/ (which gained ef/).
        assert_eq!(syncs.count, 3);
        let mut syncs = Syncs::on();
        b.put(
            FileKind::Entries,
            &format!("ef{}", "0".repeat(62)),
            b"",
            &mut syncs,
        )
        .unwrap();
        assert_eq!(syncs.count, 2, "the fan-out directory is not new");
        let mut off = Syncs::default();
        b.put(FileKind::Index, &"1".repeat(64), b"{}", &mut off)
            .unwrap();
        assert_eq!(off.count, 0);
    }
}
