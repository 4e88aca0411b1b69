//! snap: a transactional backup/snapshot tool for Linux directory trees.
//!
//! Stages: [`policy`] -> [`backup`] (walker, reader, chunker, pack writer,
//! commit) or [`restore`] (staging, metadata, atomic rename), all through the
//! dirfd layer in [`fs`], each emitting [`facts`]. The on-disk repository
//! format lives in [`repo`] and is written down in `docs/FORMAT.md`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
pub mod cli;
pub mod error;
pub mod facts;
pub mod fs;
pub mod interrupt;
pub mod io;
pub mod par;
pub mod policy;
pub mod preflight;
pub mod repo;
pub mod restore;
pub mod sys;
