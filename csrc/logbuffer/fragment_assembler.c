#include <stdlib.h>
#include <string.h>

#include "logbuffer/fragment_assembler.h"
#include "util/ls_error.h"

#define LS_FRAGMENT_ASSEMBLER_MIN_CAPACITY 4096

void ls_fragment_assembler_init(ls_image_t *image)
{
    image->assembly_term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
}

void ls_fragment_assembler_close(ls_image_t *image)
{
    free(image->assembly);
    image->assembly = NULL;
    image->assembly_capacity = 0;
    image->assembly_length = 0;
    image->assembly_term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
}

static int ls_fragment_assembler_append(ls_image_t *image, const uint8_t *data, size_t length)
{
    const size_t needed = image->assembly_length + length;
    if (needed > image->assembly_capacity)
    {
        size_t capacity = image->assembly_capacity < LS_FRAGMENT_ASSEMBLER_MIN_CAPACITY ?
            LS_FRAGMENT_ASSEMBLER_MIN_CAPACITY : image->assembly_capacity;
        while (capacity < needed)
        {
            capacity *= 2;
        }
        uint8_t *grown = realloc(image->assembly, capacity);
        if (NULL == grown)
        {
            ls_set_error(LS_ESTATE, "image: out of memory growing the reassembly buffer to %zu bytes", capacity);
            return -1;
        }
        image->assembly = grown;
        image->assembly_capacity = capacity;
    }
    if (length > 0)
    {
        memcpy(image->assembly + image->assembly_length, data, length);
    }
    image->assembly_length = needed;
    return 0;
}

int ls_fragment_assembler_on_fragment(
    ls_image_t *image, const uint8_t *payload, size_t payload_length, ls_frame_header_t *header)
{
    const uint8_t flags = header->flags;
    if (flags & LS_FRAME_FLAG_BEGIN)
    {
        /* A new BEGIN discards any unfinished message, as Aeron's assembler does. */
        image->assembly_length = 0;
        image->assembly_term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
        if (ls_fragment_assembler_append(image, payload, payload_length) < 0)
        {
            return -1;
        }
        image->assembly_term_id = header->term_id;
        image->assembly_term_offset = header->term_offset;
        image->assembly_reserved_value = header->reserved_value;
        return 0;
    }
    if (LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING == image->assembly_term_offset)
    {
        return 0; /* a middle or END fragment without its BEGIN is dropped */
    }
    if (image->assembly_length + payload_length > (size_t)image->log.max_message_length)
    {
        image->assembly_term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING; /* too long to be ours: drop */
        return 0;
    }
    if (ls_fragment_assembler_append(image, payload, payload_length) < 0)
    {
        return -1;
    }
    if (0 == (flags & LS_FRAME_FLAG_END))
    {
        return 0;
    }
    /* Reported as Aeron's FragmentAssembler does: first fragment's term id and offset,
     * position after the last, flags BEGIN | END. */
    header->term_id = image->assembly_term_id;
    header->term_offset = image->assembly_term_offset;
    header->flags = (uint8_t)(flags | LS_FRAME_FLAGS_UNFRAGMENTED);
    header->reserved_value = image->assembly_reserved_value;
    image->assembly_term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
    return 1;
}
