/* Ring buffer semantics: write/read, wrap-around with padding, full ring, max length,
 * claim/commit/abort, controlled read, unblock, corrupt headers, and an MPSC thread race. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lockstep.h"
#include "ls_test.h"

#define CAPACITY 1024
#define LENGTH (CAPACITY + LS_RB_TRAILER_LENGTH)

static _Alignas(64) uint8_t memory[LENGTH];

static void reset(ls_ring_buffer_t *rb, bool many)
{
    memset(memory, 0, sizeof(memory));
    LS_CHECK(0 == ls_rb_init(rb, memory, LENGTH, many));
}

struct collected
{
    int count;
    int32_t types[256];
    size_t lengths[256];
    uint8_t first[256];
};

static void collect(int32_t type, const uint8_t *data, size_t length, void *clientd)
{
    struct collected *c = clientd;
    c->types[c->count] = type;
    c->lengths[c->count] = length;
    c->first[c->count] = length > 0 ? data[0] : 0;
    c->count++;
}

static void test_init_validates(void)
{
    ls_ring_buffer_t rb;
    memset(memory, 0, sizeof(memory));
    LS_CHECK(-1 == ls_rb_init(&rb, memory, CAPACITY + 100 + LS_RB_TRAILER_LENGTH - 200, true));
    LS_CHECK(LS_EFORMAT == ls_errcode());
    LS_CHECK(-1 == ls_rb_init(&rb, memory, 100, true));
    memory[CAPACITY + 3] = 0xAB; /* garbage in trailer padding */
    LS_CHECK(-1 == ls_rb_init(&rb, memory, LENGTH, true));
    LS_CHECK(NULL != strstr(ls_errmsg(), "trailer"));
    memset(memory, 0, sizeof(memory));
    *(int64_t *)(memory + CAPACITY + LS_RB_TAIL_POSITION_OFFSET) = 4096; /* tail > head + capacity */
    LS_CHECK(-1 == ls_rb_init(&rb, memory, LENGTH, true));
    memset(memory, 0, sizeof(memory));
    LS_CHECK(0 == ls_rb_init(&rb, memory, LENGTH, true));
    LS_CHECK(CAPACITY / 8 == rb.max_message_length);
}

static void test_write_read(void)
{
    for (int many = 0; many < 2; many++)
    {
        ls_ring_buffer_t rb;
        reset(&rb, many);
        uint8_t msg[20] = { 7 };
        LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 5, msg, sizeof(msg)));
        LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 6, msg, 0));
        LS_CHECK(32 + 8 == ls_rb_size(&rb));
        /* Record header bytes are exactly Agrona's. */
        LS_CHECK(28 == *(int32_t *)memory && 5 == *(int32_t *)(memory + 4));
        struct collected c = { 0 };
        LS_CHECK(2 == ls_rb_read(&rb, collect, &c, 10));
        LS_CHECK(5 == c.types[0] && 20 == c.lengths[0] && 7 == c.first[0]);
        LS_CHECK(6 == c.types[1] && 0 == c.lengths[1]);
        LS_CHECK(0 == ls_rb_size(&rb));
        LS_CHECK(0 == memory[0]); /* consumed bytes zeroed */
        LS_CHECK(40 == ls_rb_consumer_position(&rb));
    }
}

static void test_limit_respected(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    uint8_t msg[4] = { 0 };
    for (int i = 0; i < 5; i++)
    {
        msg[0] = (uint8_t)i;
        LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 1, msg, sizeof(msg)));
    }
    struct collected c = { 0 };
    LS_CHECK(2 == ls_rb_read(&rb, collect, &c, 2));
    LS_CHECK(3 == ls_rb_read(&rb, collect, &c, 10));
    for (int i = 0; i < 5; i++)
    {
        LS_CHECK(i == c.first[i]);
    }
}

