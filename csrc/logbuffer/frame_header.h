/* A whole message's header as the readers of terms hand it out (an image's poll and scan, a
 * recording's reader): the fields of its frame, as Aeron's Header gives them. */
#ifndef LS_FRAME_HEADER_H
#define LS_FRAME_HEADER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ls_frame_header_stct
{
    int64_t position;      /* stream position just after this message's last frame */
    int32_t term_id;       /* of the message's first frame */
    int32_t term_offset;   /* of the message's first frame */
    int32_t session_id;
    int32_t stream_id;
    int32_t frame_length;  /* of the last frame */
    uint8_t flags;         /* as a whole message: 0xC0 once reassembled */
    int16_t type;
    int64_t reserved_value;
} ls_frame_header_t;

typedef void (*ls_fragment_handler_t)(
    const uint8_t *data, size_t length, const ls_frame_header_t *header, void *clientd);

#endif
