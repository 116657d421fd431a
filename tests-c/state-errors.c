/* The AIO, option, meta context and info calls in the wrong state: before
 * connecting (ENOTCONN), after a clean shutdown (closed) and after a failed
 * connection (dead), with invalid arguments (EINVAL), and (ours only) on a
 * NULL handle (EFAULT, where libnbd 1.14.2 crashes).
 * nbdkit-args: memory 1M */
#define _GNU_SOURCE
#include "testlib.h"

static int
list (void *u, const char *n, const char *d)
{
  (void) u; (void) n; (void) d;
  return 0;
}

static int
ctx (void *u, const char *n)
{
  (void) u; (void) n;
  return 0;
}

static int
extent (void *u, const char *m, uint64_t o, uint32_t *e, size_t n, int *err)
{
  (void) u; (void) m; (void) o; (void) e; (void) n; (void) err;
  return 0;
}

static int
chunk (void *u, const void *b, size_t c, uint64_t o, unsigned s, int *err)
{
  (void) u; (void) b; (void) c; (void) o; (void) s; (void) err;
  return 0;
}

#define LIST ((nbd_list_callback) { .callback = list })
#define CTX ((nbd_context_callback) { .callback = ctx })
#define EXT ((nbd_extent_callback) { .callback = extent })
#define CHUNK ((nbd_chunk_callback) { .callback = chunk })

/* Commands and options in a state where they may not run. */
static void
refused (struct nbd_handle *h, int e)
{
  char buf[512];
  CHECK_ERR (nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0), e,
             "nbd_aio_pread");
  CHECK_ERR (nbd_aio_pwrite (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0), e,
             "nbd_aio_pwrite");
  CHECK_ERR (nbd_aio_flush (h, NBD_NULL_COMPLETION, 0), e, "nbd_aio_flush");
  CHECK_ERR (nbd_aio_trim (h, 512, 0, NBD_NULL_COMPLETION, 0), e,
             "nbd_aio_trim");
  CHECK_ERR (nbd_aio_zero (h, 512, 0, NBD_NULL_COMPLETION, 0), e,
             "nbd_aio_zero");
  CHECK_ERR (nbd_aio_cache (h, 512, 0, NBD_NULL_COMPLETION, 0), e,
             "nbd_aio_cache");
  CHECK_ERR (nbd_aio_block_status (h, 512, 0, EXT, NBD_NULL_COMPLETION, 0), e,
             "nbd_aio_block_status");
  CHECK_ERR (nbd_aio_pread_structured (h, buf, sizeof buf, 0, CHUNK,
                                       NBD_NULL_COMPLETION, 0), e,
             "nbd_aio_pread_structured");
  CHECK_ERR (nbd_pread_structured (h, buf, sizeof buf, 0, CHUNK, 0), e,
             "nbd_pread_structured");
  CHECK_ERR (nbd_block_status (h, 512, 0, EXT, 0), e, "nbd_block_status");
  CHECK_ERR (nbd_aio_disconnect (h, 0), e, "nbd_aio_disconnect");
  CHECK_ERR (nbd_opt_go (h), e, "nbd_opt_go");
  CHECK_ERR (nbd_opt_info (h), e, "nbd_opt_info");
  CHECK_ERR (nbd_opt_abort (h), e, "nbd_opt_abort");
  CHECK_ERR (nbd_opt_list (h, LIST), e, "nbd_opt_list");
  CHECK_ERR (nbd_opt_list_meta_context (h, CTX), e,
             "nbd_opt_list_meta_context");
  CHECK_ERR (nbd_aio_opt_go (h, NBD_NULL_COMPLETION), e, "nbd_aio_opt_go");
  CHECK_ERR (nbd_aio_opt_info (h, NBD_NULL_COMPLETION), e, "nbd_aio_opt_info");
  CHECK_ERR (nbd_aio_opt_list (h, LIST, NBD_NULL_COMPLETION), e,
             "nbd_aio_opt_list");
  CHECK_ERR (nbd_aio_opt_list_meta_context (h, CTX, NBD_NULL_COMPLETION), e,
             "nbd_aio_opt_list_meta_context");
  CHECK_ERR (nbd_aio_opt_abort (h), e, "nbd_aio_opt_abort");
}

