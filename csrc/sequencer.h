/* The sequencer's hot loop: drain the ingress ring, drop commands already sequenced (same
 * origin, origin sequence not above the last one seen), stamp sequence + timestamp, append
 * to the sequenced log. A back-pressured log leaves the command in the ring: nothing is
 * dropped, the ring fills and senders see it. */
#ifndef LS_SEQUENCER_H
#define LS_SEQUENCER_H

#include <stdbool.h>
#include <stdint.h>

#include "concurrent/ring_buffer.h"
#include "logbuffer/publication.h"
#include "sequencer_descriptor.h"

#define LS_SEQUENCER_MAX_ORIGINS 4096 /* power of two: open addressing */

typedef struct ls_sequencer_origin_stct
{
    int64_t last_origin_sequence;
    int32_t origin_id;
    int32_t used;
} ls_sequencer_origin_t;

typedef struct ls_sequencer_stct
{
    ls_ring_buffer_t *ingress;
    ls_publication_t *log;
    int64_t next_sequence;
    int64_t last_position;  /* log position after the last message sequenced */
    int64_t sequenced;      /* totals since init, for observers */
    int64_t duplicates;
    int64_t rejected;       /* malformed ingress records, dropped */
    int64_t untracked;      /* sequenced without dedup: origin table full */
    int64_t last_status;    /* publication status that stopped the last cycle, or 0 */
    uint8_t *scratch;       /* for commands too long for one frame */
    int32_t scratch_capacity;
    int32_t origin_count;
    ls_sequencer_origin_t origins[LS_SEQUENCER_MAX_ORIGINS];
} ls_sequencer_t;

int ls_sequencer_init(ls_sequencer_t *seq, ls_ring_buffer_t *ingress, ls_publication_t *log, int64_t next_sequence);
void ls_sequencer_close(ls_sequencer_t *seq);

/* Records that `origin_id` has had `origin_sequence` sequenced (recovery from the log). */
void ls_sequencer_note_origin(ls_sequencer_t *seq, int32_t origin_id, int64_t origin_sequence);
int64_t ls_sequencer_last_origin_sequence(const ls_sequencer_t *seq, int32_t origin_id); /* -1: unknown */

/* A sender's side: one ingress record (header + command) written in place, in one call.
 * Returns LS_RB_SUCCESS, LS_RB_FULL (back-pressure: try again later) or LS_RB_ERROR. */
int ls_sequencer_send(
    ls_ring_buffer_t *ingress, int32_t origin_id, int64_t origin_sequence, const uint8_t *command, size_t length);

/* One duty cycle: handles up to `limit` ingress records; returns how many were handled
 * (sequenced, dropped as duplicates or rejected), or -1 when the ring is corrupt. */
int64_t ls_sequencer_do_work(ls_sequencer_t *seq, int64_t limit);

#endif
