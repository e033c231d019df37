/* Publication: exact frame bytes, offer -> poll round trips (exclusive and shared), fragmentation,
 * padding and rotation with cleaning, back-pressure and every status, try_claim commit/abort,
 * batch offer, and shared writers in several threads against one consumer. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lockstep.h"
#include "ls_test.h"

#define TERM (64 * 1024)
#define LENGTH (3 * TERM + 4096)
#define SESSION 0x11223344
#define STREAM 1001

static _Alignas(64) uint8_t memory[LENGTH];
#define MAX_COUNTERS 128

static _Alignas(64) uint8_t values[MAX_COUNTERS * LS_COUNTER_VALUE_LENGTH];
static _Alignas(64) uint8_t metadata[MAX_COUNTERS * LS_COUNTER_METADATA_LENGTH];
static ls_counters_t counters;
static int32_t sub_id;

/* A counter keyed by this test's log (session, stream), as subscribers and publishers make. */
static int32_t alloc_stream_counter(int32_t type_id, int64_t registration_id)
{
    uint8_t key[LS_STREAM_KEY_LENGTH] = { 0 };
    const int32_t session = SESSION, stream = STREAM;
    memcpy(key + LS_STREAM_KEY_REGISTRATION_ID_OFFSET, &registration_id, sizeof(registration_id));
    memcpy(key + LS_STREAM_KEY_SESSION_ID_OFFSET, &session, sizeof(session));
    memcpy(key + LS_STREAM_KEY_STREAM_ID_OFFSET, &stream, sizeof(stream));
    return ls_counters_allocate(&counters, type_id, key, sizeof(key), "sub-pos", 7, registration_id, 1, 1, 0);
}

static void setup(ls_publication_t *pub, bool exclusive, int32_t initial, int32_t active, int32_t offset)
{
    memset(memory, 0, sizeof(memory));
    memset(values, 0, sizeof(values));
    memset(metadata, 0, sizeof(metadata));
    LS_CHECK(0 == ls_logbuffer_format(memory, LENGTH, TERM, 4096, 1408, initial, active, offset, SESSION, STREAM, 1));
    LS_CHECK(0 == ls_counters_init(&counters, metadata, sizeof(metadata), values, sizeof(values)));
    sub_id = alloc_stream_counter(LS_COUNTER_TYPE_SUBSCRIBER_POSITION, 1);
    LS_CHECK(sub_id >= 0);
    LS_CHECK(0 == ls_publication_init(pub, memory, LENGTH, exclusive, &counters));
}

static int64_t *sub_position(void)
{
    return ls_counters_value_addr(&counters, sub_id);
}

static int32_t i32_at(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void test_frame_header_bytes(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        setup(&pub, exclusive, 7, 7, 0);
        LS_CHECK(64 == ls_publication_offer(&pub, (const uint8_t *)"hello", 5, 0x0102030405060708LL));
        const uint8_t expected[32] = {
            37, 0, 0, 0,                    /* frame length */
            0, 0xC0, 1, 0,                  /* version, flags, type DATA */
            0, 0, 0, 0,                     /* term offset */
            0x44, 0x33, 0x22, 0x11,         /* session id */
            0xE9, 0x03, 0, 0,               /* stream id */
            7, 0, 0, 0,                     /* term id */
            8, 7, 6, 5, 4, 3, 2, 1 };       /* reserved value */
        LS_CHECK(0 == memcmp(expected, memory, 32));
        LS_CHECK(0 == memcmp("hello", memory + 32, 5));
        LS_CHECK(64 == ls_publication_position(&pub));
        LS_CHECK(((int64_t)7 << 32 | 64) == ls_logbuffer_raw_tail(&pub.log, 0));
        LS_CHECK(96 == ls_publication_offer(&pub, NULL, 0, 0));
        LS_CHECK(32 == i32_at(memory + 64) && 64 == i32_at(memory + 64 + 8));
    }
}

struct received
{
    int count;
    int bad;
    int64_t positions[4096];
    int64_t last_position;
};

