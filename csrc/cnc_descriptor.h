/* lockstep's directory file `cnc.dat`: Aeron's CnC layout (spec/aeron-formats.md §5) with empty
 * driver rings, holding the counters (positions, limits, heartbeats) and the error log. */
#ifndef LS_CNC_DESCRIPTOR_H
#define LS_CNC_DESCRIPTOR_H

#define LS_CNC_VERSION 512 /* semantic 0.2.0, as Aeron's */
#define LS_CNC_VERSION_OFFSET 0
#define LS_CNC_TO_DRIVER_BUFFER_LENGTH_OFFSET 4
#define LS_CNC_TO_CLIENTS_BUFFER_LENGTH_OFFSET 8
#define LS_CNC_COUNTERS_METADATA_LENGTH_OFFSET 12
#define LS_CNC_COUNTERS_VALUES_LENGTH_OFFSET 16
#define LS_CNC_ERROR_LOG_LENGTH_OFFSET 20
#define LS_CNC_CLIENT_LIVENESS_TIMEOUT_OFFSET 24
#define LS_CNC_START_TIMESTAMP_OFFSET 32
#define LS_CNC_PID_OFFSET 40
#define LS_CNC_HEADER_LENGTH 128

#endif
