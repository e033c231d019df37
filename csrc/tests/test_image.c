/* Image: reading logs written by real Aeron (poll and scan), reassembly rules, scan batches,
 * corrupt frames, and unblocking a dead writer (gap, gap to the tail, dead term crosser),
 * while leaving a healthy log alone. Usage: test_image [AERON_TESTDATA_DIR]. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lockstep.h"
#include "concurrent/ls_atomic.h"
#include "util/ls_bitutil.h"
#include "ls_test.h"

#define TERM (64 * 1024)
#define LENGTH (3 * TERM + 4096)
#define META (3 * TERM)
#define SESSION 5
#define STREAM 6

static _Alignas(64) uint8_t memory[LENGTH];
static _Alignas(64) uint8_t values[8 * LS_COUNTER_VALUE_LENGTH];
static _Alignas(64) uint8_t metadata[8 * LS_COUNTER_METADATA_LENGTH];
static ls_counters_t counters;
static int32_t sub_id;
static const char *testdata_dir = NULL;

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

static void setup(ls_publication_t *pub, ls_image_t *image, bool exclusive, int32_t initial)
{
    memset(memory, 0, sizeof(memory));
    memset(values, 0, sizeof(values));
    memset(metadata, 0, sizeof(metadata));
    LS_CHECK(0 == ls_logbuffer_format(memory, LENGTH, TERM, 4096, 1408, initial, initial, 0, SESSION, STREAM, 1));
    LS_CHECK(0 == ls_counters_init(&counters, metadata, sizeof(metadata), values, sizeof(values)));
    sub_id = alloc_stream_counter(LS_COUNTER_TYPE_SUBSCRIBER_POSITION, 1);
    LS_CHECK(0 == ls_publication_init(pub, memory, LENGTH, exclusive, &counters));
    LS_CHECK(0 == ls_image_init(image, memory, LENGTH, ls_counters_value_addr(&counters, sub_id), 0));
}

struct seen
{
    int count;
    size_t lengths[64];
    uint8_t first[64];
    ls_frame_header_t headers[64];
    ls_frame_header_t last;
};

static void collect(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    struct seen *s = clientd;
    if (s->count < 64)
    {
        s->lengths[s->count] = length;
        s->first[s->count] = length > 0 ? data[0] : 0;
        s->headers[s->count] = *header;
    }
    s->last = *header;
    s->count++;
}

/* ---- Real Aeron log buffers ---------------------------------------------------------- */

struct expected_message
{
    int index;
    int length;
    char fnv[17];
    int32_t session_id, stream_id, term_id, term_offset, flags;
    long long position;
};

static uint64_t fnv(const uint8_t *data, size_t length)
{
    uint64_t h = 0x14650fb0739d0383ULL;
    for (size_t i = 0; i < length; i++)
    {
        h = (h ^ data[i]) * 0x100000001b3ULL;
    }
    return h;
}

static int load_messages(const char *path, struct expected_message *out, int max)
{
    FILE *f = fopen(path, "r");
    if (NULL == f)
    {
        return -1;
    }
    char line[512];
    int n = 0;
    while (n < max && fgets(line, sizeof(line), f))
    {
        const char *brace = strchr(line, '{');
        if (NULL == brace)
        {
            continue;
        }
        struct expected_message *m = &out[n];
        if (9 == sscanf(
            brace,
            "{\"index\": %d, \"length\": %d, \"fnv1a64\": \"%16[0-9a-f]\", \"session_id\": %d, \"stream_id\": %d, "
            "\"term_id\": %d, \"term_offset\": %d, \"flags\": %d, \"position\": %lld}",
            &m->index, &m->length, m->fnv, &m->session_id, &m->stream_id, &m->term_id, &m->term_offset, &m->flags,
            &m->position))
        {
            n++;
        }
        else
        {
            n = -1000;
        }
    }
    fclose(f);
    return n;
}

