/* Distinct error log: Agrona's record layout byte for byte, distinct counting, reading past
 * records being written, a full log, corrupt headers, and writers in threads (no lost counts). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lockstep.h"
#include "ls_test.h"

#define CAPACITY 4096
static _Alignas(64) uint8_t buffer[CAPACITY];

static void reset(ls_distinct_error_log_t *log, size_t capacity)
{
    memset(buffer, 0, sizeof(buffer));
    LS_CHECK(0 == ls_distinct_error_log_init(log, buffer, capacity));
}

static int32_t i32_at(size_t offset)
{
    int32_t v;
    memcpy(&v, buffer + offset, sizeof(v));
    return v;
}

static int64_t i64_at(size_t offset)
{
    int64_t v;
    memcpy(&v, buffer + offset, sizeof(v));
    return v;
}

static void test_layout_is_agronas(void)
{
    ls_distinct_error_log_t log;
    reset(&log, CAPACITY);
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 1000, "boom", 4));
    LS_CHECK(28 == i32_at(0));   /* length: header 24 + text */
    LS_CHECK(1 == i32_at(4));    /* observation count */
    LS_CHECK(1000 == i64_at(8)); /* last observation */
    LS_CHECK(1000 == i64_at(16)); /* first observation */
    LS_CHECK(0 == memcmp(buffer + 24, "boom", 4));
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 1100, "other error", 11));
    LS_CHECK(35 == i32_at(32)); /* next record at align(28, 8) */
    LS_CHECK(0 == memcmp(buffer + 32 + 24, "other error", 11));
    LS_CHECK(0 == ls_distinct_error_log_record(&log, 2000, "boom", 4));
    LS_CHECK(2 == i32_at(4) && 2000 == i64_at(8) && 1000 == i64_at(16));
    LS_CHECK(0 == ls_distinct_error_log_record(&log, 1500, "boom", 4)); /* late: last stays the latest */
    LS_CHECK(3 == i32_at(4) && 2000 == i64_at(8));
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 3000, "boo", 3)); /* a prefix is another text */
    LS_CHECK(27 == i32_at(72));
    LS_CHECK(0 == i32_at(104));
}

static void test_read(void)
{
    ls_distinct_error_log_t log;
    reset(&log, CAPACITY);
    ls_error_record_t r;
    int32_t offset = 0;
    LS_CHECK(0 == ls_distinct_error_log_read(&log, &offset, &r));
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 10, "first", 5));
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 20, "second", 6));
    LS_CHECK(0 == ls_distinct_error_log_record(&log, 30, "first", 5));
    offset = 0;
    LS_CHECK(1 == ls_distinct_error_log_read(&log, &offset, &r));
    LS_CHECK(0 == r.offset && 2 == r.observation_count && 10 == r.first_observation_timestamp_ms &&
             30 == r.last_observation_timestamp_ms && 5 == r.text_length && 0 == memcmp(r.text, "first", 5));
    LS_CHECK(32 == offset);
    LS_CHECK(1 == ls_distinct_error_log_read(&log, &offset, &r));
    LS_CHECK(32 == r.offset && 1 == r.observation_count && 6 == r.text_length && 0 == memcmp(r.text, "second", 6));
    LS_CHECK(0 == ls_distinct_error_log_read(&log, &offset, &r));
    offset = 3;
    LS_CHECK(-1 == ls_distinct_error_log_read(&log, &offset, &r) && LS_EINVAL == ls_errcode());
}

static void test_pending_records_are_stepped_over(void)
{
    ls_distinct_error_log_t log;
    reset(&log, CAPACITY);
    /* A writer claimed 30 bytes at 0 and died before releasing them. */
    int32_t pending = -30;
    memcpy(buffer, &pending, 4);
    ls_error_record_t r;
    int32_t offset = 0;
    LS_CHECK(0 == ls_distinct_error_log_read(&log, &offset, &r));
    LS_CHECK(32 == offset);
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 5, "x", 1));
    LS_CHECK(25 == i32_at(32));
    /* A text of the pending record's length: waited for, then recorded after it. */
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 6, "abcdef", 6));
    LS_CHECK(30 == i32_at(64));
    LS_CHECK(0 == ls_distinct_error_log_record(&log, 7, "abcdef", 6));
    LS_CHECK(2 == i32_at(68));
    offset = 0;
    LS_CHECK(1 == ls_distinct_error_log_read(&log, &offset, &r) && 32 == r.offset);
    LS_CHECK(1 == ls_distinct_error_log_read(&log, &offset, &r) && 64 == r.offset);
    LS_CHECK(0 == ls_distinct_error_log_read(&log, &offset, &r));
}

