/* Include this first (it defines _GNU_SOURCE for dladdr).
 *
 * What every consumer project prints, so that tests/consumers/run.sh can
 * tell which libnbd it was built and run with:
 *
 *   consumer: NAME
 *   libnbd loaded from: PATH     (the file nbd_create came from, by dladdr)
 *   libnbd version: X.Y.Z        (nbd_get_version)
 *   export size: N               (only when given a URI to connect to)
 *
 * Header-only so that each build system compiles just its own main.c.
 */
#ifndef CONSUMER_REPORT_H
#define CONSUMER_REPORT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <libnbd.h>

static int
consumer_report (const char *name, const char *uri)
{
  Dl_info info;
  struct nbd_handle *nbd;
  int64_t size;

  printf ("consumer: %s\n", name);
  if (dladdr ((void *) nbd_create, &info) == 0 || info.dli_fname == NULL) {
    fprintf (stderr, "%s: dladdr (nbd_create) failed\n", name);
    return EXIT_FAILURE;
  }
  printf ("libnbd loaded from: %s\n", info.dli_fname);

  nbd = nbd_create ();
  if (nbd == NULL) {
    fprintf (stderr, "%s: %s\n", name, nbd_get_error ());
    return EXIT_FAILURE;
  }
  printf ("libnbd version: %s\n", nbd_get_version (nbd));

  if (uri != NULL) {
    if (nbd_connect_uri (nbd, uri) == -1 ||
        (size = nbd_get_size (nbd)) == -1) {
      fprintf (stderr, "%s: %s\n", name, nbd_get_error ());
      nbd_close (nbd);
      return EXIT_FAILURE;
    }
    printf ("export size: %" PRIi64 "\n", size);
    nbd_shutdown (nbd, 0);
  }
  nbd_close (nbd);
  return EXIT_SUCCESS;
}

#endif /* CONSUMER_REPORT_H */
