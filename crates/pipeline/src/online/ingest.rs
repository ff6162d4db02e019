//! Durable ingestion with group commit: the one path behind every door (HTTP, NATS).
//!
//! Submitters hand validated events to the [`Ingestor`]. A staging thread takes everything
//! queued as one group, checks it for duplicates (against the store and the groups staged
//! before it) and updates the online profiles with its new events; a committing thread writes
//! the staged groups in one atomic, fsynced batch and only then answers each submitter. Under
//! load many requests share one fsync, so throughput grows with concurrency while every
//! acknowledgement still means "on disk"; and the next groups become visible while a slow
//! fsync runs, instead of waiting behind it. Events visible but not yet written are forgotten
//! (their users rebuilt from the store) if their write fails.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use pinnersage_catalog::catalog::Catalog;
use pinnersage_store::events::{Event, EventStore, EventStoreError, Staged, Writer};

use super::histogram::Histogram;
use super::profiles::{Accepted, OnlineAction, OnlineProfiles, PendingWrite};

/// Most events stored by one commit (a group larger than this is split).
pub const MAX_GROUP_EVENTS: usize = 50_000;

/// Submissions queued for the writer at most by default; beyond it [`Ingestor::submit`] refuses
/// with [`Overloaded`] instead of growing memory.
pub const DEFAULT_QUEUE: usize = 1_024;

/// The writer's queue is full: retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ingest queue is full ({0} submissions waiting): retry shortly")]
pub struct Overloaded(pub usize);

/// Why a submission was not stored: nothing of it was, and retrying it is safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStored {
    /// The ingestor has stopped (the server is shutting down).
    #[error("the ingestor has stopped")]
    Stopped,
    /// The store failed the write or the duplicate check of the submission's group (its
    /// error's text: every submitter of the group gets it).
    #[error("{0}")]
    Failed(String),
}

/// The answer to one submission: for each event, whether it was new (`true`) or already
/// stored (`false`, an idempotent retry); or why none was stored.
pub type Outcome = Result<Vec<bool>, NotStored>;

/// Called once with a submission's outcome, on the ingestor's threads (keep it short: send it on).
pub type Reply = Box<dyn FnOnce(Outcome) + Send>;

struct Job {
    events: ResolvedEvents,
    reply: Reply,
}

/// Events validated against the catalog, each with its item's catalog row: what
/// [`Ingestor::submit`] takes, so the row found when an event was validated is the one the
/// online profiles use (the item is never looked up twice).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedEvents {
    events: Vec<Event>,
    rows: Vec<u32>,
    /// The [`Catalog::instance`] the rows are of.
    catalog: u64,
}

impl ResolvedEvents {
    /// Room for `n` events whose rows are found in `catalog`.
    pub fn with_capacity(n: usize, catalog: &Catalog) -> Self {
        Self {
            events: Vec::with_capacity(n),
            rows: Vec::with_capacity(n),
            catalog: catalog.instance(),
        }
    }

    /// Adds `event`, whose item is catalog row `row`.
    pub fn push(&mut self, event: Event, row: u32) {
        self.events.push(event);
        self.rows.push(row);
    }

    /// Resolves every event's item through `catalog`; `Err(index)` names the first event whose
    /// item is not in it.
    pub fn resolve(events: Vec<Event>, catalog: &Catalog) -> Result<Self, usize> {
        let rows = events
            .iter()
            .enumerate()
            .map(|(k, e)| catalog.row_of(&e.item).map(|r| r as u32).ok_or(k))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            events,
            rows,
            catalog: catalog.instance(),
        })
    }

    /// The events, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there is no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Counters of the ingestor's threads.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Events newly stored.
    pub stored: std::sync::atomic::AtomicU64,
    /// Events that were already stored.
    pub duplicates: std::sync::atomic::AtomicU64,
    /// Store writes (fsyncs), each of one or more staged groups.
    pub commits: std::sync::atomic::AtomicU64,
    /// Groups that were not stored (their write or their check failed).
    pub failures: std::sync::atomic::AtomicU64,
    /// The last error, while writes fail (cleared by the next success): a store that cannot
    /// write (for example poisoned after an fsync error) makes the server unhealthy.
    pub failing: std::sync::Mutex<Option<String>>,
    /// Time of each group's duplicate lookups (in the store and the groups staged before it).
    pub lookup_time: Histogram,
    /// Time of each store write (journal write + fsync, and any write stall).
    pub write_time: Histogram,
    /// Time of each group's online-profile update (re-clustering the users it touched).
    pub online_time: Histogram,
}

