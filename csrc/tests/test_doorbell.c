/* Doorbells: a ring consumer that waits returns at once when a record is committed, sleeps
 * (flag set) when none is, and is woken by each commit kind; ls_wait_any wakes for any of
 * several rings; a producer with nobody asleep leaves the wake sequence alone. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "lockstep.h"
#include "ls_test.h"

#define CAPACITY 1024
#define LENGTH (CAPACITY + LS_RB_TRAILER_LENGTH)
#define SECOND 1000000000LL

static _Alignas(64) uint8_t memory_a[LENGTH];
static _Alignas(64) uint8_t memory_b[LENGTH];

static void reset(ls_ring_buffer_t *rb, uint8_t *memory)
{
    memset(memory, 0, LENGTH);
    LS_CHECK(0 == ls_rb_init(rb, memory, LENGTH, true));
}

static int32_t word(const ls_ring_buffer_t *rb, int32_t offset)
{
    return atomic_load_explicit((_Atomic int32_t *)(rb->trailer + offset), memory_order_acquire);
}

static void pause_a_little(void)
{
    struct timespec t = { 0, 1000000 };
    nanosleep(&t, NULL);
}

struct waiter
{
    ls_ring_buffer_t *rings[2];
    int32_t count;
    int result;
    int idle; /* ls_wait_any_idle instead of ls_wait_any */
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    w->result = (w->idle ? ls_wait_any_idle : ls_wait_any)(w->rings, w->count, NULL, 0, 10 * SECOND);
    return NULL;
}

/* Starts a waiter on `count` rings and returns once it has announced its sleep on rings[0]. */
static void start_waiter(pthread_t *thread, struct waiter *w)
{
    w->result = -9;
    LS_CHECK(0 == pthread_create(thread, NULL, wait_thread, w));
    for (int i = 0; i < 10000 && 0 == word(w->rings[w->count - 1], LS_RB_CONSUMER_WAITING_OFFSET); i++)
    {
        pause_a_little();
    }
    LS_CHECK(1 == word(w->rings[w->count - 1], LS_RB_CONSUMER_WAITING_OFFSET));
}

static void test_no_wait_when_committed(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, memory_a);
    LS_CHECK(0 == ls_rb_wait(&rb, 0));
    LS_CHECK(1 == word(&rb, LS_RB_CONSUMER_WAITING_OFFSET)); /* announced, then timed out */
    const uint8_t msg[4] = { 1, 2, 3, 4 };
    LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 7, msg, sizeof(msg)));
    LS_CHECK(0 == word(&rb, LS_RB_CONSUMER_WAITING_OFFSET)); /* the write took the flag */
    LS_CHECK(1 == word(&rb, LS_RB_WAKE_SEQUENCE_OFFSET));
    LS_CHECK(1 == ls_rb_wait(&rb, SECOND)); /* something is there: no sleep */
}

static void test_quiet_writer_does_not_ring(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, memory_a);
    const uint8_t msg[4] = { 0 };
    for (int i = 0; i < 10; i++)
    {
        LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 7, msg, sizeof(msg)));
    }
    LS_CHECK(0 == word(&rb, LS_RB_WAKE_SEQUENCE_OFFSET));
}

static void test_timeout(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, memory_a);
    LS_CHECK(0 == ls_rb_wait(&rb, 2000000));
}

static void test_each_commit_kind_wakes(void)
{
    ls_ring_buffer_t rb;
    for (int kind = 0; kind < 3; kind++)
    {
        reset(&rb, memory_a);
        const uint8_t msg[4] = { 1, 2, 3, 4 };
        int32_t blocker = -1;
        if (2 == kind)
        {
            /* An abort frees a consumer stuck behind a claim to read what follows it. */
            blocker = ls_rb_try_claim(&rb, 7, 4);
            LS_CHECK(blocker >= 0);
        }
        pthread_t thread;
        struct waiter w = { { &rb, NULL }, 1, 0, 0 };
        start_waiter(&thread, &w);
        const int32_t before = word(&rb, LS_RB_WAKE_SEQUENCE_OFFSET);
        if (0 == kind)
        {
            LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 7, msg, sizeof(msg)));
        }
        else if (1 == kind)
        {
            const int32_t index = ls_rb_try_claim(&rb, 7, 4);
            LS_CHECK(index >= 0);
            LS_CHECK(-1 == w.result || -9 == w.result); /* a claim alone wakes nobody */
            LS_CHECK(0 == ls_rb_commit(&rb, index));
        }
        else
        {
            LS_CHECK(0 == ls_rb_abort(&rb, blocker));
        }
        pthread_join(thread, NULL);
        LS_CHECK(1 == w.result);
        LS_CHECK(before + 1 == word(&rb, LS_RB_WAKE_SEQUENCE_OFFSET));
        LS_CHECK(0 == word(&rb, LS_RB_CONSUMER_WAITING_OFFSET));
    }
}

