#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall() */
#endif
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "concurrent/doorbell.h"
#include "concurrent/log_signal.h"
#include "concurrent/ls_atomic.h"
#include "concurrent/ring_buffer.h"
#include "logbuffer/image.h"
#include "util/ls_error.h"

#if defined(__linux__) && !defined(SYS_futex_waitv) && defined(__NR_futex_waitv)
#define SYS_futex_waitv __NR_futex_waitv
#endif

#define LS_DOORBELL_NO_FUTEX_SLEEP_NS 100000 /* without a futex: sleep at most this, then look again */

#if defined(__linux__) && defined(SYS_sched_setattr)
/* struct sched_attr (include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER1): glibc has no declaration. */
typedef struct ls_sched_attr_stct
{
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
} ls_sched_attr_t;
#endif

int ls_doorbell_short_slice(int64_t slice_ns)
{
#if defined(__linux__) && defined(SYS_sched_setattr) && defined(SYS_sched_getattr)
    if (slice_ns < 0)
    {
        LS_SET_ERR(LS_EINVAL, "slice: expected >= 0 ns, found %lld", (long long)slice_ns);
        return -1;
    }
    ls_sched_attr_t attr = { 0 };
    if (0 != syscall(SYS_sched_getattr, 0, &attr, (unsigned int)sizeof(attr), 0U))
    {
        LS_SET_ERRNO(errno, "sched_getattr");
        return -1;
    }
    if (0 != attr.sched_policy) /* SCHED_OTHER only: real-time or batch policies are the user's choice */
    {
        return 0;
    }
    attr.size = (uint32_t)sizeof(attr);
    attr.sched_flags = 0;
    attr.sched_runtime = (uint64_t)slice_ns; /* EEVDF (Linux 6.12+): the thread's slice; 0 = the default */
    if (0 != syscall(SYS_sched_setattr, 0, &attr, 0U))
    {
        LS_SET_ERRNO(errno, "sched_setattr (a %lld ns slice)", (long long)slice_ns);
        return -1;
    }
    return 1;
#else
    (void)slice_ns;
    return 0;
#endif
}

void ls_doorbell_wake(uint8_t *flag, uint8_t *sequence)
{
    /* The exchange clears the flag so later commits skip the syscall; a reader killed while
     * asleep thus costs one spurious wake, not one per commit forever. */
    if (0 != atomic_exchange_explicit((_Atomic int32_t *)flag, 0, memory_order_seq_cst))
    {
        ls_doorbell_wake_all(sequence);
    }
}

