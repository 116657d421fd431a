/* Option mode: connecting stops in the negotiating state; opt_list,
 * opt_list_meta_context, opt_info, opt_go (failing on an unknown export,
 * then succeeding), opt_abort, and their aio variants after an
 * nbd_aio_connect_unix driven by nbd_poll.
 * nbdkit-args: -e a memory 1M
 * nbdkit-args-debian: --filter=exportname memory 1M exportname=a exportname=b exportname-list=explicit exportname-strict=true
 *
 * Our nbdkit serves the single -e name and accepts any name; Debian's,
 * through the exportname filter, lists a and b and refuses other names.
 * The unknown-export failure is checked where the server refuses it. */
#define _GNU_SOURCE
#include "testlib.h"

static int nlisted, saw_a, ncontexts, saw_alloc;

static int
list (void *user_data, const char *name, const char *description)
{
  (void) user_data;
  CHECK (description != NULL);
  nlisted++;
  if (strcmp (name, "a") == 0) saw_a = 1;
  return 0;
}

static int
context (void *user_data, const char *name)
{
  (void) user_data;
  ncontexts++;
  if (strcmp (name, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0) saw_alloc = 1;
  return 0;
}

struct done { int calls, error, frees; };

static int
completion (void *user_data, int *error)
{
  struct done *d = user_data;
  d->calls++;
  d->error = *error;
  return 1;
}

static void
done_free (void *user_data)
{
  ((struct done *) user_data)->frees++;
}

static struct nbd_handle *
connect_opt (const char *sock)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_get_opt_mode (h) == 0);
  CHECK_OK (nbd_set_opt_mode (h, true));
  CHECK (nbd_get_opt_mode (h) == 1);
  if (nbd_connect_unix (h, sock) == -1) test_fail_nbd ("nbd_connect_unix");
  CHECK (nbd_aio_is_negotiating (h) == 1);
  CHECK (nbd_aio_is_connecting (h) == 0);
  CHECK (nbd_aio_is_ready (h) == 0);
  return h;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char buf[512];
  int n, r;

  test_begin ("opt-mode", argc, argv, 1);
  h = connect_opt (argv[1]);
  /* Commands need the export: not yet. */
  CHECK (nbd_pread (h, buf, sizeof buf, 0, 0) == -1);

  n = nbd_opt_list (h, (nbd_list_callback) { .callback = list });
  if (n == -1) test_fail_nbd ("nbd_opt_list");
  CHECK (n >= 1 && n == nlisted && saw_a);
  printf ("opt-mode: server lists %d export(s)\n", n);
  CHECK (nbd_aio_is_negotiating (h) == 1);

  n = nbd_opt_list_meta_context (h, (nbd_context_callback) {
                                      .callback = context });
  if (n == -1) test_fail_nbd ("nbd_opt_list_meta_context");
  CHECK (n >= 1 && n == ncontexts && saw_alloc);

  /* opt_info, then what it learnt. */
  CHECK_OK (nbd_set_export_name (h, "a"));
  CHECK_OK (nbd_opt_info (h));
  CHECK (nbd_get_size (h) == 1024 * 1024);
  CHECK (nbd_is_read_only (h) == 0);
  CHECK (nbd_aio_is_negotiating (h) == 1);

  /* An unknown export: refused by servers that know their exports. */
  CHECK_OK (nbd_set_export_name (h, "no-such-export"));
  r = nbd_opt_info (h);
  if (r == -1) {
    CHECK (nbd_aio_is_negotiating (h) == 1);
    CHECK (nbd_opt_go (h) == -1);
    CHECK (nbd_get_errno () == ENOENT);
    CHECK (nbd_aio_is_negotiating (h) == 1);
  } else
    printf ("opt-mode: note: this server accepts any export name\n");

  CHECK_OK (nbd_set_export_name (h, "a"));
  CHECK_OK (nbd_opt_go (h));
  CHECK (nbd_aio_is_ready (h) == 1);
  CHECK (nbd_get_size (h) == 1024 * 1024);
  CHECK_OK (nbd_pread (h, buf, sizeof buf, 0, 0));
  /* Options are over. */
  CHECK (nbd_opt_go (h) == -1);
  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);

  /* opt_abort ends the connection. */
  h = connect_opt (argv[1]);
  CHECK_OK (nbd_opt_abort (h));
  CHECK (nbd_aio_is_closed (h) == 1);
  nbd_close (h);

  /* The aio variants, on an aio connection. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_OK (nbd_set_opt_mode (h, true));
  CHECK_OK (nbd_set_export_name (h, "a"));
  CHECK (nbd_aio_is_created (h) == 1);
  CHECK_OK (nbd_aio_connect_unix (h, argv[1]));
  while (nbd_aio_is_connecting (h))
    if (nbd_poll (h, -1) == -1) test_fail_nbd ("nbd_poll (connecting)");
  CHECK (nbd_aio_is_negotiating (h) == 1);
  {
    struct done d = { 0 };
    nlisted = 0;
    CHECK_OK (nbd_aio_opt_list (h, (nbd_list_callback) { .callback = list },
                                (nbd_completion_callback) {
                                  .callback = completion, .user_data = &d,
                                  .free = done_free }));
    while (d.calls == 0)
      if (nbd_poll (h, -1) == -1) test_fail_nbd ("nbd_poll (list)");
    CHECK (d.error == 0 && d.frees == 1 && nlisted >= 1);
  }
  {
    struct done d = { 0 };
    CHECK_OK (nbd_aio_opt_info (h, (nbd_completion_callback) {
                                   .callback = completion, .user_data = &d,
                                   .free = done_free }));
    while (d.calls == 0)
      if (nbd_poll (h, -1) == -1) test_fail_nbd ("nbd_poll (info)");
    CHECK (d.error == 0 && d.frees == 1);
    CHECK (nbd_get_size (h) == 1024 * 1024);
  }
  {
    struct done d = { 0 };
    CHECK_OK (nbd_aio_opt_go (h, (nbd_completion_callback) {
                                 .callback = completion, .user_data = &d,
                                 .free = done_free }));
    while (nbd_aio_is_negotiating (h) || nbd_aio_is_connecting (h))
      if (nbd_poll (h, -1) == -1) test_fail_nbd ("nbd_poll (go)");
    CHECK (d.calls == 1 && d.error == 0 && d.frees == 1);
    CHECK (nbd_aio_is_ready (h) == 1);
  }
  CHECK_OK (nbd_pread (h, buf, sizeof buf, 0, 0));
  nbd_close (h);
  return test_ok ();
}