/// The group-commit writer. Dropping it stops accepting, finishes what is queued and joins
/// its threads.
pub struct Ingestor {
    tx: Option<SyncSender<Job>>,
    capacity: usize,
    writer: Option<JoinHandle<()>>,
    counters: Arc<IngestCounters>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("counters", &self.counters)
            .finish()
    }
}

impl Ingestor {
    /// Starts the writer's threads over `store` with a queue of [`DEFAULT_QUEUE`] submissions.
    /// New events update `online` before they are written (so they are visible while the
    /// write runs, and an acknowledged event is visible to the next recommendation); if their
    /// write fails, their users are rebuilt from the store.
    pub fn start(store: Arc<EventStore>, online: Arc<OnlineProfiles>) -> Self {
        Self::with_queue(store, online, DEFAULT_QUEUE)
    }

    /// [`Ingestor::start`] with room for `capacity` waiting submissions (at least 1).
    pub fn with_queue(
        store: Arc<EventStore>,
        online: Arc<OnlineProfiles>,
        capacity: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        let (tx, rx) = sync_channel::<Job>(capacity);
        let counters = Arc::new(IngestCounters::default());
        let c = counters.clone();
        let writer = std::thread::Builder::new()
            .name("pinnersage-ingest".into())
            .spawn(move || write_loop(&rx, &store, &online, &c))
            .expect("spawning a thread");
        Self {
            tx: Some(tx),
            capacity,
            writer: Some(writer),
            counters,
        }
    }

    /// Queues `events` (already validated by the caller) for the next commit; `reply` gets the
    /// outcome once they are durable. A full queue refuses at once (nothing is stored, `reply`
    /// is dropped uncalled): the caller answers "retry later".
    pub fn submit(&self, events: ResolvedEvents, reply: Reply) -> Result<(), Overloaded> {
        let job = Job { events, reply };
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Overloaded(self.capacity)),
            Err(TrySendError::Disconnected(job)) => {
                (job.reply)(Err(NotStored::Stopped));
                Ok(())
            }
        }
    }

    /// The writer's counters.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }
}

impl Drop for Ingestor {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Most groups staged ahead of the store write (beyond it the staging thread waits).
const MAX_AHEAD: usize = 256;

/// A group staged for the store: its events, their submitters and its online update.
struct Group {
    events: Vec<Event>,
    replies: Vec<(usize, Reply)>,
    staged: Staged,
    online: PendingWrite,
}

/// The staging thread: takes everything queued as one group, checks it for duplicates and
/// updates the online profiles with its new events, then hands it to the committing thread and
/// goes on with the next group while the store writes this one.
fn write_loop(
    rx: &Receiver<Job>,
    store: &EventStore,
    online: &OnlineProfiles,
    counters: &IngestCounters,
) {
    let writer = &store.writer();
    let (ahead, staged) = sync_channel::<Group>(MAX_AHEAD);
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pinnersage-commit".into())
            .spawn_scoped(scope, move || {
                commit_loop(&staged, writer, online, counters)
            })
            .expect("spawning a thread");
        while let Ok(first) = rx.recv() {
            let jobs = gather(rx, first, |job| job.events.len());
            let total = jobs.iter().map(|job| job.events.len()).sum();
            // Move the events out of the jobs (no copies); remember each job's share.
            let mut events: Vec<Event> = Vec::with_capacity(total);
            let mut rows: Vec<u32> = Vec::with_capacity(total);
            let mut replies = Vec::with_capacity(jobs.len());
            // Jobs resolved through different catalogs (one was swapped in meanwhile): the
            // online profiles find every item again (0 is no catalog's instance).
            let resolved_by = match jobs.first().map(|job| job.events.catalog) {
                Some(c) if jobs.iter().all(|job| job.events.catalog == c) => c,
                _ => 0,
            };
            for job in jobs {
                replies.push((job.events.len(), job.reply));
                events.extend(job.events.events);
                rows.extend(job.events.rows);
            }
            let started = std::time::Instant::now();
            let staged = match writer.stage(&events) {
                Ok(staged) => staged,
                Err(e) => {
                    // Unhealthy before the failure is answered: a client told 503 finds the
                    // reason on /healthz at once.
                    if let Ok(mut failing) = counters.failing.lock() {
                        *failing = Some(e.to_string());
                    }
                    fail(counters, replies.into_iter().map(|(_, r)| r).collect(), &e);
                    continue;
                }
            };
            counters.lookup_time.record(started.elapsed());
            let started = std::time::Instant::now();
            let accepted = accepted(&events, &rows, staged.fresh());
            let pending = online.apply_ahead(&accepted, resolved_by);
            counters.online_time.record(started.elapsed());
            let group = Group {
                events,
                replies,
                staged,
                online: pending,
            };
            if ahead.send(group).is_err() {
                break; // the committing thread is gone (it panicked): stop taking events
            }
        }
        drop(ahead);
    });
}

