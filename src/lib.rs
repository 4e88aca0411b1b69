//! snap: a transactional backup/snapshot tool for Linux directory trees.
//!
//! Stages: [`policy`] -> [`preflight`] -> [`backup`] (walker, reader,
//! chunker, packer, commit) or [`restore`] (load, plan, workers, metadata,
//! staging and swap), all through the dirfd layer in [`fs`] (file data of
//! backup through io_uring, [`io`]), each emitting [`facts`]. The repository
//! ([`repo`]) is its format (`repo::format`, written down in
//! `docs/FORMAT.md`), its layout, the commit protocol (`repo::commit`) and
//! the storage seam (`repo::storage`). Process facts are in [`sys`], the
//! command line in [`cli`], the error table in [`error`].
//!
//! Side effects: those of the command run (see each module).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
pub mod cli;
pub mod error;
pub mod facts;
pub mod fs;
pub mod human;
pub mod interrupt;
pub mod io;
pub mod par;
pub mod policy;
pub mod preflight;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod sys;