void ls_doorbell_wake_all(uint8_t *sequence)
{
    atomic_fetch_add_explicit((_Atomic int32_t *)sequence, 1, memory_order_seq_cst);
#ifdef __linux__
    /* Not FUTEX_PRIVATE: the word is in a file mapped by other processes. */
    syscall(SYS_futex, sequence, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
}

#ifdef __linux__
static struct timespec ls_doorbell_relative(int64_t timeout_ns)
{
    struct timespec t = { .tv_sec = (time_t)(timeout_ns / 1000000000), .tv_nsec = (long)(timeout_ns % 1000000000) };
    return t;
}

/* One futex: 1 when woken (or the word moved before the sleep: EAGAIN), else 0. */
static int ls_doorbell_futex_wait(uint8_t *sequence, int32_t expected, int64_t timeout_ns)
{
    struct timespec timeout = ls_doorbell_relative(timeout_ns);
    if (0 == syscall(SYS_futex, sequence, FUTEX_WAIT, expected, &timeout, NULL, 0))
    {
        return 1;
    }
    return EAGAIN == errno ? 1 : 0;
}

static int ls_doorbell_waitv_missing = 0; /* ENOSYS once: the kernel predates futex_waitv */

/* All at once: 1 woken, 0 timeout or signal, -2 when the kernel has no futex_waitv. */
static int ls_doorbell_futex_waitv(
    const ls_doorbell_t *bells, const int32_t *expected, int32_t count, int64_t timeout_ns)
{
#ifdef SYS_futex_waitv
    if (!atomic_load_explicit((_Atomic int *)&ls_doorbell_waitv_missing, memory_order_relaxed))
    {
        struct futex_waitv waiters[LS_DOORBELL_MAX];
        for (int32_t i = 0; i < count; i++)
        {
            waiters[i].val = (uint32_t)expected[i];
            waiters[i].uaddr = (uintptr_t)bells[i].sequence;
            waiters[i].flags = FUTEX_32; /* shared: no FUTEX_PRIVATE_FLAG */
            waiters[i].__reserved = 0;
        }
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        const int64_t end_ns = (int64_t)deadline.tv_nsec + timeout_ns % 1000000000;
        deadline.tv_sec += (time_t)(timeout_ns / 1000000000 + end_ns / 1000000000);
        deadline.tv_nsec = (long)(end_ns % 1000000000);
        if (syscall(SYS_futex_waitv, waiters, (unsigned int)count, 0, &deadline, CLOCK_MONOTONIC) >= 0)
        {
            return 1;
        }
        if (ENOSYS != errno)
        {
            return EAGAIN == errno ? 1 : 0;
        }
        atomic_store_explicit((_Atomic int *)&ls_doorbell_waitv_missing, 1, memory_order_relaxed);
    }
#else
    (void)bells;
    (void)expected;
    (void)count;
    (void)timeout_ns;
#endif
    return -2;
}
#endif

int ls_doorbell_wait(const ls_doorbell_t *bells, int32_t count, int64_t timeout_ns)
{
    if (NULL == bells || count < 1 || count > LS_DOORBELL_MAX)
    {
        ls_set_error(LS_EINVAL, "doorbells: expected 1..%d, found %d", LS_DOORBELL_MAX, count);
        return -1;
    }
    int32_t expected[LS_DOORBELL_MAX];
    for (int32_t i = 0; i < count; i++)
    {
        /* The sequence before the flag: a wake between here and the sleep moves the word,
         * and the futex then returns at once. */
        expected[i] = ls_get_acquire_i32(bells[i].sequence);
        atomic_store_explicit((_Atomic int32_t *)bells[i].flag, 1, memory_order_seq_cst);
    }
    atomic_thread_fence(memory_order_seq_cst); /* the flags before, the probes after */
    for (int32_t i = 0; i < count; i++)
    {
        if (ls_get_acquire_i32(bells[i].probe) > 0)
        {
            return 1;
        }
    }
    if (timeout_ns <= 0)
    {
        return 0;
    }
#ifdef __linux__
    if (1 == count)
    {
        return ls_doorbell_futex_wait(bells[0].sequence, expected[0], timeout_ns);
    }
    const int woken = ls_doorbell_futex_waitv(bells, expected, count, timeout_ns);
    if (woken >= 0)
    {
        return woken;
    }
    /* No futex_waitv: each in turn, a slice at a time; a bell rung meanwhile has moved its
     * word, so its turn returns at once. */
    for (int32_t i = 0; timeout_ns > 0; i = (i + 1) % count)
    {
        const int64_t slice = timeout_ns < LS_DOORBELL_SLICE_NS ? timeout_ns : LS_DOORBELL_SLICE_NS;
        if (ls_doorbell_futex_wait(bells[i].sequence, expected[i], slice))
        {
            return 1;
        }
        timeout_ns -= slice;
    }
    return 0;
#else
    (void)expected;
    struct timespec sleep = { .tv_sec = 0, .tv_nsec = timeout_ns < LS_DOORBELL_NO_FUTEX_SLEEP_NS ?
        (long)timeout_ns : LS_DOORBELL_NO_FUTEX_SLEEP_NS };
    nanosleep(&sleep, NULL); /* no futex: a plain sleep, then the caller looks again */
    return 0;
#endif
}

/* skip_ready: leave out the doorbells whose probe shows a record already (see ls_wait_any_idle). */
static int ls_wait_any_for(
    struct ls_ring_buffer_stct *const *rings, int32_t ring_count,
    struct ls_image_stct *const *images, int32_t image_count, int64_t timeout_ns, int skip_ready)
{
    if (ring_count < 0 || image_count < 0 || ring_count > LS_DOORBELL_MAX - image_count ||
        (ring_count > 0 && NULL == rings) || (image_count > 0 && NULL == images))
    {
        ls_set_error(
            LS_EINVAL, "wait: expected 1..%d rings and images in all, found %d + %d",
            LS_DOORBELL_MAX, ring_count, image_count);
        return -1;
    }
    ls_doorbell_t bells[LS_DOORBELL_MAX];
    int32_t count = 0;
    for (int32_t i = 0; i < ring_count; i++)
    {
        ls_rb_doorbell(rings[i], &bells[count++]);
    }
    for (int32_t i = 0; i < image_count; i++)
    {
        const ls_logbuffer_t *log = &images[i]->log;
        const int64_t position = ls_get_plain_i64(images[i]->position);
        ls_log_doorbell(
            log->metadata,
            log->terms[ls_logbuffer_partition_index(log, position)] + ls_logbuffer_term_offset(log, position),
            &bells[count++]);
    }
    if (skip_ready)
    {
        int32_t kept = 0;
        for (int32_t i = 0; i < count; i++)
        {
            if (ls_get_acquire_i32(bells[i].probe) <= 0)
            {
                bells[kept++] = bells[i];
            }
        }
        count = kept;
    }
    if (0 == count)
    {
        /* Nothing to wait on yet (e.g. no publisher): sleep, so housekeeping still runs. */
        if (timeout_ns > 0)
        {
            struct timespec sleep = { .tv_sec = (time_t)(timeout_ns / 1000000000), .tv_nsec = (long)(timeout_ns % 1000000000) };
            nanosleep(&sleep, NULL);
        }
        return 0;
    }
    return ls_doorbell_wait(bells, count, timeout_ns);
}

int ls_wait_any(
    struct ls_ring_buffer_stct *const *rings, int32_t ring_count,
    struct ls_image_stct *const *images, int32_t image_count, int64_t timeout_ns)
{
    return ls_wait_any_for(rings, ring_count, images, image_count, timeout_ns, 0);
}

int ls_wait_any_idle(
    struct ls_ring_buffer_stct *const *rings, int32_t ring_count,
    struct ls_image_stct *const *images, int32_t image_count, int64_t timeout_ns)
{
    return ls_wait_any_for(rings, ring_count, images, image_count, timeout_ns, 1);
}
