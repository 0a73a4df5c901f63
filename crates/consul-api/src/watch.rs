//! Watching with blocking queries: one primitive, [`Watcher`], that every watch loop uses,
//! with Consul's blocking-index rules in one place.
//!
//! The rules (Consul's docs, "Blocking Queries", and Go's `watch` package): the first read
//! does not block; each next read blocks on the last index for at most `wait`; if the index
//! goes backwards (a snapshot restore, a new leader), start over from 0; never block on 0
//! (a server answering 0 is read again blocking on 1); when the index did not move (the wait
//! simply ran out), read again without reporting anything; after an error, start over from 0
//! and back off exponentially with jitter; never read more often than `min_interval`.
//!
//! ```no_run
//! use consul_api::watch::WatchOptions;
//! # async fn run(client: consul_api::Client) {
//! let mut config = client.watch_key("app/config", WatchOptions::default());
//! loop {
//!     match config.next().await {
//!         Ok((pair, _meta)) => tracing::info!(?pair, "config changed"),
//!         Err(e) => tracing::warn!(error = %e, "watch failed; backing off"),
//!     }
//! }
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use futures_core::Stream;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::catalog::{HealthFilter, ServiceEntry};
use crate::kv::KvPair;
use crate::types::{Index, QueryMeta, QueryOptions};
use crate::{Client, Error};

/// How a [`Watcher`] paces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// The base query options (consistency, token, …); `index` and `wait` are managed.
    pub query: QueryOptions,
    /// How long each blocking read may wait; `None`: the client's default wait
    /// ([`RequestDefaults::wait`](crate::RequestDefaults::wait)), else Consul's 5 minutes.
    pub wait: Option<Duration>,
    /// The shortest time between two reads, however fast the index moves (0: no limit).
    pub min_interval: Duration,
    /// The first delay after an error; doubles up to `max_backoff`. Each delay is drawn
    /// from `[d/2, d]`.
    pub initial_backoff: Duration,
    /// The longest delay after errors.
    pub max_backoff: Duration,
    /// Seeds the backoff jitter, so that a simulation replays; `None`: random.
    pub jitter_seed: Option<u64>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            query: QueryOptions::default(),
            wait: None,
            min_interval: Duration::from_millis(10),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            jitter_seed: None,
        }
    }
}

impl WatchOptions {
    /// Blocking reads of up to `wait` each, the other options at their defaults.
    pub fn with_wait(wait: Duration) -> Self {
        WatchOptions { wait: Some(wait), ..Default::default() }
    }

    /// The same options, with consistent reads (`?consistent`).
    pub fn consistent(mut self) -> Self {
        self.query = self.query.consistent();
        self
    }
}

/// The index to block on after a read returned `returned`, having blocked on `previous`.
///
/// `None` means nothing changed (the wait ran out): read again without yielding.
pub fn next_index(previous: Index, returned: Index) -> Option<Index> {
    if returned < previous {
        // The index went backwards: start over.
        Some(Index(0))
    } else if returned == previous && previous.0 > 0 {
        None
    } else {
        Some(returned)
    }
}

/// The index to block on next after a read returned `returned`, and whether the result
/// changed: [`next_index`], plus Consul's rule that a watcher never blocks on 0 (a server
/// answering 0 is read again blocking on 1).
pub fn advance(previous: Index, returned: Index) -> (Index, bool) {
    match next_index(previous, returned) {
        None => (previous, false),
        Some(next) if next.0 == 0 && returned.0 == 0 => (Index(1), true),
        Some(next) => (next, true),
    }
}

type Query<T> =
    Box<dyn FnMut(QueryOptions) -> BoxFuture<'static, Result<(T, QueryMeta), Error>> + Send>;

/// A blocking query, repeated: [`next`](Watcher::next) answers with the next result that
/// changed (or an error), following the [module](self)'s rules.
///
/// `next` is cancel-safe: dropping its future (in a `select!`) loses nothing, and the next
/// call reads again from where the watcher was.
pub struct Watcher<T> {
    query: Query<T>,
    opts: WatchOptions,
    index: Index,
    failures: u32,
    last_read: Option<Instant>,
    retry_at: Option<Instant>,
    rng: Option<u64>,
}

