/* Log buffer: file length, format + init round trip, every validation error, position
 * arithmetic with term id wrap-around, tail position, end of stream, rotation with cleaning. */
#include <stdint.h>
#include <string.h>

#include "lockstep.h"
#include "ls_test.h"

#define TERM (64 * 1024)
#define PAGE 4096
#define LENGTH (3 * TERM + 4096)
#define META (3 * TERM)

static _Alignas(64) uint8_t memory[LENGTH + PAGE];

static int format(int32_t initial_term_id, int32_t active_term_id, int32_t term_offset)
{
    memset(memory, 0, sizeof(memory));
    return ls_logbuffer_format(
        memory, LENGTH, TERM, PAGE, 1408, initial_term_id, active_term_id, term_offset, 77, 1001, 42);
}

static int32_t meta_i32(int32_t offset)
{
    int32_t v;
    memcpy(&v, memory + META + offset, sizeof(v));
    return v;
}

static int64_t meta_i64(int32_t offset)
{
    int64_t v;
    memcpy(&v, memory + META + offset, sizeof(v));
    return v;
}

static void put_meta_i32(int32_t offset, int32_t v)
{
    memcpy(memory + META + offset, &v, sizeof(v));
}

static void put_meta_i64(int32_t offset, int64_t v)
{
    memcpy(memory + META + offset, &v, sizeof(v));
}

static void test_file_length(void)
{
    LS_CHECK(200704 == ls_logbuffer_file_length(TERM, PAGE));
    LS_CHECK(3 * TERM + 65536 == ls_logbuffer_file_length(TERM, 65536));
    LS_CHECK(-1 == ls_logbuffer_file_length(TERM / 2, PAGE));
    LS_CHECK(-1 == ls_logbuffer_file_length(TERM + 32, PAGE));
    LS_CHECK(-1 == ls_logbuffer_file_length(TERM, 2048));
    LS_CHECK(-1 == ls_logbuffer_file_length(TERM, 5000));
    LS_CHECK(3LL * 1024 * 1024 * 1024 + 4096 == ls_logbuffer_file_length(1024 * 1024 * 1024, PAGE));
}

static void test_format_and_init(void)
{
    ls_logbuffer_t log;
    LS_CHECK(0 == format(1000, 1000, 0));
    LS_CHECK(0 == ls_logbuffer_init(&log, memory, LENGTH));
    LS_CHECK(TERM == log.term_length);
    LS_CHECK(16 == log.position_bits_to_shift);
    LS_CHECK(1000 == log.initial_term_id);
    LS_CHECK(1408 == log.mtu_length);
    LS_CHECK(1376 == log.max_payload_length);
    LS_CHECK(TERM / 8 == log.max_message_length);
    LS_CHECK(77 == log.session_id && 1001 == log.stream_id);
    LS_CHECK(((int64_t)TERM << 31) == log.max_position);
    LS_CHECK(memory == log.terms[0] && memory + 2 * TERM == log.terms[2] && memory + META == log.metadata);

    /* Metadata exactly as Aeron lays it out. */
    LS_CHECK(((int64_t)1000 << 32) == meta_i64(0));
    LS_CHECK(((int64_t)998 << 32) == meta_i64(8));
    LS_CHECK(((int64_t)999 << 32) == meta_i64(16));
    LS_CHECK(0 == meta_i32(24));
    LS_CHECK(INT64_MAX == meta_i64(128));
    LS_CHECK(42 == meta_i64(256));
    LS_CHECK(1000 == meta_i32(264));
    LS_CHECK(32 == meta_i32(268) && 1408 == meta_i32(272) && TERM == meta_i32(276) && PAGE == meta_i32(280));
    LS_CHECK(TERM / 2 == meta_i32(284));
    LS_CHECK(-1 == meta_i64(448) && -1 == meta_i64(456));
    const uint8_t header[32] = { 0, 0, 0, 0, 0, 0xC0, 1, 0, 0, 0, 0, 0, 77, 0, 0, 0, 0xE9, 0x03, 0, 0, 0xE8, 0x03, 0, 0 };
    LS_CHECK(0 == memcmp(header, memory + META + 320, 32));

    LS_CHECK(0 == ls_logbuffer_active_term_count(&log));
    LS_CHECK(0 == ls_logbuffer_tail_position(&log));
    LS_CHECK(INT64_MAX == ls_logbuffer_end_of_stream_position(&log));
    ls_logbuffer_set_end_of_stream_position(&log, 4096);
    LS_CHECK(4096 == ls_logbuffer_end_of_stream_position(&log));
    LS_CHECK(0 == ls_logbuffer_retained_start_position(&log));

    /* Started mid-stream, as Aeron's term-id / term-offset parameters do. */
    LS_CHECK(0 == format(100, 107, 40960));
    LS_CHECK(0 == ls_logbuffer_init(&log, memory, LENGTH));
    LS_CHECK(7 == ls_logbuffer_active_term_count(&log));
    LS_CHECK(((int64_t)107 << 32 | 40960) == ls_logbuffer_raw_tail(&log, 1));
    LS_CHECK(((int64_t)105 << 32) == ls_logbuffer_raw_tail(&log, 2));
    LS_CHECK(((int64_t)106 << 32) == ls_logbuffer_raw_tail(&log, 0));
    LS_CHECK(7LL * TERM + 40960 == ls_logbuffer_tail_position(&log));
}

