//! Micro-benchmarks of the per-request hot paths, and the same closed-path work through the `failsafe` and
//! `recloser` crates in the same run, so the comparison holds on the same machine at the same moment.
//!
//! `cargo bench --bench hot_paths` (BENCHMARKS.md has the figures). Under `cargo test` each benchmark runs once,
//! as a smoke test; nothing here asserts on a timing.
//!
//! Multi-threaded benchmarks: each of the N threads performs `iters` operations at once on the shared breaker,
//! and the reported time per iteration is the wall time divided by `iters`: the time one operation takes for a
//! caller while N callers contend (N operations complete in that time).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use redguard::api::reply::render;
use redguard::api::request::{parse, Encoding, Limits};
use redguard::breaker::{Breaker, Override, Settings};
use redguard::cache::{CacheSettings, FallbackCache, KeyExpiry};
use redguard::client::{Reply, Served, Source};
use redguard::clock::SystemClock;

/// Runs `op` `iters` times on each of `threads` threads at once; returns the wall time.
fn contended(threads: usize, iters: u64, op: impl Fn() + Send + Sync + Clone + 'static) -> Duration {
    if threads == 1 {
        let started = Instant::now();
        for _ in 0..iters {
            op();
        }
        return started.elapsed();
    }
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, op) = (barrier.clone(), op.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    op();
                }
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for h in handles {
        h.join().expect("benchmark thread");
    }
    started.elapsed()
}

fn redguard_breaker() -> Arc<Breaker> {
    // The shipped defaults (consecutive failures 5, no rate windows); no observers: they only run on a
    // transition, and the closed path makes none.
    Arc::new(Breaker::new(Settings::default(), Arc::new(SystemClock), 1, vec![]))
}

/// With the failure-rate and slow-call windows on, every call's outcome and duration are recorded under the lock.
fn redguard_breaker_with_rates() -> Arc<Breaker> {
    let settings = Settings {
        failure_rate_threshold: Some(50.0),
        slow_call_duration: Some(Duration::from_millis(100)),
        slow_call_rate_threshold: Some(50.0),
        ..Settings::default()
    };
    Arc::new(Breaker::new(settings, Arc::new(SystemClock), 1, vec![]))
}

fn failsafe_breaker() -> impl failsafe::CircuitBreaker + Clone + Send + Sync + 'static {
    use failsafe::{backoff, failure_policy, Config};
    // The same policy as redguard's default: 5 consecutive failures, then open for 60 s.
    let policy = failure_policy::consecutive_failures(5, backoff::constant(Duration::from_secs(60)));
    Config::new().failure_policy(policy).build()
}

fn recloser_breaker(closed_len: usize) -> Arc<recloser::Recloser> {
    Arc::new(
        recloser::Recloser::custom()
            .closed_len(closed_len)
            .open_wait(Duration::from_secs(3600))
            .build(),
    )
}

fn breaker_closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_acquire_record");
    for threads in [1usize, 4] {
        let b = redguard_breaker();
        g.bench_function(BenchmarkId::new("redguard", threads), |bench| {
            bench.iter_custom(|iters| {
                let b = b.clone();
                contended(threads, iters, move || {
                    black_box(b.try_acquire().expect("closed")).success();
                })
            })
        });
        let b = redguard_breaker_with_rates();
        g.bench_function(BenchmarkId::new("redguard_rate_windows", threads), |bench| {
            bench.iter_custom(|iters| {
                let b = b.clone();
                contended(threads, iters, move || {
                    black_box(b.try_acquire().expect("closed")).success();
                })
            })
        });
        let f = failsafe_breaker();
        g.bench_function(BenchmarkId::new("failsafe", threads), |bench| {
            bench.iter_custom(|iters| {
                let f = f.clone();
                contended(threads, iters, move || {
                    use failsafe::CircuitBreaker;
                    black_box(f.call(|| Ok::<(), ()>(()))).expect("closed");
                })
            })
        });
        let r = recloser_breaker(100);
        g.bench_function(BenchmarkId::new("recloser", threads), |bench| {
            bench.iter_custom(|iters| {
                let r = r.clone();
                contended(threads, iters, move || {
                    black_box(r.call(|| Ok::<(), ()>(()))).expect("closed");
                })
            })
        });
    }
    g.finish();
}