impl<T> std::fmt::Debug for Watcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("opts", &self.opts)
            .field("index", &self.index)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Watcher<T> {
    /// Watches with `query`, which receives the options to read with (`index` and `wait`
    /// set) and returns the result with its [`QueryMeta`].
    pub fn new<F, Fut>(mut query: F, opts: WatchOptions) -> Self
    where
        F: FnMut(QueryOptions) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, QueryMeta), Error>> + Send + 'static,
    {
        let rng = opts.jitter_seed.map(|s| s | 1);
        Watcher {
            query: Box::new(move |q| Box::pin(query(q))),
            opts,
            index: Index(0),
            failures: 0,
            last_read: None,
            retry_at: None,
            rng,
        }
    }

    /// The next result that changed, with its metadata; or the error of a failed read, at
    /// once (the watcher backs off before its next read).
    pub async fn next(&mut self) -> Result<(T, QueryMeta), Error> {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            if let Some(last) = self.last_read
                && !self.opts.min_interval.is_zero()
            {
                tokio::time::sleep_until(last + self.opts.min_interval).await;
            }
            self.last_read = Some(Instant::now());
            let mut q = self.opts.query.clone();
            q.index = self.index;
            q.wait = if self.index.0 > 0 { self.opts.wait.or(q.wait) } else { None };
            match (self.query)(q).await {
                Ok((value, meta)) => {
                    self.failures = 0;
                    let (next, changed) = advance(self.index, meta.last_index);
                    self.index = next;
                    if changed {
                        return Ok((value, meta));
                    }
                }
                Err(e) => {
                    let delay = self.backoff();
                    tracing::debug!(error = %e, ?delay, "watch read failed; backing off");
                    self.retry_at = Some(Instant::now() + delay);
                    self.index = Index(0);
                    return Err(e);
                }
            }
        }
    }

    /// Reads again without blocking (and without waiting out a backoff): for when the
    /// caller knows something changed that the index cannot show.
    pub fn reset(&mut self) {
        self.index = Index(0);
        self.retry_at = None;
    }

    /// The index the next read blocks on (0: it will not block).
    pub fn index(&self) -> Index {
        self.index
    }

    /// Failed reads in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The results as a stream (errors included); it never ends on its own.
    pub fn into_stream(self) -> impl Stream<Item = Result<(T, QueryMeta), Error>> {
        futures_util::stream::unfold(self, |mut w| async move {
            let item = w.next().await;
            Some((item, w))
        })
    }

    fn backoff(&mut self) -> Duration {
        let base = self
            .opts
            .initial_backoff
            .saturating_mul(1 << self.failures.min(16))
            .min(self.opts.max_backoff);
        self.failures = self.failures.saturating_add(1);
        let unit = match &mut self.rng {
            Some(state) => splitmix(state),
            None => return base / 2 + crate::jitter(base / 2),
        };
        base / 2 + base.mul_f64(unit / 2.0)
    }
}

/// Uniform in [0, 1) from a splitmix64 state.
fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Client {
    /// Watches one KV key: `Some(pair)` while it exists, `None` once it is gone.
    pub fn watch_key(&self, key: impl Into<String>, opts: WatchOptions) -> Watcher<Option<KvPair>> {
        let (client, key) = (self.clone(), key.into());
        Watcher::new(
            move |q| {
                let (client, key) = (client.clone(), key.clone());
                async move { client.kv().get_with(&key, &q).await }
            },
            opts,
        )
    }

    /// Watches every key under a prefix (`?recurse`).
    pub fn watch_prefix(
        &self,
        prefix: impl Into<String>,
        opts: WatchOptions,
    ) -> Watcher<Vec<KvPair>> {
        let (client, prefix) = (self.clone(), prefix.into());
        Watcher::new(
            move |q| {
                let (client, prefix) = (client.clone(), prefix.clone());
                async move { client.kv().list(&prefix, &q).await }
            },
            opts,
        )
    }

    /// Watches a service's instances with their health (`/v1/health/service/:name`).
    pub fn watch_service(
        &self,
        service: impl Into<String>,
        filter: HealthFilter,
        opts: WatchOptions,
    ) -> Watcher<Vec<ServiceEntry>> {
        let (client, service) = (self.clone(), service.into());
        Watcher::new(
            move |q| {
                let (client, service, filter) = (client.clone(), service.clone(), filter.clone());
                async move { client.health().service(&service, &filter, &q).await }
            },
            opts,
        )
    }
}

