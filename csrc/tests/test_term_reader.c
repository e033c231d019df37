/* The term reader over a recording's term (the archive's reader): messages and padding,
 * reassembly, the limit, and the checks a recorded term adds (session/stream, version, a
 * zero length before the end). */
#include <stdint.h>
#include <string.h>

#include "logbuffer/term_reader.h"
#include "protocol/frame_descriptor.h"
#include "util/ls_error.h"
#include "ls_test.h"

#define TERM_LENGTH 4096
#define SESSION 7
#define STREAM 1001
#define TERM_ID 42

static uint8_t term_buffer[TERM_LENGTH];

static int32_t put(int32_t offset, int32_t length, uint8_t flags, int16_t type, int32_t session, uint8_t fill)
{
    uint8_t *frame = term_buffer + offset;
    memset(frame, fill, (size_t)length);
    const int32_t term_id = TERM_ID;
    memcpy(frame + LS_FRAME_LENGTH_OFFSET, &length, 4);
    frame[LS_FRAME_VERSION_OFFSET] = 0;
    frame[LS_FRAME_FLAGS_OFFSET] = flags;
    ls_frame_set_type(frame, type);
    memcpy(frame + LS_FRAME_TERM_OFFSET_OFFSET, &offset, 4);
    memcpy(frame + LS_FRAME_SESSION_ID_OFFSET, &session, 4);
    const int32_t stream = STREAM;
    memcpy(frame + LS_FRAME_STREAM_ID_OFFSET, &stream, 4);
    memcpy(frame + LS_FRAME_TERM_ID_OFFSET, &term_id, 4);
    memset(frame + LS_FRAME_RESERVED_VALUE_OFFSET, 0, 8);
    return offset + LS_ALIGN(length, LS_FRAME_ALIGNMENT);
}

static ls_term_t recorded_term(void)
{
    const ls_term_t term = { .buffer = term_buffer, .begin_position = 8 * TERM_LENGTH, .term_length = TERM_LENGTH,
                             .term_id = TERM_ID, .mtu_length = 1408, .recorded = true, .session_id = SESSION,
                             .stream_id = STREAM };
    return term;
}

static void test_messages_padding_and_reassembly(void)
{
    memset(term_buffer, 0, sizeof(term_buffer));
    int32_t at = put(0, 32 + 10, LS_FRAME_FLAGS_UNFRAGMENTED, LS_FRAME_TYPE_DATA, SESSION, 0xA1);
    at = put(at, 96, 0, LS_FRAME_TYPE_PAD, SESSION, 0);
    at = put(at, 32 + 100, LS_FRAME_FLAG_BEGIN, LS_FRAME_TYPE_DATA, SESSION, 0xB1);
    at = put(at, 32 + 50, LS_FRAME_FLAG_END, LS_FRAME_TYPE_DATA, SESSION, 0xB2);
    const int32_t end = put(at, 32 + 5, LS_FRAME_FLAGS_UNFRAGMENTED, LS_FRAME_TYPE_DATA, SESSION, 0xC1);

    ls_term_t term = recorded_term();
    ls_fragment_assembler_t assembler;
    ls_fragment_assembler_init(&assembler, 4096);
    static ls_term_scan_t scan;
    /* Stops after the reassembled message (its buffer is reused by the next scan). */
    LS_CHECK(2 == ls_term_scan(&term, 0, end, 100, &assembler, &scan));
    LS_CHECK(10 == scan.lengths[0] && 32 == scan.data_offsets[0] && 0xA1 == term_buffer[scan.data_offsets[0]]);
    LS_CHECK(150 == scan.lengths[1] && -1 == scan.data_offsets[1] && 0xB1 == assembler.buffer[0] &&
             0xB2 == assembler.buffer[149]);
    LS_CHECK(0xC0 == scan.headers[1].flags && 64 + 96 == scan.headers[1].term_offset && at == scan.end_offset);
    LS_CHECK(8 * TERM_LENGTH + at == scan.headers[1].position);
    /* The limit: a frame that ends past it is not there yet. */
    LS_CHECK(0 == ls_term_scan(&term, at, end - 32, 100, &assembler, &scan) && at == scan.end_offset);
    LS_CHECK(1 == ls_term_scan(&term, at, end, 100, &assembler, &scan) && end == scan.end_offset);
    ls_fragment_assembler_close(&assembler);
}

