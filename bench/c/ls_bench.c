/* ls_bench: the pure-C floor of `lockstep bench ping|throughput`, between two processes.
 *
 * The parent maps the shared memory (MAP_SHARED | MAP_ANONYMOUS), formats the log buffers
 * and allocates one subscriber position counter per log (stream key = session id and stream
 * id, as csrc/bench/bench_floor.c does), then forks. Each process then attaches to that memory on
 * its own, as a separate program would: ls_counters_init over the shared counters,
 * ls_publication_init (exclusive) on the log it writes, ls_image_init on the log it reads
 * with the position counter found by ls_counters_find_stream.
 *
 * Reading is one message at a time, as the Python fast path does: ls_image_peek_message,
 * copy the payload out, ls_image_consume_peeked; ls_image_poll_one when peek says -1
 * (padding at a term end, a fragmented message). Everything busy-spins.
 *
 *   ls_bench ping [--size N] [--messages N] [--warmup N] [--json]
 *   ls_bench throughput [--size N] [--messages N] [--batch N] [--json]
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "concurrent/counters.h"
#include "logbuffer/image.h"
#include "logbuffer/logbuffer.h"
#include "logbuffer/publication.h"
#include "util/ls_error.h"

#define BENCH_TERM_LENGTH (1 << 22)
#define BENCH_PAGE_SIZE 4096
#define BENCH_MTU 1408
#define BENCH_COUNTERS 8
#define BENCH_STALL_NS (30LL * 1000000000LL) /* give up after this long without progress */
#define BENCH_MAX_SIZE (BENCH_TERM_LENGTH / 8) /* the log's max_message_length */
#define BENCH_MAX_BATCH 65536

#define PING_SESSION 3
#define PONG_SESSION 4
#define DATA_SESSION 5
#define BENCH_STREAM_ID 1

static const char *const USAGE =
    "usage: ls_bench ping [--size N] [--messages N] [--warmup N] [--json]\n"
    "       ls_bench throughput [--size N] [--messages N] [--batch N] [--json]\n"
    "\n"
    "The pure-C floor of `lockstep bench`: two processes (fork) over shared memory, one\n"
    "exclusive publication and one image per direction, busy spin.\n"
    "\n"
    "  ping        round trips (the child echoes); prints p50 p90 p99 p99.9 max in ns\n"
    "  throughput  the child offers, this process reads one message at a time; msgs/s and\n"
    "              MB/s measured at the reader from its first message\n"
    "\n"
    "  --size N      payload bytes per message (default 32, at most 524288)\n"
    "  --messages N  measured messages (default: ping 100000, throughput 1000000)\n"
    "  --warmup N    ping: unrecorded round trips first (default 10000)\n"
    "  --batch N     throughput: messages per ls_publication_offer_batch (default 1: one\n"
    "                ls_publication_offer per message)\n"
    "  --json        one JSON object instead of the human line\n";

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* -- shared memory ---------------------------------------------------------------------- */

/* One log plus its counters, in one shared mapping made before fork. */
typedef struct bench_shm_stct
{
    uint8_t *base;
    size_t map_length;
    uint8_t *log;
    size_t log_length;
    uint8_t *values;
    uint8_t *metadata;
    int32_t session_id;
} bench_shm_t;

