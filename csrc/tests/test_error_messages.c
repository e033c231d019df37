/* Every failure path of every C entry point leaves a message that is set, fresh (not the
 * previous call's) and about what went wrong, with Aeron-style "[function, file:line]" trace
 * lines; a fresh thread's first failure included. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "lockstep.h"
#include "ls_test.h"

#define TERM (64 * 1024)
#define LENGTH (3 * TERM + 4096)
#define RING 1024

static _Alignas(64) uint8_t memory[LENGTH];
static _Alignas(64) uint8_t ring[RING + LS_RB_TRAILER_LENGTH];
static _Alignas(64) uint8_t values[4 * LS_COUNTER_VALUE_LENGTH];
static _Alignas(64) uint8_t metadata[4 * LS_COUNTER_METADATA_LENGTH];
static _Alignas(64) uint8_t errors[256];

/* After a failing call: the code, a message with `needle`, not the sentinel an earlier
 * failure left, and a trace whose first line names `function`. */
static void check_error(int line, int code, const char *needle, const char *function)
{
    const char *message = ls_errmsg();
    const char *trace = ls_errtrace();
    if (ls_errcode() != code || NULL == strstr(message, needle) || NULL != strstr(message, "sentinel") ||
        0 != strncmp(trace + 1, function, strlen(function)))
    {
        fprintf(stderr, "line %d: expected code %d, '%s' from %s; found code %d '%s'\n  trace: %s\n", line, code,
                needle, function, ls_errcode(), message, trace);
        ls_test_failures++;
    }
}

/* Runs `call`, which must fail, after leaving an unrelated error behind. */
#define EXPECT_FAILS(call, code, needle, function)                       \
    do                                                                   \
    {                                                                    \
        LS_SET_ERR(LS_ESTATE, "sentinel: an unrelated earlier failure"); \
        LS_CHECK(call);                                                  \
        check_error(__LINE__, code, needle, function);                   \
    } while (0)

static void format_log(void)
{
    memset(memory, 0, sizeof(memory));
    LS_CHECK(0 == ls_logbuffer_format(memory, LENGTH, TERM, 4096, 1408, 0, 0, 0, 1, 2, 3));
}

static void test_logbuffer(void)
{
    EXPECT_FAILS(ls_logbuffer_file_length(1000, 4096) < 0, LS_EINVAL, "found 1000 / 4096", "ls_logbuffer_file_length");
    EXPECT_FAILS(ls_logbuffer_file_length(TERM, 100) < 0, LS_EINVAL, "page size", "ls_logbuffer_file_length");
    EXPECT_FAILS(-1 == ls_logbuffer_format(NULL, LENGTH, TERM, 4096, 1408, 0, 0, 0, 1, 2, 3), LS_EINVAL,
                 "8-byte aligned", "ls_logbuffer_format");
    EXPECT_FAILS(-1 == ls_logbuffer_format(memory, LENGTH, 1000, 4096, 1408, 0, 0, 0, 1, 2, 3), LS_EINVAL,
                 "found 1000", "ls_logbuffer_format");
    EXPECT_FAILS(-1 == ls_logbuffer_format(memory, LENGTH - 4096, TERM, 4096, 1408, 0, 0, 0, 1, 2, 3), LS_EINVAL,
                 "length: expected", "ls_logbuffer_format");
    EXPECT_FAILS(-1 == ls_logbuffer_format(memory, LENGTH, TERM, 4096, 33, 0, 0, 0, 1, 2, 3), LS_EINVAL,
                 "found 33", "ls_log_check_mtu");
    LS_CHECK(NULL != strstr(ls_errtrace(), "\n[ls_logbuffer_format, logbuffer.c:")); /* appended context */
    EXPECT_FAILS(-1 == ls_logbuffer_format(memory, LENGTH, TERM, 4096, 1408, 0, 0, 7, 1, 2, 3), LS_EINVAL,
                 "term offset", "ls_logbuffer_format");
    EXPECT_FAILS(-1 == ls_logbuffer_format(memory, LENGTH, TERM, 4096, 1408, 5, 4, 0, 1, 2, 3), LS_EINVAL,
                 "active term id", "ls_logbuffer_format");

    ls_logbuffer_t log;
    EXPECT_FAILS(-1 == ls_logbuffer_init(&log, NULL, LENGTH), LS_EINVAL, "8-byte aligned", "ls_log_init");
    memset(memory, 0, sizeof(memory));
    EXPECT_FAILS(-1 == ls_logbuffer_init(&log, memory, 100), LS_EFORMAT, "length: expected at least",
                 "ls_log_find_term_length");
    EXPECT_FAILS(-1 == ls_logbuffer_init(&log, memory, LENGTH), LS_EFORMAT, "term length", "ls_log_find_term_length");
}

