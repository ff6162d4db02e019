//! [`Progress`]: how long-running library work (an index build, an evaluation, a batch) tells its
//! host how far it got. The host decides what to show: a bar on a terminal, a log line, nothing.

/// Receives the phases and progress of long work. Implementations must be cheap and safe to call
/// from many threads at once.
pub trait Progress: Sync {
    /// A phase named `name` of `total` units begins (`0`: unknown); it ends the previous one.
    fn phase(&self, name: &str, total: u64);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: u64);
    /// A line of information for the user (what was read, what comes next).
    fn note(&self, _text: &str) {}
    /// The work is over: the last phase ends.
    fn finish(&self) {}
}

/// Shows nothing.
///
/// ```
/// use pinnersage_core::progress::Progress;
/// let quiet: &dyn Progress = &();
/// quiet.phase("clustering", 10);
/// quiet.advance(10);
/// quiet.finish();
/// ```
impl Progress for () {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}
