/* A small filter built against the headers under test: it shows the next
 * layer's export as if it were half its size. run.sh loads it into
 * Debian's nbdkit, which refuses filters whose struct or version differ
 * from its own. */
#include <nbdkit-filter.h>

static int64_t
half_get_size (nbdkit_next *next, void *handle)
{
  int64_t size = next->get_size (next);

  (void) handle;
  return size == -1 ? -1 : size / 2;
}

static struct nbdkit_filter filter = {
  .name = "half",
  .longname = "a filter that halves the export",
  .get_size = half_get_size,
};

NBDKIT_REGISTER_FILTER (filter)
