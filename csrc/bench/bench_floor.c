#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_floor.h"
#include "concurrent/counters.h"
#include "logbuffer/image.h"
#include "logbuffer/publication.h"
#include "sequencer.h"
#include "util/ls_error.h"

#define LS_BENCH_TERM (1 << 22)
#define LS_BENCH_RING (1 << 22)
#define LS_BENCH_COUNTERS 8

static int64_t ls_bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A log in heap memory with one subscriber (an image whose position is a counter). */
typedef struct ls_bench_stream_stct
{
    uint8_t *memory;
    size_t length;
    uint8_t *values;
    uint8_t *metadata;
    ls_counters_t counters;
    ls_publication_t pub;
    ls_image_t image;
} ls_bench_stream_t;

static int ls_bench_stream_init(ls_bench_stream_t *s, int32_t session_id)
{
    memset(s, 0, sizeof(*s));
    s->length = (size_t)ls_logbuffer_file_length(LS_BENCH_TERM, 4096);
    s->memory = aligned_alloc(4096, s->length);
    s->values = aligned_alloc(64, LS_BENCH_COUNTERS * LS_COUNTER_VALUE_LENGTH);
    s->metadata = aligned_alloc(64, LS_BENCH_COUNTERS * LS_COUNTER_METADATA_LENGTH);
    if (NULL == s->memory || NULL == s->values || NULL == s->metadata)
    {
        ls_set_error(LS_ESTATE, "bench: out of memory");
        return -1;
    }
    memset(s->memory, 0, s->length);
    memset(s->values, 0, LS_BENCH_COUNTERS * LS_COUNTER_VALUE_LENGTH);
    memset(s->metadata, 0, LS_BENCH_COUNTERS * LS_COUNTER_METADATA_LENGTH);
    uint8_t key[LS_STREAM_KEY_LENGTH] = { 0 };
    const int32_t stream_id = 1;
    memcpy(key + LS_STREAM_KEY_SESSION_ID_OFFSET, &session_id, sizeof(session_id));
    memcpy(key + LS_STREAM_KEY_STREAM_ID_OFFSET, &stream_id, sizeof(stream_id));
    if (ls_counters_init(&s->counters, s->metadata, LS_BENCH_COUNTERS * LS_COUNTER_METADATA_LENGTH, s->values,
                         LS_BENCH_COUNTERS * LS_COUNTER_VALUE_LENGTH) < 0 ||
        ls_logbuffer_format(s->memory, s->length, LS_BENCH_TERM, 4096, 1408, 0, 0, 0, session_id, stream_id, 1) < 0 ||
        ls_publication_init(&s->pub, s->memory, s->length, true, &s->counters) < 0)
    {
        return -1;
    }
    const int32_t id = ls_counters_allocate(
        &s->counters, LS_COUNTER_TYPE_SUBSCRIBER_POSITION, key, sizeof(key), "bench", 5, 1, 1, 1, 0);
    if (id < 0 || ls_image_init(&s->image, s->memory, s->length, ls_counters_value_addr(&s->counters, id), 0) < 0)
    {
        return -1;
    }
    return 0;
}

static void ls_bench_stream_close(ls_bench_stream_t *s)
{
    ls_image_close(&s->image);
    free(s->memory);
    free(s->values);
    free(s->metadata);
}

struct ls_bench_writer
{
    ls_bench_stream_t *stream;
    int64_t messages;
    int32_t size;
    int32_t batch;
};

static void *ls_bench_writer_run(void *arg)
{
    struct ls_bench_writer *w = arg;
    uint8_t *data = calloc((size_t)w->size * (size_t)w->batch + 1, 1);
    int64_t *offsets = calloc((size_t)w->batch, sizeof(int64_t));
    int32_t *lengths = calloc((size_t)w->batch, sizeof(int32_t));
    for (int32_t i = 0; i < w->batch; i++)
    {
        offsets[i] = (int64_t)i * w->size;
        lengths[i] = w->size;
    }
    for (int64_t sent = 0; sent < w->messages;)
    {
        if (w->batch > 1)
        {
            int32_t accepted = 0;
            const int64_t left = w->messages - sent;
            ls_publication_offer_batch(
                &w->stream->pub, data, offsets, lengths, left < w->batch ? (int32_t)left : w->batch, &accepted);
            sent += accepted;
            if (0 == accepted)
            {
                sched_yield();
            }
        }
        else if (ls_publication_offer(&w->stream->pub, data, (size_t)w->size, 0) > 0)
        {
            sent++;
        }
        else
        {
            sched_yield();
        }
    }
    free(data);
    free(offsets);
    free(lengths);
    return NULL;
}

static void ls_bench_count(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    (void)data;
    (void)length;
    (void)header;
    (*(int64_t *)clientd)++;
}

int64_t ls_bench_throughput_floor(int64_t messages, int32_t size, int32_t batch)
{
    ls_bench_stream_t *stream = malloc(sizeof(*stream));
    if (NULL == stream || ls_bench_stream_init(stream, 1) < 0)
    {
        free(stream);
        return -1;
    }
    struct ls_bench_writer writer = { stream, messages, size, batch < 1 ? 1 : batch };
    pthread_t thread;
    int64_t received = 0, start = 0;
    pthread_create(&thread, NULL, ls_bench_writer_run, &writer);
    while (received < messages)
    {
        const int64_t before = received;
        ls_image_poll(&stream->image, ls_bench_count, &received, 4096);
        if (0 == start && received > 0)
        {
            start = ls_bench_now_ns();
        }
        if (received == before)
        {
            sched_yield();
        }
    }
    const int64_t elapsed = ls_bench_now_ns() - start;
    pthread_join(thread, NULL);
    ls_bench_stream_close(stream);
    free(stream);
    return elapsed;
}

