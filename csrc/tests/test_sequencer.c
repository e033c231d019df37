/* Sequencer loop: stamps gap-free sequences, keeps each origin's order, drops duplicates
 * (origin sequence not above the last), leaves commands in the ring when the log pushes
 * back, handles long (fragmented) commands, and sequences concurrent senders. */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "lockstep.h"
#include "ls_test.h"

#define TERM (64 * 1024)
#define LOG_LENGTH (3 * TERM + 4096)
#define RING_CAPACITY (64 * 1024)
#define SESSION 11
#define STREAM 100

static _Alignas(64) uint8_t log_memory[LOG_LENGTH];
static _Alignas(64) uint8_t ring_memory[RING_CAPACITY + LS_RB_TRAILER_LENGTH];
static _Alignas(64) uint8_t values[8 * LS_COUNTER_VALUE_LENGTH];
static _Alignas(64) uint8_t metadata[8 * LS_COUNTER_METADATA_LENGTH];

static ls_counters_t counters;
static ls_ring_buffer_t ingress;
static ls_publication_t pub;
static ls_image_t image;
static int32_t sub_id;

static void setup(void)
{
    memset(log_memory, 0, sizeof(log_memory));
    memset(ring_memory, 0, sizeof(ring_memory));
    memset(values, 0, sizeof(values));
    memset(metadata, 0, sizeof(metadata));
    LS_CHECK(0 == ls_counters_init(&counters, metadata, sizeof(metadata), values, sizeof(values)));
    LS_CHECK(0 == ls_logbuffer_format(log_memory, LOG_LENGTH, TERM, 4096, 1408, 0, 0, 0, SESSION, STREAM, 1));
    LS_CHECK(0 == ls_rb_init(&ingress, ring_memory, sizeof(ring_memory), true));
    LS_CHECK(0 == ls_publication_init(&pub, log_memory, LOG_LENGTH, true, &counters));
    uint8_t key[LS_STREAM_KEY_LENGTH] = { 0 };
    const int32_t session = SESSION, stream = STREAM;
    memcpy(key + LS_STREAM_KEY_SESSION_ID_OFFSET, &session, 4);
    memcpy(key + LS_STREAM_KEY_STREAM_ID_OFFSET, &stream, 4);
    sub_id = ls_counters_allocate(&counters, LS_COUNTER_TYPE_SUBSCRIBER_POSITION, key, sizeof(key), "sub", 3, 1, 1, 1, 0);
    LS_CHECK(0 == ls_image_init(&image, log_memory, LOG_LENGTH, ls_counters_value_addr(&counters, sub_id), 0));
}

struct seen
{
    int count;
    int64_t sequences[4096];
    int32_t origins[4096];
    int64_t origin_sequences[4096];
    size_t lengths[4096];
};

static void on_sequenced(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    (void)header;
    struct seen *s = clientd;
    LS_CHECK(length >= LS_SEQUENCED_HEADER_LENGTH);
    memcpy(&s->sequences[s->count], data + 0, 8);
    memcpy(&s->origin_sequences[s->count], data + 16, 8);
    memcpy(&s->origins[s->count], data + 24, 4);
    s->lengths[s->count] = length - LS_SEQUENCED_HEADER_LENGTH;
    s->count++;
}

static void drain(struct seen *s)
{
    while (ls_image_poll(&image, on_sequenced, s, 100) > 0)
    {
    }
}

static void test_sequences_and_dedup(void)
{
    setup();
    ls_sequencer_t *seq = calloc(1, sizeof(ls_sequencer_t));
    LS_CHECK(0 == ls_sequencer_init(seq, &ingress, &pub, 1));
    uint8_t command[40] = { 1 };
    LS_CHECK(LS_RB_SUCCESS == ls_sequencer_send(&ingress, 7, 1, command, sizeof(command)));
    LS_CHECK(LS_RB_SUCCESS == ls_sequencer_send(&ingress, 8, 1, command, 5));
    LS_CHECK(LS_RB_SUCCESS == ls_sequencer_send(&ingress, 7, 1, command, sizeof(command))); /* duplicate */
    LS_CHECK(LS_RB_SUCCESS == ls_sequencer_send(&ingress, 7, 2, command, 0));
    LS_CHECK(LS_RB_SUCCESS == ls_rb_write(&ingress, 99, command, 4)); /* not a command: rejected */
    LS_CHECK(5 == ls_sequencer_do_work(seq, 100));
    LS_CHECK(3 == seq->sequenced && 1 == seq->duplicates && 1 == seq->rejected);
    LS_CHECK(4 == seq->next_sequence);
    LS_CHECK(2 == ls_sequencer_last_origin_sequence(seq, 7));
    LS_CHECK(-1 == ls_sequencer_last_origin_sequence(seq, 9));
    struct seen *s = calloc(1, sizeof(struct seen));
    drain(s);
    LS_CHECK(3 == s->count);
    LS_CHECK(1 == s->sequences[0] && 2 == s->sequences[1] && 3 == s->sequences[2]);
    LS_CHECK(7 == s->origins[0] && 8 == s->origins[1] && 7 == s->origins[2]);
    LS_CHECK(40 == s->lengths[0] && 5 == s->lengths[1] && 0 == s->lengths[2]);
    LS_CHECK(seq->last_position == ls_image_position(&image));

    /* Recovery: a new sequencer told what the log held drops what was already sequenced. */
    ls_sequencer_close(seq);
    LS_CHECK(0 == ls_sequencer_init(seq, &ingress, &pub, 4));
    ls_sequencer_note_origin(seq, 7, 2);
    LS_CHECK(LS_RB_SUCCESS == ls_sequencer_send(&ingress, 7, 2, command, 1));
    LS_CHECK(LS_RB_SUCCESS == ls_sequencer_send(&ingress, 7, 3, command, 1));
    LS_CHECK(2 == ls_sequencer_do_work(seq, 100));
    s->count = 0;
    drain(s);
    LS_CHECK(1 == s->count && 4 == s->sequences[0] && 3 == s->origin_sequences[0]);
    ls_sequencer_close(seq);
    ls_image_close(&image);
    free(seq);
    free(s);
}

