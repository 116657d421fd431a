/* One TLS client scenario, for tests/interop/tls.sh (built against our
 * libnbd, which it proves it loaded, and against Debian's as the
 * reference).
 *
 *   tls-client TARGET MODE EXPECT
 *   tls-client cmd MODE EXPECT COMMAND [ARG...]
 *
 * TARGET  a Unix socket path or tcp:HOST:PORT; or "cmd": run COMMAND
 *         (a server speaking NBD on its stdin/stdout, nbdkit -s) with
 *         nbd_connect_command
 * MODE    0, 1, 2: LIBNBD_TLS_DISABLE, _ALLOW, _REQUIRE
 * EXPECT  "tls": connects over TLS, writes 4 MiB (sync) and 1 MiB (aio,
 *         many requests in flight), reads them back, compares;
 *         "plain": the same without TLS;
 *         "fail": the connect fails (the errno and message are printed) and
 *         the handle is dead.
 * Environment: TLS_CERTS (nbd_set_tls_certificates), TLS_PSK
 * (nbd_set_tls_psk_file), TLS_USER (nbd_set_tls_username), TLS_VERIFY=0
 * (nbd_set_tls_verify_peer false), OPT_MODE=1 (connect in option mode,
 * then nbd_opt_go).
 */
#define _GNU_SOURCE
#include "testlib.h"

#include <poll.h>

#define SYNC_LEN (4 * 1024 * 1024)
#define AIO_LEN (1024 * 1024)
#define AIO_CHUNK (64 * 1024)

static void
rw (struct nbd_handle *h)
{
  char *buf = test_malloc (SYNC_LEN);
  int64_t cookies[AIO_LEN / AIO_CHUNK];
  size_t i;
  long long bad;

  CHECK (nbd_get_size (h) >= SYNC_LEN + AIO_LEN);
  test_fill_pattern (buf, SYNC_LEN, 0, 11);
  CHECK_OK (nbd_pwrite (h, buf, SYNC_LEN, 0, 0));
  memset (buf, 0, SYNC_LEN);
  CHECK_OK (nbd_pread (h, buf, SYNC_LEN, 0, 0));
  if ((bad = test_check_pattern (buf, SYNC_LEN, 0, 11)) != -1)
    test_fail ("sync read back differs at byte %lld", bad);

  /* AIO: many writes in flight, then many reads, driven by poll(2) on
   * nbd_aio_get_fd / nbd_aio_get_direction. */
  test_fill_pattern (buf, AIO_LEN, SYNC_LEN, 5);
  for (i = 0; i < AIO_LEN / AIO_CHUNK; ++i) {
    cookies[i] = nbd_aio_pwrite (h, buf + i * AIO_CHUNK, AIO_CHUNK,
                                 SYNC_LEN + i * AIO_CHUNK,
                                 NBD_NULL_COMPLETION, 0);
    CHECK (cookies[i] > 0);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (;;) {
      size_t done = 0;
      for (i = 0; i < AIO_LEN / AIO_CHUNK; ++i) {
        int r = nbd_aio_command_completed (h, cookies[i]);
        if (r == -1 && nbd_get_errno () != EBUSY) {
          if (cookies[i] == 0) { done++; continue; }
          test_fail_nbd ("nbd_aio_command_completed");
        }
        if (r == 1) cookies[i] = 0;
        if (cookies[i] == 0) done++;
      }
      if (done == AIO_LEN / AIO_CHUNK) break;
      struct pollfd p = { .fd = nbd_aio_get_fd (h), .events = 0 };
      unsigned dir = nbd_aio_get_direction (h);
      if (dir & LIBNBD_AIO_DIRECTION_READ) p.events |= POLLIN;
      if (dir & LIBNBD_AIO_DIRECTION_WRITE) p.events |= POLLOUT;
      if (poll (&p, 1, 10000) <= 0) test_fail ("aio: poll timed out");
      if (p.revents & POLLIN) CHECK_OK (nbd_aio_notify_read (h));
      else if (p.revents & POLLOUT) CHECK_OK (nbd_aio_notify_write (h));
      else if (p.revents) CHECK_OK (nbd_aio_notify_read (h));
    }
    if (pass == 1) break;
    memset (buf, 0, AIO_LEN);
    for (i = 0; i < AIO_LEN / AIO_CHUNK; ++i) {
      cookies[i] = nbd_aio_pread (h, buf + i * AIO_CHUNK, AIO_CHUNK,
                                  SYNC_LEN + i * AIO_CHUNK,
                                  NBD_NULL_COMPLETION, 0);
      CHECK (cookies[i] > 0);
    }
  }
  if ((bad = test_check_pattern (buf, AIO_LEN, SYNC_LEN, 5)) != -1)
    test_fail ("aio read back differs at byte %lld", bad);
  free (buf);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  const char *target, *expect, *e;
  int mode, r;

  test_begin ("tls-client", argc, argv, 3);
  target = argv[1];
  mode = atoi (argv[2]);
  expect = argv[3];

  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_supports_tls (h) == 1);
  CHECK_OK (nbd_set_tls (h, mode));
  if ((e = getenv ("TLS_CERTS")) != NULL)
    CHECK_OK (nbd_set_tls_certificates (h, e));
  if ((e = getenv ("TLS_PSK")) != NULL)
    CHECK_OK (nbd_set_tls_psk_file (h, e));
  if ((e = getenv ("TLS_USER")) != NULL)
    CHECK_OK (nbd_set_tls_username (h, e));
  if ((e = getenv ("TLS_VERIFY")) != NULL && strcmp (e, "0") == 0)
    CHECK_OK (nbd_set_tls_verify_peer (h, false));
  bool opt = (e = getenv ("OPT_MODE")) != NULL && strcmp (e, "1") == 0;
  if (opt)
    CHECK_OK (nbd_set_opt_mode (h, true));
  CHECK_OK (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));

  if (strcmp (target, "cmd") == 0) {
    if (argc < 5)
      test_fail ("usage: %s cmd MODE EXPECT COMMAND [ARG...]", argv[0]);
    r = nbd_connect_command (h, &argv[4]);
  }
  else
    r = test_connect (h, target);
  if (strcmp (expect, "fail") == 0) {
    if (r != -1)
      test_fail ("connect succeeded (TLS negotiated: %d)",
                 nbd_get_tls_negotiated (h));
    printf ("connect failed as expected: errno %d (%s): %s\n",
            nbd_get_errno (), strerror (nbd_get_errno ()), nbd_get_error ());
    /* The handle is finished either way. Which state it ends in depends
     * on how the server hung up (mid-handshake: dead; a clean close the
     * client did not expect: Debian's libnbd says closed), and a server
     * refusing a client certificate may do either. */
    CHECK (nbd_aio_is_dead (h) == 1 || nbd_aio_is_closed (h) == 1);
    {
      char b[512];
      CHECK (nbd_pread (h, b, sizeof b, 0, 0) == -1);
    }
    nbd_close (h);
    return test_ok ();
  }
  if (r == -1) test_fail_nbd ("connect");
  if (opt) {
    CHECK (nbd_aio_is_negotiating (h) == 1);
    CHECK (nbd_get_tls_negotiated (h) == (strcmp (expect, "tls") == 0));
    CHECK_OK (nbd_opt_go (h));
  }
  CHECK (nbd_get_tls_negotiated (h) == (strcmp (expect, "tls") == 0));
  CHECK (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1);
  rw (h);
  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  return test_ok ();
}