/// The events of `events` (on catalog rows `rows`) that are new (`fresh`), for the online
/// profiles.
fn accepted<'e>(events: &'e [Event], rows: &[u32], fresh: &[bool]) -> Vec<Accepted<'e>> {
    events
        .iter()
        .zip(rows)
        .zip(fresh)
        .filter(|&(_, &f)| f)
        .map(|((e, &row), _)| Accepted {
            user: &e.user,
            item: &e.item,
            action: OnlineAction {
                row,
                time: e.time,
                weight: e.weight,
            },
        })
        .collect()
}

/// The committing thread: writes the staged groups waiting (up to [`MAX_GROUP_EVENTS`] events)
/// in one atomic, fsynced batch, then answers their submitters. Users of a group that was not
/// written are dropped from the online profiles and rebuilt from the store when next needed.
fn commit_loop(
    staged: &Receiver<Group>,
    writer: &Writer<'_>,
    online: &OnlineProfiles,
    counters: &IngestCounters,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = staged.recv() {
        let groups = gather(staged, first, |group| group.events.len());
        counters.commits.fetch_add(1, Relaxed);
        let mut batch = Vec::with_capacity(groups.len());
        let mut rest = Vec::with_capacity(groups.len());
        for g in groups {
            batch.push(g.staged);
            rest.push((g.events, g.replies, g.online));
        }
        let started = std::time::Instant::now();
        let results = writer.write(batch);
        counters.write_time.record(started.elapsed());
        let mut failing = None;
        for ((events, replies, pending), result) in rest.into_iter().zip(results) {
            match result {
                Ok(fresh) => {
                    online.written(pending);
                    let new = fresh.iter().filter(|&&f| f).count() as u64;
                    counters.stored.fetch_add(new, Relaxed);
                    counters
                        .duplicates
                        .fetch_add(fresh.len() as u64 - new, Relaxed);
                    let mut rest = &fresh[..];
                    for (len, reply) in replies {
                        let (mine, tail) = rest.split_at(len);
                        rest = tail;
                        reply(Ok(mine.to_vec()));
                    }
                }
                Err(e) => {
                    online.forget(events.iter().map(|e| e.user.as_str()));
                    online.written(pending);
                    // Unhealthy before the failure is answered (see the staging thread).
                    if let Ok(mut f) = counters.failing.lock() {
                        *f = Some(e.to_string());
                    }
                    fail(counters, replies.into_iter().map(|(_, r)| r).collect(), &e);
                    failing = Some(e.to_string());
                }
            }
        }
        if let Ok(mut f) = counters.failing.lock() {
            *f = failing;
        }
    }
}

/// `first` and whatever else is waiting on `rx`, until about [`MAX_GROUP_EVENTS`] events (`len`
/// counts an item's).
fn gather<T>(rx: &Receiver<T>, first: T, len: impl Fn(&T) -> usize) -> Vec<T> {
    let mut total = len(&first);
    let mut items = vec![first];
    while total < MAX_GROUP_EVENTS {
        match rx.try_recv() {
            Ok(item) => {
                total += len(&item);
                items.push(item);
            }
            Err(_) => break,
        }
    }
    items
}

/// Answers each submitter of a group with `e` (nothing of the group was stored) and counts the
/// failure. Each gets the error's text: one bad group must not fail the others' retries.
fn fail(counters: &IngestCounters, replies: Vec<Reply>, e: &EventStoreError) {
    counters
        .failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let text = e.to_string();
    for reply in replies {
        reply(Err(NotStored::Failed(text.clone())));
    }
}

impl pinnersage_core::error::Kind for Overloaded {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        Unavailable
    }
}

impl pinnersage_core::error::Kind for NotStored {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Stopped => Unavailable,
            Self::Failed(_) => Internal,
        }
    }
}
