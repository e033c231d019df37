/* Aeron data frame header (protocol/aeron_udp_protocol.h; spec §3): 32 bytes, frames aligned
 * to 32, frame length written last with release (0 = not yet written). */
#ifndef LS_FRAME_DESCRIPTOR_H
#define LS_FRAME_DESCRIPTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "concurrent/ls_atomic.h"
#include "util/ls_bitutil.h"

#define LS_FRAME_LENGTH_OFFSET 0
#define LS_FRAME_VERSION_OFFSET 4
#define LS_FRAME_FLAGS_OFFSET 5
#define LS_FRAME_TYPE_OFFSET 6
#define LS_FRAME_TERM_OFFSET_OFFSET 8
#define LS_FRAME_SESSION_ID_OFFSET 12
#define LS_FRAME_STREAM_ID_OFFSET 16
#define LS_FRAME_TERM_ID_OFFSET 20
#define LS_FRAME_RESERVED_VALUE_OFFSET 24
#define LS_DATA_HEADER_LENGTH 32
#define LS_FRAME_ALIGNMENT 32

#define LS_FRAME_VERSION 0
#define LS_FRAME_FLAG_BEGIN 0x80
#define LS_FRAME_FLAG_END 0x40
#define LS_FRAME_FLAG_EOS 0x20
#define LS_FRAME_FLAGS_UNFRAGMENTED (LS_FRAME_FLAG_BEGIN | LS_FRAME_FLAG_END)

#define LS_FRAME_TYPE_PAD 0
#define LS_FRAME_TYPE_DATA 1
#define LS_FRAME_TYPE_NAK 2
#define LS_FRAME_TYPE_SM 3
#define LS_FRAME_TYPE_ERR 4
#define LS_FRAME_TYPE_SETUP 5
#define LS_FRAME_TYPE_RTTM 6
#define LS_FRAME_TYPE_RES 7
#define LS_FRAME_TYPE_ATS_DATA 8
#define LS_FRAME_TYPE_ATS_SETUP 9
#define LS_FRAME_TYPE_ATS_SM 10
#define LS_FRAME_TYPE_RSP_SETUP 11
#define LS_FRAME_TYPE_EXT (-1)

/* The frame header reads and checks every reader and writer of a term shares, written once. */

/* The type field (int16, not naturally aligned for an atomic: copied). */
static inline int16_t ls_frame_type(const uint8_t *frame)
{
    int16_t type;
    memcpy(&type, frame + LS_FRAME_TYPE_OFFSET, sizeof(type));
    return type;
}

static inline void ls_frame_set_type(uint8_t *frame, int16_t type)
{
    memcpy(frame + LS_FRAME_TYPE_OFFSET, &type, sizeof(type));
}

/* Whether a frame of `frame_length` bytes (a header at least), aligned, fits between
 * `term_offset` and the term end. The unaligned bound is checked first, so that aligning a
 * corrupt length near INT32_MAX cannot overflow. */
static inline bool ls_frame_fits_term(int64_t frame_length, int32_t term_offset, int32_t term_length)
{
    return frame_length >= LS_DATA_HEADER_LENGTH && frame_length <= (int64_t)term_length - term_offset &&
        LS_ALIGN(frame_length, LS_FRAME_ALIGNMENT) <= (int64_t)term_length - term_offset;
}

/* Whether the header names the place it was read from: a frame of another term or offset
 * there is what a lapped reader finds (or corruption). */
static inline bool ls_frame_is_at(const uint8_t *frame, int32_t term_offset, int32_t term_id)
{
    return term_offset == ls_get_plain_i32(frame + LS_FRAME_TERM_OFFSET_OFFSET) &&
        term_id == ls_get_plain_i32(frame + LS_FRAME_TERM_ID_OFFSET);
}

#endif