fn breaker_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_open_reject");
    for threads in [1usize, 4] {
        let b = redguard_breaker();
        b.apply(Override::ForceOpen);
        g.bench_function(BenchmarkId::new("redguard", threads), |bench| {
            bench.iter_custom(|iters| {
                let b = b.clone();
                contended(threads, iters, move || {
                    assert!(black_box(b.try_acquire()).is_err());
                })
            })
        });
        let f = failsafe_breaker();
        {
            use failsafe::CircuitBreaker;
            for _ in 0..5 {
                let _ = f.call(|| Err::<(), ()>(()));
            }
            assert!(!f.is_call_permitted(), "failsafe opened");
        }
        g.bench_function(BenchmarkId::new("failsafe", threads), |bench| {
            bench.iter_custom(|iters| {
                let f = f.clone();
                contended(threads, iters, move || {
                    use failsafe::CircuitBreaker;
                    assert!(black_box(f.call(|| Ok::<(), ()>(()))).is_err());
                })
            })
        });
        let r = recloser_breaker(5);
        for _ in 0..10 {
            let _ = r.call(|| Err::<(), ()>(()));
        }
        g.bench_function(BenchmarkId::new("recloser", threads), |bench| {
            bench.iter_custom(|iters| {
                let r = r.clone();
                contended(threads, iters, move || {
                    assert!(black_box(r.call(|| Ok::<(), ()>(()))).is_err());
                })
            })
        });
    }
    g.finish();
}

fn fallback_cache(c: &mut Criterion) {
    let mut g = c.benchmark_group("fallback_cache");
    let value = vec![b'v'; 100];
    for entries in [1_000usize, 100_000] {
        let cache = FallbackCache::new(
            CacheSettings {
                max_entries: entries,
                max_bytes: u64::MAX,
                ttl: Some(Duration::from_secs(3600)),
            },
            Arc::new(SystemClock),
        );
        let keys: Vec<Vec<u8>> = (0..entries * 2).map(|i| format!("key:{i}").into_bytes()).collect();
        for k in &keys[..entries] {
            cache.put_str(k, &value, KeyExpiry::Never);
        }
        // Visit the held keys in a scattered order, so the LRU list and the hash table are not walked in line.
        let stride = 7919 % entries;
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("get_hit", entries), |b| {
            b.iter(|| {
                i = (i + stride) % entries;
                black_box(cache.get_str(black_box(&keys[i])))
            })
        });
        g.bench_function(BenchmarkId::new("put_existing", entries), |b| {
            b.iter(|| {
                i = (i + stride) % entries;
                cache.put_str(black_box(&keys[i]), black_box(&value), KeyExpiry::Never)
            })
        });
        // A new key into the full cache: an insert plus the eviction of the least recently used entry.
        let mut j = 0usize;
        g.bench_function(BenchmarkId::new("put_new_evicting", entries), |b| {
            b.iter(|| {
                j = (j + 1) % keys.len();
                cache.put_str(black_box(&keys[j]), black_box(&value), KeyExpiry::Never)
            })
        });
        // The same, with every new key's elder by half the cache read back: reads keep half of the entries
        // alive for a second lap, so evictions leave the arena's segments half dead and compaction runs.
        g.bench_function(BenchmarkId::new("put_new_evicting_half_read", entries), |b| {
            b.iter(|| {
                j = (j + 1) % keys.len();
                cache.put_str(black_box(&keys[j]), black_box(&value), KeyExpiry::Never);
                if j.is_multiple_of(2) {
                    let elder = (j + keys.len() - entries / 2) % keys.len();
                    black_box(cache.get_str(black_box(&keys[elder])));
                }
            })
        });
        assert_eq!(cache.len(), entries);
    }
    g.finish();
}

fn api_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("api_get");
    let limits = Limits::default();
    let body: &[u8] = br#"{"op":"get","key":"user:1000"}"#;
    let served = Served {
        reply: Reply::Bytes(vec![b'v'; 100]),
        source: Source::Redis,
        cached: false,
    };
    g.bench_function("parse", |b| {
        b.iter(|| black_box(parse(black_box(body), &limits).expect("valid")))
    });
    g.bench_function("render", |b| {
        b.iter(|| black_box(render(black_box(&served), Encoding::Utf8, None).expect("utf-8")))
    });
    g.bench_function("parse_and_render", |b| {
        b.iter(|| {
            let req = parse(black_box(body), &limits).expect("valid");
            black_box(render(black_box(&served), req.encoding, req.default).expect("utf-8"))
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = breaker_closed, breaker_open, fallback_cache, api_codec
}
criterion_main!(benches);
