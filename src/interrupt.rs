//! SIGINT/SIGTERM: a flag the long-running stages poll.
//!
//! Side effects: [`install`] replaces the default disposition of SIGINT
//! and SIGTERM for the process (the handler only sets an atomic flag,
//! `signal-hook`'s async-signal-safe registration).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the handlers. Later calls do nothing.
///
/// # Errors
///
/// The `sigaction(2)` error.
pub fn install() -> std::io::Result<()> {
    if FLAG.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&flag))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&flag))?;
    // A concurrent install may have won the race; either flag is
    // registered, and `requested` reads whichever was stored.
    if FLAG.set(flag).is_err() {
        return Ok(());
    }
    Ok(())
}

/// True once SIGINT or SIGTERM has arrived.
pub fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// `Err(Error::Interrupted)` once a signal has arrived; call between steps
/// that write.
///
/// # Errors
///
/// [`crate::error::Error::Interrupted`].
pub fn check() -> crate::error::Result<()> {
    if requested() {
        Err(crate::error::Error::Interrupted)
    } else {
        Ok(())
    }
}