static void test_back_pressure_keeps_commands(void)
{
    setup();
    ls_sequencer_t *seq = calloc(1, sizeof(ls_sequencer_t));
    LS_CHECK(0 == ls_sequencer_init(seq, &ingress, &pub, 1));
    uint8_t command[200] = { 0 };
    int64_t sent = 0;
    /* The subscriber never reads: the log stops at half a term, the ring then fills. */
    for (;;)
    {
        if (LS_RB_SUCCESS == ls_sequencer_send(&ingress, 1, sent + 1, command, sizeof(command)))
        {
            sent++;
        }
        else if (0 == ls_sequencer_do_work(seq, 1000))
        {
            break;
        }
    }
    LS_CHECK(LS_PUBLICATION_BACK_PRESSURED == seq->last_status);
    LS_CHECK(ls_rb_size(&ingress) > 0);
    const int64_t sequenced = seq->sequenced;
    LS_CHECK(sequenced > 0 && sequenced < sent);
    /* Reading the log releases the sequencer; every command arrives once, in order. */
    struct seen *s = calloc(1, sizeof(struct seen));
    int64_t expected = 1;
    for (int rounds = 0; rounds < 10000 && expected <= sent; rounds++)
    {
        ls_sequencer_do_work(seq, 1000);
        s->count = 0;
        while (s->count < 4000 && ls_image_poll(&image, on_sequenced, s, 100) > 0)
        {
        }
        for (int i = 0; i < s->count; i++)
        {
            LS_CHECK(expected == s->sequences[i] && expected == s->origin_sequences[i]);
            expected++;
        }
    }
    LS_CHECK(expected == sent + 1);
    LS_CHECK(0 == ls_rb_size(&ingress));
    ls_sequencer_close(seq);
    ls_image_close(&image);
    free(seq);
    free(s);
}

static void test_long_command(void)
{
    setup();
    ls_sequencer_t *seq = calloc(1, sizeof(ls_sequencer_t));
    LS_CHECK(0 == ls_sequencer_init(seq, &ingress, &pub, 1));
    static uint8_t command[5000];
    for (size_t i = 0; i < sizeof(command); i++)
    {
        command[i] = (uint8_t)i;
    }
    LS_CHECK(LS_RB_SUCCESS == ls_sequencer_send(&ingress, 3, 1, command, sizeof(command)));
    LS_CHECK(1 == ls_sequencer_do_work(seq, 10));
    struct seen *s = calloc(1, sizeof(struct seen));
    drain(s);
    LS_CHECK(1 == s->count && sizeof(command) == s->lengths[0]);
    ls_sequencer_close(seq);
    ls_image_close(&image);
    free(seq);
    free(s);
}

#define SENDERS 3
#define PER_SENDER 50000

static void *sender(void *arg)
{
    const int32_t origin = (int32_t)(intptr_t)arg;
    for (int64_t i = 1; i <= PER_SENDER;)
    {
        uint8_t command[16];
        memcpy(command, &i, 8);
        if (LS_RB_SUCCESS == ls_sequencer_send(&ingress, origin, i, command, 8 + (size_t)(i % 8)))
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

static int64_t next_origin_sequence[SENDERS + 1];
static int64_t next_sequence_seen = 1;
static int order_errors;

static void check(const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd)
{
    (void)header;
    (void)clientd;
    int64_t sequence, origin_sequence;
    int32_t origin;
    memcpy(&sequence, data, 8);
    memcpy(&origin_sequence, data + 16, 8);
    memcpy(&origin, data + 24, 4);
    if (sequence != next_sequence_seen++ || origin < 1 || origin > SENDERS ||
        origin_sequence != ++next_origin_sequence[origin] || length != LS_SEQUENCED_HEADER_LENGTH + 8 + (size_t)(origin_sequence % 8))
    {
        order_errors++;
    }
}

static void test_concurrent_senders(void)
{
    setup();
    ls_sequencer_t *seq = calloc(1, sizeof(ls_sequencer_t));
    LS_CHECK(0 == ls_sequencer_init(seq, &ingress, &pub, 1));
    pthread_t threads[SENDERS];
    for (int i = 0; i < SENDERS; i++)
    {
        pthread_create(&threads[i], NULL, sender, (void *)(intptr_t)(i + 1));
    }
    while (next_sequence_seen <= (int64_t)SENDERS * PER_SENDER)
    {
        const int64_t work = ls_sequencer_do_work(seq, 256) + ls_image_poll(&image, check, NULL, 256);
        if (0 == work)
        {
            sched_yield();
        }
    }
    for (int i = 0; i < SENDERS; i++)
    {
        pthread_join(threads[i], NULL);
    }
    LS_CHECK(0 == order_errors);
    LS_CHECK((int64_t)SENDERS * PER_SENDER == seq->sequenced);
    ls_sequencer_close(seq);
    ls_image_close(&image);
    free(seq);
}

int main(void)
{
    LS_RUN(test_sequences_and_dedup);
    LS_RUN(test_back_pressure_keeps_commands);
    LS_RUN(test_long_command);
    LS_RUN(test_concurrent_senders);
    return LS_TEST_RESULT();
}
