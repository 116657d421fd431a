/* Calls of libnbd 1.16 and later, from C through the header: statistics
 * after a known sequence, option mode's single steps, nbd_poll2 with a
 * pipe, nbd_is_uri.  Built against a libnbd without them (Debian 12's
 * 1.14), it skips.
 * nbdkit-args: memory 64M */
#define _GNU_SOURCE
#include <unistd.h>
#include "testlib.h"

#if defined (LIBNBD_HAVE_NBD_STATS_BYTES_SENT) && \
    defined (LIBNBD_HAVE_NBD_OPT_SET_META_CONTEXT) && \
    defined (LIBNBD_HAVE_NBD_POLL2) && defined (LIBNBD_HAVE_NBD_IS_URI)

static int contexts_seen;

static int
count_context (void *user_data, const char *name)
{
  (void) user_data;
  if (strcmp (name, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    contexts_seen++;
  return 0;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char buf[512];
  uint64_t sent, received, bytes;
  int fds[2];
  nbd_context_callback cb = { .callback = count_context };

  test_begin ("newer-calls", argc, argv, 1);

  /* Statistics: nothing before connecting; a read is one request of 28
   * bytes (32 with extended headers) and one reply chunk. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_stats_bytes_sent (h) == 0 && nbd_stats_chunks_received (h) == 0);
  CHECK_OK (test_connect (h, argv[1]));
  CHECK (nbd_stats_chunks_received (h) == 1);   /* the greeting */
  sent = nbd_stats_chunks_sent (h);
  received = nbd_stats_chunks_received (h);
  bytes = nbd_stats_bytes_sent (h);
  CHECK_OK (nbd_pread (h, buf, sizeof buf, 0, 0));
  CHECK (nbd_stats_chunks_sent (h) == sent + 1);
  CHECK (nbd_stats_chunks_received (h) == received + 1);
#ifdef LIBNBD_HAVE_NBD_GET_EXTENDED_HEADERS_NEGOTIATED
  /* With extended headers (our nbdkit), requests are 32 bytes. */
  CHECK (nbd_stats_bytes_sent (h) ==
         bytes + (nbd_get_extended_headers_negotiated (h) == 1 ? 32 : 28));
#else
  CHECK (nbd_stats_bytes_sent (h) == bytes + 28);
#endif

  /* poll2: a readable pipe ends the wait at once, an empty one times out. */
  CHECK (pipe (fds) == 0);
  CHECK (nbd_poll2 (h, fds[0], 50) == 0);
  CHECK (write (fds[1], "x", 1) == 1);
  CHECK (nbd_poll2 (h, fds[0], -1) == 1);
  close (fds[0]);
  close (fds[1]);

  CHECK (nbd_is_uri (h, "nbd+unix:///?socket=/tmp/s") == 1);
  CHECK (nbd_is_uri (h, "/dev/nbd0") == 0);
  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);

  /* Option mode, one step at a time. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_OK (nbd_set_opt_mode (h, true));
  CHECK_OK (nbd_set_request_structured_replies (h, false));
  CHECK_OK (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  CHECK_OK (test_connect (h, argv[1]));
  CHECK (nbd_aio_is_negotiating (h) == 1);
  CHECK (nbd_get_structured_replies_negotiated (h) == 0);
  CHECK (nbd_opt_structured_reply (h) == 1);
  CHECK (nbd_opt_set_meta_context (h, cb) == 1);
  CHECK (contexts_seen == 1);
  CHECK_OK (nbd_set_request_meta_context (h, false));
  CHECK_OK (nbd_opt_go (h));
  CHECK (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1);
  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  return test_ok ();
}

#else

int
main (int argc, char *argv[])
{
  test_begin ("newer-calls", argc, argv, 1);
  test_skip ("this libnbd.h lacks the calls of libnbd 1.16 and later");
  return 77;
}

#endif