static uint8_t *load_file(const char *path, size_t *length)
{
    FILE *f = fopen(path, "rb");
    if (NULL == f)
    {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    *length = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = aligned_alloc(4096, LS_ALIGN(*length, 4096));
    if (NULL != data && fread(data, 1, *length, f) != *length)
    {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

struct aeron_check
{
    const struct expected_message *expected;
    int count;
    int bad;
};

static void check_message(struct aeron_check *c, const uint8_t *data, size_t length, const ls_frame_header_t *h)
{
    const struct expected_message *m = &c->expected[c->count++];
    char hash[17];
    snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)fnv(data, length));
    if ((int)length != m->length || 0 != strcmp(hash, m->fnv) || h->session_id != m->session_id ||
        h->stream_id != m->stream_id || h->term_id != m->term_id || h->term_offset != m->term_offset ||
        h->flags != m->flags || h->position != m->position)
    {
        fprintf(
            stderr, "message %d: length %zu term %d offset %d flags %d position %lld hash %s\n", m->index, length,
            h->term_id, h->term_offset, h->flags, (long long)h->position, hash);
        c->bad++;
    }
}

static void check_aeron_fragment(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    check_message(clientd, data, length, header);
}

static void read_aeron_file(const char *name)
{
    char path[1024];
    struct expected_message expected[64];
    snprintf(path, sizeof(path), "%s/%s.messages.json", testdata_dir, name);
    const int messages = load_messages(path, expected, 64);
    snprintf(path, sizeof(path), "%s/%s.logbuffer", testdata_dir, name);
    size_t length = 0;
    uint8_t *file = load_file(path, &length);
    LS_CHECK(25 == messages && NULL != file);
    if (messages <= 0 || NULL == file)
    {
        free(file);
        return;
    }

    ls_logbuffer_t log;
    LS_CHECK(0 == ls_logbuffer_init(&log, file, length));
    LS_CHECK(TERM == log.term_length && 1408 == log.mtu_length);
    LS_CHECK(expected[0].session_id == log.session_id && expected[0].stream_id == log.stream_id);
    const int64_t start = ls_logbuffer_retained_start_position(&log);
    LS_CHECK(ls_logbuffer_position(&log, expected[0].term_id, expected[0].term_offset) == start);

    /* poll, a few fragments at a time. */
    int64_t position_counter = 0;
    ls_image_t image;
    LS_CHECK(0 == ls_image_init(&image, file, length, &position_counter, start));
    struct aeron_check check = { expected, 0, 0 };
    for (int polls = 0; polls < 1000 && check.count < messages; polls++)
    {
        LS_CHECK(ls_image_poll(&image, check_aeron_fragment, &check, 3) >= 0);
    }
    LS_CHECK(messages == check.count && 0 == check.bad);
    LS_CHECK(expected[messages - 1].position == position_counter);
    LS_CHECK(ls_logbuffer_tail_position(&log) == position_counter);
    LS_CHECK(!ls_image_is_blocked(&image));
    LS_CHECK(!ls_image_unblock(&image));
    ls_image_close(&image);

    /* scan: the batch form gives the same messages. */
    LS_CHECK(0 == ls_image_init(&image, file, length, &position_counter, start));
    struct aeron_check scanned = { expected, 0, 0 };
    int32_t partitions[8], offsets[8], lengths[8];
    ls_frame_header_t headers[8];
    for (int scans = 0; scans < 1000 && scanned.count < messages; scans++)
    {
        int64_t end = 0;
        const int32_t n = ls_image_scan(&image, 8, partitions, offsets, lengths, headers, &end);
        LS_CHECK(n >= 0);
        for (int32_t i = 0; i < n; i++)
        {
            const uint8_t *data = offsets[i] < 0 ? image.assembler.buffer : log.terms[partitions[i]] + offsets[i];
            check_message(&scanned, data, (size_t)lengths[i], &headers[i]);
        }
        ls_image_set_position(&image, end);
    }
    LS_CHECK(messages == scanned.count && 0 == scanned.bad);
    ls_image_close(&image);
    free(file);
}

static void test_real_aeron_logs(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/ipc-basic.logbuffer", testdata_dir ? testdata_dir : "");
    FILE *f = testdata_dir ? fopen(path, "rb") : NULL;
    if (NULL == f)
    {
        printf("skip test_real_aeron_logs: no Aeron test data (pass its directory as argv[1])\n");
        return;
    }
    fclose(f);
    read_aeron_file("ipc-basic");
    read_aeron_file("ipc-rotation");
}

/* ---- Reassembly and scan ------------------------------------------------------------- */

static void put_frame(int32_t offset, int32_t length, uint8_t flags, int16_t type, int32_t term_id)
{
    uint8_t *frame = memory + offset;
    frame[5] = flags;
    memcpy(frame + 6, &type, 2);
    memcpy(frame + 8, &offset, 4);
    memcpy(frame + 20, &term_id, 4);
    memset(frame + 32, 0x33, (size_t)(length > 32 ? length - 32 : 0));
    ls_put_release_i32(frame, length);
}

static void test_reassembly(void)
{
    ls_publication_t pub;
    ls_image_t image;
    setup(&pub, &image, true, 3);
    static uint8_t big[5000];
    for (int i = 0; i < 5000; i++)
    {
        big[i] = (uint8_t)(i * 7);
    }
    const int64_t end = ls_publication_offer(&pub, big, sizeof(big), 99);
    struct seen s = { 0 };
    /* The fragment limit counts frames: a message of 4 frames needs two polls of 2. */
    LS_CHECK(2 == ls_image_poll(&image, collect, &s, 2));
    LS_CHECK(0 == s.count);
    LS_CHECK(2 == ls_image_poll(&image, collect, &s, 2));
    LS_CHECK(1 == s.count && 5000 == s.lengths[0]);
    LS_CHECK(0 == memcmp(big, image.assembler.buffer, 5000));
    LS_CHECK(0 == s.headers[0].term_offset && 3 == s.headers[0].term_id && 0xC0 == s.headers[0].flags);
    LS_CHECK(end == s.headers[0].position && 99 == s.headers[0].reserved_value);

    /* A middle and an END without their BEGIN are dropped; what follows is read. */
    const int32_t at = (int32_t)end;
    put_frame(at, 64, 0x00, LS_FRAME_TYPE_DATA, 3);
    put_frame(at + 64, 64, 0x40, LS_FRAME_TYPE_DATA, 3);
    *(int64_t *)(memory + META) = ((int64_t)3 << 32) | (at + 128);
    pub.term_offset = at + 128;
    const uint8_t one = 1;
    LS_CHECK(end + 128 + 64 == ls_publication_offer(&pub, &one, 1, 0));
    s.count = 0;
    LS_CHECK(3 == ls_image_poll(&image, collect, &s, 10));
    LS_CHECK(1 == s.count && 1 == s.lengths[0] && 1 == s.first[0]);

    /* A BEGIN that never ends is discarded by the next BEGIN. */
    const int32_t at2 = at + 192;
    put_frame(at2, 64, 0x80, LS_FRAME_TYPE_DATA, 3);
    *(int64_t *)(memory + META) = ((int64_t)3 << 32) | (at2 + 64);
    pub.term_offset = at2 + 64;
    LS_CHECK(at2 + 64 + 5152 == ls_publication_offer(&pub, big, sizeof(big), 0));
    s.count = 0;
    LS_CHECK(5 == ls_image_poll(&image, collect, &s, 10));
    LS_CHECK(1 == s.count && 5000 == s.lengths[0] && 0 == memcmp(big, image.assembler.buffer, 5000));
    ls_image_close(&image);
}

static void test_scan(void)
{
    ls_publication_t pub;
    ls_image_t image;
    setup(&pub, &image, false, 0);
    static uint8_t big[3000];
    memset(big, 0x42, sizeof(big));
    const uint8_t small[3] = { 9, 8, 7 };
    LS_CHECK(64 == ls_publication_offer(&pub, small, 3, 0));
    ls_buffer_claim_t claim;
    LS_CHECK(128 == ls_publication_try_claim(&pub, 10, &claim));
    LS_CHECK(0 == ls_buffer_claim_abort(&claim));
    const int64_t after_big = ls_publication_offer(&pub, big, sizeof(big), 0);
    LS_CHECK(128 + 2 * 1408 + 288 == after_big);
    LS_CHECK(after_big + 64 == ls_publication_offer(&pub, small, 3, 0));

    int32_t partitions[8], offsets[8], lengths[8];
    ls_frame_header_t headers[8];
    int64_t end = -1;
    /* Stops after the reassembled message: its buffer is reused by the next scan. */
    LS_CHECK(2 == ls_image_scan(&image, 8, partitions, offsets, lengths, headers, &end));
    LS_CHECK(0 == partitions[0] && 32 == offsets[0] && 3 == lengths[0] && 64 == headers[0].position);
    LS_CHECK(-1 == offsets[1] && 3000 == lengths[1] && 128 == headers[1].term_offset);
    LS_CHECK(after_big == headers[1].position && after_big == end);
    LS_CHECK(0 == memcmp(big, image.assembler.buffer, 3000));
    LS_CHECK(0 == ls_image_position(&image)); /* scan does not move the position */
    ls_image_set_position(&image, end);
    LS_CHECK(1 == ls_image_scan(&image, 8, partitions, offsets, lengths, headers, &end));
    LS_CHECK(after_big + 32 == offsets[0] && after_big + 64 == end);
    ls_image_set_position(&image, end);
    LS_CHECK(0 == ls_image_scan(&image, 8, partitions, offsets, lengths, headers, &end));
    LS_CHECK(ls_image_position(&image) == end);

    /* Fragment limit bounds the frames looked at. */
    ls_image_set_position(&image, 0);
    LS_CHECK(1 == ls_image_scan(&image, 1, partitions, offsets, lengths, headers, &end));
    LS_CHECK(64 == end);
    ls_image_close(&image);
}

/* ---- Corrupt frames ------------------------------------------------------------------ */

static void expect_corrupt(int32_t offset, const char *what)
{
    ls_publication_t pub;
    ls_image_t image;
    setup(&pub, &image, true, 0);
    const uint8_t msg[40] = { 0 };
    for (int i = 0; i < 4; i++)
    {
        ls_publication_offer(&pub, msg, sizeof(msg), 0);
    }
    if (0 == strcmp(what, "type"))
    {
        memory[offset + 6] = 7;
    }
    else if (0 == strcmp(what, "length"))
    {
        *(int32_t *)(memory + offset) = TERM + 1;
    }
    else if (0 == strcmp(what, "mtu"))
    {
        *(int32_t *)(memory + offset) = 1408 + 32;
    }
    else if (0 == strcmp(what, "short"))
    {
        *(int32_t *)(memory + offset) = 8;
    }
    else if (0 == strcmp(what, "term offset"))
    {
        *(int32_t *)(memory + offset + 8) = 4096;
    }
    else if (0 == strcmp(what, "term id"))
    {
        *(int32_t *)(memory + offset + 20) = 12;
    }
    struct seen s = { 0 };
    if (offset > 0)
    {
        LS_CHECK(offset / 96 == ls_image_poll(&image, collect, &s, 10)); /* frames before it are delivered */
    }
    LS_CHECK(-1 == ls_image_poll(&image, collect, &s, 10));
    LS_CHECK(LS_EFORMAT == ls_errcode());
    char where[32];
    snprintf(where, sizeof(where), "offset %d", offset);
    LS_CHECK(NULL != strstr(ls_errmsg(), where));
    LS_CHECK(offset == ls_image_position(&image));
    int32_t partitions[8], offsets[8], lengths[8];
    ls_frame_header_t headers[8];
    int64_t end;
    LS_CHECK(-1 == ls_image_scan(&image, 8, partitions, offsets, lengths, headers, &end));
    ls_image_close(&image);
}

static void test_corrupt_frames(void)
{
    expect_corrupt(96, "type");
    expect_corrupt(0, "length");
    expect_corrupt(192, "short");
    expect_corrupt(96, "term offset");
    expect_corrupt(288, "term id");
    expect_corrupt(96, "mtu");
}

static void test_image_init_rejects(void)
{
    ls_publication_t pub;
    ls_image_t image;
    setup(&pub, &image, true, 0);
    int64_t counter = 0;
    LS_CHECK(-1 == ls_image_init(&image, memory, LENGTH, &counter, 33));
    LS_CHECK(-1 == ls_image_init(&image, memory, LENGTH, &counter, -32));
    LS_CHECK(-1 == ls_image_init(&image, memory, LENGTH, NULL, 0));
    LS_CHECK(-1 == ls_image_init(&image, memory, LENGTH - 1, &counter, 0));
    LS_CHECK(0 == ls_image_init(&image, memory, LENGTH, &counter, 4096));
    LS_CHECK(4096 == counter);
    ls_image_close(&image);
}

/* ---- Unblocking ---------------------------------------------------------------------- */

/* A shared writer that claimed `bytes` and died before writing anything. */
static void dead_claim(ls_publication_t *pub, int64_t bytes)
{
    const int32_t index = ls_logbuffer_active_term_count(&pub->log) % 3;
    ls_get_and_add_i64(pub->log.metadata + index * 8, bytes);
}

/* A position counter freed (a publisher's eviction) or reused by another subscriber is never
 * written again: every read path says NOT_OWNER and leaves the value alone. */
static void test_owner_checked_before_every_write(void)
{
    ls_publication_t pub;
    ls_image_t image;
    ls_image_scan_t scan;
    struct seen s = { 0 };
    setup(&pub, &image, true, 0);
    LS_CHECK(0 == ls_image_set_owner(&image, &counters, sub_id, 1));
    LS_CHECK(-1 == ls_image_set_owner(&image, &counters, sub_id, 2) && LS_ESTATE == ls_errcode());
    for (int i = 0; i < 4; i++)
    {
        LS_CHECK(ls_publication_offer(&pub, (const uint8_t *)"abcd", 4, 0) > 0);
    }
    int32_t length;
    LS_CHECK(NULL != ls_image_peek_message(&image, &length) && 4 == length);
    LS_CHECK(64 == ls_image_consume_peeked(&image, length));
    LS_CHECK(ls_image_is_owner(&image));

    LS_CHECK(0 == ls_counters_free(&counters, sub_id, 0));
    LS_CHECK(!ls_image_is_owner(&image));
    LS_CHECK(LS_IMAGE_NOT_OWNER == ls_image_consume_peeked(&image, length));
    LS_CHECK(NULL != strstr(ls_errmsg(), "no longer this image's"));
    /* The record goes to a new subscriber (same id, another registration). */
    const int32_t other = alloc_stream_counter(LS_COUNTER_TYPE_SUBSCRIBER_POSITION, 7);
    LS_CHECK(other == sub_id);
    ls_counters_set(&counters, other, 4096);
    LS_CHECK(LS_IMAGE_NOT_OWNER == ls_image_consume_peeked(&image, length));
    LS_CHECK(LS_IMAGE_NOT_OWNER == ls_image_poll(&image, collect, &s, 10) && 0 == s.count);
    LS_CHECK(LS_IMAGE_NOT_OWNER == ls_image_scan_commit(&image, &scan, 10));
    LS_CHECK(LS_IMAGE_NOT_OWNER == ls_image_poll_one(&image, &scan));
    LS_CHECK(LS_IMAGE_NOT_OWNER == ls_image_set_position(&image, 0));
    LS_CHECK(4096 == ls_counters_get(&counters, other));
    LS_CHECK(64 == ls_image_position(&image)); /* its own position, not the new owner's */
    ls_image_close(&image);
}

/* A reader with a private position that the writers went two terms past is told LAPPED by
 * every path, never handed the later term's frames, never told the log is corrupt. */
static void test_lapped_private_reader(void)
{
    ls_publication_t pub;
    ls_image_t image, reader;
    ls_image_scan_t scan;
    int64_t position = 0;
    setup(&pub, &image, true, 0);
    LS_CHECK(0 == ls_image_init(&reader, memory, LENGTH, &position, 0));
    uint8_t message[100] = { 0 };
    LS_CHECK(ls_publication_offer(&pub, message, sizeof(message), 0) > 0);
    LS_CHECK(ls_image_poll_one(&reader, &scan) > 0); /* read one: a view handed out */
    int64_t written = 0;
    while (written < 3 * TERM + 400) /* the subscriber keeps up; the private reader does not */
    {
        message[0]++;
        written = ls_publication_offer(&pub, message, sizeof(message), 0);
        LS_CHECK(written > 0);
        LS_CHECK(ls_image_poll_one(&image, &scan) > 0);
    }
    LS_CHECK(ls_image_is_lapped(&reader));
    LS_CHECK(NULL != strstr(ls_errmsg(), "lapped"));
    int32_t length;
    ls_image_peek_message(&reader, &length); /* a frame of term 3 at our offset: not handed out */
    LS_CHECK(-1 == length);
    LS_CHECK(LS_IMAGE_LAPPED == ls_image_poll_one(&reader, &scan));
    LS_CHECK(LS_ESTATE == ls_errcode() && NULL != strstr(ls_errmsg(), "lapped"));
    struct seen s = { 0 };
    LS_CHECK(LS_IMAGE_LAPPED == ls_image_poll(&reader, collect, &s, 10) && 0 == s.count);
    LS_CHECK(160 == position); /* not moved */
    ls_image_close(&reader);
    ls_image_close(&image);
}

/* A term filled exactly is intact until the next offer rotates (and cleans two terms back): a
 * reader a term behind is not told it was lapped before that, and is after. */
static void test_exactly_filled_term_is_not_lapped(void)
{
    ls_publication_t pub;
    ls_image_t image, reader;
    ls_image_scan_t scan;
    int64_t position = 0;
    struct seen s = { 0 };
    setup(&pub, &image, true, 0);
    LS_CHECK(0 == ls_image_init(&reader, memory, LENGTH, &position, 0));
    uint8_t message[32] = { 0 };
    for (int i = 0; i < 2 * TERM / 64; i++) /* terms 0 and 1, exactly: 64-byte frames */
    {
        LS_CHECK(ls_publication_offer(&pub, message, sizeof(message), 0) == (int64_t)(i + 1) * 64);
        LS_CHECK(1 == ls_image_poll(&image, collect, &s, 1));
    }
    LS_CHECK(((int64_t)1 << 32 | TERM) == ls_logbuffer_raw_tail(&pub.log, 1));
    LS_CHECK(!ls_image_is_lapped(&reader));
    LS_CHECK(ls_image_poll_one(&reader, &scan) > 0 && 64 == position);
    LS_CHECK(ls_publication_offer(&pub, message, sizeof(message), 0) == 2 * TERM + 64); /* rotates */
    LS_CHECK(ls_image_is_lapped(&reader));
    LS_CHECK(LS_IMAGE_LAPPED == ls_image_poll_one(&reader, &scan));
    ls_image_close(&reader);
    ls_image_close(&image);
}

/* A subscriber that joins at the retained start two terms back when the active term is filled
 * exactly holds the publisher: the next offer is back-pressured instead of rotating (which
 * would clean the term it has yet to read). */
static void test_exact_fill_does_not_rotate_past_a_late_joiner(void)
{
    ls_publication_t pub;
    ls_image_t image, late;
    struct seen s = { 0 };
    setup(&pub, &image, true, 0);
    uint8_t message[32] = { 7 };
    for (int i = 0; i < 2 * TERM / 64; i++)
    {
        LS_CHECK(ls_publication_offer(&pub, message, sizeof(message), 0) > 0);
        LS_CHECK(1 == ls_image_poll(&image, collect, &s, 1));
    }
    const int64_t start = ls_logbuffer_retained_start_position(&pub.log);
    LS_CHECK(0 == start);
    const int32_t late_id = alloc_stream_counter(LS_COUNTER_TYPE_SUBSCRIBER_POSITION, 2);
    LS_CHECK(0 == ls_image_init(&late, memory, LENGTH, ls_counters_value_addr(&counters, late_id), start));
    LS_CHECK(0 == ls_image_set_owner(&late, &counters, late_id, 2));
    LS_CHECK(TERM / 2 == ls_publication_refresh_limit(&pub)); /* the late joiner's window */
    LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == ls_publication_offer(&pub, message, sizeof(message), 0));
    struct seen got = { 0 };
    LS_CHECK(64 == ls_image_poll(&late, collect, &got, 64) && 7 == got.first[0]); /* term 0 intact */
    ls_image_close(&late);
    ls_image_close(&image);
}