static void test_full_and_max_length(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    uint8_t msg[CAPACITY / 8] = { 0 };
    LS_CHECK(LS_RB_ERROR == ls_rb_write(&rb, 1, msg, CAPACITY / 8 + 1));
    LS_CHECK(LS_RB_ERROR == ls_rb_write(&rb, 0, msg, 1));
    LS_CHECK(LS_RB_ERROR == ls_rb_write(&rb, -1, msg, 1));
    int written = 0;
    while (LS_RB_SUCCESS == ls_rb_write(&rb, 1, msg, CAPACITY / 8))
    {
        written++;
    }
    /* 136-byte records: 7 fit into 1024. */
    LS_CHECK(7 == written);
    LS_CHECK(LS_RB_FULL == ls_rb_write(&rb, 1, msg, CAPACITY / 8));
    struct collected c = { 0 };
    LS_CHECK(7 == ls_rb_read(&rb, collect, &c, 100));
    LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 1, msg, CAPACITY / 8));
}

static void test_wrap_with_padding(void)
{
    for (int many = 0; many < 2; many++)
    {
        ls_ring_buffer_t rb;
        reset(&rb, many);
        uint8_t msg[100];
        struct collected c = { 0 };
        int sent = 0;
        for (int round = 0; round < 40; round++)
        {
            for (int i = 0; i < 3; i++)
            {
                msg[0] = (uint8_t)sent;
                LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, 1 + (sent % 3), msg, 60 + (size_t)(sent % 41)));
                sent++;
            }
            while (ls_rb_size(&rb) > 0)
            {
                ls_rb_read(&rb, collect, &c, 100);
            }
            for (int i = 0; i < c.count; i++)
            {
                LS_CHECK((uint8_t)(sent - c.count + i) == c.first[i]);
                LS_CHECK(60 + (size_t)((sent - c.count + i) % 41) == c.lengths[i]);
            }
            c.count = 0;
        }
        LS_CHECK(ls_rb_consumer_position(&rb) > 2 * CAPACITY);
        LS_CHECK(ls_rb_consumer_position(&rb) == ls_rb_producer_position(&rb));
    }
}