static uint8_t pattern(int i, int j)
{
    return (uint8_t)(i * 31 + j);
}

static int32_t message_length(int i)
{
    return i % 50 == 7 ? 1376 * 2 + 100 : (i * 37) % 1500;
}

static void verify(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    struct received *r = clientd;
    const int i = r->count;
    if ((int32_t)length != message_length(i) || header->flags != 0xC0 || header->session_id != SESSION ||
        header->stream_id != STREAM || header->position <= r->last_position)
    {
        r->bad++;
    }
    for (size_t j = 0; j < length; j++)
    {
        if (data[j] != pattern(i, (int)j))
        {
            r->bad++;
            break;
        }
    }
    if (i < 4096 && header->position != r->positions[i])
    {
        r->bad++;
    }
    r->last_position = header->position;
    r->count++;
}

static void round_trip(bool exclusive, int32_t initial)
{
    ls_publication_t pub;
    ls_image_t image;
    static uint8_t buffer[4096];
    static struct received r;
    memset(&r, 0, sizeof(r));
    setup(&pub, exclusive, initial, initial, 0);
    LS_CHECK(0 == ls_image_init(&image, memory, LENGTH, sub_position(), 0));

    const int messages = 2000;
    int sent = 0;
    int polls = 0;
    while (r.count < messages && polls < 100000)
    {
        if (sent < messages)
        {
            const int32_t length = message_length(sent);
            for (int32_t j = 0; j < length; j++)
            {
                buffer[j] = pattern(sent, j);
            }
            const int64_t result = ls_publication_offer(&pub, buffer, (size_t)length, 0);
            if (result > 0)
            {
                r.positions[sent++] = result;
                continue;
            }
            LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == result);
        }
        LS_CHECK(ls_image_poll(&image, verify, &r, 10) >= 0);
        polls++;
    }
    LS_CHECK(messages == r.count);
    LS_CHECK(0 == r.bad);
    LS_CHECK(r.positions[messages - 1] == ls_image_position(&image));
    LS_CHECK(ls_publication_position(&pub) == ls_image_position(&image));
    LS_CHECK(ls_image_position(&image) > 5 * TERM); /* several rotations */
    ls_image_close(&image);
}

static void test_round_trip(void)
{
    round_trip(true, 0);
    round_trip(false, 0);
    round_trip(true, INT32_MAX - 2);  /* term ids wrap while publishing */
    round_trip(false, INT32_MAX - 2);
}

static void test_fragmentation(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        setup(&pub, exclusive, 0, 0, 0);
        static uint8_t message[3 * 1408];
        for (int j = 0; j < (int)sizeof(message); j++)
        {
            message[j] = pattern(1, j);
        }
        /* 4224 bytes = 3 x 1376 + 96: four frames, claimed together. */
        LS_CHECK(3 * 1408 + 128 == ls_publication_offer(&pub, message, sizeof(message), 9));
        const int32_t offsets[4] = { 0, 1408, 2816, 4224 };
        const int32_t lengths[4] = { 1408, 1408, 1408, 128 };
        const uint8_t flags[4] = { 0x80, 0x00, 0x00, 0x40 };
        for (int f = 0; f < 4; f++)
        {
            const uint8_t *frame = memory + offsets[f];
            LS_CHECK(lengths[f] == i32_at(frame));
            LS_CHECK(flags[f] == frame[5] && 1 == frame[6]);
            LS_CHECK(offsets[f] == i32_at(frame + 8));
            LS_CHECK(0 == memcmp(frame + 32, message + f * 1376, (size_t)(lengths[f] - 32)));
        }
        LS_CHECK(LS_PUBLICATION_ERROR == ls_publication_offer(&pub, message, TERM / 8 + 1, 0));
        LS_CHECK(LS_EINVAL == ls_errcode());
        LS_CHECK(NULL != strstr(ls_errmsg(), "length"));
    }
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
    {
        if (p[i])
        {
            return false;
        }
    }
    return true;
}

