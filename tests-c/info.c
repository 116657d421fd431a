/* What the server advertises, as seen through the library, and the simple
 * handle properties.
 * nbdkit-args: memory 64M
 *
 * The expected flags are those of nbdkit's memory plugin as Debian's nbdkit
 * 1.32.5 advertises them (see `nbdinfo --json`); our nbdkit must advertise
 * the same. */
#define _GNU_SOURCE
#include "testlib.h"

#define EXPECT_FLAG(call, want)                                         \
  do {                                                                  \
    int r_ = (call);                                                    \
    if (r_ == -1) test_fail_nbd (#call);                                \
    if (r_ != (want))                                                   \
      test_fail ("%s = %d, expected %d", #call, r_, (want));            \
  } while (0)

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  const char *s;
  char *name;

  test_begin ("info", argc, argv, 1);

  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");

  s = nbd_get_version (h);
  CHECK (s != NULL && *s != '\0');
  printf ("info: nbd_get_version() = %s\n", s);
  s = nbd_get_package_name (h);
  CHECK (s != NULL && *s != '\0');
  printf ("info: nbd_get_package_name() = %s\n", s);

  /* Handle name: a default exists; round trip. */
  name = nbd_get_handle_name (h);
  if (name == NULL) test_fail_nbd ("nbd_get_handle_name");
  CHECK (*name != '\0');
  free (name);
  CHECK_OK (nbd_set_handle_name (h, "info-test-handle"));
  name = nbd_get_handle_name (h);
  if (name == NULL) test_fail_nbd ("nbd_get_handle_name");
  CHECK (strcmp (name, "info-test-handle") == 0);
  free (name);

  /* Debug flag round trip (messages go to stderr). */
  CHECK_OK (nbd_set_debug (h, true));
  EXPECT_FLAG (nbd_get_debug (h), 1);
  CHECK_OK (nbd_set_debug (h, false));
  EXPECT_FLAG (nbd_get_debug (h), 0);

  /* Export name: "" by default; round trip; back to "" to connect. */
  name = nbd_get_export_name (h);
  if (name == NULL) test_fail_nbd ("nbd_get_export_name");
  CHECK (strcmp (name, "") == 0);
  free (name);
  CHECK_OK (nbd_set_export_name (h, "some/export"));
  name = nbd_get_export_name (h);
  if (name == NULL) test_fail_nbd ("nbd_get_export_name");
  CHECK (strcmp (name, "some/export") == 0);
  free (name);
  CHECK_OK (nbd_set_export_name (h, ""));

  if (test_connect (h, argv[1]) == -1)
    test_fail_nbd ("connect");

  s = nbd_get_protocol (h);
  if (s == NULL) test_fail_nbd ("nbd_get_protocol");
  if (strcmp (s, "newstyle-fixed") != 0)
    test_fail ("nbd_get_protocol = %s, expected newstyle-fixed", s);

  {
    int64_t size = nbd_get_size (h);
    if (size == -1) test_fail_nbd ("nbd_get_size");
    if (size != 64 * 1024 * 1024)
      test_fail ("nbd_get_size = %lld, expected 67108864", (long long) size);
  }

  EXPECT_FLAG (nbd_is_read_only (h), 0);
  EXPECT_FLAG (nbd_is_rotational (h), 0);
  EXPECT_FLAG (nbd_can_flush (h), 1);
  EXPECT_FLAG (nbd_can_fua (h), 1);
  EXPECT_FLAG (nbd_can_trim (h), 1);
  EXPECT_FLAG (nbd_can_zero (h), 1);
  EXPECT_FLAG (nbd_can_fast_zero (h), 1);
  EXPECT_FLAG (nbd_can_multi_conn (h), 1);
  EXPECT_FLAG (nbd_can_cache (h), 1);
  EXPECT_FLAG (nbd_can_df (h), 1);

  /* The handle name survives connecting. */
  name = nbd_get_handle_name (h);
  if (name == NULL) test_fail_nbd ("nbd_get_handle_name");
  CHECK (strcmp (name, "info-test-handle") == 0);
  free (name);

  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  return test_ok ();
}
