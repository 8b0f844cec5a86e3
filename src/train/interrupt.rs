//! Ctrl-C / SIGTERM during training: the handler only raises a flag; the loop notices it
//! between steps, writes a checkpoint of the unfinished epoch and stops with
//! [`Interrupted`], which the binary turns into exit status 130.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        // Without a handler (e.g. another one is installed) a signal simply ends the
        // process, and the run resumes from its last checkpoint.
        let _ = ctrlc::set_handler(|| REQUESTED.store(true, Ordering::SeqCst));
    });
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Training stopped on request after writing a checkpoint.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Exit status for an interrupted run (128 + SIGINT, as shells report it).
pub const EXIT_CODE: i32 = 130;