static void test_unblock_gap(void)
{
    ls_publication_t pub;
    ls_image_t image;
    setup(&pub, &image, false, 10);
    const uint8_t msg[20] = { 1 };
    struct seen s = { 0 };

    /* Healthy log: nothing to unblock, at a frame or at the tail. */
    LS_CHECK(64 == ls_publication_offer(&pub, msg, sizeof(msg), 0));
    LS_CHECK(!ls_image_is_blocked(&image));
    LS_CHECK(!ls_image_unblock(&image));
    LS_CHECK(1 == ls_image_poll(&image, collect, &s, 10));
    LS_CHECK(!ls_image_is_blocked(&image));
    LS_CHECK(!ls_image_unblock(&image));

    /* Dead writer between two live ones. */
    dead_claim(&pub, 128);
    LS_CHECK(256 == ls_publication_offer(&pub, msg, sizeof(msg), 0));
    LS_CHECK(0 == ls_image_poll(&image, collect, &s, 10));
    LS_CHECK(ls_image_is_blocked(&image));
    LS_CHECK(ls_image_unblock(&image));
    LS_CHECK(128 == *(int32_t *)(memory + 64) && 0 == memory[64 + 6] && 64 == *(int32_t *)(memory + 64 + 8));
    LS_CHECK(10 == *(int32_t *)(memory + 64 + 20));
    LS_CHECK(!ls_image_unblock(&image)); /* already padded */
    LS_CHECK(1 == ls_image_poll(&image, collect, &s, 10));
    LS_CHECK(2 == s.count && 256 == ls_image_position(&image));

    /* Dead writer with nothing after it: pad up to the tail. */
    dead_claim(&pub, 96);
    LS_CHECK(ls_image_is_blocked(&image));
    LS_CHECK(ls_image_unblock(&image));
    LS_CHECK(0 == ls_image_poll(&image, collect, &s, 10));
    LS_CHECK(352 == ls_image_position(&image));
    LS_CHECK(!ls_image_is_blocked(&image));
    LS_CHECK(416 == ls_publication_offer(&pub, msg, sizeof(msg), 0));
    LS_CHECK(1 == ls_image_poll(&image, collect, &s, 10));

    /* A frame committed by a late writer is never overwritten. */
    dead_claim(&pub, 64);
    memory[416 + 6] = LS_FRAME_TYPE_DATA; /* the writer has begun its header */
    LS_CHECK(!ls_image_unblock(&image));
    ls_image_close(&image);
}

