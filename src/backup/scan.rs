//! Directory scanning ahead of the backup walk: scanner threads open, list
//! and `statx` directories before the walker reaches them, so the walk's
//! system calls run on every core.
//!
//! The walker takes directories in pre-order. Scanners pick the pending
//! directory that comes first in that order ([`RelPath`] orders by
//! components, which is the walk's order of directories), and stay at most
//! [`ahead`] directories ahead. A directory the walker needs that no
//! scanner has started is scanned by the walker itself, so the walk never
//! waits on a scanner that is held back.
//!
//! Everything goes through [`Dir`]: `openat(O_DIRECTORY|O_NOFOLLOW)`,
//! `getdents64`, and `statx(AT_SYMLINK_NOFOLLOW)` by name.
//!
//! Side effects: opens and lists source directories; raises the process's
//! `RLIMIT_NOFILE` soft limit to the hard one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::sources::Selection;
use crate::fs::{Dir, FileKind, Name, RelPath, Stat};

/// How many directories the scanners may list before the walker takes
/// them, at most (each holds one open dirfd; see [`ahead`]).
pub const AHEAD: usize = 4096;

/// How many entries the listings the walker has not taken may hold (about
/// 150 bytes each): when the walker is slow (reading files), scanners stop
/// here rather than list the tree into memory.
pub const AHEAD_ENTRIES: usize = 1 << 16;

/// How far ahead the scanners may go: [`AHEAD`], or a quarter of the
/// open-file limit (`RLIMIT_NOFILE`, whose soft value
/// [`crate::sys::raise_nofile_limit`] lifts to the hard one) when that is
/// lower; at least 16.
pub fn ahead() -> usize {
    let limit = crate::sys::raise_nofile_limit();
    usize::try_from(limit / 4).unwrap_or(AHEAD).clamp(16, AHEAD)
}

/// A listed directory: its entries in bytewise name order, each stat'ed
/// once.
pub struct Listing {
    /// The directory, opened `O_DIRECTORY|O_NOFOLLOW`.
    pub dir: Arc<Dir>,
    /// Entries other than directories.
    pub files: Vec<(Name, Stat)>,
    /// Subdirectories (queued for scanning as soon as they are found).
    pub subdirs: Vec<(Name, Stat)>,
    /// Entries whose `statx` failed.
    pub failed: Vec<(Name, std::io::Error)>,
    /// Entries left out by an exclude pattern.
    pub excluded: u64,
}

/// What scanning one directory gave.
pub enum Scanned {
    /// Listed.
    Listed(Listing),
    /// Could not be opened or listed: the operation and its error.
    Failed(&'static str, std::io::Error),
}

/// A directory waiting to be scanned: opened by name from its parent.
struct Job {
    parent: Arc<Dir>,
    name: Name,
    /// On another filesystem than the walk's root (or than every source,
    /// with several), under [`DirRules::one_file_system`]: kept, not
    /// listed.
    mount: bool,
}

/// The signature a `CACHEDIR.TAG` file begins with (Cache Directory
/// Tagging Specification, <https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Directories whose contents a backup leaves out, whatever the patterns
/// say: the directory itself is stored (its metadata), empty, as tar's
/// `--one-file-system`/`--exclude-caches` and rsync's `-x` do.
#[derive(Debug, Default, Clone)]
pub struct DirRules {
    /// Directories on another filesystem than the source's (mount
    /// points, by `st_dev`).
    pub one_file_system: bool,
    /// Directories holding a `CACHEDIR.TAG` regular file that begins with
    /// [`CACHEDIR_SIGNATURE`].
    pub exclude_caches: bool,
    /// Directories holding an entry of one of these names.
    pub if_present: Vec<Name>,
}

impl DirRules {
    /// Whether `dir`, whose entries are `names` (sorted bytewise), is
    /// tagged to be left out. A `CACHEDIR.TAG` that cannot be read does
    /// not tag its directory.
    fn tagged(&self, dir: &Dir, names: &[Name]) -> bool {
        let has = |n: &Name| names.binary_search(n).is_ok();
        if self.if_present.iter().any(has) {
            return true;
        }
        if !self.exclude_caches {
            return false;
        }
        let Ok(tag) = Name::new(b"CACHEDIR.TAG") else {
            return false;
        };
        has(&tag)
            && dir
                .read_prefix(&tag, CACHEDIR_SIGNATURE.len())
                .is_ok_and(|b| b == CACHEDIR_SIGNATURE)
    }
}

#[derive(Default)]
struct State {
    queue: BTreeMap<RelPath, Job>,
    done: HashMap<RelPath, Scanned>,
    running: usize,
    /// Entries in `done`.
    done_entries: usize,
    /// Scanners waiting on `work`.
    idle: usize,
    /// The directory the walker waits for on `walker`.
    wanted: Option<RelPath>,
    stop: bool,
}

/// Whether the entry at a path (a directory when the flag is set) is
/// left out by an exclude pattern.
pub type ExcludeFn<'a> = dyn Fn(&RelPath, bool) -> bool + Sync + 'a;

/// The shared state of the scanners and the walker. Wake-ups are aimed:
/// a scanner is woken when there is a job it may take, the walker when the
/// directory it waits for is done.
pub struct Scanner<'a> {
    state: Mutex<State>,
    work: Condvar,
    walker: Condvar,
    excluded: Option<&'a ExcludeFn<'a>>,
    rules: DirRules,
    /// The paths several sources take (`None`: everything).
    selection: Option<&'a Selection>,
    /// The walk's root's device, under [`DirRules::one_file_system`].
    root_dev: std::sync::OnceLock<(u32, u32)>,
    ahead: usize,
    /// Set by [`Scanner::stop`], for [`Scanner::count`].
    stopped: std::sync::atomic::AtomicBool,
}

