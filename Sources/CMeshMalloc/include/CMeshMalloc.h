#ifndef CMESHMALLOC_H
#define CMESHMALLOC_H

#include <stddef.h>

/// Bytes allocated with malloc and not yet freed, over all of glibc's arenas and its mmapped chunks
/// (`mallinfo2`'s `uordblks + hblkhd`); 0 where the C library cannot say.
size_t cmeshmalloc_live_bytes(void);

/// Bytes glibc's arenas hold free (freed by the program, kept by malloc: `mallinfo2`'s `fordblks`); 0 where the
/// C library cannot say.
size_t cmeshmalloc_free_bytes(void);

/// Gives the free memory of every arena back to the system (`malloc_trim(0)`); 1 if any was given back, 0 if
/// none was or the C library cannot.
int cmeshmalloc_trim(void);

#endif