static void test_unblock_dead_term_crosser(void)
{
    ls_publication_t pub;
    ls_image_t image;
    setup(&pub, &image, false, INT32_MAX - 1);
    static uint8_t msg[1000];
    struct seen s = { 0 };
    int64_t position = 0;
    for (int i = 0; i < 61; i++)
    {
        position = ls_publication_offer(&pub, msg, sizeof(msg), 0);
        ls_image_poll(&image, collect, &s, 100);
    }
    LS_CHECK(61 * 1056 == position && position == ls_image_position(&image));
    /* This writer's claim crosses the term end; it dies before padding and rotating. */
    dead_claim(&pub, 2112);
    LS_CHECK(LS_PUBLICATION_ADMIN_ACTION == ls_publication_offer(&pub, msg, sizeof(msg), 0));
    LS_CHECK(0 == ls_image_poll(&image, collect, &s, 100));
    LS_CHECK(ls_image_is_blocked(&image));
    LS_CHECK(ls_image_unblock(&image)); /* pads to the term end and rotates for it */
    LS_CHECK(1 == ls_logbuffer_active_term_count(&pub.log));
    LS_CHECK(0 == ls_image_poll(&image, collect, &s, 100));
    LS_CHECK(TERM == ls_image_position(&image));
    LS_CHECK(TERM + 1056 == ls_publication_offer(&pub, msg, sizeof(msg), 0));
    LS_CHECK(1 == ls_image_poll(&image, collect, &s, 100));
    LS_CHECK(INT32_MAX == s.last.term_id);

    /* Crosser padded the term but died before rotating. */
    for (int i = 0; i < 61; i++)
    {
        position = ls_publication_offer(&pub, msg, sizeof(msg), 0);
        ls_image_poll(&image, collect, &s, 100);
    }
    const int64_t raw = ls_logbuffer_raw_tail(&pub.log, 1);
    const int32_t offset = (int32_t)(raw & 0xFFFFFFFF);
    ls_get_and_add_i64(pub.log.metadata + 8, 2112);
    put_frame(TERM + offset, TERM - offset, 0xC0, LS_FRAME_TYPE_PAD, INT32_MAX);
    memcpy(memory + TERM + offset + 8, &offset, 4);
    LS_CHECK(0 == ls_image_poll(&image, collect, &s, 100));
    LS_CHECK(2 * TERM == ls_image_position(&image));
    LS_CHECK(ls_image_is_blocked(&image));
    LS_CHECK(ls_image_unblock(&image));
    LS_CHECK(2 == ls_logbuffer_active_term_count(&pub.log));
    LS_CHECK(!ls_image_is_blocked(&image));
    LS_CHECK(2 * TERM + 1056 == ls_publication_offer(&pub, msg, sizeof(msg), 0));
    LS_CHECK(1 == ls_image_poll(&image, collect, &s, 100));
    LS_CHECK(INT32_MIN == s.last.term_id);
    ls_image_close(&image);
}

int main(int argc, char **argv)
{
    testdata_dir = argc > 1 ? argv[1] : getenv("LOCKSTEP_AERON_TESTDATA");
    LS_RUN(test_real_aeron_logs);
    LS_RUN(test_reassembly);
    LS_RUN(test_scan);
    LS_RUN(test_corrupt_frames);
    LS_RUN(test_image_init_rejects);
    LS_RUN(test_owner_checked_before_every_write);
    LS_RUN(test_lapped_private_reader);
    LS_RUN(test_exactly_filled_term_is_not_lapped);
    LS_RUN(test_exact_fill_does_not_rotate_past_a_late_joiner);
    LS_RUN(test_unblock_gap);
    LS_RUN(test_unblock_dead_term_crosser);
    return LS_TEST_RESULT();
}
