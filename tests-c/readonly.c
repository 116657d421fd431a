/* A read-only export (server started with -r).
 * nbdkit-args: -r memory 64M */
#define _GNU_SOURCE
#include "testlib.h"

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char buf[4096];

  test_begin ("readonly", argc, argv, 1);
  h = test_create_connected (argv[1]);

  CHECK (nbd_is_read_only (h) == 1);
  CHECK (nbd_can_trim (h) == 0);
  CHECK (nbd_can_zero (h) == 0);
  CHECK (nbd_can_fua (h) == 0);

  /* Reading works and the memory disk reads as zeroes. */
  memset (buf, 0xff, sizeof buf);
  CHECK_OK (nbd_pread (h, buf, sizeof buf, 0, 0));
  CHECK (test_all_zero (buf, sizeof buf));

  /* Writes are refused by the library with EPERM.  Zero and trim are
   * refused too, but libnbd 1.14.2 checks can_zero / can_trim (both false
   * on a read-only export) before read-only-ness: EINVAL. */
  memset (buf, 0x55, sizeof buf);
  CHECK_ERR (nbd_pwrite (h, buf, sizeof buf, 0, 0), EPERM, "nbd_pwrite");
  CHECK_ERR (nbd_pwrite (h, buf, sizeof buf, 0, LIBNBD_CMD_FLAG_FUA), EPERM,
             "nbd_pwrite");
  CHECK_ERR (nbd_zero (h, 4096, 0, 0), EINVAL, "nbd_zero");
  CHECK_ERR (nbd_trim (h, 4096, 0, 0), EINVAL, "nbd_trim");

  /* Nothing was written. */
  CHECK_OK (nbd_pread (h, buf, sizeof buf, 0, 0));
  CHECK (test_all_zero (buf, sizeof buf));

  if (nbd_can_flush (h) == 1)
    CHECK_OK (nbd_flush (h, 0));

  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  return test_ok ();
}