static void test_padding_and_rotation(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        setup(&pub, exclusive, 40, 40, 0);
        memset(memory + 2 * TERM, 0xEE, TERM); /* stale bytes in the partition two ahead */
        static uint8_t message[1000];
        int64_t position = 0;
        /* 1056-byte frames: 62 fit, 64 bytes of padding end term 40. */
        for (int i = 0; i < 62; i++)
        {
            *sub_position() = position;
            position = ls_publication_offer(&pub, message, sizeof(message), 0);
        }
        LS_CHECK(62 * 1056 == position);
        LS_CHECK(0 == ls_logbuffer_active_term_count(&pub.log));
        *sub_position() = position;
        position = ls_publication_offer(&pub, message, sizeof(message), 0);
        LS_CHECK(TERM + 1056 == position); /* retried in the next term: no ADMIN_ACTION */
        LS_CHECK(1 == ls_logbuffer_active_term_count(&pub.log));
        const uint8_t pad[32] = {
            64, 0, 0, 0, 0, 0xC0, 0, 0, 0xC0, 0xFF, 0, 0, 0x44, 0x33, 0x22, 0x11, 0xE9, 0x03, 0, 0, 40, 0, 0, 0 };
        LS_CHECK(0 == memcmp(pad, memory + 65472, 32));
        LS_CHECK(41 == memory[TERM + 20]);       /* first frame of term 41 */
        LS_CHECK(all_zero(memory + 2 * TERM, TERM)); /* cleaned ahead on rotation */

        /* Keep going through several terms; each rotation cleans the slot two ahead. */
        for (int i = 0; i < 62 * 6; i++)
        {
            *sub_position() = position;
            position = ls_publication_offer(&pub, message, sizeof(message), 0);
            LS_CHECK(position > 0);
        }
        const int32_t count = ls_logbuffer_active_term_count(&pub.log);
        LS_CHECK(6 == count || 7 == count);
        LS_CHECK(all_zero(pub.log.terms[(count + 1) % 3], TERM));
        LS_CHECK(40 + count == ls_logbuffer_term_id(&pub.log, position));
    }
}

static void test_back_pressure(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        setup(&pub, exclusive, 0, 0, 0);
        const int32_t limit_id = ls_counters_allocate(&counters, 1, NULL, 0, "pub-lmt", 7, 2, 2, 2, 0);
        pub.publisher_limit_id = limit_id;
        uint8_t message[100] = { 0 };
        int64_t position = 0, result;
        while ((result = ls_publication_offer(&pub, message, sizeof(message), 0)) > 0)
        {
            position = result;
        }
        LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == result);
        LS_CHECK(position >= TERM / 2 && position < TERM / 2 + 160);
        LS_CHECK(TERM / 2 == ls_counters_get(&counters, limit_id));
        LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == ls_publication_offer(&pub, message, 0, 0));
        *sub_position() = 1024;
        LS_CHECK(position + 160 == ls_publication_offer(&pub, message, sizeof(message), 0));
        LS_CHECK(1024 + TERM / 2 == ls_counters_get(&counters, limit_id));

        /* The slowest of several subscribers bounds the publisher. */
        const int32_t second = alloc_stream_counter(LS_COUNTER_TYPE_SUBSCRIBER_POSITION, 3);
        ls_counters_set(&counters, second, 0);
        *sub_position() = position + 160;
        LS_CHECK(TERM / 2 == ls_publication_refresh_limit(&pub));
        LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == ls_publication_offer(&pub, message, sizeof(message), 0));
        LS_CHECK(2 == pub.subscriber_count);
        LS_CHECK(0 == ls_counters_free(&counters, second, 0));
        LS_CHECK(0 == ls_counters_free(&counters, sub_id, 0));
        LS_CHECK(LS_PUBLICATION_NOT_CONNECTED == ls_publication_refresh_limit(&pub));
        LS_CHECK(0 == pub.subscriber_count);
    }
}