static void test_reopen_takes_back_the_end_fragment(void)
{
    memset(term_buffer, 0, sizeof(term_buffer));
    const int32_t begin = put(0, 32 + 100, LS_FRAME_FLAG_BEGIN, LS_FRAME_TYPE_DATA, SESSION, 0xB1);
    const int32_t middle = put(begin, 32 + 70, 0, LS_FRAME_TYPE_DATA, SESSION, 0xB2);
    const int32_t end = put(middle, 32 + 50, LS_FRAME_FLAG_END, LS_FRAME_TYPE_DATA, SESSION, 0xB3);
    ls_term_t term = recorded_term();
    term.recorded = false;
    ls_fragment_assembler_t assembler;
    ls_fragment_assembler_init(&assembler, 4096);
    static ls_term_scan_t scan;
    LS_CHECK(1 == ls_term_scan(&term, 0, end, 100, &assembler, &scan) && 220 == scan.lengths[0]);
    const ls_frame_header_t whole = scan.headers[0];
    /* Aborted: the END fragment goes back; the log before it may be zeroed (a driver's), yet
     * scanning from the END fragment hands out the whole message again. */
    LS_CHECK(0 == ls_fragment_assembler_reopen(&assembler, &whole));
    LS_CHECK(170 == assembler.length && 0 == assembler.term_offset);
    memset(term_buffer, 0, (size_t)middle);
    LS_CHECK(1 == ls_term_scan(&term, middle, end, 100, &assembler, &scan) && 220 == scan.lengths[0]);
    LS_CHECK(0xB1 == assembler.buffer[0] && 0xB2 == assembler.buffer[100] && 0xB3 == assembler.buffer[219]);
    LS_CHECK(0 == scan.headers[0].term_offset && whole.position == scan.headers[0].position && end == scan.end_offset);
    /* Nothing completed to take back: refused, the assembler as it was. */
    LS_CHECK(0 == ls_fragment_assembler_reopen(&assembler, &whole));
    LS_CHECK(-1 == ls_fragment_assembler_reopen(&assembler, &whole) && LS_ESTATE == ls_errcode());
    LS_CHECK(170 == assembler.length);
    ls_fragment_assembler_close(&assembler);
}

static void test_recorded_checks(void)
{
    memset(term_buffer, 0, sizeof(term_buffer));
    int32_t at = put(0, 64, LS_FRAME_FLAGS_UNFRAGMENTED, LS_FRAME_TYPE_DATA, SESSION, 1);
    const int32_t other = put(at, 64, LS_FRAME_FLAGS_UNFRAGMENTED, LS_FRAME_TYPE_DATA, SESSION + 1, 2);
    ls_term_t term = recorded_term();
    ls_fragment_assembler_t assembler;
    ls_fragment_assembler_init(&assembler, 4096);
    static ls_term_scan_t scan;
    /* Another session's frame: corrupt for a recording, after the message before it. */
    LS_CHECK(-1 == ls_term_scan(&term, 0, TERM_LENGTH, 100, &assembler, &scan));
    LS_CHECK(1 == scan.count && at == scan.end_offset && LS_EFORMAT == ls_errcode());
    LS_CHECK(NULL != strstr(ls_errmsg(), "offset 64: session/stream: expected 7/1001, found 8/1001"));
    /* An image's term does not check sessions. */
    term.recorded = false;
    LS_CHECK(2 == ls_term_scan(&term, 0, TERM_LENGTH, 100, &assembler, &scan) && other == scan.end_offset);
    /* A zero length before the limit: unwritten for an image, corrupt in a recording. */
    LS_CHECK(0 == ls_term_scan(&term, other, TERM_LENGTH, 100, &assembler, &scan) && other == scan.end_offset);
    term.recorded = true;
    LS_CHECK(-1 == ls_term_scan(&term, other, TERM_LENGTH, 100, &assembler, &scan));
    LS_CHECK(NULL != strstr(ls_errmsg(), "unwritten (length 0)"));
    /* A version other than 0, a term id of another term. */
    term_buffer[LS_FRAME_VERSION_OFFSET] = 1;
    LS_CHECK(-1 == ls_term_scan(&term, 0, TERM_LENGTH, 100, &assembler, &scan) && 0 == scan.count);
    LS_CHECK(NULL != strstr(ls_errmsg(), "version: expected 0, found 1"));
    term_buffer[LS_FRAME_VERSION_OFFSET] = 0;
    term.term_id = TERM_ID + 1;
    LS_CHECK(-1 == ls_term_scan(&term, 0, TERM_LENGTH, 100, &assembler, &scan));
    LS_CHECK(NULL != strstr(ls_errmsg(), "term id field: expected 43, found 42"));
    ls_fragment_assembler_close(&assembler);
}

int main(void)
{
    LS_RUN(test_messages_padding_and_reassembly);
    LS_RUN(test_recorded_checks);
    LS_RUN(test_reopen_takes_back_the_end_fragment);
    return LS_TEST_RESULT();
}
