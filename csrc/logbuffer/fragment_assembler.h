/* Reassembly of fragmented messages (Aeron's aeron_fragment_assembler.c): the fragments of one
 * message are copied, in order, into a malloc'd buffer that grows as needed up to a maximum
 * message length, and the whole message is handed out once its END fragment arrives. An image
 * has one; so does a reader of a recording. */
#ifndef LS_FRAGMENT_ASSEMBLER_H
#define LS_FRAGMENT_ASSEMBLER_H

#include <stddef.h>
#include <stdint.h>

#include "logbuffer/frame_header.h"

/* term_offset while no message is being reassembled. */
#define LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING (-1)

typedef struct ls_fragment_assembler_stct
{
    uint8_t *buffer;       /* the message so far (malloc'd), NULL before the first fragment */
    size_t capacity;
    size_t length;
    size_t max_length;     /* a longer message is dropped (not one of the log's) */
    int32_t term_id;       /* of the message's first fragment */
    int32_t term_offset;   /* of the first fragment, or LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING */
    int64_t reserved_value;
} ls_fragment_assembler_t;

/* Starts with no message in progress and no buffer. */
void ls_fragment_assembler_init(ls_fragment_assembler_t *assembler, size_t max_length);
/* Frees the buffer. */
void ls_fragment_assembler_close(ls_fragment_assembler_t *assembler);
/* Forgets a message in progress (a reader that moved elsewhere). */
void ls_fragment_assembler_reset(ls_fragment_assembler_t *assembler);

/* Takes one fragment of a fragmented message (flags not BEGIN | END), its payload and its
 * header as read. Returns 1 when it completed the message: *header then describes the whole
 * message (the first fragment's term id, offset and reserved value, flags BEGIN | END) and its
 * payload is buffer[0, length), valid until the next fragment. 0 when the fragment was taken
 * (or dropped: a middle or END without its BEGIN, or a message past max_length), -1 when the
 * buffer could not grow (error set). */
int ls_fragment_assembler_on_fragment(
    ls_fragment_assembler_t *assembler, const uint8_t *payload, size_t payload_length, ls_frame_header_t *header);

/* Takes back the END fragment of the message it has just completed, as on_fragment described it
 * in `whole` (the first fragment's term id, offset and reserved value; the END frame's length):
 * the message is in progress again, waiting for that fragment, which is read again (a controlled
 * handler aborted the message: Aeron's ControlledFragmentAssembler; the earlier fragments may be
 * gone from the log by then). 0, or -1 (error set) when it holds no such message. */
int ls_fragment_assembler_reopen(ls_fragment_assembler_t *assembler, const ls_frame_header_t *whole);

#endif
