#include "logbuffer/term_reader.h"

#include "concurrent/ls_atomic.h"
#include "protocol/frame_descriptor.h"
#include "util/ls_bitutil.h"
#include "util/ls_error.h"

int ls_term_check_frame(const ls_term_t *term, const uint8_t *frame, int32_t frame_length, int32_t offset)
{
    const int32_t term_id = term->term_id;
    const int16_t type = ls_frame_type(frame);
    if (!ls_frame_fits_term(frame_length, offset, term->term_length))
    {
        LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: length: expected %d..%d, found %d", term_id, offset,
                   LS_DATA_HEADER_LENGTH, term->term_length - offset, frame_length);
        return -1;
    }
    if (term->recorded && LS_FRAME_VERSION != frame[LS_FRAME_VERSION_OFFSET])
    {
        LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: version: expected %d, found %d", term_id, offset,
                   LS_FRAME_VERSION, frame[LS_FRAME_VERSION_OFFSET]);
        return -1;
    }
    if (LS_FRAME_TYPE_PAD != type && LS_FRAME_TYPE_DATA != type)
    {
        LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: type: expected PAD (%d) or DATA (%d), found %d", term_id,
                   offset, LS_FRAME_TYPE_PAD, LS_FRAME_TYPE_DATA, type);
        return -1;
    }
    if (LS_FRAME_TYPE_DATA == type && frame_length > term->mtu_length)
    {
        LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: DATA length: expected at most mtu %d, found %d", term_id,
                   offset, term->mtu_length, frame_length);
        return -1;
    }
    const int32_t header_offset = ls_get_plain_i32(frame + LS_FRAME_TERM_OFFSET_OFFSET);
    if (header_offset != offset)
    {
        LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: term offset field: expected %d, found %d", term_id, offset,
                   offset, header_offset);
        return -1;
    }
    const int32_t header_term_id = ls_get_plain_i32(frame + LS_FRAME_TERM_ID_OFFSET);
    if (header_term_id != term_id)
    {
        LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: term id field: expected %d, found %d", term_id, offset,
                   term_id, header_term_id);
        return -1;
    }
    if (term->recorded)
    {
        const int32_t session_id = ls_get_plain_i32(frame + LS_FRAME_SESSION_ID_OFFSET);
        const int32_t stream_id = ls_get_plain_i32(frame + LS_FRAME_STREAM_ID_OFFSET);
        if (session_id != term->session_id || stream_id != term->stream_id)
        {
            LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: session/stream: expected %d/%d, found %d/%d", term_id,
                       offset, term->session_id, term->stream_id, session_id, stream_id);
            return -1;
        }
    }
    return 0;
}

int32_t ls_term_read(
    const ls_term_t *term,
    int32_t offset,
    int32_t limit_offset,
    int32_t fragment_limit,
    bool stop_after_assembled,
    ls_fragment_assembler_t *assembler,
    ls_term_sink_t sink,
    void *clientd,
    int32_t *end_offset,
    bool *corrupt)
{
    const uint8_t *buffer = term->buffer;
    int32_t fragments = 0;
    if (limit_offset > term->term_length)
    {
        limit_offset = term->term_length;
    }
    *corrupt = false;

    while (fragments < fragment_limit && offset < limit_offset)
    {
        const uint8_t *frame = buffer + offset;
        const int32_t frame_length = ls_get_acquire_i32(frame + LS_FRAME_LENGTH_OFFSET);
        if (frame_length <= 0)
        {
            if (term->recorded)
            {
                LS_SET_ERR(LS_EFORMAT, "frame at term %d offset %d: unwritten (length %d) before the recording's "
                           "end", term->term_id, offset, frame_length);
                *corrupt = true;
            }
            break;
        }
        if (ls_term_check_frame(term, frame, frame_length, offset) < 0)
        {
            *corrupt = true;
            break;
        }
        const int32_t frame_offset = offset;
        const int32_t next_offset = offset + LS_ALIGN(frame_length, LS_FRAME_ALIGNMENT);
        if (next_offset > limit_offset)
        {
            break; /* runs past what the reader may read: not there yet */
        }
        const int16_t type = ls_frame_type(frame);
        if (LS_FRAME_TYPE_PAD == type)
        {
            offset = next_offset;
            continue;
        }

        const uint8_t flags = frame[LS_FRAME_FLAGS_OFFSET];
        const uint8_t *payload = frame + LS_DATA_HEADER_LENGTH;
        const size_t payload_length = (size_t)(frame_length - LS_DATA_HEADER_LENGTH);
        ls_frame_header_t header;
        header.position = term->begin_position + next_offset;
        header.term_id = term->term_id;
        header.term_offset = frame_offset;
        header.session_id = ls_get_plain_i32(frame + LS_FRAME_SESSION_ID_OFFSET);
        header.stream_id = ls_get_plain_i32(frame + LS_FRAME_STREAM_ID_OFFSET);
        header.frame_length = frame_length;
        header.flags = flags;
        header.type = type;
        header.reserved_value = ls_get_plain_i64(frame + LS_FRAME_RESERVED_VALUE_OFFSET);

        fragments++;
        offset = next_offset;
        if (LS_FRAME_FLAGS_UNFRAGMENTED == (flags & LS_FRAME_FLAGS_UNFRAGMENTED))
        {
            sink(clientd, payload, payload_length, frame_offset + LS_DATA_HEADER_LENGTH, &header);
            continue;
        }
        const int assembled = ls_fragment_assembler_on_fragment(assembler, payload, payload_length, &header);
        if (assembled < 0)
        {
            LS_APPEND_ERR("fragment at term %d offset %d", term->term_id, frame_offset);
            *corrupt = true;
            offset = frame_offset;
            fragments--;
            break;
        }
        if (assembled > 0)
        {
            sink(clientd, assembler->buffer, assembler->length, -1, &header);
            if (stop_after_assembled)
            {
                break;
            }
        }
    }

    *end_offset = offset;
    return fragments;
}

static void ls_term_scan_sink(
    void *clientd, const uint8_t *data, size_t length, int32_t data_offset, const ls_frame_header_t *header)
{
    (void)data;
    ls_term_scan_t *scan = clientd;
    const int32_t i = scan->count++;
    scan->data_offsets[i] = data_offset;
    scan->lengths[i] = (int32_t)length;
    scan->headers[i] = *header;
}

int32_t ls_term_scan(
    const ls_term_t *term,
    int32_t offset,
    int32_t limit_offset,
    int32_t fragment_limit,
    ls_fragment_assembler_t *assembler,
    ls_term_scan_t *scan)
{
    bool corrupt = false;
    if (fragment_limit > LS_TERM_SCAN_CAPACITY)
    {
        fragment_limit = LS_TERM_SCAN_CAPACITY;
    }
    scan->count = 0;
    ls_term_read(term, offset, limit_offset, fragment_limit, true, assembler, ls_term_scan_sink, scan,
                 &scan->end_offset, &corrupt);
    return corrupt ? -1 : scan->count;
}
