/* Futex doorbells: how an idle reader sleeps until a writer has something for it, over
 * memory shared between processes (a log's metadata, a ring's trailer).
 *
 * A doorbell is two int32 words on their own cache lines: a flag a reader sets before it
 * sleeps, and a wake sequence (the futex word) a writer bumps to wake it. Dekker's pattern:
 * the writer commits, fences, loads the flag; the reader sets the flag, fences, looks at
 * what it would read (its probe). At least one of them sees the other, so the reader either
 * finds the data or the writer finds the flag and wakes it. While nobody sleeps a ring
 * costs the writer one fence and one load; a futex wake (one syscall) when somebody does. */
#ifndef LS_DOORBELL_H
#define LS_DOORBELL_H

#include <stdatomic.h>
#include <stdint.h>

struct ls_ring_buffer_stct;
struct ls_image_stct;

/* Where to sleep, and what to look at before: `probe` holds the int32 length of the record
 * or frame the reader would read next (> 0: committed, nothing to wait for). */
typedef struct ls_doorbell_stct
{
    uint8_t *flag;
    uint8_t *sequence;
    const uint8_t *probe;
} ls_doorbell_t;

/* The slow half of ls_doorbell_ring: take the flag, then ls_doorbell_wake_all. */
void ls_doorbell_wake(uint8_t *flag, uint8_t *sequence);

/* The writer's side, after a commit: wake every reader asleep on this doorbell, if any.
 * Inline: while nobody sleeps it is one fence and one load on the commit path. */
static inline void ls_doorbell_ring(uint8_t *flag, uint8_t *sequence)
{
    atomic_thread_fence(memory_order_seq_cst); /* the commit before, the flag after */
    if (0 != atomic_load_explicit((_Atomic int32_t *)flag, memory_order_relaxed))
    {
        ls_doorbell_wake(flag, sequence);
    }
}

/* Bump the sequence and wake every sleeper, flag or not (e.g. a reader's own close). */
void ls_doorbell_wake_all(uint8_t *sequence);

/* The reader's side: sleeps until one of `count` doorbells rings, at most timeout_ns, unless
 * a probe shows a committed record already. Returns 1 when woken or something is there,
 * 0 on timeout or a signal (EINTR: the caller's runtime gets to handle it), -1 (LS_EINVAL)
 * for a count outside 1..LS_DOORBELL_MAX. Several doorbells: one futex_waitv (Linux 5.16+);
 * on older kernels each in turn, LS_DOORBELL_SLICE_NS at a time. */
#define LS_DOORBELL_MAX 128
#define LS_DOORBELL_SLICE_NS 1000000
int ls_doorbell_wait(const ls_doorbell_t *bells, int32_t count, int64_t timeout_ns);

/* What an agent reads, in one wait: rings (their consumer side) and images (their log at
 * the image's position). Returns as ls_doorbell_wait. */
int ls_wait_any(
    struct ls_ring_buffer_stct *const *rings, int32_t ring_count,
    struct ls_image_stct *const *images, int32_t image_count, int64_t timeout_ns);

/* As ls_wait_any, for an agent that cannot take what is there (back-pressured downstream,
 * e.g. its output ring full): the doorbells whose probe shows a record already are left out
 * (their writers' commits would only wake it for more of what it cannot take); it sleeps on
 * the others (e.g. a gateway's side channel) until timeout_ns, the agent's retry of its
 * output. With none left, a plain sleep of timeout_ns (no doorbell tells of room).
 * Returns 1 woken or a record there, 0 timeout, -1. */
int ls_wait_any_idle(
    struct ls_ring_buffer_stct *const *rings, int32_t ring_count,
    struct ls_image_stct *const *images, int32_t image_count, int64_t timeout_ns);

/* Ask the scheduler for a short time slice for the calling thread (Linux 6.12+ EEVDF: a
 * SCHED_OTHER thread's sched_runtime), so that when a doorbell wakes it, it preempts a
 * CPU-bound neighbour instead of queueing behind that one's whole slice. Its share of the CPU
 * (its nice weight) does not change. 1 done, 0 not applicable (another policy, not Linux),
 * -1 (LS_ESYS: e.g. an older kernel refuses a slice; LS_EINVAL: slice_ns < 0). */
int ls_doorbell_short_slice(int64_t slice_ns);

#endif