/* Any number of subscribers bounds the publisher: the slowest of 100 is the last found. */
static void test_many_subscribers(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        uint8_t message[100] = { 0 };
        setup(&pub, exclusive, 0, 0, 0);
        ls_counters_set(&counters, sub_id, TERM);
        int32_t last = -1;
        for (int64_t i = 2; i <= 100; i++)
        {
            last = alloc_stream_counter(LS_COUNTER_TYPE_SUBSCRIBER_POSITION, i);
            LS_CHECK(last >= 0);
            ls_counters_set(&counters, last, i < 100 ? TERM : 0);
        }
        LS_CHECK(TERM / 2 == ls_publication_refresh_limit(&pub));
        LS_CHECK(100 == pub.subscriber_count);
        int64_t result = 0;
        while ((result = ls_publication_offer(&pub, message, sizeof(message), 0)) > 0)
        {
        }
        LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == result);
        LS_CHECK(ls_publication_position(&pub) < TERM / 2 + 160);
        ls_counters_set(&counters, last, TERM);
        LS_CHECK(ls_publication_offer(&pub, message, sizeof(message), 0) > 0);
    }
}

static void test_statuses(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        uint8_t message[100] = { 0 };
        setup(&pub, exclusive, 0, 0, 0);
        pub.counters = NULL;
        LS_CHECK(LS_PUBLICATION_NOT_CONNECTED == ls_publication_offer(&pub, message, sizeof(message), 0));
        pub.counters = &counters;
        /* A subscriber of another stream, or another session, does not connect us. */
        LS_CHECK(0 == ls_counters_free(&counters, sub_id, 0));
        const int32_t other = ls_counters_allocate(&counters, LS_COUNTER_TYPE_SUBSCRIBER_POSITION, NULL, 0, "x", 1, 9, 9, 9, 0);
        LS_CHECK(LS_PUBLICATION_NOT_CONNECTED == ls_publication_offer(&pub, message, sizeof(message), 0));
        LS_CHECK(0 == ls_counters_free(&counters, other, 0));
        sub_id = alloc_stream_counter(LS_COUNTER_TYPE_SUBSCRIBER_POSITION, 1);
        LS_CHECK(ls_publication_refresh_limit(&pub) > 0 && 1 == pub.subscriber_count);
        LS_CHECK(LS_PUBLICATION_ERROR == ls_publication_offer(&pub, NULL, 5, 0));
        LS_CHECK(160 == ls_publication_offer(&pub, message, sizeof(message), 0));
        ls_publication_close(&pub);
        LS_CHECK(LS_PUBLICATION_CLOSED == ls_publication_offer(&pub, message, sizeof(message), 0));
        ls_buffer_claim_t claim;
        LS_CHECK(LS_PUBLICATION_CLOSED == ls_publication_try_claim(&pub, 10, &claim));
        LS_CHECK((exclusive ? 160 : INT64_MAX) == ls_logbuffer_end_of_stream_position(&pub.log));

        /* The last term: a message that does not fit before max position. */
        setup(&pub, exclusive, 0, INT32_MAX, TERM - 64);
        *sub_position() = pub.log.max_position - 64;
        LS_CHECK(LS_PUBLICATION_MAX_POSITION_EXCEEDED == ls_publication_offer(&pub, message, sizeof(message), 0));
        LS_CHECK(pub.log.max_position - 32 == ls_publication_offer(&pub, message, 0, 0));
        LS_CHECK(pub.log.max_position == ls_publication_offer(&pub, message, 0, 0));
        LS_CHECK(LS_PUBLICATION_MAX_POSITION_EXCEEDED == ls_publication_offer(&pub, message, 0, 0));
    }
}

static void count_fragment(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    (void)header;
    int *seen = clientd;
    seen[seen[0] + 1] = (int)length;
    seen[seen[0] + 5] = length > 0 ? data[0] : -1;
    seen[0]++;
}