static void test_format_rejects(void)
{
    memset(memory, 0, sizeof(memory));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM + 1, PAGE, 1408, 0, 0, 0, 1, 1, 0));
    LS_CHECK(LS_EINVAL == ls_errcode());
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM, 1000, 1408, 0, 0, 0, 1, 1, 0));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH - 1, TERM, PAGE, 1408, 0, 0, 0, 1, 1, 0));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 1400, 0, 0, 0, 1, 1, 0));
    LS_CHECK(NULL != strstr(ls_errmsg(), "mtu"));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 32, 0, 0, 0, 1, 1, 0));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 65536, 0, 0, 0, 1, 1, 0));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 1408, 0, 0, 33, 1, 1, 0));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 1408, 0, 0, TERM + 32, 1, 1, 0));
    LS_CHECK(-1 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 1408, 10, 9, 0, 1, 1, 0));
    LS_CHECK(NULL != strstr(ls_errmsg(), "active term id"));
    LS_CHECK(-1 == ls_logbuffer_format(memory + 4, LENGTH, TERM, PAGE, 1408, 0, 0, 0, 1, 1, 0));
    LS_CHECK(-1 == ls_logbuffer_format(NULL, LENGTH, TERM, PAGE, 1408, 0, 0, 0, 1, 1, 0));
    LS_CHECK(0 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 64, 0, 0, 0, 1, 1, 0));
    LS_CHECK(0 == ls_logbuffer_format(memory, LENGTH, TERM, PAGE, 65504, 0, 0, TERM, 1, 1, 0));
}

/* Formats, applies `corrupt`, and expects init to fail naming `field`. */
static void expect_rejected(void (*corrupt)(void), size_t length, const char *field)
{
    ls_logbuffer_t log;
    LS_CHECK(0 == format(5, 5, 0));
    corrupt();
    LS_CHECK(-1 == ls_logbuffer_init(&log, memory, length));
    LS_CHECK(LS_EFORMAT == ls_errcode());
    if (NULL == strstr(ls_errmsg(), field))
    {
        fprintf(stderr, "expected '%s' in: %s\n", field, ls_errmsg());
        LS_CHECK(0);
    }
}

static void no_change(void) {}
static void bad_term_length(void) { put_meta_i32(276, TERM * 2); }
static void odd_term_length(void) { put_meta_i32(276, TERM + 32); }
static void bad_page_size(void) { put_meta_i32(280, 3000); }
static void small_page_size(void) { put_meta_i32(280, 2048); }
static void big_page_size(void) { put_meta_i32(280, 65536); }
static void bad_mtu(void) { put_meta_i32(272, 1400); }
static void small_mtu(void) { put_meta_i32(272, 32); }
static void big_mtu(void) { put_meta_i32(272, 65536); }
static void bad_header_length(void) { put_meta_i32(268, 64); }
static void bad_header_version(void) { memory[META + 320 + 4] = 1; }
static void bad_header_type(void) { memory[META + 320 + 6] = 5; }
static void negative_term_count(void) { put_meta_i32(24, -1); }
static void bad_term_count(void) { put_meta_i32(24, 1); }
static void bad_active_tail(void) { put_meta_i64(0, (int64_t)6 << 32); }
static void bad_other_tail(void) { put_meta_i64(8, (int64_t)5 << 32); }
static void misaligned_tail(void) { put_meta_i64(0, ((int64_t)5 << 32) | 40); }

