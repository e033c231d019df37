/* Whole-file mappings. A mapping keeps its file without an open descriptor (POSIX), so the
 * caller closes the fd at once: twenty logs cost twenty mappings, not twenty fds. */
#ifndef LS_MAPPED_FILE_H
#define LS_MAPPED_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Maps `length` bytes of `fd` readable and writable: shared with other processes when
 * `shared`, else a private copy-on-write view (a reader that never changes the file).
 * `populate` pre-faults the pages (MAP_POPULATE). NULL on failure, with LS_ESYS and errno. */
void *ls_map_file(int fd, size_t length, bool shared, bool populate);

/* Unmaps what ls_map_file returned. -1 on failure, with LS_ESYS and errno. */
int ls_unmap_file(void *address, size_t length);

/* Gives the holes of [0, length) of `fd` real storage without changing a byte (Linux fallocate,
 * mode 0: written data stays, holes become allocated zeros), so a shared mapping of a file
 * some other program made sparse never meets a full filesystem at a page touch (SIGBUS).
 * Safe while others write the file. 0 done, 1 not possible here (no fallocate on this
 * filesystem or system: nothing changed), -1 on failure (LS_ESYS, errno: ENOSPC ...). */
int ls_fill_holes(int fd, int64_t length);

#endif
