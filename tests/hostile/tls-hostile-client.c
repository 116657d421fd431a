/* One client run for tests/interop/tls-hostile.sh: built against our libnbd
 * (which it proves it loaded: EXPECT_LIBNBD, tests-c/testlib.h) and against
 * Debian's as the reference.
 *
 *   tls-hostile-client TARGET TLSMODE EXPECT
 *
 * TARGET   a Unix socket path or tcp:HOST:PORT
 * TLSMODE  0, 1, 2: LIBNBD_TLS_DISABLE, _ALLOW, _REQUIRE
 * EXPECT   "tls" or "plain": connects (with TLS negotiated, or not), then
 *          moves data (below) and disconnects;
 *          "fail": the connect fails; the errno and message are printed,
 *          and the handle is finished (dead or closed, reads fail).
 * Environment: TLS_CERTS (nbd_set_tls_certificates), TLS_PSK
 * (nbd_set_tls_psk_file), TLS_USER (nbd_set_tls_username),
 * TEST_EXPORT_NAME (the export name), CANARY=TEXT: write 256 KiB of TEXT
 * repeated at offset 0 and read it back (a writable server); without it,
 * read 4 KiB at offset 0 and expect the byte 0x5a (tls_hostile_server.py).
 */
#define _GNU_SOURCE
#include "testlib.h"

#define CANARY_LEN (256 * 1024)

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  const char *target, *expect, *e, *canary;
  int mode, r;

  test_begin ("tls-hostile-client", argc, argv, 3);
  target = argv[1];
  mode = atoi (argv[2]);
  expect = argv[3];
  canary = getenv ("CANARY");

  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_OK (nbd_set_tls (h, mode));
  if ((e = getenv ("TLS_CERTS")) != NULL)
    CHECK_OK (nbd_set_tls_certificates (h, e));
  if ((e = getenv ("TLS_PSK")) != NULL)
    CHECK_OK (nbd_set_tls_psk_file (h, e));
  if ((e = getenv ("TLS_USER")) != NULL)
    CHECK_OK (nbd_set_tls_username (h, e));

  r = test_connect (h, target);
  if (strcmp (expect, "fail") == 0) {
    char b[512];
    if (r != -1)
      test_fail ("connect succeeded (TLS negotiated: %d, size %lld)",
                 nbd_get_tls_negotiated (h), (long long) nbd_get_size (h));
    printf ("connect failed as expected: errno %d (%s): %s\n",
            nbd_get_errno (), strerror (nbd_get_errno ()),
            nbd_get_error () ? nbd_get_error () : "(no message)");
    CHECK (nbd_get_error () != NULL && *nbd_get_error () != '\0');
    /* Ours gives every failure an errno (Debian's 1.14.2 leaves 0 for
     * some protocol errors). */
    if (test_is_ours ())
      CHECK (nbd_get_errno () != 0);
    CHECK (nbd_aio_is_dead (h) == 1 || nbd_aio_is_closed (h) == 1);
    CHECK (nbd_pread (h, b, sizeof b, 0, 0) == -1);
    nbd_close (h);
    return test_ok ();
  }
  if (r == -1) test_fail_nbd ("connect");
  CHECK (nbd_get_tls_negotiated (h) == (strcmp (expect, "tls") == 0));

  if (canary != NULL) {
    size_t n = strlen (canary), i;
    char *buf = test_malloc (CANARY_LEN), *back = test_malloc (CANARY_LEN);
    if (n == 0) test_fail ("CANARY is empty");
    for (i = 0; i < CANARY_LEN; ++i)
      buf[i] = canary[i % n];
    CHECK_OK (nbd_pwrite (h, buf, CANARY_LEN, 0, 0));
    memset (back, 0, CANARY_LEN);
    CHECK_OK (nbd_pread (h, back, CANARY_LEN, 0, 0));
    if (memcmp (buf, back, CANARY_LEN) != 0)
      test_fail ("the canary read back differs");
    free (buf);
    free (back);
  }
  else {
    unsigned char buf[4096];
    CHECK (nbd_get_size (h) == 1 << 20);
    memset (buf, 0, sizeof buf);
    CHECK_OK (nbd_pread (h, buf, sizeof buf, 0, 0));
    for (size_t i = 0; i < sizeof buf; ++i)
      if (buf[i] != 0x5a)
        test_fail ("byte %zu read is %#x, not 0x5a", i, buf[i]);
  }
  printf ("connected (%s) and moved data\n", expect);
  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  return test_ok ();
}