/// Repeats `query` as a blocking query and yields each new result (or error): a
/// [`Watcher`] as a stream.
///
/// ```no_run
/// use consul_api::{Client, watch::{watch, WatchOptions}};
/// use futures_util::StreamExt;
/// # async fn run(client: Client) {
/// let stream = watch(
///     move |opts| {
///         let client = client.clone();
///         async move { client.kv().get_with("app/config", &opts).await }
///     },
///     WatchOptions::default(),
/// );
/// let mut stream = std::pin::pin!(stream);
/// while let Some(Ok((pair, _meta))) = stream.next().await {
///     tracing::info!(?pair, "config is now");
/// }
/// # }
/// ```
pub fn watch<T, F, Fut>(
    query: F,
    opts: WatchOptions,
) -> impl Stream<Item = Result<(T, QueryMeta), Error>>
where
    T: Send + 'static,
    F: FnMut(QueryOptions) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(T, QueryMeta), Error>> + Send + 'static,
{
    Watcher::new(query, opts).into_stream()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::StreamExt;

    use super::*;

    #[test]
    fn the_index_resets_when_it_goes_backwards_and_waits_when_unchanged() {
        assert_eq!(next_index(Index(10), Index(5)), Some(Index(0)));
        assert_eq!(next_index(Index(10), Index(10)), None);
        assert_eq!(next_index(Index(10), Index(11)), Some(Index(11)));
        assert_eq!(next_index(Index(0), Index(7)), Some(Index(7)));
    }

    #[test]
    fn advance_never_blocks_on_zero_and_says_what_changed() {
        assert_eq!(advance(Index(10), Index(10)), (Index(10), false));
        assert_eq!(advance(Index(10), Index(12)), (Index(12), true));
        assert_eq!(advance(Index(10), Index(5)), (Index(0), true), "reset: read without blocking");
        assert_eq!(advance(Index(0), Index(0)), (Index(1), true));
    }

    #[tokio::test(start_paused = true)]
    async fn watch_skips_unchanged_reads_and_never_blocks_on_zero() {
        // The server's answers, by read: index 5, 5 (timeout), 9, 3 (went back), 0, 4.
        let answers = Arc::new(Mutex::new(vec![5u64, 5, 9, 3, 0, 4]));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (answers.clone(), seen.clone());
        let stream = watch(
            move |opts: QueryOptions| {
                s.lock().unwrap().push(opts.index.0);
                let idx = a.lock().unwrap().remove(0);
                async move { Ok((idx, QueryMeta { last_index: Index(idx), ..Default::default() })) }
            },
            WatchOptions::default(),
        );
        let got: Vec<u64> = stream.take(5).map(|r| r.unwrap().0).collect().await;
        assert_eq!(got, vec![5, 9, 3, 0, 4]);
        // Reads blocked on: 0 (first), 5, 5, 9, 0 (reset), 1 (never 0 after a 0 answer).
        assert_eq!(*seen.lock().unwrap(), vec![0, 5, 5, 9, 0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_exponentially() {
        let stream = watch(
            |_opts: QueryOptions| async { Err::<((), QueryMeta), _>(Error::connect("down")) },
            WatchOptions::default(),
        );
        let start = tokio::time::Instant::now();
        let errors: Vec<_> = stream.take(5).collect().await;
        assert!(errors.iter().all(|e| e.is_err()));
        // Four backoffs between five reads: at least 125 + 250 + 500 + 1000 ms (half of each
        // base, plus jitter), at most the bases' sum plus the 10 ms read intervals.
        assert!(start.elapsed() >= Duration::from_millis(1875), "{:?}", start.elapsed());
        assert!(start.elapsed() <= Duration::from_millis(3800), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_starts_over_from_0_after_a_seeded_backoff_that_replays() {
        // Answers by read: index 7, an error, index 8; then reset() reads without blocking.
        let run = |seed: u64| async move {
            let answers = Arc::new(Mutex::new(vec![Ok(7u64), Err(()), Ok(8), Ok(8)]));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (a, s) = (answers.clone(), seen.clone());
            let opts = WatchOptions { jitter_seed: Some(seed), ..Default::default() };
            let mut w = Watcher::new(
                move |q: QueryOptions| {
                    s.lock().unwrap().push(q.index.0);
                    let answer = a.lock().unwrap().remove(0);
                    async move {
                        match answer {
                            Ok(i) => {
                                Ok(((), QueryMeta { last_index: Index(i), ..Default::default() }))
                            }
                            Err(()) => Err(Error::connect("down")),
                        }
                    }
                },
                opts,
            );
            w.next().await.unwrap();
            let t0 = tokio::time::Instant::now();
            assert!(w.next().await.is_err());
            assert_eq!(w.index(), Index(0));
            w.next().await.unwrap();
            let backoff = t0.elapsed();
            w.reset();
            w.next().await.unwrap();
            let seen = seen.lock().unwrap().clone();
            (seen, backoff)
        };
        let (seen, backoff) = run(42).await;
        assert_eq!(seen, vec![0, 7, 0, 0]);
        assert!(backoff >= Duration::from_millis(125) && backoff <= Duration::from_millis(250));
        assert_eq!(run(42).await.1, backoff, "the same seed, the same backoff");
    }
}
