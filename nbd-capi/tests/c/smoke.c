/* A C program built against include/libnbd.h and linked with -lnbd, as
 * users of libnbd build theirs: write a pattern, read it back, check some
 * errors.  Usage: smoke NBDKIT  (runs "NBDKIT -s memory 16M").
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "smoke: %s:%d: %s failed: %s\n", __FILE__,       \
               __LINE__, #cond, nbd_get_error () ? nbd_get_error () : "(no error)"); \
      exit (EXIT_FAILURE);                                              \
    }                                                                   \
  } while (0)

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  char *args[] = { argv[1], "-s", "--exit-with-parent", "memory", "16M", NULL };
  static char buf[65536], back[65536];
  size_t i;
  char *name;

  CHECK (argc == 2);
  CHECK (strcmp (nbd_get_version (NULL) ? "x" : "1.24.4", "1.24.4") == 0 ||
         nbd_get_errno () == EFAULT);
  nbd = nbd_create ();
  CHECK (nbd != NULL);
  CHECK (strcmp (nbd_get_version (nbd), "1.24.4") == 0);
  CHECK (strcmp (nbd_get_package_name (nbd), "libnbd") == 0);
  name = nbd_get_handle_name (nbd);
  CHECK (name != NULL && strncmp (name, "nbd", 3) == 0);
  free (name);

  /* Before connecting: ENOTCONN, and errno is left alone. */
  errno = 0;
  CHECK (nbd_get_size (nbd) == -1);
  CHECK (nbd_get_errno () == ENOTCONN);
  CHECK (errno == 0);
  CHECK (strncmp (nbd_get_error (), "nbd_get_size: ", 14) == 0);

  CHECK (nbd_connect_command (nbd, args) == 0);
  CHECK (nbd_get_size (nbd) == 16 * 1024 * 1024);

  for (i = 0; i < sizeof buf; ++i)
    buf[i] = (char) (i * 31 + 7);
  CHECK (nbd_pwrite (nbd, buf, sizeof buf, 4096, LIBNBD_CMD_FLAG_FUA & 0) == 0);
  CHECK (nbd_pread (nbd, back, sizeof back, 4096, 0) == 0);
  CHECK (memcmp (buf, back, sizeof buf) == 0);

  CHECK (nbd_pread (nbd, back, 512, 16 * 1024 * 1024, 0) == -1);
  CHECK (nbd_get_errno () == EINVAL);
  CHECK (nbd_pwrite (nbd, buf, 512, 16 * 1024 * 1024, 0) == -1);
  CHECK (nbd_get_errno () == ENOSPC);
  CHECK (nbd_pread (nbd, NULL, 512, 0, 0) == -1);
  CHECK (nbd_get_errno () == EFAULT);

  CHECK (nbd_shutdown (nbd, 0) == 0);
  CHECK (nbd_pread (nbd, back, 512, 0, 0) == -1);
  CHECK (nbd_get_errno () == EINVAL);
  nbd_close (nbd);
  nbd_close (NULL);
  printf ("smoke: ok\n");
  return 0;
}
