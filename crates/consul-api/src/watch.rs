//! Watching with blocking queries: a stream of results that follows Consul's rules.
//!
//! The rules (from Consul's docs and Go's `watch` package): the first read does not block;
//! each next read blocks on the last index; if the index goes backwards (a snapshot restore,
//! a new leader), start over from 0; never block with index 0 (use 1); when the index did
//! not move (the wait simply ran out), read again without yielding; on errors back off
//! exponentially with jitter; never wake up more often than `min_interval`.

use std::future::Future;
use std::time::Duration;

use futures_core::Stream;

use crate::Error;
use crate::types::{Index, QueryMeta, QueryOptions};

/// How a [`watch`] paces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// The base query options (consistency, token, …); `index` and `wait` are managed.
    pub query: QueryOptions,
    /// How long each blocking read may wait.
    pub wait: Duration,
    /// The shortest time between two reads, however fast the index moves.
    pub min_interval: Duration,
    /// The first delay after an error; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest delay after errors.
    pub max_backoff: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            query: QueryOptions::default(),
            wait: Duration::from_secs(300),
            min_interval: Duration::from_millis(10),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
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
/// answering 0 is read again blocking on 1). For hand-written watch loops.
pub fn advance(previous: Index, returned: Index) -> (Index, bool) {
    match next_index(previous, returned) {
        None => (previous, false),
        Some(next) if next.0 == 0 && returned.0 == 0 => (Index(1), true),
        Some(next) => (next, true),
    }
}

struct State<F> {
    query: F,
    opts: WatchOptions,
    index: Index,
    failures: u32,
    last_read: Option<tokio::time::Instant>,
}

/// Repeats `query` as a blocking query and yields each new result (or error).
///
/// `query` receives the options to use (with `index` and `wait` set) and returns the result
/// with its [`QueryMeta`]. The stream never ends on its own; drop it to stop watching.
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
///     println!("config is now {pair:?}");
/// }
/// # }
/// ```
pub fn watch<T, F, Fut>(
    query: F,
    opts: WatchOptions,
) -> impl Stream<Item = Result<(T, QueryMeta), Error>>
where
    F: FnMut(QueryOptions) -> Fut,
    Fut: Future<Output = Result<(T, QueryMeta), Error>>,
{
    let state = State { query, opts, index: Index(0), failures: 0, last_read: None };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(last) = s.last_read {
                let next = last + s.opts.min_interval;
                tokio::time::sleep_until(next).await;
            }
            s.last_read = Some(tokio::time::Instant::now());
            let mut q = s.opts.query.clone();
            if s.index.0 > 0 {
                q.index = s.index;
                q.wait = Some(s.opts.wait);
            } else {
                q.index = Index(0);
            }
            match (s.query)(q).await {
                Ok((value, meta)) => {
                    s.failures = 0;
                    let previous = s.index;
                    match next_index(previous, meta.last_index) {
                        None => continue,
                        Some(next) => {
                            // Never block on 0: a server answering index 0 is read again
                            // blocking on 1.
                            s.index =
                                if next.0 == 0 && meta.last_index.0 == 0 { Index(1) } else { next };
                            return Some((Ok((value, meta)), s));
                        }
                    }
                }
                Err(e) => {
                    s.failures += 1;
                    let base = s
                        .opts
                        .initial_backoff
                        .saturating_mul(1 << (s.failures - 1).min(16))
                        .min(s.opts.max_backoff);
                    let delay = base / 2 + crate::jitter(base / 2);
                    tracing::debug!(error = %e, ?delay, "watch read failed; backing off");
                    tokio::time::sleep(delay).await;
                    return Some((Err(e), s));
                }
            }
        }
    })
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
        let errors: Vec<_> = stream.take(4).collect().await;
        assert!(errors.iter().all(|e| e.is_err()));
        // Backoffs of at least 125 + 250 + 500 + 1000 ms (half of each base, plus jitter).
        assert!(start.elapsed() >= Duration::from_millis(1875), "{:?}", start.elapsed());
        assert!(start.elapsed() <= Duration::from_millis(3800), "{:?}", start.elapsed());
    }
}
