/* One subscriber's view of one publisher session's log: reads committed frames from its
 * position (acquire on frame length, padding skipped), hands fragmented messages to the
 * fragment assembler (logbuffer/fragment_assembler.h), and keeps the position in a shared
 * counter it checks is still its own. A log whose writer died mid-frame is unblocked by the
 * term unblocker (logbuffer/term_unblocker.h). */
#ifndef LS_IMAGE_H
#define LS_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "concurrent/counters.h"
#include "logbuffer/fragment_assembler.h"
#include "logbuffer/frame_header.h"
#include "logbuffer/logbuffer.h"

typedef struct ls_image_stct
{
    ls_logbuffer_t log;
    int64_t *position;      /* this subscriber's position counter (shared memory) */
    int64_t current_position; /* what this reader last stored there: its own, whoever owns the counter now */
    /* The counter record behind `position` when another process may free it (a publisher
     * evicting us as dead): every position write first checks it is still ours. NULL: a
     * private position, always ours. */
    const ls_counters_t *owner_counters;
    int32_t owner_counter_id;
    int64_t owner_registration_id;
    /* The earliest position whose bytes may be in the binding's hands unchecked (views of the
     * term handed out by the last scan): the next read first checks the log has not lapped it. */
    int64_t unverified_from;
    /* Whether a private position checks for being lapped: a log with tail counters (ours). A media
     * driver's image log is cleaned by the driver behind its own counters, not lapped by writers. */
    bool lap_checked;
    ls_fragment_assembler_t assembler; /* fragmented messages, reassembled */
} ls_image_t;

/* Validates the log and starts at `position`, which is stored into *position_counter. */
int ls_image_init(ls_image_t *image, void *memory, size_t length, int64_t *position_counter, int64_t position);
/* Names the counter record behind the position (allocated to `registration_id`), so that no
 * write of the position follows its eviction or reuse: -1 when it is not ours now. */
int ls_image_set_owner(ls_image_t *image, const ls_counters_t *counters, int32_t counter_id, int64_t registration_id);

/* Statuses besides -1 (corrupt frame) of the reading calls below, each with its ls_errmsg():
 * LAPPED: the writers went two terms past the position (a reader that was not holding them
 * back: evicted, or a private position), so the bytes there may be overwritten: the image is
 * lost from image->unverified_from on. NOT_OWNER: the position counter was freed (evicted
 * as dead) or reused: the position was not written. Nothing is handed out with either. */
#define LS_IMAGE_LAPPED (-3)
#define LS_IMAGE_NOT_OWNER (-4)
/* Whether the writers have gone two terms past the position (see LS_IMAGE_LAPPED), or past
 * image->unverified_from; sets the error message when they have. */
bool ls_image_is_lapped(const ls_image_t *image);
/* Whether the position counter is still this image's (see ls_image_set_owner). */
bool ls_image_is_owner(const ls_image_t *image);
/* Confirms what was handed out up to the position was intact (the counter still ours, or for a
 * private position not lapped): 0, or LS_IMAGE_LAPPED / LS_IMAGE_NOT_OWNER with the message. A
 * binding calls it when a read finds nothing after handing out views. */
int ls_image_check(ls_image_t *image);
/* ls_image_init over a media driver's image log, which keeps no tail counters
 * (ls_logbuffer_init_untailed). Never call ls_image_is_blocked / ls_image_unblock /
 * ls_image_wait on such an image: a gap there is loss the driver is still repairing. */
int ls_image_init_untailed(
    ls_image_t *image, void *memory, size_t length, int64_t *position_counter, int64_t position);
void ls_image_close(ls_image_t *image); /* frees the reassembly buffer */

/* Hands up to `fragment_limit` fragments' worth of whole messages to `handler`, advancing
 * the position (release) past them and past padding. Returns fragments read, or -1 with
 * LS_EFORMAT when a frame header is corrupt (length/type/term offset out of range), or
 * LS_IMAGE_LAPPED / LS_IMAGE_NOT_OWNER. */
int64_t ls_image_poll(ls_image_t *image, ls_fragment_handler_t handler, void *clientd, int32_t fragment_limit);

/* Batch form for bindings (one call per batch; the position is NOT moved: call
 * ls_image_set_position with end or a message's position when done). Fills, per whole
 * message: where its payload is (data_offsets: offset into the term partition of
 * partitions[i], or -1 when it is in the reassembly buffer `image->assembler.buffer`), its payload
 * length and its header. Stops after a reassembled message (the buffer is reused by the
 * next scan), at the end of the term, or at fragment_limit. *end_position = position after
 * the last frame looked at (padding included). Returns the message count, -1 (corrupt) or
 * LS_IMAGE_LAPPED. */
