/* nbdkit-version.h: the version of nbdkit's plugin interface these
 * headers describe (the Rust NBD stack's nbdkit follows nbdkit 1.32.5).
 * Included by nbdkit-common.h; include nbdkit-plugin.h or nbdkit-filter.h
 * instead of this file. */
#ifndef NBDKIT_VERSION_H
#define NBDKIT_VERSION_H

#if !defined (NBDKIT_PLUGIN_H) && !defined (NBDKIT_FILTER_H)
#error "include <nbdkit-plugin.h> or <nbdkit-filter.h>, not this file"
#endif

#define NBDKIT_VERSION_MAJOR 1
#define NBDKIT_VERSION_MINOR 32
#define NBDKIT_VERSION_MICRO 5
/* A filter records this string in itself; the server refuses a filter
 * built for another version (the filter interface changes between
 * releases). */
#define NBDKIT_VERSION_STRING "1.32.5"

#endif /* NBDKIT_VERSION_H */
