//! Recording impressions: what the answers to an experiment's users showed, and what a team
//! posts for its own recommender (`POST /v1/impressions`), written by one thread in groups, each
//! group one atomic, fsynced write of the [`ImpressionStore`].
//!
//! An answer does not wait for its impression unless the server is told to
//! ([`Durability::Acknowledged`]): by default ([`Durability::Buffered`]) the impression is queued
//! and written with the others of the next [`BUFFER_WINDOW`] (one fsync for all of them), so a
//! kill -9 loses at most the impressions of the answers of the last 50 ms or so. A full queue
//! drops a served impression (counted in `/metrics`) rather than slow the answer; a posted one
//! is refused with 503 instead, nothing of its request recorded.
//!
//! A fleet replica's writer publishes the groups to the impressions stream instead
//! ([`Recorder::start_streamed`], [`Recorder::stream_to`]): recorded means acknowledged by
//! JetStream, and every replica holding the user's partition stores them from the stream.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pinnersage_pipeline::online::histogram::Histogram;
use pinnersage_store::impressions::{
    EncodedImpression, Impression, ImpressionError, ImpressionHead, ImpressionStore, day_of,
};

use std::sync::{Arc, Mutex, OnceLock};

use crate::clock::unix_now;
use crate::fleet::Publisher;

/// Impressions waiting for the writer at most, by default.
pub const DEFAULT_QUEUE: usize = 65_536;
/// The writer thread's nice value (0 is the default, 19 the lowest).
pub const WRITER_NICE: i32 = 5;
/// Most impressions in one write.
const MAX_GROUP: usize = 8_192;
/// How long a buffered impression waits for others to share its write (one fsync): the most a
/// crash can lose of the impressions of answers already sent.
pub const BUFFER_WINDOW: Duration = Duration::from_millis(50);

/// When an impression counts as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The answer goes out at once; its impression is written with those of the next
    /// [`BUFFER_WINDOW`].
    #[default]
    Buffered,
    /// The answer waits until its impression is fsynced (adds about one fsync to its latency).
    Acknowledged,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "buffered" => Ok(Self::Buffered),
            "acknowledged" => Ok(Self::Acknowledged),
            other => Err(format!(
                "impression durability {other:?}: expected `buffered` (answers do not wait) or \
                 `acknowledged` (an answer waits until its impression is on disk)"
            )),
        }
    }
}

/// The recorder's counters, shown by `/metrics`.
#[derive(Debug, Default)]
pub struct RecorderCounters {
    /// Impressions written.
    pub recorded: AtomicU64,
    /// Served impressions dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Served impressions not recorded because the store cannot hold them (a user id longer
    /// than the store's limit).
    pub invalid: AtomicU64,
    /// Impressions whose write failed.
    pub failed: AtomicU64,
    /// Writes (fsyncs).
    pub writes: AtomicU64,
    /// Time of each write.
    pub write_time: Histogram,
    /// The last write error, until a write succeeds.
    pub failing: std::sync::Mutex<Option<String>>,
}

/// Why impressions were not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The writer's queue is full: nothing was recorded, retry shortly.
    #[error("the impression writer is busy ({0} impressions waiting); retry shortly")]
    Busy(usize),
    /// An impression is invalid: nothing of the request was recorded.
    #[error(transparent)]
    Invalid(#[from] ImpressionError),
    /// Writing failed: nothing of the request was recorded.
    #[error("{0}")]
    Failed(String),
}

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

struct Job {
    impressions: Vec<EncodedImpression>,
    reply: Option<Reply>,
}

/// What the writer's queue carries.
enum Message {
    Write(Job),
    /// Write what is queued before this, then stop ([`Recorder::finish`]).
    Finish,
}

/// The impression writer. [`Recorder::finish`] (or dropping it) writes what is queued and joins
/// its thread.
pub struct Recorder {
    tx: SyncSender<Message>,
    capacity: usize,
    durability: Durability,
    store: Arc<ImpressionStore>,
    counters: Arc<RecorderCounters>,
    /// A fleet replica's stream, once connected.
    outlet: Option<Arc<OnceLock<Outlet>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Where a fleet replica's writer publishes: the stream's publisher, and the runtime its
/// connection runs on (the writer is a thread of its own).
struct Outlet {
    publisher: Arc<Publisher>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("store", &self.store)
            .field("durability", &self.durability)
            .finish()
    }
}