static int shm_create(bench_shm_t *shm, int32_t session_id)
{
    memset(shm, 0, sizeof(*shm));
    const int64_t log_length = ls_logbuffer_file_length(BENCH_TERM_LENGTH, BENCH_PAGE_SIZE);
    if (log_length < 0)
    {
        return -1;
    }
    shm->log_length = (size_t)log_length;
    shm->map_length = shm->log_length + BENCH_COUNTERS * (LS_COUNTER_VALUE_LENGTH + LS_COUNTER_METADATA_LENGTH);
    void *base = mmap(NULL, shm->map_length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (MAP_FAILED == base)
    {
        ls_set_error(LS_ESTATE, "mmap %zu bytes: %s", shm->map_length, strerror(errno));
        return -1;
    }
    shm->base = base;
    shm->log = shm->base;
    shm->values = shm->base + shm->log_length;
    shm->metadata = shm->values + BENCH_COUNTERS * LS_COUNTER_VALUE_LENGTH;
    shm->session_id = session_id;

    /* Zeroed by mmap. Format the log and allocate the subscriber's position counter. */
    ls_counters_t counters;
    uint8_t key[LS_STREAM_KEY_LENGTH] = { 0 };
    const int32_t stream_id = BENCH_STREAM_ID;
    memcpy(key + LS_STREAM_KEY_SESSION_ID_OFFSET, &session_id, sizeof(session_id));
    memcpy(key + LS_STREAM_KEY_STREAM_ID_OFFSET, &stream_id, sizeof(stream_id));
    if (ls_logbuffer_format(
            shm->log, shm->log_length, BENCH_TERM_LENGTH, BENCH_PAGE_SIZE, BENCH_MTU, 0, 0, 0, session_id,
            stream_id, 1) < 0 ||
        ls_counters_init(
            &counters, shm->metadata, BENCH_COUNTERS * LS_COUNTER_METADATA_LENGTH, shm->values,
            BENCH_COUNTERS * LS_COUNTER_VALUE_LENGTH) < 0 ||
        ls_counters_allocate(
            &counters, LS_COUNTER_TYPE_SUBSCRIBER_POSITION, key, sizeof(key), "ls_bench", 8, 1, 1, 1, 0) < 0)
    {
        return -1;
    }
    return 0;
}

static void shm_destroy(bench_shm_t *shm)
{
    if (NULL != shm->base)
    {
        munmap(shm->base, shm->map_length);
        shm->base = NULL;
    }
}

/* -- one process's view: a publication on one log, or an image on another --------------- */

typedef struct bench_writer_stct
{
    ls_counters_t counters;
    ls_publication_t pub;
} bench_writer_t;

static int writer_attach(bench_writer_t *w, bench_shm_t *shm)
{
    if (ls_counters_init(
            &w->counters, shm->metadata, BENCH_COUNTERS * LS_COUNTER_METADATA_LENGTH, shm->values,
            BENCH_COUNTERS * LS_COUNTER_VALUE_LENGTH) < 0)
    {
        return -1;
    }
    return ls_publication_init(&w->pub, shm->log, shm->log_length, true, &w->counters);
}

typedef struct bench_reader_stct
{
    ls_counters_t counters;
    ls_image_t image;
    ls_image_scan_t *scan; /* for ls_image_poll_one, the fallback */
    uint8_t *log;
} bench_reader_t;

static int reader_attach(bench_reader_t *r, bench_shm_t *shm)
{
    memset(r, 0, sizeof(*r));
    r->log = shm->log;
    if (ls_counters_init(
            &r->counters, shm->metadata, BENCH_COUNTERS * LS_COUNTER_METADATA_LENGTH, shm->values,
            BENCH_COUNTERS * LS_COUNTER_VALUE_LENGTH) < 0)
    {
        return -1;
    }
    int32_t id = -1;
    if (ls_counters_find_stream(
            &r->counters, LS_COUNTER_TYPE_SUBSCRIBER_POSITION, shm->session_id, BENCH_STREAM_ID, &id, 1) < 1)
    {
        ls_set_error(LS_ESTATE, "no subscriber position counter for session %d", shm->session_id);
        return -1;
    }
    r->scan = malloc(sizeof(*r->scan));
    if (NULL == r->scan)
    {
        ls_set_error(LS_ESTATE, "out of memory");
        return -1;
    }
    if (ls_image_init(&r->image, shm->log, shm->log_length, ls_counters_value_addr(&r->counters, id), 0) < 0)
    {
        free(r->scan);
        r->scan = NULL;
        return -1;
    }
    return 0;
}

static void reader_detach(bench_reader_t *r)
{
    if (NULL != r->scan)
    {
        ls_image_close(&r->image);
        free(r->scan);
        r->scan = NULL;
    }
}

#define READ_NONE (-2)
#define READ_ERROR (-1)

/* Copies the next whole message (at most `capacity` bytes of it) into `out` and moves the
 * position past it. Returns its length, READ_NONE when nothing is there yet, READ_ERROR. */
static int64_t read_one(bench_reader_t *r, uint8_t *out, size_t capacity)
{
    int32_t length;
    const uint8_t *data = ls_image_peek_message(&r->image, &length);
    if (NULL != data)
    {
        memcpy(out, data, (size_t)length < capacity ? (size_t)length : capacity);
        ls_image_consume_peeked(&r->image, length);
        return length;
    }
    if (0 == length)
    {
        return READ_NONE;
    }
    /* Padding at the end of a term or a fragmented message: the scan path. */
    const int32_t result = ls_image_poll_one(&r->image, r->scan);
    if (0 == result)
    {
        return READ_NONE;
    }
    if (result < 0)
    {
        return READ_ERROR;
    }
    const size_t n = (size_t)r->scan->lengths[0];
    const uint8_t *from = r->scan->data_offsets[0] < 0 ? r->image.assembler.buffer :
        r->image.log.terms[r->scan->partitions[0]] + r->scan->data_offsets[0];
    memcpy(out, from, n < capacity ? n : capacity);
    return (int64_t)n;
}

/* -- a watchdog for the spin loops: a stuck or dead peer must not hang us ---------------- */

typedef struct bench_watch_stct
{
    int64_t last_progress_ns;
    uint64_t idle;
    pid_t child;      /* parent side: the child to check on, else 0 */
    bool child_done;  /* parent side: the child exited 0 (and was reaped) */
    const char *what; /* what we are waiting for, for the error */
} bench_watch_t;

static void watch_init(bench_watch_t *w, pid_t child, const char *what)
{
    w->last_progress_ns = now_ns();
    w->idle = 0;
    w->child = child;
    w->child_done = false;
    w->what = what;
}

static inline void watch_progress(bench_watch_t *w)
{
    w->idle = 0;
}

/* Called on every idle spin; every 16k spins looks at the clock and the child.
 * Returns -1 (with the error set) when it is time to give up. */
static inline int watch_idle(bench_watch_t *w)
{
    if ((++w->idle & 0x3FFF) != 0)
    {
        return 0;
    }
    const int64_t now = now_ns();
    if (w->idle == 0x4000)
    {
        w->last_progress_ns = now; /* the first check of this wait: the wait starts here */
    }
    if (w->child > 0 && !w->child_done)
    {
        int status;
        const pid_t pid = waitpid(w->child, &status, WNOHANG);
        if (pid == w->child)
        {
            if (WIFEXITED(status) && 0 == WEXITSTATUS(status))
            {
                w->child_done = true;
            }
            else
            {
                w->child_done = true;
                w->child = 0;
                ls_set_error(
                    LS_ESTATE, "the child process %s %d while %s", WIFEXITED(status) ? "exited with" : "died of signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), w->what);
                return -1;
            }
        }
    }
    if (now - w->last_progress_ns > BENCH_STALL_NS)
    {
        ls_set_error(LS_ESTATE, "no progress for %lld s while %s", BENCH_STALL_NS / 1000000000LL, w->what);
        return -1;
    }
    return 0;
}

/* Offers one message, spinning on back pressure; -1 on a hard error or a stall. */
static int offer_spin(bench_writer_t *w, const uint8_t *data, size_t length, bench_watch_t *watch)
{
    for (;;)
    {
        const int64_t result = ls_publication_offer(&w->pub, data, length, 0);
        if (result > 0)
        {
            watch_progress(watch);
            return 0;
        }
        if (LS_PUBLICATION_BACK_PRESSURED != result && LS_PUBLICATION_NOT_CONNECTED != result &&
            LS_PUBLICATION_ADMIN_ACTION != result)
        {
            ls_set_error(LS_ESTATE, "offer failed with %" PRId64 " (%s)", result, ls_errmsg());
            return -1;
        }
        if (watch_idle(watch) < 0)
        {
            return -1;
        }
    }
}

/* -- the child ---------------------------------------------------------------------------- */

/* After fork: die with the parent, even if it died before prctl. */
static void child_setup(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
    {
        _exit(1);
    }
}

static void child_fail(const char *what)
{
    fprintf(stderr, "ls_bench: child: %s: %s\n", what, ls_errmsg());
    fflush(stderr);
    _exit(1);
}

/* The ping child: echoes `total` messages from the ping log onto the pong log. */
static void child_echo(bench_shm_t *ping, bench_shm_t *pong, int64_t total, int32_t size)
{
    bench_reader_t reader;
    bench_writer_t writer;
    bench_watch_t watch;
    uint8_t *buffer = malloc((size_t)size + 1);
    if (NULL == buffer || reader_attach(&reader, ping) < 0 || writer_attach(&writer, pong) < 0)
    {
        child_fail("attach");
    }
    watch_init(&watch, 0, "waiting for a ping");
    for (int64_t i = 0; i < total; i++)
    {
        int64_t length;
        watch.what = "waiting for a ping";
        while (READ_NONE == (length = read_one(&reader, buffer, (size_t)size)))
        {
            if (watch_idle(&watch) < 0)
            {
                child_fail("echo");
            }
        }
        if (READ_ERROR == length)
        {
            child_fail("read");
        }
        if (length > size)
        {
            ls_set_error(LS_ESTATE, "a ping of %" PRId64 " bytes, expected %d", length, size);
            child_fail("echo");
        }
        watch_progress(&watch);
        watch.what = "echoing";
        if (offer_spin(&writer, buffer, (size_t)length, &watch) < 0)
        {
            child_fail("echo");
        }
    }
    reader_detach(&reader);
    free(buffer);
    _exit(0);
}

/* The throughput child: offers `messages` of `size` bytes, the first 8 bytes of each (when
 * size >= 8) its sequence number, one offer each or `batch` per offer_batch. */
static void child_produce(bench_shm_t *data_shm, int64_t messages, int32_t size, int32_t batch)
{
    bench_writer_t writer;
    bench_watch_t watch;
    uint8_t *data = calloc((size_t)size * (size_t)batch + 8, 1);
    int64_t *offsets = calloc((size_t)batch, sizeof(int64_t));
    int32_t *lengths = calloc((size_t)batch, sizeof(int32_t));
    if (NULL == data || NULL == offsets || NULL == lengths || writer_attach(&writer, data_shm) < 0)
    {
        child_fail("attach");
    }
    for (int32_t i = 0; i < batch; i++)
    {
        offsets[i] = (int64_t)i * size;
        lengths[i] = size;
    }
    watch_init(&watch, 0, "offering (the reader does not keep up)");
    for (int64_t sent = 0; sent < messages;)
    {
        if (batch > 1)
        {
            const int64_t left = messages - sent;
            const int32_t n = left < batch ? (int32_t)left : batch;
            if (size >= 8)
            {
                for (int32_t i = 0; i < n; i++)
                {
                    const int64_t seq = sent + i;
                    memcpy(data + offsets[i], &seq, sizeof(seq));
                }
            }
            int32_t accepted = 0;
            const int64_t result = ls_publication_offer_batch(&writer.pub, data, offsets, lengths, n, &accepted);
            if (accepted > 0)
            {
                sent += accepted;
                watch_progress(&watch);
            }
            else if (LS_PUBLICATION_BACK_PRESSURED != result && LS_PUBLICATION_NOT_CONNECTED != result &&
                     LS_PUBLICATION_ADMIN_ACTION != result)
            {
                ls_set_error(LS_ESTATE, "offer_batch failed with %" PRId64 " (%s)", result, ls_errmsg());
                child_fail("produce");
            }
            else if (watch_idle(&watch) < 0)
            {
                child_fail("produce");
            }
        }
        else
        {
            if (size >= 8)
            {
                memcpy(data, &sent, sizeof(sent));
            }
            if (offer_spin(&writer, data, (size_t)size, &watch) < 0)
            {
                child_fail("produce");
            }
            sent++;
        }
    }
    free(data);
    free(offsets);
    free(lengths);
    _exit(0);
}

/* -- the parent ----------------------------------------------------------------------------- */

static pid_t fork_child(void)
{
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0)
    {
        ls_set_error(LS_ESTATE, "fork: %s", strerror(errno));
    }
    return pid;
}

/* Reaps the child (killing it first when `kill_it`); -1 when it did not exit 0. */
static int reap_child(bench_watch_t *watch, bool kill_it)
{
    if (watch->child <= 0 || watch->child_done)
    {
        return watch->child > 0 ? 0 : -1;
    }
    if (kill_it)
    {
        kill(watch->child, SIGKILL);
    }
    int status = 0;
    const int64_t deadline = now_ns() + BENCH_STALL_NS;
    for (;;)
    {
        const pid_t pid = waitpid(watch->child, &status, WNOHANG);
        if (pid == watch->child)
        {
            break;
        }
        if (pid < 0 && EINTR != errno)
        {
            return -1;
        }
        if (now_ns() > deadline)
        {
            kill(watch->child, SIGKILL);
            waitpid(watch->child, &status, 0);
            ls_set_error(LS_ESTATE, "the child did not exit");
            return -1;
        }
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
    }
    watch->child_done = true;
    if (kill_it)
    {
        return -1;
    }
    if (!WIFEXITED(status) || 0 != WEXITSTATUS(status))
    {
        ls_set_error(
            LS_ESTATE, "the child process %s %d", WIFEXITED(status) ? "exited with" : "died of signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return -1;
    }
    return 0;
}

static int compare_i64(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p of them at or below it. */
static int64_t percentile(const int64_t *sorted, int64_t n, double p)
{
    int64_t rank = (int64_t)(p * (double)n + 0.999999);
    if (rank < 1)
    {
        rank = 1;
    }
    return sorted[(rank > n ? n : rank) - 1];
}

struct options
{
    int32_t size;
    int64_t messages;
    int64_t warmup;
    int32_t batch;
    bool json;
};

static int run_ping(const struct options *o)
{
    bench_shm_t ping, pong;
    bench_reader_t reader = { 0 };
    bench_writer_t writer;
    bench_watch_t watch;
    const int64_t total = o->messages + o->warmup;
    int64_t *samples = malloc((size_t)o->messages * sizeof(int64_t));
    uint8_t *payload = calloc((size_t)o->size + 8, 1);
    uint8_t *echo = calloc((size_t)o->size + 8, 1);
    int rc = -1;
    bool attached = false;
    watch_init(&watch, 0, "starting");
    memset(&ping, 0, sizeof(ping));
    memset(&pong, 0, sizeof(pong));
    if (NULL == samples || NULL == payload || NULL == echo)
    {
        ls_set_error(LS_ESTATE, "out of memory");
        goto done;
    }
    if (shm_create(&ping, PING_SESSION) < 0 || shm_create(&pong, PONG_SESSION) < 0)
    {
        goto done;
    }
    const pid_t parent = getpid();
    const pid_t child = fork_child();
    if (0 == child)
    {
        child_setup(parent);
        child_echo(&ping, &pong, total, o->size);
    }
    if (child < 0)
    {
        goto done;
    }
    watch.child = child;
    if (writer_attach(&writer, &ping) < 0 || reader_attach(&reader, &pong) < 0)
    {
        goto done;
    }
    attached = true;
    for (int64_t i = 0; i < total; i++)
    {
        if (o->size >= 8)
        {
            memcpy(payload, &i, sizeof(i));
        }
        watch.what = "sending a ping";
        const int64_t start = now_ns();
        if (offer_spin(&writer, payload, (size_t)o->size, &watch) < 0)
        {
            goto done;
        }
        int64_t length;
        watch.what = "waiting for the echo";
        while (READ_NONE == (length = read_one(&reader, echo, (size_t)o->size)))
        {
            if (watch_idle(&watch) < 0)
            {
                goto done;
            }
        }
        const int64_t end = now_ns();
        watch_progress(&watch);
        if (READ_ERROR == length)
        {
            ls_set_error(LS_ESTATE, "read: %s", ls_errmsg());
            goto done;
        }
        if (length != o->size || (o->size >= 8 && 0 != memcmp(echo, &i, sizeof(i))))
        {
            ls_set_error(LS_ESTATE, "round trip %" PRId64 ": the echo does not match the ping", i);
            goto done;
        }
        if (i >= o->warmup)
        {
            samples[i - o->warmup] = end - start;
        }
    }
    if (reap_child(&watch, false) < 0)
    {
        goto done;
    }
    qsort(samples, (size_t)o->messages, sizeof(int64_t), compare_i64);
    const int64_t n = o->messages;
    const int64_t p50 = percentile(samples, n, 0.50), p90 = percentile(samples, n, 0.90),
                  p99 = percentile(samples, n, 0.99), p999 = percentile(samples, n, 0.999), max = samples[n - 1];
    if (o->json)
    {
        printf("{\"p50_ns\": %" PRId64 ", \"p90_ns\": %" PRId64 ", \"p99_ns\": %" PRId64 ", \"p999_ns\": %" PRId64
               ", \"max_ns\": %" PRId64 ", \"messages\": %" PRId64 ", \"size\": %d, \"warmup\": %" PRId64
               ", \"processes\": 2, \"idle\": \"spin\"}\n",
               p50, p90, p99, p999, max, n, o->size, o->warmup);
    }
    else
    {
        printf("ping (C, 2 processes, busy spin): %" PRId64 " round trips of %d B: p50 %.2f us, p90 %.2f us, "
               "p99 %.2f us, p99.9 %.2f us, max %.2f us\n",
               n, o->size, p50 / 1e3, p90 / 1e3, p99 / 1e3, p999 / 1e3, max / 1e3);
    }
    rc = 0;
done:
    if (0 != rc)
    {
        reap_child(&watch, true);
    }
    if (attached)
    {
        reader_detach(&reader);
    }
    shm_destroy(&ping);
    shm_destroy(&pong);
    free(samples);
    free(payload);
    free(echo);
    return rc;
}

static int run_throughput(const struct options *o)
{
    bench_shm_t data_shm;
    bench_reader_t reader = { 0 };
    bench_watch_t watch;
    uint8_t *buffer = calloc((size_t)o->size + 8, 1);
    int rc = -1;
    bool attached = false;
    memset(&data_shm, 0, sizeof(data_shm));
    watch_init(&watch, 0, "starting");
    if (NULL == buffer)
    {
        ls_set_error(LS_ESTATE, "out of memory");
        goto done;
    }
    if (shm_create(&data_shm, DATA_SESSION) < 0)
    {
        goto done;
    }
    const pid_t parent = getpid();
    const pid_t child = fork_child();
    if (0 == child)
    {
        child_setup(parent);
        child_produce(&data_shm, o->messages, o->size, o->batch);
    }
    if (child < 0)
    {
        goto done;
    }
    watch.child = child;
    watch.what = "waiting for messages";
    if (reader_attach(&reader, &data_shm) < 0)
    {
        goto done;
    }
    attached = true;
    int64_t start = 0;
    for (int64_t received = 0; received < o->messages;)
    {
        const int64_t length = read_one(&reader, buffer, (size_t)o->size);
        if (READ_NONE == length)
        {
            if (watch_idle(&watch) < 0)
            {
                goto done;
            }
            continue;
        }
        if (0 == received)
        {
            start = now_ns();
        }
        if (READ_ERROR == length)
        {
            ls_set_error(LS_ESTATE, "read: %s", ls_errmsg());
            goto done;
        }
        if (length != o->size || (o->size >= 8 && 0 != memcmp(buffer, &received, sizeof(received))))
        {
            ls_set_error(LS_ESTATE, "message %" PRId64 " is not the one sent", received);
            goto done;
        }
        received++;
        watch.idle = 0;
    }
    const int64_t end = now_ns();
    if (reap_child(&watch, false) < 0)
    {
        goto done;
    }
    /* The clock starts at the first message, so it times messages - 1 of them. */
    const double seconds = (double)(end - start) / 1e9;
    const double rate = seconds > 0 ? (double)(o->messages > 1 ? o->messages - 1 : 1) / seconds : 0.0;
    const double mb = rate * o->size / 1e6;
    if (o->json)
    {
        printf("{\"msgs_per_sec\": %.1f, \"mb_per_sec\": %.2f, \"messages\": %" PRId64 ", \"size\": %d, "
               "\"batch\": %d, \"seconds\": %.6f, \"ns_per_msg\": %.3f, \"processes\": 2, \"idle\": \"spin\"}\n",
               rate, mb, o->messages, o->size, o->batch, seconds, rate > 0 ? 1e9 / rate : 0.0);
    }
    else
    {
        printf("throughput (C, 2 processes, busy spin): %" PRId64 " messages of %d B in %.3f s (%s): "
               "%.0f msgs/s, %.1f MB/s\n",
               o->messages, o->size, seconds, o->batch > 1 ? "offer_batch" : "one offer each", rate, mb);
    }
    rc = 0;
done:
    if (0 != rc)
    {
        reap_child(&watch, true);
    }
    if (attached)
    {
        reader_detach(&reader);
    }
    shm_destroy(&data_shm);
    free(buffer);
    return rc;
}

/* -- arguments -------------------------------------------------------------------------- */

__attribute__((format(printf, 1, 2))) static int bad_argument(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "ls_bench: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, " (try --help)\n");
    va_end(args);
    return 2;
}

static bool parse_int(const char *text, int64_t min, int64_t max, int64_t *value)
{
    if (NULL == text || '\0' == *text)
    {
        return false;
    }
    char *end;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (0 != errno || '\0' != *end || v < min || v > max)
    {
        return false;
    }
    *value = v;
    return true;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
    {
        if (0 == strcmp(argv[i], "--help") || 0 == strcmp(argv[i], "-h"))
        {
            fputs(USAGE, stdout);
            return 0;
        }
    }
    if (argc < 2)
    {
        fprintf(stderr, "ls_bench: missing command: ping or throughput (try --help)\n");
        return 2;
    }
    const bool ping = 0 == strcmp(argv[1], "ping");
    if (!ping && 0 != strcmp(argv[1], "throughput"))
    {
        return bad_argument("unknown command '%s': ping or throughput", argv[1]);
    }
    struct options o = { 32, ping ? 100000 : 1000000, 10000, 1, false };
    for (int i = 2; i < argc; i++)
    {
        const char *arg = argv[i];
        int64_t v;
        if (0 == strcmp(arg, "--json"))
        {
            o.json = true;
            continue;
        }
        const bool known = 0 == strcmp(arg, "--size") || 0 == strcmp(arg, "--messages") ||
                           (ping && 0 == strcmp(arg, "--warmup")) || (!ping && 0 == strcmp(arg, "--batch"));
        if (!known)
        {
            return bad_argument("unknown option '%s'", arg);
        }
        if (i + 1 >= argc)
        {
            return bad_argument("%s needs a value", arg);
        }
        const char *value = argv[++i];
        if (0 == strcmp(arg, "--size"))
        {
            if (!parse_int(value, 0, BENCH_MAX_SIZE, &v))
            {
                return bad_argument("--size: expected 0..524288, got '%s'", value);
            }
            o.size = (int32_t)v;
        }
        else if (0 == strcmp(arg, "--messages"))
        {
            if (!parse_int(value, 1, INT64_C(1) << 40, &v))
            {
                return bad_argument("--messages: expected a positive integer, got '%s'", value);
            }
            o.messages = v;
        }
        else if (0 == strcmp(arg, "--warmup"))
        {
            if (!parse_int(value, 0, INT64_C(1) << 40, &v))
            {
                return bad_argument("--warmup: expected an integer >= 0, got '%s'", value);
            }
            o.warmup = v;
        }
        else
        {
            if (!parse_int(value, 1, BENCH_MAX_BATCH, &v))
            {
                return bad_argument("--batch: expected 1..65536, got '%s'", value);
            }
            o.batch = (int32_t)v;
        }
    }
    if ((int64_t)o.size * o.batch > (INT64_C(1) << 30))
    {
        fprintf(stderr, "ls_bench: --size x --batch must be at most 1 GiB (try --help)\n");
        return 2;
    }
    const int rc = ping ? run_ping(&o) : run_throughput(&o);
    if (rc < 0)
    {
        fprintf(stderr, "ls_bench: %s: %s\n", argv[1], ls_errmsg());
        return 1;
    }
    return 0;
}
