/* nbd_connect_command: the library runs the server itself, talking NBD
 * over a socketpair on the server's stdin/stdout.
 * nbdkit-args: memory 64M
 *
 * argv[2] is the nbdkit binary to run (the harness passes ours or Debian's);
 * argv[1] (the harness's own server) is not used. */
#define _GNU_SOURCE
#include "testlib.h"

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char *cmd[] = { argv[2], (char *) "-s", (char *) "memory", (char *) "1M",
                  NULL };
  char wbuf[4096], rbuf[4096];
  int64_t size;

  test_begin ("connect-command", argc, argv, 2);

  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  if (nbd_connect_command (h, cmd) == -1)
    test_fail_nbd ("nbd_connect_command");

  size = nbd_get_size (h);
  if (size == -1) test_fail_nbd ("nbd_get_size");
  CHECK (size == 1024 * 1024);
  CHECK (nbd_is_read_only (h) == 0);

  test_fill_pattern (wbuf, sizeof wbuf, 1024 * 1024 - 4096, 5);
  CHECK_OK (nbd_pwrite (h, wbuf, sizeof wbuf, 1024 * 1024 - 4096, 0));
  CHECK_OK (nbd_pread (h, rbuf, sizeof rbuf, 1024 * 1024 - 4096, 0));
  CHECK (memcmp (wbuf, rbuf, sizeof wbuf) == 0);
  CHECK_OK (nbd_flush (h, 0));

  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);

  /* A command that does not exist: connecting fails, no hang. */
  {
    char *bad[] = { (char *) "/nonexistent/nbdkit", (char *) "-s", NULL };
    h = nbd_create ();
    if (h == NULL) test_fail_nbd ("nbd_create");
    if (nbd_connect_command (h, bad) != -1)
      test_fail ("nbd_connect_command of a missing program succeeded");
    {
      const char *msg = nbd_get_error ();
      printf ("connect-command: missing program: errno %d, %s\n",
              nbd_get_errno (), msg ? msg : "(null)");
      CHECK (msg != NULL &&
             strncmp (msg, "nbd_connect_command: ", 21) == 0);
    }
    nbd_close (h);
  }
  return test_ok ();
}