static void test_counters(void)
{
    ls_counters_t counters;
    EXPECT_FAILS(-1 == ls_counters_init(&counters, NULL, 0, values, sizeof(values)), LS_EINVAL, "8-byte aligned",
                 "ls_counters_init");
    EXPECT_FAILS(-1 == ls_counters_init(&counters, metadata, sizeof(metadata), values, 100), LS_EFORMAT,
                 "values length", "ls_counters_init");
    EXPECT_FAILS(-1 == ls_counters_init(&counters, metadata, 512, values, sizeof(values)), LS_EFORMAT,
                 "metadata length", "ls_counters_init");
    memset(metadata, 0, sizeof(metadata));
    memset(values, 0, sizeof(values));
    metadata[0] = 9; /* state 9 */
    EXPECT_FAILS(-1 == ls_counters_init(&counters, metadata, sizeof(metadata), values, sizeof(values)), LS_EFORMAT,
                 "state", "ls_counters_init");
    metadata[0] = 0;
    LS_CHECK(0 == ls_counters_init(&counters, metadata, sizeof(metadata), values, sizeof(values)));
    uint8_t key[LS_COUNTER_MAX_KEY_LENGTH + 1] = { 0 };
    EXPECT_FAILS(-1 == ls_counters_allocate(&counters, 1, key, sizeof(key), "x", 1, 0, 0, 0, 0), LS_EINVAL,
                 "key length", "ls_counters_allocate");
    EXPECT_FAILS(-1 == ls_counters_allocate(&counters, 1, NULL, 0, "x", LS_COUNTER_MAX_LABEL_LENGTH + 1, 0, 0, 0, 0),
                 LS_EINVAL, "label length", "ls_counters_allocate");
    for (int i = 0; i < 4; i++)
    {
        LS_CHECK(i == ls_counters_allocate(&counters, 1, NULL, 0, "x", 1, 0, 0, 0, 0));
    }
    EXPECT_FAILS(-1 == ls_counters_allocate(&counters, 1, NULL, 0, "x", 1, 0, 0, 0, 0), LS_ESTATE, "in use",
                 "ls_counters_allocate");
    EXPECT_FAILS(-1 == ls_counters_free(&counters, 99, 0), LS_EINVAL, "counter id", "ls_counters_check_id");
    LS_CHECK(NULL != strstr(ls_errtrace(), "[ls_counters_free, counters.c:"));
    LS_CHECK(0 == ls_counters_free(&counters, 2, 0));
    EXPECT_FAILS(-1 == ls_counters_free(&counters, 2, 0), LS_ESTATE, "not allocated", "ls_counters_free");
}

static void test_error_log(void)
{
    ls_distinct_error_log_t log;
    EXPECT_FAILS(-1 == ls_distinct_error_log_init(&log, NULL, 64), LS_EINVAL, "8-byte aligned",
                 "ls_distinct_error_log_init");
    EXPECT_FAILS(-1 == ls_distinct_error_log_init(&log, errors, 100), LS_EFORMAT, "error log length",
                 "ls_distinct_error_log_init");
    memset(errors, 0, sizeof(errors));
    LS_CHECK(0 == ls_distinct_error_log_init(&log, errors, 64));
    EXPECT_FAILS(-1 == ls_distinct_error_log_record(&log, 1, "x", 0), LS_EINVAL, "error text length",
                 "ls_distinct_error_log_record");
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 1, "first", 5));
    EXPECT_FAILS(-1 == ls_distinct_error_log_record(&log, 1, "a second text", 13), LS_ESTATE, "error log full",
                 "ls_distinct_error_log_record");
    int32_t offset = 3;
    ls_error_record_t record;
    EXPECT_FAILS(-1 == ls_distinct_error_log_read(&log, &offset, &record), LS_EINVAL, "error log offset",
                 "ls_distinct_error_log_read");
    memset(errors, 0, sizeof(errors));
    const int32_t bad_length = 1000;
    memcpy(errors, &bad_length, sizeof(bad_length));
    offset = 0;
    EXPECT_FAILS(-1 == ls_distinct_error_log_read(&log, &offset, &record), LS_EFORMAT, "record at offset 0",
                 "ls_error_log_magnitude");
}

