// The installed libnbd.h must compile as C++ with -Wall -Wextra -Werror.
// Compile-only (the harness does not run it).
#include <libnbd.h>
#include <cstdio>

int
main ()
{
  struct nbd_handle *h = nbd_create ();
  if (h == nullptr) {
    std::fprintf (stderr, "%s\n", nbd_get_error ());
    return 1;
  }
  int64_t size = -1;
  (void) size;
  nbd_close (h);
  return 0;
}
