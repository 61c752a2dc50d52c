#ifndef CMESHMALLOC_H
#define CMESHMALLOC_H

#include <stddef.h>

/// Bytes allocated with malloc and not yet freed, over all of glibc's arenas and its mmapped chunks
/// (`mallinfo2`'s `uordblks + hblkhd`); 0 where the C library cannot say.
size_t cmeshmalloc_live_bytes(void);

#endif
