#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall() */
#endif
#include <errno.h>
#include <limits.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "frame_descriptor.h"
#include "log_signal.h"
#include "ls_atomic.h"

/* Dekker's pattern between a writer (commit, fence, load flag) and a reader (store flag, fence,
 * load frame length): at least one of them sees the other, so either the reader finds the
 * frame or the writer finds the flag and wakes it. The futex word closes the gap between the
 * reader's check and its sleep: a wake in between changes the word and the sleep returns. */

#define LS_LOG_FLAG(metadata) ((metadata) + LS_LOG_READER_WAITING_OFFSET)
#define LS_LOG_WAKE_WORD(metadata) ((metadata) + LS_LOG_WAKE_SEQUENCE_OFFSET)
#define LS_LOG_AWAIT_MAX_SLEEP_NS 100000 /* without a futex: sleep at most this, then look again */

void ls_log_signal(uint8_t *metadata)
{
    atomic_thread_fence(memory_order_seq_cst);
    _Atomic int32_t *flag = (_Atomic int32_t *)LS_LOG_FLAG(metadata);
    /* The exchange clears the flag so later commits skip the syscall; a reader killed while
     * asleep thus costs one spurious wake, not one per commit forever. */
    if (0 != atomic_load_explicit(flag, memory_order_relaxed) &&
        0 != atomic_exchange_explicit(flag, 0, memory_order_seq_cst))
    {
        atomic_fetch_add_explicit((_Atomic int32_t *)LS_LOG_WAKE_WORD(metadata), 1, memory_order_seq_cst);
#ifdef __linux__
        /* Not FUTEX_PRIVATE: the word is in a file mapped by other processes. */
        syscall(SYS_futex, LS_LOG_WAKE_WORD(metadata), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
    }
}

void ls_log_wake(uint8_t *metadata)
{
    atomic_fetch_add_explicit((_Atomic int32_t *)LS_LOG_WAKE_WORD(metadata), 1, memory_order_seq_cst);
#ifdef __linux__
    syscall(SYS_futex, LS_LOG_WAKE_WORD(metadata), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
}

int ls_log_await(uint8_t *metadata, const uint8_t *frame, int64_t timeout_ns)
{
    const int32_t sequence = ls_get_acquire_i32(LS_LOG_WAKE_WORD(metadata));
    atomic_store_explicit((_Atomic int32_t *)LS_LOG_FLAG(metadata), 1, memory_order_seq_cst);
    if (0 != ls_get_acquire_i32(frame + LS_FRAME_LENGTH_OFFSET))
    {
        return 1;
    }
    if (timeout_ns <= 0)
    {
        return 0;
    }
    struct timespec timeout = { .tv_sec = (time_t)(timeout_ns / 1000000000), .tv_nsec = (long)(timeout_ns % 1000000000) };
#ifdef __linux__
    if (0 == syscall(SYS_futex, LS_LOG_WAKE_WORD(metadata), FUTEX_WAIT, sequence, &timeout, NULL, 0))
    {
        return 1;
    }
    return EAGAIN == errno ? 1 : 0; /* EAGAIN: woken between the check and the sleep */
#else
    (void)sequence;
    if (timeout_ns > LS_LOG_AWAIT_MAX_SLEEP_NS)
    {
        timeout.tv_sec = 0;
        timeout.tv_nsec = LS_LOG_AWAIT_MAX_SLEEP_NS;
    }
    nanosleep(&timeout, NULL); /* no futex: a plain sleep, then the caller looks again */
    return 0;
#endif
}
