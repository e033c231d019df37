/* Umbrella header: everything the cffi extension and the C tests see.
 *
 * Return conventions, one per kind of call (Aeron's C client's):
 * - a call that does something returns 0 (or a count, a position, an index: >= 0) and, when it
 *   fails, -1 (NULL for a pointer) with the thread-local error set by LS_SET_ERR, each caller
 *   adding its context with LS_APPEND_ERR (util/ls_error.h): ls_errmsg(), ls_errtrace();
 * - "not now" and "cannot go on" are named negative values, one set per family: LS_RB_FULL
 *   (-2) for a ring's write and claim; for a publication's offer and claim, Aeron's own
 *   statuses (NOT_CONNECTED -1 .. MAX_POSITION_EXCEEDED -5, and LS_PUBLICATION_ERROR -6 for
 *   a failure, as AERON_PUBLICATION_ERROR); for an image's reads LS_IMAGE_LAPPED (-3) and
 *   LS_IMAGE_NOT_OWNER (-4), error set, beside -1 for a corrupt frame;
 * - a question returns bool (ls_image_is_lapped, ls_image_is_owner) and sets no error. */
#ifndef LOCKSTEP_H
#define LOCKSTEP_H

#include "cnc_descriptor.h"
#include "concurrent/counters.h"
#include "concurrent/distinct_error_log.h"
#include "concurrent/log_signal.h"
#include "concurrent/ring_buffer.h"
#include "logbuffer/fragment_assembler.h"
#include "logbuffer/image.h"
#include "logbuffer/logbuffer.h"
#include "logbuffer/publication.h"
#include "logbuffer/term_reader.h"
#include "logbuffer/term_unblocker.h"
#include "sequencer.h"
#include "util/ls_error.h"
#include "util/mapped_file.h"

#endif
