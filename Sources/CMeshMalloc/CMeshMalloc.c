#include "CMeshMalloc.h"

#if defined(__linux__)
#include <features.h>  // defines __GLIBC__ with glibc, not with musl
#endif

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>

size_t cmeshmalloc_live_bytes(void) {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

size_t cmeshmalloc_free_bytes(void) {
  struct mallinfo2 info = mallinfo2();
  return info.fordblks;
}

int cmeshmalloc_trim(void) { return malloc_trim(0); }
#else
size_t cmeshmalloc_live_bytes(void) { return 0; }
size_t cmeshmalloc_free_bytes(void) { return 0; }
int cmeshmalloc_trim(void) { return 0; }
#endif