static void test_claim_commit_abort(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    int32_t a = ls_rb_try_claim(&rb, 3, 16);
    int32_t b = ls_rb_try_claim(&rb, 4, 16);
    LS_CHECK(a == 8 && b == 24 + 8);
    struct collected c = { 0 };
    LS_CHECK(0 == ls_rb_read(&rb, collect, &c, 10)); /* first claim not committed */
    memset(memory + b, 9, 16);
    LS_CHECK(0 == ls_rb_commit(&rb, b));
    LS_CHECK(-1 == ls_rb_commit(&rb, b)); /* twice */
    LS_CHECK(0 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(0 == ls_rb_abort(&rb, a));
    LS_CHECK(1 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(4 == c.types[0] && 9 == c.first[0]);
    LS_CHECK(-1 == ls_rb_commit(&rb, 3));
}

static ls_rb_read_action_t controlled(int32_t type, const uint8_t *data, size_t length, void *clientd)
{
    (void)data;
    (void)length;
    int *seen = clientd;
    (*seen)++;
    return type == 2 ? LS_RB_ABORT : (type == 3 ? LS_RB_BREAK : LS_RB_COMMIT);
}

static void test_controlled_read(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, false);
    uint8_t msg[8] = { 0 };
    ls_rb_write(&rb, 1, msg, 8);
    ls_rb_write(&rb, 2, msg, 8);
    int seen = 0;
    LS_CHECK(1 == ls_rb_controlled_read(&rb, controlled, &seen, 10));
    LS_CHECK(2 == seen);
    LS_CHECK(16 == ls_rb_consumer_position(&rb)); /* aborted message stays */
    LS_CHECK(16 == ls_rb_size(&rb));
}

static void test_unblock(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    uint8_t msg[8] = { 1 };
    /* Producer died between claim and commit: negative length at the head. */
    int32_t dead = ls_rb_try_claim(&rb, 1, 8);
    LS_CHECK(dead > 0);
    ls_rb_write(&rb, 2, msg, 8);
    struct collected c = { 0 };
    LS_CHECK(0 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(ls_rb_unblock(&rb));
    LS_CHECK(1 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(2 == c.types[0]);

    /* Producer died after advancing the tail but before writing the header: zero length. */
    int64_t tail = ls_rb_producer_position(&rb);
    *(int64_t *)(memory + CAPACITY + LS_RB_TAIL_POSITION_OFFSET) = tail + 32;
    ls_rb_write(&rb, 3, msg, 8);
    LS_CHECK(0 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(ls_rb_unblock(&rb));
    LS_CHECK(1 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(3 == c.types[1]);
    LS_CHECK(!ls_rb_unblock(&rb));
}

static void test_unblock_to_buffer_end(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    uint8_t msg[64] = { 0 };
    struct collected c = { 0 };
    /* Move head and tail near the end, then a dead producer claims the wrap. */
    while (ls_rb_producer_position(&rb) < CAPACITY - 64)
    {
        ls_rb_write(&rb, 1, msg, 56);
        ls_rb_read(&rb, collect, &c, 100);
        c.count = 0;
    }
    int64_t tail = ls_rb_producer_position(&rb);
    int64_t to_end = CAPACITY - (tail & (CAPACITY - 1));
    *(int64_t *)(memory + CAPACITY + LS_RB_TAIL_POSITION_OFFSET) = tail + to_end + 64;
    LS_CHECK(ls_rb_unblock(&rb)); /* pad to the end */
    ls_rb_read(&rb, collect, &c, 100);
    LS_CHECK(0 == c.count);
    LS_CHECK(ls_rb_consumer_position(&rb) == tail + to_end);
    ls_rb_write(&rb, 7, msg, 8);
    LS_CHECK(ls_rb_unblock(&rb)); /* the record at index 0 nobody wrote */
    LS_CHECK(1 == ls_rb_read(&rb, collect, &c, 100));
    LS_CHECK(7 == c.types[0]);
}

static void test_recover_after_consumer_killed_while_zeroing(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    uint8_t msg[20];
    for (int i = 0; i < 5; i++)
    {
        memset(msg, 0x11 * (i + 1), sizeof(msg));
        LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, i + 1, msg, sizeof(msg)));
    }
    LS_CHECK(0 == ls_rb_recover(&rb)); /* intact: nothing to do */
    /* The consumer read records 1-3 (96 bytes) and died zeroing them: its intent stored, the
     * lengths of 1-2 cleared, record 3's type cleared before its length (memset stores in any
     * order), payload bytes left over, the head not moved. */
    *(int64_t *)(memory + CAPACITY + LS_RB_CONSUME_TARGET_OFFSET) = 96;
    *(int32_t *)(memory + 0) = 0;
    *(int32_t *)(memory + 32) = 0;
    *(int32_t *)(memory + 64 + 4) = 0;
    struct collected c = { 0 };
    LS_CHECK(ls_rb_read(&rb, collect, &c, 10) <= 0);
    LS_CHECK(96 == ls_rb_recover(&rb));
    LS_CHECK(2 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(4 == c.types[0] && 5 == c.types[1] && 0x44 == c.first[0] && 0x55 == c.first[1]);
    LS_CHECK(0 == ls_rb_size(&rb));
}

static void test_recover_never_skips_committed_records(void)
{
    /* A producer has taken tail space but not yet written its length (0), with committed
     * records before it, and no consumer died: recovery must leave everything as it is. */
    ls_ring_buffer_t rb;
    reset(&rb, true);
    uint8_t msg[20] = { 0 };
    for (int i = 0; i < 3; i++)
    {
        LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&rb, i + 1, msg, sizeof(msg)));
    }
    const int32_t index = ls_rb_try_claim(&rb, 9, sizeof(msg));
    LS_CHECK(96 == index - LS_RB_RECORD_HEADER_LENGTH);
    *(int32_t *)(memory + 96) = 0; /* as between the tail CAS and the claim's first store */
    LS_CHECK(0 == ls_rb_recover(&rb));
    struct collected c = { 0 };
    LS_CHECK(3 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(1 == c.types[0] && 2 == c.types[1] && 3 == c.types[2]);
    /* and a consume that completed leaves nothing for a successor to redo */
    LS_CHECK(0 == ls_rb_recover(&rb));
}

static void test_corrupt_record(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    *(int32_t *)memory = 1 << 20; /* length far past the buffer */
    *(int32_t *)(memory + 4) = 1;
    struct collected c = { 0 };
    LS_CHECK(-1 == ls_rb_read(&rb, collect, &c, 10));
    LS_CHECK(LS_EFORMAT == ls_errcode());
    LS_CHECK(0 == c.count);
    *(int32_t *)memory = 16;
    *(int32_t *)(memory + 4) = 0; /* type 0 is never written */
    LS_CHECK(-1 == ls_rb_read(&rb, collect, &c, 10));
}

static void test_correlation_and_heartbeat(void)
{
    ls_ring_buffer_t rb;
    reset(&rb, true);
    LS_CHECK(0 == ls_rb_next_correlation_id(&rb));
    LS_CHECK(1 == ls_rb_next_correlation_id(&rb));
    ls_rb_consumer_heartbeat_time(&rb, 12345);
    LS_CHECK(12345 == ls_rb_consumer_heartbeat_time_value(&rb));
}

#define PRODUCERS 3
#define PER_PRODUCER 200000

static ls_ring_buffer_t shared_rb;

static void *producer(void *arg)
{
    const int32_t id = (int32_t)(intptr_t)arg;
    uint32_t seq = 0;
    while (seq < PER_PRODUCER)
    {
        uint8_t msg[24];
        memcpy(msg, &seq, 4);
        const size_t length = 4 + seq % 20;
        if (LS_RB_SUCCESS == ls_rb_write(&shared_rb, id + 1, msg, length))
        {
            seq++;
        }
    }
    return NULL;
}

static uint32_t next_expected[PRODUCERS];
static int order_errors;

static void check_order(int32_t type, const uint8_t *data, size_t length, void *clientd)
{
    (void)clientd;
    uint32_t seq;
    memcpy(&seq, data, 4);
    if (seq != next_expected[type - 1] || length != 4 + seq % 20)
    {
        order_errors++;
    }
    next_expected[type - 1] = seq + 1;
}

static void test_mpsc_threads(void)
{
    reset(&shared_rb, true);
    pthread_t threads[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
    {
        pthread_create(&threads[i], NULL, producer, (void *)(intptr_t)i);
    }
    int64_t total = 0;
    while (total < (int64_t)PRODUCERS * PER_PRODUCER)
    {
        int64_t n = ls_rb_read(&shared_rb, check_order, NULL, 64);
        LS_CHECK(n >= 0);
        total += n;
    }
    for (int i = 0; i < PRODUCERS; i++)
    {
        pthread_join(threads[i], NULL);
        LS_CHECK(PER_PRODUCER == next_expected[i]);
    }
    LS_CHECK(0 == order_errors);
}

int main(void)
{
    LS_RUN(test_init_validates);
    LS_RUN(test_write_read);
    LS_RUN(test_limit_respected);
    LS_RUN(test_full_and_max_length);
    LS_RUN(test_wrap_with_padding);
    LS_RUN(test_claim_commit_abort);
    LS_RUN(test_controlled_read);
    LS_RUN(test_unblock);
    LS_RUN(test_unblock_to_buffer_end);
    LS_RUN(test_recover_after_consumer_killed_while_zeroing);
    LS_RUN(test_recover_never_skips_committed_records);
    LS_RUN(test_corrupt_record);
    LS_RUN(test_correlation_and_heartbeat);
    LS_RUN(test_mpsc_threads);
    return LS_TEST_RESULT();
}
