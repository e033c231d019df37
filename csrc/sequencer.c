#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "concurrent/ls_atomic.h"
#include "sequencer.h"
#include "util/ls_error.h"

static uint32_t ls_seq_hash(int32_t origin_id)
{
    uint32_t h = (uint32_t)origin_id * 0x9E3779B1u;
    return h ^ (h >> 16);
}

/* The slot of `origin_id`, or the empty slot where it would go; NULL when the table is full. */
static ls_sequencer_origin_t *ls_seq_slot(ls_sequencer_t *seq, int32_t origin_id)
{
    const uint32_t mask = LS_SEQUENCER_MAX_ORIGINS - 1;
    uint32_t i = ls_seq_hash(origin_id) & mask;
    for (uint32_t probes = 0; probes < LS_SEQUENCER_MAX_ORIGINS; probes++, i = (i + 1) & mask)
    {
        ls_sequencer_origin_t *slot = &seq->origins[i];
        if (!slot->used || slot->origin_id == origin_id)
        {
            return slot;
        }
    }
    return NULL;
}

int ls_sequencer_init(ls_sequencer_t *seq, ls_ring_buffer_t *ingress, ls_publication_t *log, int64_t next_sequence)
{
    if (NULL == seq || NULL == ingress || NULL == log || next_sequence < 1)
    {
        ls_set_error(LS_EINVAL, "sequencer: ingress and log required, next sequence >= 1");
        return -1;
    }
    memset(seq, 0, sizeof(*seq));
    seq->ingress = ingress;
    seq->log = log;
    seq->next_sequence = next_sequence;
    seq->last_position = ls_publication_position(log);
    seq->scratch_capacity = log->log.max_message_length;
    seq->scratch = malloc((size_t)seq->scratch_capacity);
    if (NULL == seq->scratch)
    {
        ls_set_error(LS_ESTATE, "sequencer: out of memory for %d bytes", seq->scratch_capacity);
        return -1;
    }
    return 0;
}

void ls_sequencer_close(ls_sequencer_t *seq)
{
    free(seq->scratch);
    seq->scratch = NULL;
}

void ls_sequencer_note_origin(ls_sequencer_t *seq, int32_t origin_id, int64_t origin_sequence)
{
    ls_sequencer_origin_t *slot = ls_seq_slot(seq, origin_id);
    if (NULL == slot)
    {
        return;
    }
    if (!slot->used)
    {
        slot->used = 1;
        slot->origin_id = origin_id;
        slot->last_origin_sequence = origin_sequence;
        seq->origin_count++;
    }
    else if (origin_sequence > slot->last_origin_sequence)
    {
        slot->last_origin_sequence = origin_sequence;
    }
}

int64_t ls_sequencer_last_origin_sequence(const ls_sequencer_t *seq, int32_t origin_id)
{
    ls_sequencer_origin_t *slot = ls_seq_slot((ls_sequencer_t *)seq, origin_id);
    return NULL != slot && slot->used ? slot->last_origin_sequence : -1;
}

static int64_t ls_seq_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void ls_seq_write_header(uint8_t *at, int64_t sequence, int64_t origin_sequence, int32_t origin_id)
{
    const int64_t now = ls_seq_now_ns();
    const int32_t reserved = 0;
    memcpy(at + LS_SEQUENCED_SEQUENCE_OFFSET, &sequence, sizeof(sequence));
    memcpy(at + LS_SEQUENCED_TIMESTAMP_OFFSET, &now, sizeof(now));
    memcpy(at + LS_SEQUENCED_ORIGIN_SEQUENCE_OFFSET, &origin_sequence, sizeof(origin_sequence));
    memcpy(at + LS_SEQUENCED_ORIGIN_ID_OFFSET, &origin_id, sizeof(origin_id));
    memcpy(at + LS_SEQUENCED_RESERVED_OFFSET, &reserved, sizeof(reserved));
}

/* Appends one command; returns the new log position or the publication's status. Commands
 * that fit one frame are written in place (try_claim), longer ones through the scratch. */
