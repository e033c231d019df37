#include <stdlib.h>
#include <string.h>

#include "logbuffer/fragment_assembler.h"
#include "protocol/frame_descriptor.h"
#include "util/ls_error.h"

#define LS_FRAGMENT_ASSEMBLER_MIN_CAPACITY 4096

void ls_fragment_assembler_init(ls_fragment_assembler_t *assembler, size_t max_length)
{
    memset(assembler, 0, sizeof(*assembler));
    assembler->max_length = max_length;
    assembler->term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
}

void ls_fragment_assembler_close(ls_fragment_assembler_t *assembler)
{
    free(assembler->buffer);
    assembler->buffer = NULL;
    assembler->capacity = 0;
    ls_fragment_assembler_reset(assembler);
}

void ls_fragment_assembler_reset(ls_fragment_assembler_t *assembler)
{
    assembler->length = 0;
    assembler->term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
}

static int ls_fragment_assembler_append(ls_fragment_assembler_t *assembler, const uint8_t *data, size_t length)
{
    const size_t needed = assembler->length + length;
    if (needed > assembler->capacity)
    {
        size_t capacity = assembler->capacity < LS_FRAGMENT_ASSEMBLER_MIN_CAPACITY ?
            LS_FRAGMENT_ASSEMBLER_MIN_CAPACITY : assembler->capacity;
        while (capacity < needed)
        {
            capacity *= 2;
        }
        uint8_t *grown = realloc(assembler->buffer, capacity);
        if (NULL == grown)
        {
            ls_set_error(LS_ESTATE, "out of memory growing the reassembly buffer to %zu bytes", capacity);
            return -1;
        }
        assembler->buffer = grown;
        assembler->capacity = capacity;
    }
    if (length > 0)
    {
        memcpy(assembler->buffer + assembler->length, data, length);
    }
    assembler->length = needed;
    return 0;
}

int ls_fragment_assembler_on_fragment(
    ls_fragment_assembler_t *assembler, const uint8_t *payload, size_t payload_length, ls_frame_header_t *header)
{
    const uint8_t flags = header->flags;
    if (flags & LS_FRAME_FLAG_BEGIN)
    {
        /* A new BEGIN discards any unfinished message, as Aeron's assembler does. */
        assembler->length = 0;
        assembler->term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
        if (ls_fragment_assembler_append(assembler, payload, payload_length) < 0)
        {
            return -1;
        }
        assembler->term_id = header->term_id;
        assembler->term_offset = header->term_offset;
        assembler->reserved_value = header->reserved_value;
        return 0;
    }
    if (LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING == assembler->term_offset)
    {
        return 0; /* a middle or END fragment without its BEGIN is dropped */
    }
    if (assembler->length + payload_length > assembler->max_length)
    {
        assembler->term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING; /* too long to be ours: drop */
        return 0;
    }
    if (ls_fragment_assembler_append(assembler, payload, payload_length) < 0)
    {
        return -1;
    }
    if (0 == (flags & LS_FRAME_FLAG_END))
    {
        return 0;
    }
    /* Reported as Aeron's FragmentAssembler does: first fragment's term id and offset,
     * position after the last, flags BEGIN | END. */
    header->term_id = assembler->term_id;
    header->term_offset = assembler->term_offset;
    header->flags = (uint8_t)(flags | LS_FRAME_FLAGS_UNFRAGMENTED);
    header->reserved_value = assembler->reserved_value;
    assembler->term_offset = LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING;
    return 1;
}

int ls_fragment_assembler_reopen(ls_fragment_assembler_t *assembler, const ls_frame_header_t *whole)
{
    const int32_t end_payload = whole->frame_length - LS_DATA_HEADER_LENGTH;
    if (LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING != assembler->term_offset || end_payload < 0 ||
        (size_t)end_payload > assembler->length || LS_FRAGMENT_ASSEMBLER_NOT_ASSEMBLING == whole->term_offset)
    {
        ls_set_error(LS_ESTATE, "reassembly: no completed message of %zu bytes to take an END fragment of %d back from",
                     assembler->length, (int)end_payload);
        return -1;
    }
    assembler->length -= (size_t)end_payload;
    assembler->term_id = whole->term_id;
    assembler->term_offset = whole->term_offset;
    assembler->reserved_value = whole->reserved_value;
    return 0;
}