static void test_publication_and_image(void)
{
    ls_counters_t counters;
    memset(metadata, 0, sizeof(metadata));
    memset(values, 0, sizeof(values));
    LS_CHECK(0 == ls_counters_init(&counters, metadata, sizeof(metadata), values, sizeof(values)));
    ls_publication_t pub;
    ls_image_t image;
    EXPECT_FAILS(-1 == ls_publication_init(NULL, memory, LENGTH, true, &counters), LS_EINVAL, "publication",
                 "ls_publication_init");
    memset(memory, 0, sizeof(memory));
    EXPECT_FAILS(-1 == ls_publication_init(&pub, memory, LENGTH, true, &counters), LS_EFORMAT, "term length",
                 "ls_log_find_term_length");
    LS_CHECK(NULL != strstr(ls_errtrace(), "[ls_publication_init, publication.c:"));
    int64_t position = 0;
    EXPECT_FAILS(-1 == ls_image_init(&image, memory, LENGTH, NULL, 0), LS_EINVAL, "position counter",
                 "ls_image_init");
    EXPECT_FAILS(-1 == ls_image_init(&image, memory, LENGTH, &position, 0), LS_EFORMAT, "term length",
                 "ls_log_find_term_length");
    LS_CHECK(NULL != strstr(ls_errtrace(), "[ls_image_init_log, image.c:"));
    format_log();
    EXPECT_FAILS(-1 == ls_image_init(&image, memory, LENGTH, &position, 33), LS_EINVAL, "position: expected",
                 "ls_image_init");

    LS_CHECK(0 == ls_publication_init(&pub, memory, LENGTH, true, &counters));
    static uint8_t big[TERM];
    EXPECT_FAILS(LS_PUBLICATION_ERROR == ls_publication_offer(&pub, big, sizeof(big), 0), LS_EINVAL,
                 "length: expected at most", "ls_pub_offer");
    EXPECT_FAILS(LS_PUBLICATION_ERROR == ls_publication_offer(&pub, NULL, 10, 0), LS_EINVAL, "data: NULL",
                 "ls_pub_offer");
    ls_buffer_claim_t claim;
    EXPECT_FAILS(LS_PUBLICATION_ERROR == ls_publication_try_claim(&pub, 5000, &claim), LS_EINVAL, "claim length",
                 "ls_publication_try_claim");
    memset(&claim, 0, sizeof(claim));
    EXPECT_FAILS(-1 == ls_buffer_claim_commit(&claim), LS_ESTATE, "no frame claimed", "ls_buffer_claim_frame");
    EXPECT_FAILS(-1 == ls_buffer_claim_abort(&claim), LS_ESTATE, "no frame claimed", "ls_buffer_claim_frame");

    /* A corrupt frame where the reader stands: poll and scan say where. */
    LS_CHECK(0 == ls_image_init(&image, memory, LENGTH, &position, 0));
    const int32_t bad_length = 7;
    memcpy(memory, &bad_length, sizeof(bad_length));
    EXPECT_FAILS(-1 == ls_image_poll(&image, NULL, NULL, 10), LS_EFORMAT, "term 0 offset 0: length: expected 32..", "ls_term_check_frame");
    ls_image_close(&image);
}