/* Calls that only work on a new handle. */
static void
not_new (struct nbd_handle *h, const char *sock)
{
  CHECK_ERR (nbd_set_opt_mode (h, true), EINVAL, "nbd_set_opt_mode");
  CHECK_ERR (nbd_set_handshake_flags (h, 0), EINVAL, "nbd_set_handshake_flags");
  CHECK_ERR (nbd_set_request_structured_replies (h, false), EINVAL,
             "nbd_set_request_structured_replies");
  CHECK_ERR (nbd_add_meta_context (h, "base:allocation"), EINVAL,
             "nbd_add_meta_context");
  CHECK_ERR (nbd_clear_meta_contexts (h), EINVAL, "nbd_clear_meta_contexts");
  CHECK_ERR (nbd_aio_connect_unix (h, sock), EINVAL, "nbd_aio_connect_unix");
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;

  test_begin ("state-errors", argc, argv, 1);

  /* --- New handle: not connected. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_aio_is_created (h) == 1);
  CHECK (nbd_aio_is_connecting (h) == 0 && nbd_aio_is_ready (h) == 0 &&
         nbd_aio_is_dead (h) == 0 && nbd_aio_is_closed (h) == 0 &&
         nbd_aio_is_negotiating (h) == 0 && nbd_aio_is_processing (h) == 0);
  CHECK (nbd_connection_state (h) != NULL);
  CHECK (nbd_aio_get_direction (h) == 0);
  CHECK_ERR (nbd_aio_in_flight (h), ENOTCONN, "nbd_aio_in_flight");
  CHECK_ERR (nbd_aio_get_fd (h), EINVAL, "nbd_aio_get_fd");
  CHECK_ERR (nbd_aio_notify_read (h), EINVAL, "nbd_aio_notify_read");
  CHECK_ERR (nbd_aio_notify_write (h), EINVAL, "nbd_aio_notify_write");
  CHECK_ERR (nbd_poll (h, 0), EINVAL, "nbd_poll");
  CHECK_ERR (nbd_aio_peek_command_completed (h), EINVAL,
             "nbd_aio_peek_command_completed");
  /* Cookie 0 is invalid; an unknown cookie is "not completed". */
  CHECK_ERR (nbd_aio_command_completed (h, 0), EINVAL,
             "nbd_aio_command_completed");
  CHECK (nbd_aio_command_completed (h, 5) == 0);
  refused (h, ENOTCONN);
  CHECK_ERR (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), ENOTCONN,
             "nbd_get_block_size");
  CHECK_ERR (nbd_can_meta_context (h, "base:allocation"), ENOTCONN,
             "nbd_can_meta_context");
  CHECK_ERR (nbd_get_canonical_export_name (h) == NULL ? -1 : 0, ENOTCONN,
             "nbd_get_canonical_export_name");
  CHECK_ERR (nbd_get_structured_replies_negotiated (h), ENOTCONN,
             "nbd_get_structured_replies_negotiated");
  /* Invalid arguments. */
  CHECK_ERR (nbd_set_handshake_flags (h, 0x100), EINVAL,
             "nbd_set_handshake_flags");
  CHECK_ERR (nbd_set_strict_mode (h, 0x100), EINVAL, "nbd_set_strict_mode");
  CHECK (nbd_get_strict_mode (h) == LIBNBD_STRICT_MASK);
  CHECK (nbd_get_handshake_flags (h) == LIBNBD_HANDSHAKE_FLAG_MASK);
  CHECK (nbd_get_pread_initialize (h) == 1);
  CHECK (nbd_get_request_block_size (h) == 1);
  CHECK (nbd_get_full_info (h) == 0);
  CHECK (nbd_set_private_data (h, 42) == 0);
  CHECK (nbd_get_private_data (h) == 42);
  CHECK_ERR (nbd_get_meta_context (h, 0) == NULL ? -1 : 0, EINVAL,
             "nbd_get_meta_context");

  /* --- Connected: the settings of a new handle are refused. */
  if (test_connect (h, argv[1]) == -1) test_fail_nbd ("connect");
  not_new (h, argv[1]);
  CHECK_ERR (nbd_get_block_size (h, 99), EINVAL, "nbd_get_block_size");
  CHECK_ERR (nbd_aio_disconnect (h, 1), EINVAL, "nbd_aio_disconnect");
  CHECK_ERR (nbd_opt_go (h), EINVAL, "nbd_opt_go");
  CHECK (nbd_aio_get_fd (h) >= 0);

  /* --- Closed after a clean shutdown. */
  CHECK_OK (nbd_shutdown (h, 0));
  CHECK (nbd_aio_is_closed (h) == 1);
  refused (h, EINVAL);
  not_new (h, argv[1]);
  CHECK (nbd_aio_get_direction (h) == 0);
  CHECK (nbd_aio_in_flight (h) == 0);
  CHECK_ERR (nbd_aio_get_fd (h), EINVAL, "nbd_aio_get_fd");
  CHECK_ERR (nbd_aio_notify_read (h), EINVAL, "nbd_aio_notify_read");
  CHECK_ERR (nbd_poll (h, 0), EINVAL, "nbd_poll");
  nbd_close (h);

  /* --- Dead: the connection failed. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_connect_unix (h, "/nonexistent/socket") == -1);
  CHECK (nbd_aio_is_dead (h) == 1);
  refused (h, EINVAL);
  CHECK (nbd_aio_get_direction (h) == 0);
  CHECK (nbd_aio_in_flight (h) == 0);
  CHECK_ERR (nbd_aio_get_fd (h), EINVAL, "nbd_aio_get_fd");
  nbd_close (h);

  /* aio_connect_unix failing at once also leaves the handle dead. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_aio_connect_unix (h, "/nonexistent/socket") == -1);
  CHECK (nbd_aio_is_dead (h) == 1);
  nbd_close (h);

  /* --- Ours only: NULL handles are EFAULT (libnbd 1.14.2 crashes). */
  if (test_is_ours ()) {
    struct nbd_handle *n = test_null_handle;
    refused (n, EFAULT);
    CHECK_ERR (nbd_aio_get_fd (n), EFAULT, "nbd_aio_get_fd");
    CHECK_ERR (nbd_aio_notify_read (n), EFAULT, "nbd_aio_notify_read");
    CHECK_ERR (nbd_aio_notify_write (n), EFAULT, "nbd_aio_notify_write");
    CHECK_ERR (nbd_poll (n, 0), EFAULT, "nbd_poll");
    CHECK_ERR (nbd_aio_command_completed (n, 1), EFAULT,
               "nbd_aio_command_completed");
    CHECK_ERR (nbd_aio_peek_command_completed (n), EFAULT,
               "nbd_aio_peek_command_completed");
    CHECK_ERR (nbd_aio_in_flight (n), EFAULT, "nbd_aio_in_flight");
    CHECK_ERR (nbd_aio_connect_unix (n, "x"), EFAULT, "nbd_aio_connect_unix");
    CHECK_ERR (nbd_aio_connect (n, (const struct sockaddr *) test_null_ptr, 0),
               EFAULT, "nbd_aio_connect");
    CHECK_ERR (nbd_set_opt_mode (n, true), EFAULT, "nbd_set_opt_mode");
    CHECK_ERR (nbd_add_meta_context (n, "x"), EFAULT, "nbd_add_meta_context");
    CHECK_ERR (nbd_get_nr_meta_contexts (n), EFAULT,
               "nbd_get_nr_meta_contexts");
    CHECK_ERR (nbd_get_block_size (n, 0), EFAULT, "nbd_get_block_size");
    CHECK_ERR (nbd_set_strict_mode (n, 0), EFAULT, "nbd_set_strict_mode");
    CHECK_ERR (nbd_set_debug_callback (n, (nbd_debug_callback) { .callback = NULL }),
               EFAULT, "nbd_set_debug_callback");
    CHECK (nbd_connection_state (n) == NULL && nbd_get_errno () == EFAULT);
    CHECK (nbd_aio_is_ready (n) == -1 && nbd_get_errno () == EFAULT);
    /* A NULL address on a real handle. */
    h = nbd_create ();
    CHECK_ERR (nbd_aio_connect (h, (const struct sockaddr *) test_null_ptr, 0),
               EFAULT, "nbd_aio_connect");
    nbd_close (h);
  }
  return test_ok ();
}