static void test_try_claim(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        ls_image_t image;
        setup(&pub, exclusive, 0, 0, 0);
        LS_CHECK(0 == ls_image_init(&image, memory, LENGTH, sub_position(), 0));
        ls_buffer_claim_t claim;
        LS_CHECK(160 == ls_publication_try_claim(&pub, 100, &claim));
        LS_CHECK(claim.frame == memory && claim.data == memory + 32 && 100 == claim.length);
        LS_CHECK(-132 == i32_at(memory)); /* in progress (negative length) until committed */
        memset(claim.data, 0x5A, 100);
        int seen[16] = { 0 };
        LS_CHECK(0 == ls_image_poll(&image, count_fragment, seen, 10));
        LS_CHECK(0 == ls_buffer_claim_commit(&claim));
        LS_CHECK(-1 == ls_buffer_claim_commit(&claim));
        LS_CHECK(LS_ESTATE == ls_errcode());

        LS_CHECK(256 == ls_publication_try_claim(&pub, 50, &claim));
        LS_CHECK(0 == ls_buffer_claim_abort(&claim));
        LS_CHECK(-1 == ls_buffer_claim_abort(&claim));
        LS_CHECK(0 == memory[160 + 6] && 82 == i32_at(memory + 160)); /* padding */
        const uint8_t one = 0x77;
        LS_CHECK(320 == ls_publication_offer(&pub, &one, 1, 0));
        LS_CHECK(2 == ls_image_poll(&image, count_fragment, seen, 10));
        LS_CHECK(2 == seen[0] && 100 == seen[1] && 1 == seen[2] && 0x5A == seen[5] && 0x77 == seen[6]);
        LS_CHECK(320 == ls_image_position(&image));

        LS_CHECK(LS_PUBLICATION_ERROR == ls_publication_try_claim(&pub, 1377, &claim));
        LS_CHECK(LS_PUBLICATION_ERROR == ls_publication_try_claim(&pub, -1, &claim));
        LS_CHECK(1376 + 32 + 320 == ls_publication_try_claim(&pub, 1376, &claim));
        LS_CHECK(0 == ls_buffer_claim_commit(&claim));
        ls_image_close(&image);
    }
}

static void test_batch(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        ls_image_t image;
        setup(&pub, exclusive, 0, 0, 0);
        LS_CHECK(0 == ls_image_init(&image, memory, LENGTH, sub_position(), 0));
        static uint8_t data[100 * 1000];
        int64_t offsets[100];
        int32_t lengths[100];
        for (int i = 0; i < 100; i++)
        {
            offsets[i] = i * 1000;
            lengths[i] = i < 4 ? i : 1000;
            data[i * 1000] = (uint8_t)i;
        }
        int32_t accepted = -1;
        LS_CHECK(32 + 64 + 64 + 64 == ls_publication_offer_batch(&pub, data, offsets, lengths, 4, &accepted));
        LS_CHECK(4 == accepted);
        int seen[16] = { 0 };
        LS_CHECK(4 == ls_image_poll(&image, count_fragment, seen, 10));
        LS_CHECK(0 == seen[1] && 1 == seen[2] && 3 == seen[4] && 2 == seen[7]);

        /* Back-pressure part-way: everything up to the limit goes, in order. */
        const int64_t start = ls_publication_position(&pub);
        const int64_t end = ls_publication_offer_batch(&pub, data, offsets + 4, lengths + 4, 96, &accepted);
        LS_CHECK(accepted > 0 && accepted < 96);
        LS_CHECK(start + accepted * 1056LL == end);
        LS_CHECK(end >= ls_image_position(&image) + TERM / 2);
        LS_CHECK(LS_PUBLICATION_BACK_PRESSURED ==
            ls_publication_offer_batch(&pub, data, offsets + 4 + accepted, lengths + 4 + accepted, 1, &accepted));
        LS_CHECK(0 == accepted);
        LS_CHECK(end == ls_publication_offer_batch(&pub, data, offsets, lengths, 0, &accepted));
        ls_image_close(&image);
    }
}