static void test_ring_and_sequencer(void)
{
    ls_ring_buffer_t rb;
    EXPECT_FAILS(-1 == ls_rb_init(&rb, NULL, sizeof(ring), false), LS_EINVAL, "memory is NULL", "ls_rb_init");
    EXPECT_FAILS(-1 == ls_rb_init(&rb, ring + 4, RING, false), LS_EINVAL, "8-byte aligned", "ls_rb_init");
    EXPECT_FAILS(-1 == ls_rb_init(&rb, ring, 64, false), LS_EFORMAT, "length: expected at least", "ls_rb_init");
    EXPECT_FAILS(-1 == ls_rb_init(&rb, ring, RING + 8 + LS_RB_TRAILER_LENGTH - 8 + 8, false), LS_EFORMAT,
                 "capacity", "ls_rb_init");
    memset(ring, 0, sizeof(ring));
    ring[RING + LS_RB_TRAILER_LENGTH - 1] = 1; /* trailer padding not zero */
    EXPECT_FAILS(-1 == ls_rb_init(&rb, ring, sizeof(ring), false), LS_EFORMAT, "trailer", "ls_rb_check_trailer_padding");
    LS_CHECK(NULL != strstr(ls_errtrace(), "[ls_rb_init, ring_buffer.c:"));
    memset(ring, 0, sizeof(ring));
    LS_CHECK(0 == ls_rb_init(&rb, ring, sizeof(ring), true));
    EXPECT_FAILS(LS_RB_ERROR == ls_rb_write(&rb, 0, (const uint8_t *)"x", 1), LS_EINVAL, "msg_type_id",
                 "ls_rb_try_claim");
    EXPECT_FAILS(LS_RB_ERROR == ls_rb_try_claim(&rb, 1, RING), LS_EINVAL, "length: expected at most",
                 "ls_rb_try_claim");
    EXPECT_FAILS(-1 == ls_rb_commit(&rb, 3), LS_EINVAL, "index", "ls_rb_claimed_record");
    EXPECT_FAILS(-1 == ls_rb_abort(&rb, 3), LS_EINVAL, "index", "ls_rb_claimed_record");
    EXPECT_FAILS(LS_RB_ERROR == ls_sequencer_send(&rb, 1, 1, NULL, RING), LS_EINVAL, "length", "ls_rb_try_claim");

    ls_sequencer_t seq;
    EXPECT_FAILS(-1 == ls_sequencer_init(&seq, NULL, NULL, 1), LS_EINVAL, "sequencer", "ls_sequencer_init");
    ls_counters_t counters;
    ls_publication_t pub;
    memset(metadata, 0, sizeof(metadata));
    memset(values, 0, sizeof(values));
    LS_CHECK(0 == ls_counters_init(&counters, metadata, sizeof(metadata), values, sizeof(values)));
    format_log();
    LS_CHECK(0 == ls_publication_init(&pub, memory, LENGTH, true, &counters));
    LS_CHECK(0 == ls_sequencer_init(&seq, &rb, &pub, 1));
    const int32_t record[2] = { 16, 77 }; /* a committed record of type 77 too long for the ring's rules */
    const int32_t huge = RING;
    memcpy(ring, record, sizeof(record));
    memcpy(ring, &huge, sizeof(huge));
    EXPECT_FAILS(-1 == ls_sequencer_do_work(&seq, 10), LS_EFORMAT, "record at index 0", "ls_rb_record_at");
    LS_CHECK(NULL != strstr(ls_errtrace(), "[ls_sequencer_do_work, sequencer.c:"));
    ls_sequencer_close(&seq);
}

static void test_mapped_file(void)
{
    EXPECT_FAILS(NULL == ls_map_file(-1, 4096, true, false), LS_EINVAL, "open fd", "ls_map_file");
    EXPECT_FAILS(NULL == ls_map_file(1000, 4096, true, false), LS_ESYS, "mmap of 4096 bytes: ", "ls_map_file");
    LS_CHECK(EBADF == ls_errno());
    EXPECT_FAILS(-1 == ls_unmap_file(memory + 1, 4096), LS_ESYS, "munmap of 4096 bytes", "ls_unmap_file");
    LS_CHECK(EINVAL == ls_errno());
    EXPECT_FAILS(-1 == ls_fill_holes(-1, 4096), LS_EINVAL, "open fd", "ls_fill_holes");
    EXPECT_FAILS(-1 == ls_fill_holes(1000, 4096), LS_ESYS, "fallocate of 4096 bytes: ", "ls_fill_holes");
    LS_CHECK(EBADF == ls_errno());
}

static void test_append_without_cause(void)
{
    ls_clear_error();
    LS_APPEND_ERR("context of %d", 7);
    LS_CHECK(LS_ESTATE == ls_errcode());
    LS_CHECK(0 == strcmp("context of 7 (no cause recorded)", ls_errmsg()));
    /* The message may quote the previous one (formatted aside first). */
    LS_SET_ERR(LS_EINVAL, "inner");
    LS_SET_ERR(LS_ESTATE, "outer (%s)", ls_errmsg());
    LS_CHECK(0 == strcmp("outer (inner)", ls_errmsg()));
}

static void *first_failure_of_a_thread(void *result)
{
    /* This thread's error state is empty: its first failure must still say something. */
    *(int *)result = ls_logbuffer_file_length(1000, 4096) < 0 && LS_EINVAL == ls_errcode() &&
                     NULL != strstr(ls_errmsg(), "term length") && NULL != strstr(ls_errtrace(), "logbuffer.c:");
    return NULL;
}

static void test_fresh_thread(void)
{
    pthread_t thread;
    int ok = 0;
    LS_CHECK(0 == pthread_create(&thread, NULL, first_failure_of_a_thread, &ok));
    LS_CHECK(0 == pthread_join(thread, NULL));
    LS_CHECK(1 == ok);
}

int main(void)
{
    LS_RUN(test_logbuffer);
    LS_RUN(test_counters);
    LS_RUN(test_error_log);
    LS_RUN(test_publication_and_image);
    LS_RUN(test_ring_and_sequencer);
    LS_RUN(test_mapped_file);
    LS_RUN(test_append_without_cause);
    LS_RUN(test_fresh_thread);
    return LS_TEST_RESULT();
}