impl Recorder {
    /// Starts the writer over `store`, with room for `queue` waiting submissions.
    pub fn start(store: Arc<ImpressionStore>, durability: Durability, queue: usize) -> Self {
        Self::spawn(store, durability, queue, None)
    }

    /// Starts a fleet replica's writer: it publishes to the impressions stream given by
    /// [`Recorder::stream_to`] (impressions before that fail); `store` is where this replica's
    /// consumer of the stream stores them, and what the writer expires day by day.
    pub fn start_streamed(
        store: Arc<ImpressionStore>,
        durability: Durability,
        queue: usize,
    ) -> Self {
        Self::spawn(store, durability, queue, Some(Arc::new(OnceLock::new())))
    }

    /// Connects a writer started with [`Recorder::start_streamed`] to the stream; `runtime`
    /// runs the publisher's connection.
    pub fn stream_to(&self, publisher: Arc<Publisher>, runtime: tokio::runtime::Handle) {
        if let Some(outlet) = &self.outlet {
            let _ = outlet.set(Outlet { publisher, runtime });
        }
    }

    fn spawn(
        store: Arc<ImpressionStore>,
        durability: Durability,
        queue: usize,
        outlet: Option<Arc<OnceLock<Outlet>>>,
    ) -> Self {
        let capacity = queue.max(1);
        let (tx, rx) = sync_channel(capacity);
        let counters = Arc::new(RecorderCounters::default());
        let (s, c, o) = (store.clone(), counters.clone(), outlet.clone());
        let thread = std::thread::Builder::new()
            .name("pinnersage-impressions".into())
            .spawn(move || {
                // Its write bursts yield to the threads that answer (it has a queue to catch up).
                pinnersage_store::events::lower_calling_thread_priority(WRITER_NICE);
                write_loop(&rx, &s, &c, o.as_deref())
            })
            .expect("spawning a thread");
        Self {
            tx,
            capacity,
            durability,
            store,
            counters,
            outlet,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Writes (or publishes) what is queued, then stops the writer and waits for it; impressions
    /// after this are not recorded. A fleet replica calls it while its runtime still runs, off
    /// the runtime's threads: the writer publishes on that runtime, so joining it as the runtime
    /// shuts down could wait forever.
    pub fn finish(&self) {
        // Blocks while the queue is full: the writer is emptying it. Fails once it stopped.
        let _ = self.tx.send(Message::Finish);
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or_default();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<ImpressionStore> {
        &self.store
    }

    /// The writer's counters.
    pub fn counters(&self) -> &Arc<RecorderCounters> {
        &self.counters
    }

    /// Records the impression of an answer (`head`, and its items as `(item, interest)`),
    /// encoded here from the answer's strings: queued (and dropped, counted, when the queue is
    /// full), or with [`Durability::Acknowledged`] waited for until written.
    pub async fn served<'a>(
        &self,
        head: ImpressionHead<'_>,
        items: impl ExactSizeIterator<Item = (&'a str, Option<&'a str>)> + Clone,
    ) {
        let outcome = match EncodedImpression::new(head, items) {
            Err(e) => Err(RecordError::Invalid(e)),
            Ok(encoded) => match self.durability {
                Durability::Buffered => self.send(vec![encoded], None),
                Durability::Acknowledged => self.wait_for(vec![encoded]).await,
            },
        };
        // A failed write is counted by the writer; the answer goes out either way.
        match outcome {
            Err(RecordError::Invalid(_)) => self.counters.invalid.fetch_add(1, Relaxed),
            Err(RecordError::Busy(_)) => self.counters.dropped.fetch_add(1, Relaxed),
            Ok(()) | Err(RecordError::Failed(_)) => 0,
        };
    }

    /// Records `impressions` and resolves once they are durable; an invalid one refuses them all.
    pub async fn acknowledged(&self, impressions: &[Impression]) -> Result<(), RecordError> {
        let encoded = (impressions.iter())
            .map(EncodedImpression::of)
            .collect::<Result<Vec<_>, _>>()?;
        self.wait_for(encoded).await
    }

    /// Queues `impressions` and waits until they are written.
    async fn wait_for(&self, impressions: Vec<EncodedImpression>) -> Result<(), RecordError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(impressions, Some(tx))?;
        rx.await
            .map_err(|_| RecordError::Failed("the impression writer stopped".into()))?
            .map_err(RecordError::Failed)
    }

    /// Queues `impressions` (checked when encoded: none can fail its whole group).
    fn send(
        &self,
        impressions: Vec<EncodedImpression>,
        reply: Option<Reply>,
    ) -> Result<(), RecordError> {
        self.tx
            .try_send(Message::Write(Job { impressions, reply }))
            .map_err(|e| match e {
                TrySendError::Full(_) => RecordError::Busy(self.capacity),
                TrySendError::Disconnected(_) => {
                    RecordError::Failed("the impression writer stopped".into())
                }
            })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer: takes the jobs of one [`gather`] as one write (or, in a fleet, one publish),
/// answers its waiters, and expires past days as days pass (also while idle).
fn write_loop(
    rx: &Receiver<Message>,
    store: &ImpressionStore,
    counters: &RecorderCounters,
    outlet: Option<&OnceLock<Outlet>>,
) {
    let mut today = i64::MIN;
    loop {
        let now_day = day_of(unix_now());
        if now_day != today {
            today = now_day;
            if let Err(e) = store.expire(unix_now()) {
                note(counters, Some(e.to_string()));
            }
        }
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Message::Write(job)) => job,
            Ok(Message::Finish) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => continue,
        };
        let (jobs, total, finishing) = gather(rx, first);
        let mut batch = Vec::with_capacity(total);
        let mut replies = Vec::new();
        for job in jobs {
            batch.extend(job.impressions);
            replies.extend(job.reply);
        }
        let started = Instant::now();
        let written = match outlet {
            None => store.record_encoded(&batch).map_err(|e| describe(&e)),
            Some(outlet) => publish(outlet, &batch),
        };
        counters.write_time.record(started.elapsed());
        counters.writes.fetch_add(1, Relaxed);
        let outcome = match written {
            Ok(()) => {
                counters.recorded.fetch_add(batch.len() as u64, Relaxed);
                note(counters, None);
                Ok(())
            }
            Err(e) => {
                counters.failed.fetch_add(batch.len() as u64, Relaxed);
                note(counters, Some(e.clone()));
                Err(e)
            }
        };
        for reply in replies {
            let _ = reply.send(outcome.clone());
        }
        if finishing {
            return;
        }
    }
}

/// `first` and the jobs that follow it into one write: up to [`MAX_GROUP`] impressions. A
/// buffered impression first lets [`BUFFER_WINDOW`] pass (asleep: the answers queueing meanwhile
/// wake no thread) so that one fsync writes all of them; a job that waits for its write
/// (acknowledged, or posted) takes only what is queued already. True with them when a
/// [`Message::Finish`] came after them.
fn gather(rx: &Receiver<Message>, first: Job) -> (Vec<Job>, usize, bool) {
    if first.reply.is_none() {
        std::thread::sleep(BUFFER_WINDOW);
    }
    let mut total = first.impressions.len();
    let mut jobs = vec![first];
    while total < MAX_GROUP {
        match rx.try_recv() {
            Ok(Message::Write(job)) => {
                total += job.impressions.len();
                jobs.push(job);
            }
            Ok(Message::Finish) => return (jobs, total, true),
            Err(_) => break,
        }
    }
    (jobs, total, false)
}

fn note(counters: &RecorderCounters, failing: Option<String>) {
    if let Ok(mut f) = counters.failing.lock() {
        *f = failing;
    }
}

fn describe(e: &ImpressionError) -> String {
    format!("impressions not recorded: {e}")
}

/// Publishes a group to a fleet's impressions stream and waits for JetStream's acknowledgement.
fn publish(outlet: &OnceLock<Outlet>, batch: &[EncodedImpression]) -> Result<(), String> {
    let Some(outlet) = outlet.get() else {
        return Err("impressions not recorded: the impressions stream is not connected yet".into());
    };
    let batch = (batch.iter())
        .map(EncodedImpression::decode)
        .collect::<Result<Vec<Impression>, _>>()
        .map_err(|e| describe(&e))?;
    outlet
        .runtime
        .block_on(outlet.publisher.publish_impressions(&batch))
        .map_err(|e| format!("impressions not recorded: {e}"))
}
