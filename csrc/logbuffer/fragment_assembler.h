/* Reassembly of fragmented messages (Aeron's aeron_fragment_assembler.c), over the image's
 * assembly fields: the fragments of one message are copied, in order, into a malloc'd buffer
 * (image->assembly) that grows as needed up to the log's max message length, and the whole
 * message is handed out once its END fragment arrives. */
#ifndef LS_FRAGMENT_ASSEMBLER_H
#define LS_FRAGMENT_ASSEMBLER_H

#include <stddef.h>
#include <stdint.h>

#include "logbuffer/image.h"

/* image->assembly_term_offset while no message is being reassembled. */
#define LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING (-1)

/* Starts with no message in progress (the image is zeroed before). */
void ls_fragment_assembler_init(ls_image_t *image);
/* Frees the reassembly buffer. */
void ls_fragment_assembler_close(ls_image_t *image);

/* Takes one fragment of a fragmented message (flags not BEGIN | END), its payload and its
 * header as read. Returns 1 when it completed the message: *header then describes the whole
 * message (the first fragment's term id, offset and reserved value, flags BEGIN | END) and its
 * payload is image->assembly[0, image->assembly_length), valid until the next fragment. 0 when
 * the fragment was taken (or dropped: a middle or END without its BEGIN, or a message past the
 * max message length), -1 when the buffer could not grow (error set). */
int ls_fragment_assembler_on_fragment(
    ls_image_t *image, const uint8_t *payload, size_t payload_length, ls_frame_header_t *header);

#endif