static int64_t ls_seq_append(
    ls_sequencer_t *seq, const uint8_t *command, int32_t command_length, int64_t origin_sequence, int32_t origin_id)
{
    const int32_t length = LS_SEQUENCED_HEADER_LENGTH + command_length;
    if (length <= seq->log->log.max_payload_length)
    {
        ls_buffer_claim_t claim;
        const int64_t position = ls_publication_try_claim(seq->log, length, &claim);
        if (position > 0)
        {
            ls_seq_write_header(claim.data, seq->next_sequence, origin_sequence, origin_id);
            memcpy(claim.data + LS_SEQUENCED_HEADER_LENGTH, command, (size_t)command_length);
            ls_buffer_claim_commit(&claim);
        }
        return position;
    }
    if (length > seq->scratch_capacity)
    {
        return LS_PUBLICATION_ERROR;
    }
    ls_seq_write_header(seq->scratch, seq->next_sequence, origin_sequence, origin_id);
    memcpy(seq->scratch + LS_SEQUENCED_HEADER_LENGTH, command, (size_t)command_length);
    return ls_publication_offer(seq->log, seq->scratch, (size_t)length, 0);
}

static ls_rb_read_action_t ls_seq_on_command(int32_t msg_type_id, const uint8_t *data, size_t length, void *clientd)
{
    ls_sequencer_t *seq = clientd;
    if (LS_INGRESS_MSG_TYPE_COMMAND != msg_type_id || length < LS_INGRESS_HEADER_LENGTH)
    {
        seq->rejected++;
        return LS_RB_CONTINUE;
    }
    int64_t origin_sequence;
    int32_t origin_id;
    memcpy(&origin_sequence, data + LS_INGRESS_ORIGIN_SEQUENCE_OFFSET, sizeof(origin_sequence));
    memcpy(&origin_id, data + LS_INGRESS_ORIGIN_ID_OFFSET, sizeof(origin_id));

    ls_sequencer_origin_t *slot = ls_seq_slot(seq, origin_id);
    if (NULL != slot && slot->used && origin_sequence <= slot->last_origin_sequence)
    {
        seq->duplicates++;
        return LS_RB_CONTINUE;
    }

    const int32_t command_length = (int32_t)length - LS_INGRESS_HEADER_LENGTH;
    const int64_t position = ls_seq_append(seq, data + LS_INGRESS_HEADER_LENGTH, command_length, origin_sequence, origin_id);
    if (position < 0)
    {
        if (LS_PUBLICATION_ERROR == position)
        {
            seq->rejected++; /* longer than the log takes: it can never go */
            return LS_RB_CONTINUE;
        }
        seq->last_status = position; /* back-pressure or not connected: leave it in the ring */
        return LS_RB_ABORT;
    }

    seq->last_position = position;
    seq->next_sequence++;
    seq->sequenced++;
    if (NULL == slot)
    {
        seq->untracked++;
    }
    else
    {
        if (!slot->used)
        {
            slot->used = 1;
            slot->origin_id = origin_id;
            seq->origin_count++;
        }
        slot->last_origin_sequence = origin_sequence;
    }
    return LS_RB_CONTINUE;
}

int64_t ls_sequencer_do_work(ls_sequencer_t *seq, int64_t limit)
{
    int64_t handled = 0;
    seq->last_status = 0;
    while (handled < limit)
    {
        const int64_t before = seq->sequenced + seq->duplicates + seq->rejected;
        const int64_t head_before = ls_rb_consumer_position(seq->ingress);
        if (ls_rb_controlled_read(seq->ingress, ls_seq_on_command, seq, limit - handled) < 0)
        {
            LS_APPEND_ERR("sequencer reading its ingress ring");
            return -1;
        }
        const int64_t done = seq->sequenced + seq->duplicates + seq->rejected - before;
        handled += done;
        /* Stop when the ring is drained or the log pushed back (a read that only skipped
         * padding at the buffer end moved the head: go round once more). */
        if (0 != seq->last_status || (0 == done && ls_rb_consumer_position(seq->ingress) == head_before))
        {
            break;
        }
    }
    return handled;
}

int ls_sequencer_send(
    ls_ring_buffer_t *ingress, int32_t origin_id, int64_t origin_sequence, const uint8_t *command, size_t length)
{
    const int32_t index = ls_rb_try_claim(ingress, LS_INGRESS_MSG_TYPE_COMMAND, length + LS_INGRESS_HEADER_LENGTH);
    if (index < 0)
    {
        return index;
    }
    uint8_t *at = ingress->buffer + index;
    const int32_t reserved = 0;
    memcpy(at + LS_INGRESS_ORIGIN_SEQUENCE_OFFSET, &origin_sequence, sizeof(origin_sequence));
    memcpy(at + LS_INGRESS_ORIGIN_ID_OFFSET, &origin_id, sizeof(origin_id));
    memcpy(at + LS_INGRESS_RESERVED_OFFSET, &reserved, sizeof(reserved));
    if (length > 0)
    {
        memcpy(at + LS_INGRESS_HEADER_LENGTH, command, length);
    }
    return ls_rb_commit(ingress, index);
}