static void test_full_and_bad_arguments(void)
{
    ls_distinct_error_log_t log;
    reset(&log, 64);
    char text[64];
    memset(text, 'e', sizeof(text));
    LS_CHECK(-1 == ls_distinct_error_log_record(&log, 1, text, 41) && LS_EINVAL == ls_errcode());
    LS_CHECK(-1 == ls_distinct_error_log_record(&log, 1, text, 0) && LS_EINVAL == ls_errcode());
    LS_CHECK(-1 == ls_distinct_error_log_record(&log, 1, NULL, 3) && LS_EINVAL == ls_errcode());
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 1, text, 30)); /* 54 bytes, next at 56 */
    LS_CHECK(-1 == ls_distinct_error_log_record(&log, 2, "other", 5) && LS_ESTATE == ls_errcode());
    LS_CHECK(0 == ls_distinct_error_log_record(&log, 3, text, 30)); /* a known text still counts */
    LS_CHECK(2 == i32_at(4));
    reset(&log, 64);
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 1, text, 40)); /* exactly the whole log */
    LS_CHECK(-1 == ls_distinct_error_log_record(&log, 1, "x", 1) && LS_ESTATE == ls_errcode());
    reset(&log, 0);
    LS_CHECK(-1 == ls_distinct_error_log_record(&log, 1, "x", 1) && LS_EINVAL == ls_errcode());
}

static void test_init_validation(void)
{
    ls_distinct_error_log_t log;
    LS_CHECK(-1 == ls_distinct_error_log_init(&log, buffer + 4, 64) && LS_EINVAL == ls_errcode());
    LS_CHECK(-1 == ls_distinct_error_log_init(&log, NULL, 64) && LS_EINVAL == ls_errcode());
    LS_CHECK(-1 == ls_distinct_error_log_init(&log, buffer, 100) && LS_EFORMAT == ls_errcode());
}

static void check_corrupt(int32_t at, int32_t length)
{
    ls_distinct_error_log_t log;
    reset(&log, 256);
    LS_CHECK(1 == ls_distinct_error_log_record(&log, 1, "fine", 4));
    memcpy(buffer + at, &length, 4);
    ls_error_record_t r;
    int32_t offset = 0;
    int found = ls_distinct_error_log_read(&log, &offset, &r);
    if (at > 0)
    {
        LS_CHECK(1 == found);
        found = ls_distinct_error_log_read(&log, &offset, &r);
    }
    LS_CHECK(-1 == found && LS_EFORMAT == ls_errcode());
    LS_CHECK(at == offset);
    LS_CHECK(-1 == ls_distinct_error_log_record(&log, 2, "new one", 7) && LS_EFORMAT == ls_errcode());
}

static void test_corrupt_lengths(void)
{
    check_corrupt(0, 5);
    check_corrupt(0, -5);
    check_corrupt(0, 257);
    check_corrupt(32, 256 - 32 + 1);
    check_corrupt(32, INT32_MAX);
    check_corrupt(32, INT32_MIN);
    check_corrupt(32, -(256 - 32 + 8));
    check_corrupt(32, 23);
}

/* Writers in threads: each observes TEXTS distinct texts ROUNDS times; every observation counts. */
#define WRITERS 4
#define TEXTS 12
#define ROUNDS 500
static ls_distinct_error_log_t shared;

static void text_of(int i, char *out, size_t size)
{
    snprintf(out, size, "error %d: %.*s", i, i * 3, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
}

static void *writer(void *arg)
{
    const int id = *(int *)arg;
    char text[128];
    for (int round = 0; round < ROUNDS; round++)
    {
        for (int k = 0; k < TEXTS; k++)
        {
            const int i = (k + id * 5) % TEXTS; /* writers start on different texts */
            text_of(i, text, sizeof(text));
            if (ls_distinct_error_log_record(&shared, round, text, strlen(text)) < 0)
            {
                return (void *)1;
            }
        }
    }
    return NULL;
}

static void test_concurrent_writers(void)
{
    memset(buffer, 0, sizeof(buffer));
    LS_CHECK(0 == ls_distinct_error_log_init(&shared, buffer, CAPACITY));
    pthread_t threads[WRITERS];
    int ids[WRITERS];
    for (int t = 0; t < WRITERS; t++)
    {
        ids[t] = t;
        pthread_create(&threads[t], NULL, writer, &ids[t]);
    }
    for (int t = 0; t < WRITERS; t++)
    {
        void *result = NULL;
        pthread_join(threads[t], &result);
        LS_CHECK(NULL == result);
    }
    int64_t counts[TEXTS] = { 0 };
    int records = 0;
    ls_error_record_t r;
    int32_t offset = 0;
    int found;
    char text[128];
    while (1 == (found = ls_distinct_error_log_read(&shared, &offset, &r)))
    {
        records++;
        int matched = 0;
        for (int i = 0; i < TEXTS; i++)
        {
            text_of(i, text, sizeof(text));
            if ((size_t)r.text_length == strlen(text) && 0 == memcmp(r.text, text, strlen(text)))
            {
                counts[i] += r.observation_count;
                matched = 1;
                LS_CHECK(r.last_observation_timestamp_ms == ROUNDS - 1);
            }
        }
        LS_CHECK(matched);
    }
    LS_CHECK(0 == found);
    /* One record per text unless a writer gave up waiting for a preempted one (then the counts add up). */
    LS_CHECK(records >= TEXTS);
    for (int i = 0; i < TEXTS; i++)
    {
        LS_CHECK(WRITERS * ROUNDS == counts[i]);
    }
}

int main(void)
{
    LS_RUN(test_layout_is_agronas);
    LS_RUN(test_read);
    LS_RUN(test_pending_records_are_stepped_over);
    LS_RUN(test_full_and_bad_arguments);
    LS_RUN(test_init_validation);
    LS_RUN(test_corrupt_lengths);
    LS_RUN(test_concurrent_writers);
    return LS_TEST_RESULT();
}