/* Shared writers in threads: each message carries (writer, sequence) and a checkable payload. */
#define WRITERS 3
#define PER_WRITER 100000

struct writer_args
{
    int id;
    int failures;
};

static uint32_t thread_length(uint32_t seq)
{
    return seq % 997 == 0 ? 3000 : 8 + (seq * 13) % 200;
}

static void *writer(void *arg)
{
    struct writer_args *args = arg;
    ls_publication_t pub;
    static _Thread_local uint8_t buffer[4096];
    if (0 != ls_publication_init(&pub, memory, LENGTH, false, &counters))
    {
        args->failures++;
        return NULL;
    }
    for (uint32_t seq = 0; seq < PER_WRITER; seq++)
    {
        const uint32_t length = thread_length(seq);
        const uint32_t id = (uint32_t)args->id;
        memcpy(buffer, &id, 4);
        memcpy(buffer + 4, &seq, 4);
        for (uint32_t j = 8; j < length; j++)
        {
            buffer[j] = (uint8_t)(id * 7 + seq + j);
        }
        int64_t result;
        while ((result = ls_publication_offer(&pub, buffer, length, 0)) < 0)
        {
            if (LS_PUBLICATION_BACK_PRESSURED != result && LS_PUBLICATION_ADMIN_ACTION != result)
            {
                args->failures++;
                return NULL;
            }
            sched_yield();
        }
    }
    return NULL;
}

struct consumer_state
{
    uint32_t next[WRITERS];
    int bad;
    int total;
};

static void consume(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    struct consumer_state *s = clientd;
    uint32_t id, seq;
    (void)header;
    if (length < 8)
    {
        s->bad++;
        return;
    }
    memcpy(&id, data, 4);
    memcpy(&seq, data + 4, 4);
    if (id >= WRITERS || seq != s->next[id] || length != thread_length(seq))
    {
        s->bad++;
        return;
    }
    for (size_t j = 8; j < length; j++)
    {
        if (data[j] != (uint8_t)(id * 7 + seq + j))
        {
            s->bad++;
            return;
        }
    }
    s->next[id]++;
    s->total++;
}

static void test_shared_threads(void)
{
    ls_publication_t pub;
    ls_image_t image;
    setup(&pub, false, -5, -5, 0);
    LS_CHECK(0 == ls_image_init(&image, memory, LENGTH, sub_position(), 0));
    pthread_t threads[WRITERS];
    struct writer_args args[WRITERS];
    for (int i = 0; i < WRITERS; i++)
    {
        args[i].id = i;
        args[i].failures = 0;
        pthread_create(&threads[i], NULL, writer, &args[i]);
    }
    struct consumer_state state = { { 0 }, 0, 0 };
    long idle = 0;
    while (state.total < WRITERS * PER_WRITER && state.bad == 0 && idle < 20000000)
    {
        const int64_t read = ls_image_poll(&image, consume, &state, 64);
        if (read < 0)
        {
            fprintf(stderr, "poll: %s\n", ls_errmsg());
            state.bad++;
            break;
        }
        if (0 == read)
        {
            idle++;
            sched_yield();
        }
    }
    for (int i = 0; i < WRITERS; i++)
    {
        pthread_join(threads[i], NULL);
        LS_CHECK(0 == args[i].failures);
        LS_CHECK(PER_WRITER == state.next[i]);
    }
    LS_CHECK(0 == state.bad);
    LS_CHECK(WRITERS * PER_WRITER == state.total);
    LS_CHECK(ls_logbuffer_tail_position(&pub.log) == ls_image_position(&image));
    ls_image_close(&image);
}

/* Bound to a driver (ls_publication_bind_driver): the limit is the external counter, the
 * status at the limit follows is_connected, subscribers' counters are ignored, and close
 * leaves the end of stream alone; an untailed image (zero tails, as a driver's) reads it. */
