/* The meson consumer project: built against libnbd found by pkg-config
 * (which must be libnbd >= 1.24), it reports which libnbd it runs with. */
/* First: it asks for _GNU_SOURCE before any system header. */
#include "../common/report.h"

/* nbd_get_handle_size came with libnbd 1.24: a header without it is not
 * the one our libnbd.pc points to (Debian 12's libnbd-dev is 1.14). */
#ifndef LIBNBD_HAVE_NBD_GET_HANDLE_SIZE
#error "this libnbd.h is older than 1.24: not the staged one"
#endif

int
main (int argc, char *argv[])
{
  return consumer_report ("meson", argc > 1 ? argv[1] : NULL);
}