static void test_any_of_two_rings_wakes(void)
{
    ls_ring_buffer_t a, b;
    reset(&a, memory_a);
    reset(&b, memory_b);
    for (int which = 0; which < 2; which++)
    {
        reset(&a, memory_a);
        reset(&b, memory_b);
        pthread_t thread;
        struct waiter w = { { &a, &b }, 2, 0, 0 };
        start_waiter(&thread, &w);
        const uint8_t msg[4] = { 9 };
        LS_CHECK(LS_RB_SUCCESS == ls_rb_write(which ? &b : &a, 3, msg, sizeof(msg)));
        pthread_join(thread, NULL);
        LS_CHECK(1 == w.result);
    }
}

static void test_wait_any_bad_counts(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, memory_a);
    ls_ring_buffer_t *rings[1] = { &rb };
    LS_CHECK(-1 == ls_wait_any(rings, -1, NULL, 0, 0));
    LS_CHECK(-1 == ls_wait_any(rings, LS_DOORBELL_MAX + 1, NULL, 0, 0));
    LS_CHECK(0 == ls_wait_any(NULL, 0, NULL, 0, 1000)); /* nothing to wait on: a sleep */
    LS_CHECK(-1 == ls_doorbell_wait(NULL, 1, 0));
}

/* A stalled agent (a record there it cannot take) sleeps on its other rings only. */
static void test_wait_any_idle_leaves_out_what_is_there(void)
{
    ls_ring_buffer_t a;
    ls_ring_buffer_t b;
    reset(&a, memory_a);
    reset(&b, memory_b);
    const uint8_t msg[4] = { 7 };
    LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&a, 3, msg, sizeof(msg)));
    ls_ring_buffer_t *stuck[1] = { &a };
    LS_CHECK(0 == ls_wait_any_idle(stuck, 1, NULL, 0, 1000)); /* nothing else: a plain sleep, not "there" */
    LS_CHECK(0 == word(&a, LS_RB_CONSUMER_WAITING_OFFSET));  /* its writer is not asked to ring */
    pthread_t thread;
    struct waiter w = { { &a, &b }, 2, 0, 1 };
    start_waiter(&thread, &w); /* returns once asleep on b */
    LS_CHECK(-9 == w.result);
    LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&b, 3, msg, sizeof(msg)));
    pthread_join(thread, NULL);
    LS_CHECK(1 == w.result);
    LS_CHECK(0 == word(&a, LS_RB_CONSUMER_WAITING_OFFSET));
}

static void test_short_slice(void)
{
    LS_CHECK(-1 == ls_doorbell_short_slice(-1));
    LS_CHECK(ls_doorbell_short_slice(0) >= 0); /* the default slice: applied, or nothing to apply */
}

static void test_agrona_trailer_with_doorbell_fields_accepted(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, memory_a);
    ls_rb_wait(&rb, 0); /* leaves the flag set: a consumer that stopped while asleep */
    LS_CHECK(0 == ls_rb_init(&rb, memory_a, LENGTH, true));
    memory_a[CAPACITY + LS_RB_CONSUMER_WAITING_OFFSET + 8] = 1; /* beyond the field: still padding */
    LS_CHECK(-1 == ls_rb_init(&rb, memory_a, LENGTH, true));
}

int main(void)
{
    LS_RUN(test_no_wait_when_committed);
    LS_RUN(test_quiet_writer_does_not_ring);
    LS_RUN(test_timeout);
    LS_RUN(test_each_commit_kind_wakes);
    LS_RUN(test_any_of_two_rings_wakes);
    LS_RUN(test_wait_any_bad_counts);
    LS_RUN(test_wait_any_idle_leaves_out_what_is_there);
    LS_RUN(test_short_slice);
    LS_RUN(test_agrona_trailer_with_doorbell_fields_accepted);
    return LS_TEST_RESULT();
}
