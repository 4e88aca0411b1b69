//! SIGINT/SIGTERM: a flag the long-running stages poll, and a bound on
//! how long a command may go on after it.
//!
//! Side effects: [`install`] replaces the default disposition of SIGINT
//! and SIGTERM for the process (the handler only sets an atomic flag,
//! `signal-hook`'s async-signal-safe registration) and starts a watchdog
//! thread: a command still running [`GRACE`] after the signal (blocked in
//! a system call that nothing interrupts, say) exits with 130 then. That
//! is as safe as a SIGKILL, which every write path is built to survive:
//! what is not committed stays invisible and is cleaned up by the next
//! run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// How long a command may go on after SIGINT/SIGTERM before the watchdog
/// ends it.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
    // The watchdog sleeps in a read of a socket the handlers write one
    // byte to (`signal-hook`'s async-signal-safe self-pipe), so it costs
    // nothing until a signal arrives.
    let (mut wake, tx) = std::os::unix::net::UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, tx.try_clone()?)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, tx)?;
    std::thread::Builder::new()
        .name("snap-signal-watchdog".into())
        .spawn(move || {
            use std::io::Read;
            let mut byte = [0u8; 1];
            // EINTR is retried by read_exact; should the socket fail
            // otherwise (nothing here closes it), watch the flag instead.
            if wake.read_exact(&mut byte).is_err() {
                while !requested() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            std::thread::sleep(GRACE);
            // A closed stderr loses the line; the exit status says it.
            use std::io::Write;
            writeln!(
                std::io::stderr(),
                "snap: error [E_INTERRUPTED]: still running {} s after the signal; exiting",
                GRACE.as_secs()
            )
            .ok();
            std::process::exit(crate::error::ErrorId::E_INTERRUPTED.exit_code());
        })?;
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