impl<'a> Scanner<'a> {
    /// A scanner with nothing queued; `excluded` tells which paths the
    /// walk leaves out (`None`: none), `rules` which directories it keeps
    /// empty, `selection` which paths several sources take (`None`: all).
    /// Paths a selection does not take are not stat'ed nor counted as
    /// excluded.
    pub fn new(
        excluded: Option<&'a ExcludeFn<'a>>,
        rules: DirRules,
        selection: Option<&'a Selection>,
    ) -> Self {
        Self {
            selection,
            stopped: std::sync::atomic::AtomicBool::new(false),
            ahead: ahead(),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            walker: Condvar::new(),
            excluded,
            rules,
            root_dev: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking scanner is re-raised by the scope that joins it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists `dir` (the walk's root, at `rel`) and queues its
    /// subdirectories.
    ///
    /// # Errors
    ///
    /// The `getdents64` error.
    pub fn root(&self, rel: &RelPath, dir: Dir) -> std::io::Result<Listing> {
        if self.rules.one_file_system {
            let dev = dir.stat_self()?.dev;
            self.root_dev.get_or_init(|| dev);
        }
        let listing = self.list(rel, Arc::new(dir))?;
        let mut st = self.lock();
        self.queue(&mut st, rel, &listing);
        Ok(listing)
    }

    /// The scan of `rel`, a subdirectory of a listing this scanner gave:
    /// done by a scanner, or here when none has started it.
    pub fn take(&self, rel: &RelPath) -> Scanned {
        let mut st = self.lock();
        loop {
            if let Some(s) = st.done.remove(rel) {
                st.done_entries -= entries(&s);
                // Room for one more listing.
                if st.idle > 0 && !st.queue.is_empty() {
                    self.work.notify_one();
                }
                return s;
            }
            if let Some(job) = st.queue.remove(rel) {
                drop(st);
                let out = self.scan(rel, &job);
                if let Scanned::Listed(l) = &out {
                    let mut st = self.lock();
                    self.queue(&mut st, rel, l);
                }
                return out;
            }
            st.wanted = Some(rel.clone());
            st = self.walker.wait(st).unwrap_or_else(|e| e.into_inner());
            st.wanted = None;
        }
    }

    /// A scanner thread: scans queued directories, first in walk order,
    /// until [`Scanner::stop`].
    pub fn work(&self) {
        loop {
            let (rel, job) = {
                let mut st = self.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    if st.done.len() + st.running < self.ahead && st.done_entries < AHEAD_ENTRIES {
                        if let Some(next) = st.queue.pop_first() {
                            st.running += 1;
                            break next;
                        }
                    }
                    st.idle += 1;
                    st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.idle -= 1;
                }
            };
            let out = self.scan(&rel, &job);
            let mut st = self.lock();
            st.running -= 1;
            if let Scanned::Listed(l) = &out {
                self.queue(&mut st, &rel, l);
            }
            if st.wanted.as_ref() == Some(&rel) {
                self.walker.notify_one();
            }
            st.done_entries += entries(&out);
            st.done.insert(rel, out);
        }
    }

    /// Ends the scanner threads (the walk is over or failed).
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.lock().stop = true;
        self.work.notify_all();
    }

    fn scan(&self, rel: &RelPath, job: &Job) -> Scanned {
        match job.parent.open_dir(&job.name) {
            Ok(dir) if job.mount => Scanned::Listed(Listing {
                dir: Arc::new(dir),
                files: Vec::new(),
                subdirs: Vec::new(),
                failed: Vec::new(),
                excluded: 0,
            }),
            Ok(dir) => match self.list(rel, Arc::new(dir)) {
                Ok(l) => Scanned::Listed(l),
                Err(e) => Scanned::Failed("list", e),
            },
            Err(e) => Scanned::Failed("open directory", e),
        }
    }

    /// Queues the subdirectories of `l` and wakes as many idle scanners
    /// as may take them.
    fn queue(&self, st: &mut State, rel: &RelPath, l: &Listing) {
        let room = self.ahead.saturating_sub(st.done.len() + st.running);
        for _ in 0..st.idle.min(l.subdirs.len()).min(room) {
            self.work.notify_one();
        }
        for (name, stat) in &l.subdirs {
            let sub = rel.join(name.clone());
            let mount = self.mount(&sub, stat.dev, self.root_dev.get().copied());
            st.queue.insert(
                sub,
                Job {
                    parent: Arc::clone(&l.dir),
                    name: name.clone(),
                    mount,
                },
            );
        }
    }

    /// Whether directory `sub` (on device `dev`) is kept but not listed
    /// under [`DirRules::one_file_system`]: on another device than the
    /// root (`root_dev`), or with several sources, than every source. The
    /// directories leading to a source are always listed.
    fn mount(&self, sub: &RelPath, dev: (u32, u32), root_dev: Option<(u32, u32)>) -> bool {
        self.rules.one_file_system
            && match self.selection {
                Some(sel) => !sel.devices.contains(&dev) && sel.inside(sub),
                None => root_dev.is_some_and(|d| d != dev),
            }
    }

    /// The bytes of the regular files the walk from `root` will take
    /// (the same excludes, rules and selection; a directory that cannot be
    /// listed counts nothing), listed on the calling thread in any order:
    /// the progress total, as restic's scanner counts it beside the
    /// backup. `None` once [`Scanner::stop`] is called (the walk ended
    /// first). It stats the tree a second time, so a backup runs it only
    /// when a progress bar is drawn. At most one open directory per
    /// level of the tree with names still to enter.
    pub fn count(&self, root: Dir) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let root_dev = root.stat_self().ok()?.dev;
        let mut total = 0u64;
        let mut todo: Vec<(RelPath, Arc<Dir>, Option<Name>)> =
            vec![(RelPath::root(), Arc::new(root), None)];
        while let Some((rel, parent, name)) = todo.pop() {
            if self.stopped.load(Relaxed) {
                return None;
            }
            let dir = match &name {
                None => parent,
                Some(n) => match parent.open_dir(n) {
                    Ok(d) => Arc::new(d),
                    Err(_) => continue,
                },
            };
            let Ok(l) = self.list(&rel, dir) else {
                continue;
            };
            total = l
                .files
                .iter()
                .filter(|(_, s)| s.kind == FileKind::File)
                .fold(total, |t, (_, s)| t.saturating_add(s.size));
            for (n, st) in l.subdirs.into_iter().rev() {
                let sub = rel.join(n.clone());
                if !self.mount(&sub, st.dev, Some(root_dev)) {
                    todo.push((sub, Arc::clone(&l.dir), Some(n)));
                }
            }
        }
        Some(total)
    }

