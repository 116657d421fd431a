/* The LIBNBD_HAVE_* consumer: libnbd.h defines LIBNBD_HAVE_NBD_<CALL> for
 * every call it declares, and programs that must build with several libnbd
 * releases test those macros to pick calls at compile time. This one prints
 * which calls it picked, so that the test can build it with two headers
 * (the staged 1.24 one and Debian 12's 1.14 one) and see the choice follow
 * the header:
 *
 *   picked: nbd_get_handle_size | sizeof-fallback   (1.24)
 *   picked: nbd_stats_bytes_sent | no-stats         (1.16)
 *   picked: nbd_is_uri | prefix-test                (1.22)
 */
/* First: it asks for _GNU_SOURCE before any system header. */
#include "../common/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

/* Is S an NBD URI? nbd_is_uri knows every scheme the library accepts;
 * without it, compare the prefix ourselves. */
static int
looks_like_uri (struct nbd_handle *nbd, const char *s)
{
#ifdef LIBNBD_HAVE_NBD_IS_URI
  printf ("picked: nbd_is_uri\n");
  return nbd_is_uri (nbd, s) == 1;
#else
  (void) nbd;
  printf ("picked: prefix-test\n");
  return strncmp (s, "nbd", 3) == 0 && strstr (s, "://") != NULL;
#endif
}

int
main (int argc, char *argv[])
{
  const char *uri = argc > 1 ? argv[1] : NULL;
  struct nbd_handle *nbd;

  if (consumer_report ("have-macros", uri) != EXIT_SUCCESS)
    return EXIT_FAILURE;

  nbd = nbd_create ();
  if (nbd == NULL) {
    fprintf (stderr, "%s\n", nbd_get_error ());
    return EXIT_FAILURE;
  }
#ifdef LIBNBD_HAVE_NBD_GET_HANDLE_SIZE
  printf ("picked: nbd_get_handle_size (%zu bytes)\n",
          (size_t) nbd_get_handle_size (nbd));
#else
  printf ("picked: sizeof-fallback\n");
#endif
  if (uri != NULL && looks_like_uri (nbd, uri)) {
    if (nbd_connect_uri (nbd, uri) == -1) {
      fprintf (stderr, "%s\n", nbd_get_error ());
      return EXIT_FAILURE;
    }
#ifdef LIBNBD_HAVE_NBD_STATS_BYTES_SENT
    printf ("picked: nbd_stats_bytes_sent (%" PRIu64 " bytes sent)\n",
            nbd_stats_bytes_sent (nbd));
#else
    printf ("picked: no-stats\n");
#endif
    nbd_shutdown (nbd, 0);
  }
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
