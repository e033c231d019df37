/* Counters: allocation, labels and keys, values, free-for-reuse deadlines, exhaustion,
 * validation, and concurrent allocation from threads (no id handed out twice). */
#include <pthread.h>
#include <string.h>

#include "lockstep.h"
#include "ls_test.h"

#define COUNT 16
static _Alignas(64) uint8_t values[COUNT * LS_COUNTER_VALUE_LENGTH];
static _Alignas(64) uint8_t metadata[COUNT * LS_COUNTER_METADATA_LENGTH];

static void reset(ls_counters_t *c)
{
    memset(values, 0, sizeof(values));
    memset(metadata, 0, sizeof(metadata));
    LS_CHECK(0 == ls_counters_init(c, metadata, sizeof(metadata), values, sizeof(values)));
}

static void test_allocate_and_layout(void)
{
    ls_counters_t c;
    reset(&c);
    const char *label = "sub-pos: stream 7";
    uint8_t key[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    int32_t id = ls_counters_allocate(&c, 1001, key, sizeof(key), label, strlen(label), 42, 999, 7, 0);
    LS_CHECK(0 == id);
    LS_CHECK(1 == *(int32_t *)metadata);
    LS_CHECK(1001 == *(int32_t *)(metadata + 4));
    LS_CHECK(INT64_MAX == *(int64_t *)(metadata + 8));
    LS_CHECK(0 == memcmp(metadata + 16, key, 8));
    LS_CHECK((int32_t)strlen(label) == *(int32_t *)(metadata + 128));
    LS_CHECK(0 == memcmp(metadata + 132, label, strlen(label)));
    LS_CHECK(42 == *(int64_t *)(values + 8) && 999 == *(int64_t *)(values + 16) && 7 == *(int64_t *)(values + 24));
    ls_counters_set(&c, id, 100);
    LS_CHECK(100 == ls_counters_get(&c, id));
    LS_CHECK(100 == ls_counters_get_and_add(&c, id, 5));
    ls_counters_propose_max(&c, id, 50);
    LS_CHECK(105 == ls_counters_get(&c, id));
    ls_counters_propose_max(&c, id, 500);
    LS_CHECK(500 == ls_counters_get(&c, id));
    LS_CHECK(1 == ls_counters_allocate(&c, 1002, NULL, 0, "x", 1, 0, 0, 0, 0));
}

static void test_free_and_reuse_deadline(void)
{
    ls_counters_t c;
    reset(&c);
    int32_t a = ls_counters_allocate(&c, 1, NULL, 0, "a", 1, 0, 0, 0, 1000);
    LS_CHECK(0 == ls_counters_free(&c, a, 2000));
    LS_CHECK(-1 == ls_counters_free(&c, a, 2000));
    LS_CHECK(LS_COUNTER_RECORD_RECLAIMED == ls_counters_state(&c, a));
    LS_CHECK(1 == ls_counters_allocate(&c, 1, NULL, 0, "b", 1, 0, 0, 0, 1500)); /* not yet */
    LS_CHECK(0 == ls_counters_allocate(&c, 1, NULL, 0, "c", 1, 0, 0, 0, 2000)); /* reused */
    LS_CHECK(1 == *(int32_t *)(metadata + 128) && 'c' == metadata[132] && 0 == metadata[133]);
}

static void test_exhaustion_and_bad_args(void)
{
    ls_counters_t c;
    reset(&c);
    for (int i = 0; i < COUNT; i++)
    {
        LS_CHECK(i == ls_counters_allocate(&c, 1, NULL, 0, NULL, 0, 0, 0, 0, 0));
    }
    LS_CHECK(-1 == ls_counters_allocate(&c, 1, NULL, 0, NULL, 0, 0, 0, 0, 0));
    LS_CHECK(LS_ESTATE == ls_errcode());
    char big[400] = { 0 };
    reset(&c);
    LS_CHECK(-1 == ls_counters_allocate(&c, 1, NULL, 0, big, sizeof(big), 0, 0, 0, 0));
    LS_CHECK(-1 == ls_counters_allocate(&c, 1, (uint8_t *)big, 113, NULL, 0, 0, 0, 0, 0));
    LS_CHECK(-1 == ls_counters_free(&c, COUNT, 0));
}

static void test_init_validation(void)
{
    ls_counters_t c;
    reset(&c);
    LS_CHECK(-1 == ls_counters_init(&c, metadata, sizeof(metadata) - 512, values, sizeof(values)));
    LS_CHECK(-1 == ls_counters_init(&c, metadata, sizeof(metadata), values, 100));
    *(int32_t *)(metadata + 512) = 77; /* impossible state */
    LS_CHECK(-1 == ls_counters_init(&c, metadata, sizeof(metadata), values, sizeof(values)));
    LS_CHECK(LS_EFORMAT == ls_errcode());
}

static ls_counters_t shared;
static int32_t got[4][COUNT];

static void *allocator(void *arg)
{
    int32_t *out = arg;
    for (int i = 0; i < COUNT / 4; i++)
    {
        out[i] = ls_counters_allocate(&shared, 1, NULL, 0, "t", 1, 0, 0, 0, 0);
    }
    return NULL;
}

static void test_concurrent_allocation(void)
{
    reset(&shared);
    pthread_t threads[4];
    for (int t = 0; t < 4; t++)
    {
        pthread_create(&threads[t], NULL, allocator, got[t]);
    }
    int seen[COUNT] = { 0 };
    for (int t = 0; t < 4; t++)
    {
        pthread_join(threads[t], NULL);
        for (int i = 0; i < COUNT / 4; i++)
        {
            LS_CHECK(got[t][i] >= 0 && got[t][i] < COUNT);
            if (got[t][i] >= 0 && got[t][i] < COUNT)
            {
                seen[got[t][i]]++;
            }
        }
    }
    for (int i = 0; i < COUNT; i++)
    {
        LS_CHECK(1 == seen[i]);
    }
}

int main(void)
{
    LS_RUN(test_allocate_and_layout);
    LS_RUN(test_free_and_reuse_deadline);
    LS_RUN(test_exhaustion_and_bad_args);
    LS_RUN(test_init_validation);
    LS_RUN(test_concurrent_allocation);
    return LS_TEST_RESULT();
}