    fn list(&self, rel: &RelPath, dir: Arc<Dir>) -> std::io::Result<Listing> {
        let names = dir.list()?;
        let mut l = Listing {
            dir,
            files: Vec::new(),
            subdirs: Vec::new(),
            failed: Vec::new(),
            excluded: 0,
        };
        // A directory leading to a source, not inside one: only the names
        // that lead on are taken, and it is never left empty by a tag.
        let between = self.selection.filter(|s| !s.inside(rel));
        if between.is_none() && self.rules.tagged(&l.dir, &names) {
            l.excluded = names.len() as u64;
            return Ok(l);
        }
        for name in names {
            if between.is_some_and(|s| !s.wanted(&rel.join(name.clone()))) {
                continue;
            }
            let stat = l.dir.stat(&name);
            let is_dir = matches!(&stat, Ok(s) if s.kind == FileKind::Dir);
            if self
                .excluded
                .is_some_and(|f| f(&rel.join(name.clone()), is_dir))
            {
                l.excluded += 1;
                continue;
            }
            match stat {
                Ok(s) if s.kind == FileKind::Dir => l.subdirs.push((name, s)),
                Ok(s) => l.files.push((name, s)),
                Err(e) => l.failed.push((name, e)),
            }
        }
        Ok(l)
    }
}

fn entries(s: &Scanned) -> usize {
    match s {
        Scanned::Listed(l) => l.files.len() + l.subdirs.len() + l.failed.len(),
        Scanned::Failed(..) => 0,
    }
}
