/* log_signal: a reader asleep on a log is woken by ls_log_wake (a close in its own process)
 * whether or not a writer would have signalled, and times out when nobody wakes it. */
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "protocol/frame_descriptor.h"
#include "concurrent/log_signal.h"
#include "logbuffer/logbuffer_descriptor.h"
#include "ls_test.h"

static alignas(64) uint8_t metadata[LS_LOG_META_DATA_LENGTH];
static alignas(64) uint8_t frame[LS_DATA_HEADER_LENGTH]; /* length 0: nothing to read */

static void *sleeper(void *result)
{
    *(int *)result = ls_log_await(metadata, frame, 60LL * 1000000000LL); /* woken long before */
    return NULL;
}

static void test_wake_wakes_a_sleeping_reader(void)
{
    memset(metadata, 0, sizeof(metadata));
    int result = -1;
    pthread_t thread;
    LS_CHECK(0 == pthread_create(&thread, NULL, sleeper, &result));
    /* Wait until it has flagged itself (it is then asleep or about to be: either way the
     * wake below reaches it, as the bumped word makes a late FUTEX_WAIT return at once). */
    while (0 == atomic_load((_Atomic int32_t *)(metadata + LS_LOG_READER_WAITING_OFFSET)))
    {
        struct timespec pause = { .tv_sec = 0, .tv_nsec = 1000000 };
        nanosleep(&pause, NULL);
    }
    struct timespec pause = { .tv_sec = 0, .tv_nsec = 20000000 };
    nanosleep(&pause, NULL);
    ls_log_wake(metadata);
    LS_CHECK(0 == pthread_join(thread, NULL));
    LS_CHECK(1 == result);
}

static void test_await_times_out_unwoken(void)
{
    memset(metadata, 0, sizeof(metadata));
    LS_CHECK(0 == ls_log_await(metadata, frame, 10000000)); /* 10 ms, nobody wakes it */
    LS_CHECK(0 == ls_log_await(metadata, frame, 0));
}

int main(void)
{
    LS_RUN(test_wake_wakes_a_sleeping_reader);
    LS_RUN(test_await_times_out_unwoken);
    return LS_TEST_RESULT();
}