static void test_init_rejects(void)
{
    ls_logbuffer_t log;
    expect_rejected(no_change, LENGTH - 4096, "length");
    expect_rejected(no_change, LENGTH + PAGE, "length");
    expect_rejected(no_change, 1000, "length");
    expect_rejected(bad_term_length, LENGTH, "term length");
    expect_rejected(odd_term_length, LENGTH, "term length");
    expect_rejected(bad_page_size, LENGTH, "page size");
    expect_rejected(small_page_size, LENGTH, "page size");
    expect_rejected(big_page_size, LENGTH, "length");
    expect_rejected(bad_mtu, LENGTH, "mtu");
    expect_rejected(small_mtu, LENGTH, "mtu");
    expect_rejected(big_mtu, LENGTH, "mtu");
    expect_rejected(bad_header_length, LENGTH, "default frame header length");
    expect_rejected(bad_header_version, LENGTH, "default frame header");
    expect_rejected(bad_header_type, LENGTH, "default frame header");
    expect_rejected(negative_term_count, LENGTH, "active term count");
    expect_rejected(bad_term_count, LENGTH, "term tail counter");
    expect_rejected(bad_active_tail, LENGTH, "term tail counter 0");
    expect_rejected(bad_other_tail, LENGTH, "term tail counter 1");
    expect_rejected(misaligned_tail, LENGTH, "term tail counter 0");

    LS_CHECK(0 == format(5, 5, 0));
    LS_CHECK(-1 == ls_logbuffer_init(&log, memory + 4, LENGTH));
    LS_CHECK(LS_EINVAL == ls_errcode());
    LS_CHECK(-1 == ls_logbuffer_init(&log, NULL, LENGTH));
    /* All zero memory (e.g. a truncated or never-formatted file). */
    memset(memory, 0, sizeof(memory));
    LS_CHECK(-1 == ls_logbuffer_init(&log, memory, LENGTH));
    LS_CHECK(NULL != strstr(ls_errmsg(), "term length"));

    /* A larger page: the metadata still starts after 3 terms and the length is page aligned. */
    static _Alignas(64) uint8_t big[3 * TERM + 65536];
    LS_CHECK(0 == ls_logbuffer_format(big, sizeof(big), TERM, 65536, 1408, 0, 0, 0, 1, 2, 3));
    LS_CHECK(0 == ls_logbuffer_init(&log, big, sizeof(big)));
    LS_CHECK(TERM == log.term_length);
}

