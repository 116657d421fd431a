/* A plugin for the cc plugin: a RAM disk of size= bytes (default 1M),
 * filled with the byte FILL (a macro, so EXTRA_CFLAGS=-DFILL=... shows
 * that the flags reached the compiler), with writes, flush, trim and
 * zero, and a config callback that refuses unknown keys.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#ifndef FILL
#define FILL 'c'
#endif

#define THREAD_MODEL NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS

static int64_t size = 1024 * 1024;
static char *disk;

static int
disk_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    size = nbdkit_parse_size (value);
    return size == -1 ? -1 : 0;
  }
  nbdkit_error ("unknown parameter '%s'", key);
  return -1;
}

static int
disk_get_ready (void)
{
  disk = malloc (size);
  if (disk == NULL) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  memset (disk, FILL, size);
  return 0;
}

static void *
disk_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
disk_get_size (void *h)
{
  return size;
}

static int
disk_pread (void *h, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  memcpy (buf, disk + offset, count);
  return 0;
}

static int
disk_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  if (offset == 0 && count == 1) {
    nbdkit_error ("no single byte at 0");
    nbdkit_set_error (ENOSPC);
    return -1;
  }
  memcpy (disk + offset, buf, count);
  return 0;
}

static int
disk_flush (void *h, uint32_t flags)
{
  return 0;
}

static int
disk_trim (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  memset (disk + offset, 0, count);
  return 0;
}

static int
disk_zero (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  memset (disk + offset, 0, count);
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "ccdisk",
  .version = "1.0",
  .config = disk_config,
  .get_ready = disk_get_ready,
  .open = disk_open,
  .get_size = disk_get_size,
  .pread = disk_pread,
  .pwrite = disk_pwrite,
  .flush = disk_flush,
  .trim = disk_trim,
  .zero = disk_zero,
};

NBDKIT_REGISTER_PLUGIN (plugin)