int32_t ls_image_scan(
    ls_image_t *image,
    int32_t fragment_limit,
    int32_t *partitions,
    int32_t *data_offsets,
    int32_t *lengths,
    ls_frame_header_t *headers,
    int64_t *end_position);

#define LS_IMAGE_SCAN_CAPACITY 1024

/* The output of one scan, in one struct so a binding passes one pointer per call. */
typedef struct ls_image_scan_stct
{
    int64_t end_position;
    int32_t count;
    int32_t end_length_index; /* the frame length at end_position, as an int32 index into the log */
    int32_t partitions[LS_IMAGE_SCAN_CAPACITY];
    int32_t data_offsets[LS_IMAGE_SCAN_CAPACITY];
    int32_t lengths[LS_IMAGE_SCAN_CAPACITY];
    ls_frame_header_t headers[LS_IMAGE_SCAN_CAPACITY];
} ls_image_scan_t;

/* ls_image_scan into `scan` (fragment_limit capped at LS_IMAGE_SCAN_CAPACITY), then moves the
 * position to scan->end_position at once: one call per batch. A binding whose handler fails
 * moves the position back to the end of the failing message (still intact: rotation cleans
 * two terms ahead of the window). Returns the message count, -1 (corrupt frame),
 * LS_IMAGE_LAPPED or LS_IMAGE_NOT_OWNER (nothing committed then). */
int32_t ls_image_scan_commit(ls_image_t *image, ls_image_scan_t *scan, int32_t fragment_limit);

/* ls_image_scan_commit without moving the position when it found messages: for a log whose
 * bytes may be reclaimed as soon as the position passes them (a media driver zeroes its logs
 * behind the subscriber position), the binding stores scan->end_position (or a message's
 * position) with ls_image_set_position once its handlers are done with the bytes. Padding and
 * first fragments alone (count 0: nothing handed out, fragments already copied) are committed. */
int32_t ls_image_scan_deferred(ls_image_t *image, ls_image_scan_t *scan, int32_t fragment_limit);

/* One message, for a binding's single-message poll: scans and commits like ls_image_scan_commit
 * with a limit of one, reading on past padding and the first fragments to one whole message.
 * Returns the count as a scan does: 1 (the message is scan's entry 0: partitions[0],
 * data_offsets[0] or -1 for image->assembler.buffer, lengths[0]), 0 when there was none, or
 * -1 for a corrupt frame, LS_IMAGE_LAPPED, LS_IMAGE_NOT_OWNER. */
int32_t ls_image_poll_one(ls_image_t *image, ls_image_scan_t *scan);
/* ls_image_poll_one with ls_image_scan_deferred: the position stays before the message until
 * the binding stores scan->end_position (ls_image_set_position) after handling it. */
int32_t ls_image_poll_one_deferred(ls_image_t *image, ls_image_scan_t *scan);

/* For bindings that read one message at a time without a scan: the payload of the frame at
 * the position when it is one whole unfragmented data frame that fits the term (the common
 * case), with its length; else NULL and *length 0 (nothing written yet) or -1 (padding,
 * fragments, a frame of another term or offset (lapped), or one to reject: take
 * ls_image_poll_one). After copying the payload out, ls_image_consume_peeked(image, length)
 * checks the copy is intact (the log has not lapped it meanwhile) and the counter still ours,
 * then moves the position (release) past the frame; returns the new position, or
 * LS_IMAGE_LAPPED / LS_IMAGE_NOT_OWNER (position not moved: discard the copy). */
const uint8_t *ls_image_peek_message(const ls_image_t *image, int32_t *length);
int64_t ls_image_consume_peeked(ls_image_t *image, int32_t length);
/* The index, in int32 words from the start of the log, of the frame length at `position`. */
int32_t ls_image_length_index(const ls_image_t *image, int64_t position);
int64_t ls_image_position(const ls_image_t *image);
/* Moves the position (release); LS_IMAGE_NOT_OWNER (not written) when the counter is not ours. */
int ls_image_set_position(ls_image_t *image, int64_t position);
/* Blocks (futex, no spinning) until a writer commits at the position or timeout_ns passes;
 * returns 1 when there may be something to read, 0 on timeout or signal. */
int ls_image_wait(ls_image_t *image, int64_t timeout_ns);
/* ls_image_is_blocked / ls_image_unblock: logbuffer/term_unblocker.h. */

#endif
