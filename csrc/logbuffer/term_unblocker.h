/* Aeron's term unblocker (aeron_term_unblocker.c), for an image whose log a writer stopped
 * filling mid-claim (it died, or stalled past the unblock timeout): pads the claim or the gap
 * at the image's position so that readers move on, and rotates the log for a dead writer that
 * crossed the term end. Only for logs with tail counters (never an untailed media driver
 * image: a gap there is loss the driver is still repairing). */
#ifndef LS_TERM_UNBLOCKER_H
#define LS_TERM_UNBLOCKER_H

#include <stdbool.h>

#include "logbuffer/image.h"

/* True when the frame at the position is not yet written (length 0) but the tail is beyond
 * it: the binding times this and calls ls_image_unblock after the unblock timeout. */
bool ls_image_is_blocked(const ls_image_t *image);
/* Pads (CAS on the length from 0) the gap at the position up to the next written frame, or
 * the tail, or the term end; returns whether it did. */
bool ls_image_unblock(ls_image_t *image);

#endif