struct ls_bench_sender
{
    ls_ring_buffer_t *ingress;
    int32_t origin_id;
    int64_t commands;
    int32_t size;
};

static void *ls_bench_sender_run(void *arg)
{
    struct ls_bench_sender *s = arg;
    uint8_t command[4096] = { 0 };
    for (int64_t i = 1; i <= s->commands;)
    {
        if (LS_RB_SUCCESS == ls_sequencer_send(s->ingress, s->origin_id, i, command, (size_t)s->size))
        {
            i++;
        }
        else
        {
            sched_yield();
        }
    }
    return NULL;
}

int64_t ls_bench_sequencer_floor(int64_t commands, int32_t senders, int32_t size)
{
    if (senders < 1 || senders > 16 || size < 0 || size > 4096)
    {
        ls_set_error(LS_EINVAL, "bench: senders 1..16, size 0..4096");
        return -1;
    }
    ls_bench_stream_t *stream = malloc(sizeof(*stream));
    ls_sequencer_t *seq = malloc(sizeof(*seq));
    uint8_t *ring_memory = aligned_alloc(64, LS_BENCH_RING + LS_RB_TRAILER_LENGTH);
    ls_ring_buffer_t ingress;
    int64_t elapsed = -1;
    if (NULL != stream && NULL != seq && NULL != ring_memory && ls_bench_stream_init(stream, 2) == 0)
    {
        memset(ring_memory, 0, LS_BENCH_RING + LS_RB_TRAILER_LENGTH);
        if (ls_rb_init(&ingress, ring_memory, LS_BENCH_RING + LS_RB_TRAILER_LENGTH, true) == 0 &&
            ls_sequencer_init(seq, &ingress, &stream->pub, 1) == 0)
        {
            struct ls_bench_sender args[16];
            pthread_t threads[16];
            const int64_t start = ls_bench_now_ns();
            for (int32_t i = 0; i < senders; i++)
            {
                args[i] = (struct ls_bench_sender){ &ingress, i + 1, commands / senders + (i < commands % senders), size };
                pthread_create(&threads[i], NULL, ls_bench_sender_run, &args[i]);
            }
            int64_t received = 0;
            while (received < commands)
            {
                const int64_t work = ls_sequencer_do_work(seq, 4096);
                const int64_t before = received;
                ls_image_poll(&stream->image, ls_bench_count, &received, 4096);
                if (0 == work && received == before)
                {
                    sched_yield();
                }
            }
            elapsed = ls_bench_now_ns() - start;
            for (int32_t i = 0; i < senders; i++)
            {
                pthread_join(threads[i], NULL);
            }
            ls_sequencer_close(seq);
        }
        ls_bench_stream_close(stream);
    }
    free(stream);
    free(seq);
    free(ring_memory);
    return elapsed;
}

struct ls_bench_echo
{
    ls_bench_stream_t *ping;
    ls_bench_stream_t *pong;
    int64_t messages;
};

struct ls_bench_echo_state
{
    ls_bench_stream_t *pong;
    int64_t echoed;
};

static void ls_bench_echo_one(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    (void)header;
    struct ls_bench_echo_state *state = clientd;
    while (ls_publication_offer(&state->pong->pub, data, length, 0) < 0)
    {
    }
    state->echoed++;
}

static void *ls_bench_echo_run(void *arg)
{
    struct ls_bench_echo *e = arg;
    struct ls_bench_echo_state state = { e->pong, 0 };
    while (state.echoed < e->messages)
    {
        ls_image_poll(&e->ping->image, ls_bench_echo_one, &state, 1);
    }
    return NULL;
}

int64_t ls_bench_ping_floor(int64_t messages, int64_t warmup, int32_t size, int64_t *samples_ns)
{
    ls_bench_stream_t *ping = malloc(sizeof(*ping));
    ls_bench_stream_t *pong = malloc(sizeof(*pong));
    int64_t elapsed = -1;
    if (NULL != ping && NULL != pong && ls_bench_stream_init(ping, 3) == 0 && ls_bench_stream_init(pong, 4) == 0)
    {
        uint8_t payload[4096] = { 0 };
        const size_t length = size < 0 ? 0 : (size > 4096 ? 4096 : (size_t)size);
        struct ls_bench_echo echo = { ping, pong, messages + warmup };
        pthread_t thread;
        pthread_create(&thread, NULL, ls_bench_echo_run, &echo);
        const int64_t start = ls_bench_now_ns();
        for (int64_t i = 0; i < messages + warmup; i++)
        {
            const int64_t sent = ls_bench_now_ns();
            while (ls_publication_offer(&ping->pub, payload, length, 0) < 0)
            {
            }
            int64_t got = 0;
            while (0 == got)
            {
                ls_image_poll(&pong->image, ls_bench_count, &got, 1);
            }
            if (i >= warmup)
            {
                samples_ns[i - warmup] = ls_bench_now_ns() - sent;
            }
        }
        elapsed = ls_bench_now_ns() - start;
        pthread_join(thread, NULL);
        ls_bench_stream_close(ping);
        ls_bench_stream_close(pong);
    }
    free(ping);
    free(pong);
    return elapsed;
}
