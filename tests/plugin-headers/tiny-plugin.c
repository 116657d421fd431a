/* A small plugin built against the headers under test: a RAM disk of
 * size=N bytes (default 1 MiB) whose bytes start as their offset & 0xff,
 * with API version 2 callbacks. run.sh loads it into Debian's nbdkit. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <stdlib.h>
#include <string.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS

static int64_t size = 1 << 20;
static unsigned char *disk;

static int
tiny_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    size = nbdkit_parse_size (value);
    return size == -1 ? -1 : 0;
  }
  nbdkit_error ("unknown parameter %s", key);
  return -1;
}

static int
tiny_get_ready (void)
{
  int64_t i;

  disk = malloc (size);
  if (disk == NULL) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  for (i = 0; i < size; i++)
    disk[i] = i & 0xff;
  return 0;
}

static void *
tiny_open (int readonly)
{
  (void) readonly;
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
tiny_get_size (void *handle)
{
  (void) handle;
  return size;
}

static int
tiny_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  (void) handle; (void) flags;
  memcpy (buf, disk + offset, count);
  return 0;
}

static int
tiny_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  (void) handle; (void) flags;
  memcpy (disk + offset, buf, count);
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "tiny",
  .version = "1.0",
  .magic_config_key = "size",
  .config = tiny_config,
  .get_ready = tiny_get_ready,
  .open = tiny_open,
  .get_size = tiny_get_size,
  .pread = tiny_pread,
  .pwrite = tiny_pwrite,
};

NBDKIT_REGISTER_PLUGIN (plugin)