static void test_driver_binding(void)
{
    for (int exclusive = 0; exclusive < 2; exclusive++)
    {
        ls_publication_t pub;
        setup(&pub, exclusive, 7, 7, 0);
        _Alignas(8) int64_t limit = 0;
        LS_CHECK(-1 == ls_publication_bind_driver(&pub, NULL));
        LS_CHECK(0 == ls_publication_bind_driver(&pub, &limit));
        int32_t *is_connected = (int32_t *)(pub.log.metadata + LS_LOG_IS_CONNECTED_OFFSET);
        *is_connected = 0;
        LS_CHECK(LS_PUBLICATION_NOT_CONNECTED == ls_publication_offer(&pub, (const uint8_t *)"x", 1, 0));
        *is_connected = 1;
        LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == ls_publication_offer(&pub, (const uint8_t *)"x", 1, 0));
        limit = 64; /* one message may go while the position is below the limit */
        LS_CHECK(64 == ls_publication_offer(&pub, (const uint8_t *)"x", 1, 0));
        LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == ls_publication_offer(&pub, (const uint8_t *)"x", 1, 0));
        LS_CHECK(64 == ls_publication_refresh_limit(&pub));
        limit = 1 << 20;
        for (int i = 0; i < 5000; i++) /* several rotations, no subscriber counter consulted */
        {
            LS_CHECK(ls_publication_offer(&pub, (const uint8_t *)"0123456789abcdef", 16, 0) > 0);
        }
        const int64_t position = ls_publication_position(&pub);
        /* A driver cleans its own logs, behind its sender (which may still have to resend the
         * terms behind): rotating, the publisher left the term two back as it was. */
        const int64_t active = position / TERM;
        LS_CHECK(active >= 2);
        int32_t behind_length;
        memcpy(&behind_length, pub.log.terms[(active - 2) % 3], sizeof(behind_length));
        LS_CHECK(behind_length > 0);

        uint8_t copy[LENGTH];
        memcpy(copy, memory, LENGTH);
        memset(copy + 3 * TERM, 0, 32); /* a driver's image log: no tails, active term count 0 */
        /* ... whose driver cleaned the active partition before the term came (here no driver
         * does: the publisher no longer cleans, so it holds term active - 3's frames). */
        memset(copy + (active % 3) * TERM + position % TERM, 0, (size_t)(TERM - position % TERM));
        ls_logbuffer_t log;
        LS_CHECK(-1 == ls_logbuffer_init(&log, copy, LENGTH));
        LS_CHECK(0 == ls_logbuffer_init_untailed(&log, copy, LENGTH));
        _Alignas(8) int64_t sub = 0;
        ls_image_t image;
        LS_CHECK(0 == ls_image_init_untailed(&image, copy, LENGTH, &sub, position - 64));
        LS_CHECK(ls_image_peek_message(&image, &(int32_t){ 0 }) != NULL);
        static ls_image_scan_t scan;
        LS_CHECK(1 == ls_image_scan_deferred(&image, &scan, 10)); /* found, position not moved yet */
        LS_CHECK(position - 64 == sub && position == scan.end_position);
        ls_image_set_position(&image, scan.end_position);
        LS_CHECK(0 == ls_image_scan_deferred(&image, &scan, 10) && position == sub);
        ls_image_close(&image);

        ls_publication_close(&pub);
        LS_CHECK(INT64_MAX == ls_logbuffer_end_of_stream_position(&pub.log));
        LS_CHECK(LS_PUBLICATION_CLOSED == ls_publication_offer(&pub, (const uint8_t *)"x", 1, 0));
    }
}

int main(void)
{
    LS_RUN(test_frame_header_bytes);
    LS_RUN(test_round_trip);
    LS_RUN(test_fragmentation);
    LS_RUN(test_padding_and_rotation);
    LS_RUN(test_back_pressure);
    LS_RUN(test_many_subscribers);
    LS_RUN(test_statuses);
    LS_RUN(test_try_claim);
    LS_RUN(test_batch);
    LS_RUN(test_shared_threads);
    LS_RUN(test_driver_binding);
    return LS_TEST_RESULT();
}
