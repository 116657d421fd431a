/* make demo: a C program on our libnbd.so.0 talking to our nbdkit.
 *
 *   nbdkit -U - memory 1G --run './build/demo/demo "$unixsocket"'
 *
 * Writes a pattern, reads it back, prints the export size, whether the
 * bytes match, and which libnbd file the dynamic loader actually used. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define LEN (4 * 1024 * 1024)

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  unsigned char *wbuf, *rbuf;
  int64_t size;
  uint64_t offset;
  Dl_info info;
  char *path;
  size_t i;
  int match;

  if (argc != 2) {
    fprintf (stderr, "usage: %s UNIX-SOCKET\n", argv[0]);
    return 2;
  }

  if (dladdr ((void *) nbd_create, &info) != 0 && info.dli_fname != NULL) {
    const char *expect = getenv ("EXPECT_LIBNBD");
    char *want = expect ? realpath (expect, NULL) : NULL;
    path = realpath (info.dli_fname, NULL);
    printf ("libnbd loaded from: %s\n", path ? path : info.dli_fname);
    if (expect && (!want || !path || strcmp (want, path) != 0)) {
      fprintf (stderr, "demo: expected %s to be loaded\n", expect);
      return 1;
    }
    free (want);
    free (path);
  }

  h = nbd_create ();
  if (h == NULL || nbd_connect_unix (h, argv[1]) == -1) {
    fprintf (stderr, "demo: %s\n", nbd_get_error ());
    return 1;
  }
  size = nbd_get_size (h);
  if (size == -1) {
    fprintf (stderr, "demo: %s\n", nbd_get_error ());
    return 1;
  }
  printf ("export size: %" PRId64 " bytes (%" PRId64 " MiB)\n",
          size, size / (1024 * 1024));

  wbuf = malloc (LEN);
  rbuf = malloc (LEN);
  if (wbuf == NULL || rbuf == NULL) { perror ("malloc"); return 1; }
  for (i = 0; i < LEN; ++i)
    wbuf[i] = (unsigned char) (i * 7 + (i >> 12) + 1);
  offset = (uint64_t) size / 2;

  if (nbd_pwrite (h, wbuf, LEN, offset, 0) == -1 ||
      nbd_pread (h, rbuf, LEN, offset, 0) == -1) {
    fprintf (stderr, "demo: %s\n", nbd_get_error ());
    return 1;
  }
  match = memcmp (wbuf, rbuf, LEN) == 0;
  printf ("wrote %d bytes at offset %" PRIu64 ", read them back: %s\n",
          LEN, offset, match ? "bytes match" : "BYTES DIFFER");

  if (nbd_shutdown (h, 0) == -1)
    fprintf (stderr, "demo: %s\n", nbd_get_error ());
  nbd_close (h);
  free (wbuf);
  free (rbuf);
  return match ? 0 : 1;
}
