/* connect: the whole life of a short connection, repeated, for comparing
 * our libnbd with Debian's against the same server.
 *
 *   connect SOCKET uri|unix CYCLES [noext]
 *
 * Each cycle is nbd_create, nbd_connect_uri ("nbd+unix:///?socket=SOCKET")
 * or nbd_connect_unix (SOCKET), nbd_shutdown, nbd_close. "noext" turns off
 * nbd_set_request_extended_headers where the library has it (libnbd 1.14
 * does not ask for extended headers at all), to compare the rest of the
 * handshake apart from that one option. Prints
 *   RESULT mode=... cycles=N secs=... per_sec=...
 * Built once against Debian's libnbd; LD_LIBRARY_PATH picks the library. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libnbd.h>

int
main (int argc, char *argv[])
{
  const char *sock, *mode;
  long cycles, i;
  int use_uri, noext;
  char uri[4096];
  struct timespec t0, t1;
  double secs;
  /* Looked up at run time: Debian's libnbd 1.14 has no such call. */
  int (*set_ext) (struct nbd_handle *, bool) = NULL;

  if (argc < 4) {
    fprintf (stderr, "usage: %s SOCKET uri|unix CYCLES [noext]\n", argv[0]);
    return 2;
  }
  sock = argv[1];
  mode = argv[2];
  use_uri = strcmp (mode, "uri") == 0;
  cycles = strtol (argv[3], NULL, 0);
  noext = argc > 4 && strcmp (argv[4], "noext") == 0;
  if (noext)
    set_ext = (int (*) (struct nbd_handle *, bool))
      dlsym (RTLD_DEFAULT, "nbd_set_request_extended_headers");
  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", sock);

  clock_gettime (CLOCK_MONOTONIC, &t0);
  for (i = 0; i < cycles; i++) {
    struct nbd_handle *h = nbd_create ();
    int r;
    if (h == NULL) goto fail;
    if (set_ext && set_ext (h, false) == -1) goto fail;
    r = use_uri ? nbd_connect_uri (h, uri) : nbd_connect_unix (h, sock);
    if (r == -1) goto fail;
    if (nbd_shutdown (h, 0) == -1) goto fail;
    nbd_close (h);
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);
  secs = (double) (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf ("RESULT mode=%s%s cycles=%ld secs=%.6f per_sec=%.0f\n",
          mode, noext ? "+noext" : "", cycles, secs, cycles / secs);
  return 0;
 fail:
  fprintf (stderr, "connect: %s\n", nbd_get_error ());
  return 1;
}
