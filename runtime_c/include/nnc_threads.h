/* nnc_threads.h: the small thread pool behind nnc's parallel loops (host, threads > 1).
 *
 * model.c includes it once and defines NNC_THREADS first; build with -pthread. Each parallel
 * loop is outlined into a function `fn(ctx, lo, hi)` running iterations [lo, hi), and
 * `nnc_parallel_for(fn, ctx, n, chunk)` runs all n iterations in chunks: the calling thread and
 * NNC_THREADS - 1 workers claim chunks from one shared counter; the call returns as soon as
 * every chunk is done.
 *
 * Why not OpenMP: its loop ends in a barrier that waits for every thread of the team, including
 * one the OS has not scheduled yet. On a machine whose cores are busy with other work, each of
 * a model's ~50 parallel loops then waits a scheduling period for its second thread, and 2
 * threads ran resnet50 2x slower than 1 (README, "Threads on the host"). Here a worker that
 * has not woken up yet simply finds no chunk left; only a chunk already claimed is waited for.
 *
 * The claim word holds (job number << 32) | next iteration, so a worker that wakes late and
 * still holds an old job's number cannot claim a chunk of the new job. A job's fn/ctx stay valid
 * while any of its chunks is claimed and unfinished: the caller does not return before. */
#ifndef NNC_THREADS_H
#define NNC_THREADS_H

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#ifndef NNC_THREADS
#define NNC_THREADS 2
#endif
#define NNC_SPIN 20000 /* polls of a waiting worker before it sleeps */

typedef void (*nnc_task)(void *ctx, ptrdiff_t lo, ptrdiff_t hi);

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    uint64_t claim;   /* (job << 32) | next iteration to claim */
    uint32_t job;     /* the job number workers wait for a change of */
    int64_t left;     /* iterations of the current job not yet finished */
    nnc_task fn;
    void *ctx;
    int64_t n, chunk;
} nnc_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0};
static pthread_once_t nnc_pool_once = PTHREAD_ONCE_INIT;

/* Claim and run chunks of job `job` until none is left. */
static void nnc_pool_work(uint32_t job) {
    for (;;) {
        uint64_t w = __atomic_load_n(&nnc_pool.claim, __ATOMIC_SEQ_CST);
        if ((uint32_t)(w >> 32) != job) return;
        /* relaxed: a late worker may read the next job's values, but then its CAS fails */
        int64_t lo = (int64_t)(uint32_t)w, n = __atomic_load_n(&nnc_pool.n, __ATOMIC_RELAXED);
        int64_t chunk = __atomic_load_n(&nnc_pool.chunk, __ATOMIC_RELAXED);
        if (lo >= n) return;
        if (!__atomic_compare_exchange_n(&nnc_pool.claim, &w, w + (uint64_t)chunk, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            continue;
        int64_t hi = lo + chunk < n ? lo + chunk : n;
        nnc_pool.fn(nnc_pool.ctx, (ptrdiff_t)lo, (ptrdiff_t)hi);
        __atomic_sub_fetch(&nnc_pool.left, hi - lo, __ATOMIC_SEQ_CST);
    }
}

static void *nnc_pool_worker(void *unused) {
    (void)unused;
    uint32_t seen = 0;
    for (;;) {
        uint32_t job = __atomic_load_n(&nnc_pool.job, __ATOMIC_SEQ_CST);
        for (int i = 0; i < NNC_SPIN && job == seen; ++i) {
            sched_yield();
            job = __atomic_load_n(&nnc_pool.job, __ATOMIC_SEQ_CST);
        }
        if (job == seen) {
            pthread_mutex_lock(&nnc_pool.mu);
            while ((job = __atomic_load_n(&nnc_pool.job, __ATOMIC_SEQ_CST)) == seen)
                pthread_cond_wait(&nnc_pool.wake, &nnc_pool.mu);
            pthread_mutex_unlock(&nnc_pool.mu);
        }
        seen = job;
        nnc_pool_work(job);
    }
    return NULL;
}

static void nnc_pool_start(void) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 1; i < NNC_THREADS; ++i) {
        pthread_t t;
        if (pthread_create(&t, &attr, nnc_pool_worker, NULL) != 0) break; /* fewer helpers */
    }
    pthread_attr_destroy(&attr);
}

/* Run fn(ctx, lo, hi) over [0, n) in chunks on the pool; returns when all are done.
 * Not reentrant: one model runs one parallel loop at a time (parallel loops do not nest). */
static void nnc_parallel_for(nnc_task fn, void *ctx, ptrdiff_t n, ptrdiff_t chunk) {
    if (n <= chunk) {  /* one chunk: no one to share it with */
        fn(ctx, 0, n);
        return;
    }
    pthread_once(&nnc_pool_once, nnc_pool_start);
    uint32_t job = nnc_pool.job + 1;
    __atomic_store_n(&nnc_pool.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&nnc_pool.ctx, ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&nnc_pool.n, (int64_t)n, __ATOMIC_RELAXED);
    __atomic_store_n(&nnc_pool.chunk, (int64_t)chunk, __ATOMIC_RELAXED);
    __atomic_store_n(&nnc_pool.left, (int64_t)n, __ATOMIC_SEQ_CST);
    __atomic_store_n(&nnc_pool.claim, (uint64_t)job << 32, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&nnc_pool.mu);
    __atomic_store_n(&nnc_pool.job, job, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&nnc_pool.wake);
    pthread_mutex_unlock(&nnc_pool.mu);
    nnc_pool_work(job);
    while (__atomic_load_n(&nnc_pool.left, __ATOMIC_SEQ_CST) > 0)
        sched_yield();  /* a worker finishes the chunk it holds */
}

#endif /* NNC_THREADS_H */
