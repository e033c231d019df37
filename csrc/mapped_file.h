/* Whole-file mappings. A mapping keeps its file without an open descriptor (POSIX), so the
 * caller closes the fd at once: twenty logs cost twenty mappings, not twenty fds. */
#ifndef LS_MAPPED_FILE_H
#define LS_MAPPED_FILE_H

#include <stdbool.h>
#include <stddef.h>

/* Maps `length` bytes of `fd` readable and writable: shared with other processes when
 * `shared`, else a private copy-on-write view (a reader that never changes the file).
 * `populate` pre-faults the pages (MAP_POPULATE). NULL on failure, with LS_ESYS and errno. */
void *ls_map_file(int fd, size_t length, bool shared, bool populate);

/* Unmaps what ls_map_file returned. -1 on failure, with LS_ESYS and errno. */
int ls_unmap_file(void *address, size_t length);

#endif
