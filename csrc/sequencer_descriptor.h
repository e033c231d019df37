/* The sequencer's two record formats (lockstep's own, little endian):
 * an ingress record (many-to-one ring, msg type COMMAND) = ingress header + command bytes;
 * a sequenced message (payload of one log message) = sequenced header + the same bytes. */
#ifndef LS_SEQUENCER_DESCRIPTOR_H
#define LS_SEQUENCER_DESCRIPTOR_H

#define LS_INGRESS_MSG_TYPE_COMMAND 1

#define LS_INGRESS_ORIGIN_SEQUENCE_OFFSET 0 /* int64: the sender's own sequence, increasing */
#define LS_INGRESS_ORIGIN_ID_OFFSET 8       /* int32: who sent it (a client, or a replicated machine) */
#define LS_INGRESS_RESERVED_OFFSET 12       /* int32: 0 */
#define LS_INGRESS_HEADER_LENGTH 16

#define LS_SEQUENCED_SEQUENCE_OFFSET 0         /* int64: gap-free, from 1 */
#define LS_SEQUENCED_TIMESTAMP_OFFSET 8        /* int64: sequencer clock, ns since the epoch */
#define LS_SEQUENCED_ORIGIN_SEQUENCE_OFFSET 16 /* int64 */
#define LS_SEQUENCED_ORIGIN_ID_OFFSET 24       /* int32 */
#define LS_SEQUENCED_RESERVED_OFFSET 28        /* int32: 0 */
#define LS_SEQUENCED_HEADER_LENGTH 32

#endif
