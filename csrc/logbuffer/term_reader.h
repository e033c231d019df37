/* Reading the frames of one term (Aeron's aeron_term_reader.c): each committed frame checked
 * before its bytes are trusted, padding skipped, fragments handed to a fragment assembler,
 * whole messages to a sink. An image reads its log's terms with it (acquire on each frame
 * length: writers are live); the archive reads the terms of a recording's segments with it. */
#ifndef LS_TERM_READER_H
#define LS_TERM_READER_H

#include <stdbool.h>
#include <stdint.h>

#include "logbuffer/fragment_assembler.h"
#include "logbuffer/frame_header.h"

/* One term: where it lies and what every frame in it must say. */
typedef struct ls_term_stct
{
    const uint8_t *buffer;  /* the term's first byte */
    int64_t begin_position; /* the stream position of buffer[0] */
    int32_t term_length;
    int32_t term_id;
    int32_t mtu_length;
    /* A recording's term: everything before the reader's limit is written, by one session of
     * one stream, so a zero length, another session or stream, or another version is corrupt. */
    bool recorded;
    int32_t session_id;
    int32_t stream_id;
} ls_term_t;

/* Receives each whole message; data_offset is its payload's offset from the term's start, or
 * -1 for a message in the assembler's buffer. */
typedef void (*ls_term_sink_t)(
    void *clientd, const uint8_t *data, size_t length, int32_t data_offset, const ls_frame_header_t *header);

/* 0 when the frame of `frame_length` at `offset` can be trusted, else -1 with LS_EFORMAT and
 * "frame at term T offset O: <what>: expected ..., found ..." (what: length, version, type,
 * DATA length, term offset field, term id field, session/stream). */
int ls_term_check_frame(const ls_term_t *term, const uint8_t *frame, int32_t frame_length, int32_t offset);

/* Reads from `offset` up to `limit_offset` (a frame ending past it is left: not there yet):
 * stops at an unwritten frame, after `fragment_limit` data frames, or (when asked) after a
 * reassembled message. Returns the data frames read; *end_offset is where it stopped and
 * *corrupt says it stopped at a frame that failed its check (error set), or the assembler
 * could not grow. */
int32_t ls_term_read(
    const ls_term_t *term,
    int32_t offset,
    int32_t limit_offset,
    int32_t fragment_limit,
    bool stop_after_assembled,
    ls_fragment_assembler_t *assembler,
    ls_term_sink_t sink,
    void *clientd,
    int32_t *end_offset,
    bool *corrupt);

#define LS_TERM_SCAN_CAPACITY 1024

/* The messages one ls_term_scan found, for a binding: one struct, one pointer per call. */
typedef struct ls_term_scan_stct
{
    int32_t count;
    int32_t end_offset;
    int32_t data_offsets[LS_TERM_SCAN_CAPACITY]; /* -1: in the assembler's buffer */
    int32_t lengths[LS_TERM_SCAN_CAPACITY];
    ls_frame_header_t headers[LS_TERM_SCAN_CAPACITY];
} ls_term_scan_t;

/* ls_term_read into `scan` (fragment_limit capped at LS_TERM_SCAN_CAPACITY), stopping after a
 * reassembled message (its buffer is reused). Returns scan->count, or -1 when it stopped at a
 * corrupt frame at scan->end_offset (error set; the messages before it are in scan). */
int32_t ls_term_scan(
    const ls_term_t *term,
    int32_t offset,
    int32_t limit_offset,
    int32_t fragment_limit,
    ls_fragment_assembler_t *assembler,
    ls_term_scan_t *scan);

#endif