static void test_position_arithmetic(void)
{
    ls_logbuffer_t log;
    LS_CHECK(0 == format(1000, 1000, 0));
    LS_CHECK(0 == ls_logbuffer_init(&log, memory, LENGTH));
    LS_CHECK(0 == ls_logbuffer_position(&log, 1000, 0));
    LS_CHECK(TERM + 64 == ls_logbuffer_position(&log, 1001, 64));
    LS_CHECK(-TERM == ls_logbuffer_position(&log, 999, 0));
    LS_CHECK(1002 == ls_logbuffer_term_id(&log, 2 * TERM + 5));
    LS_CHECK(5 == ls_logbuffer_term_offset(&log, 2 * TERM + 5));
    LS_CHECK(2 == ls_logbuffer_partition_index(&log, 2 * TERM + 5));
    LS_CHECK(0 == ls_logbuffer_partition_index(&log, 3 * TERM));
    LS_CHECK(1 == ls_logbuffer_partition_index(&log, 5 * TERM - 32));

    /* Term ids wrap as int32. */
    const int32_t initial = INT32_MAX - 1;
    LS_CHECK(0 == format(initial, INT32_MIN, 96));
    LS_CHECK(0 == ls_logbuffer_init(&log, memory, LENGTH));
    LS_CHECK(2 == ls_logbuffer_active_term_count(&log));
    LS_CHECK(2LL * TERM + 96 == ls_logbuffer_position(&log, INT32_MIN, 96));
    LS_CHECK(TERM == ls_logbuffer_position(&log, INT32_MAX, 0));
    LS_CHECK(INT32_MIN == ls_logbuffer_term_id(&log, 2LL * TERM + 96));
    LS_CHECK(INT32_MIN + 5 == ls_logbuffer_term_id(&log, 7LL * TERM));
    LS_CHECK(7LL * TERM == ls_logbuffer_position(&log, INT32_MIN + 5, 0));
    LS_CHECK(2LL * TERM + 96 == ls_logbuffer_tail_position(&log));
    LS_CHECK(2 == ls_logbuffer_partition_index(&log, 2LL * TERM));

    /* The last term before max position. */
    LS_CHECK(0 == format(0, INT32_MAX, 0));
    LS_CHECK(0 == ls_logbuffer_init(&log, memory, LENGTH));
    LS_CHECK(log.max_position - TERM == ls_logbuffer_position(&log, INT32_MAX, 0));
    LS_CHECK(INT32_MAX == ls_logbuffer_term_id(&log, log.max_position - 32));
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

static void test_rotate(void)
{
    ls_logbuffer_t log;
    LS_CHECK(0 == format(-3, -3, 0));
    LS_CHECK(0 == ls_logbuffer_init(&log, memory, LENGTH));
    memset(memory + 2 * TERM, 0xEE, TERM); /* whatever partition 2 held */
    memset(memory, 0xAB, 64);
    /* Term -3 filled: its tail passed the end. */
    *(int64_t *)(memory + META) = ((int64_t)-3 * (INT64_C(1) << 32)) + TERM + 64;
    LS_CHECK(TERM == ls_logbuffer_tail_position(&log));
    LS_CHECK(ls_logbuffer_rotate(&log, 0, -3, true));
    LS_CHECK(1 == ls_logbuffer_active_term_count(&log));
    LS_CHECK((int64_t)-2 * (INT64_C(1) << 32) == ls_logbuffer_raw_tail(&log, 1));
    LS_CHECK(TERM == ls_logbuffer_tail_position(&log));
    /* Cleaned two ahead (held term -4 = term -1's slot), not the one just filled. */
    LS_CHECK(all_zero(memory + 2 * TERM, TERM));
    LS_CHECK(0xAB == memory[0]);
    /* Retained start: the previous term once it was filled. */
    LS_CHECK(0 == ls_logbuffer_retained_start_position(&log));
    /* A second, late rotation of the same term does nothing. */
    LS_CHECK(!ls_logbuffer_rotate(&log, 0, -3, true));
    LS_CHECK(1 == ls_logbuffer_active_term_count(&log));

    *(int64_t *)(memory + META + 8) = ((int64_t)-2 * (INT64_C(1) << 32)) + TERM;
    LS_CHECK(ls_logbuffer_rotate(&log, 1, -2, true));
    LS_CHECK(2 == ls_logbuffer_active_term_count(&log));
    LS_CHECK(all_zero(memory, TERM)); /* term -3's slot, cleaned for term 0 */
    LS_CHECK(2LL * TERM == ls_logbuffer_tail_position(&log));

    /* No rotation past max position. */
    LS_CHECK(0 == format(0, INT32_MAX, 0));
    LS_CHECK(0 == ls_logbuffer_init(&log, memory, LENGTH));
    LS_CHECK(!ls_logbuffer_rotate(&log, INT32_MAX, INT32_MAX, true));
}

int main(void)
{
    LS_RUN(test_file_length);
    LS_RUN(test_format_and_init);
    LS_RUN(test_format_rejects);
    LS_RUN(test_init_rejects);
    LS_RUN(test_position_arithmetic);
    LS_RUN(test_rotate);
    return LS_TEST_RESULT();
}
