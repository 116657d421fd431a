//! The prose of the built-in plugins' and filters' manual pages: for each
//! name, a one-line summary, a description and an example, in POD (the
//! description may use C<>, B<>, I<> and L<> codes and blank lines between
//! paragraphs; the example is verbatim, one command per line).
//!
//! The parameters are not here: `manpage.rs` lists them from each layer's
//! declaration. A test fails when a built-in plugin or filter has no entry.

/// The words of one page.
pub struct Prose {
    /// After "nbdkit-NAME-plugin - " in the NAME section.
    pub summary: &'static str,
    pub description: &'static str,
    pub example: &'static str,
}

const fn prose(summary: &'static str, description: &'static str, example: &'static str) -> Prose {
    Prose {
        summary,
        description,
        example,
    }
}

/// The prose of plugin `name`.
pub fn plugin(name: &str) -> Option<&'static Prose> {
    PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
}

/// The prose of filter `name`.
pub fn filter(name: &str) -> Option<&'static Prose> {
    FILTERS.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
}

pub fn plugin_names() -> impl Iterator<Item = &'static str> {
    PLUGINS.iter().map(|(n, _)| *n)
}

pub fn filter_names() -> impl Iterator<Item = &'static str> {
    FILTERS.iter().map(|(n, _)| *n)
}

const PLUGINS: &[(&str, Prose)] = &[
    (
        "file",
        prose(
            "serve a file or a block device",
            "Serves one regular file or block device as the disk, or with C<dir=>
every regular file and block device of a directory, each as the export
of its own name (the empty export name is refused).

Writes go straight to the file. Flush and FUA requests become
L<fdatasync(2)>; trims punch holes; zero requests punch holes or use
C<FALLOC_FL_ZERO_RANGE> (C<BLKZEROOUT> on a block device) and fall back
to writing zeroes unless the client asked for a fast zero. Block status
comes from C<SEEK_DATA> and C<SEEK_HOLE>. Each connection sees the
file's size at the time it connects. A file that cannot be opened for
writing is served read-only.",
            "nbdkit file disk.img\nnbdkit -r file /dev/sdb\nnbdkit file dir=/var/lib/images",
        ),
    ),
    (
        "memory",
        prose(
            "a RAM disk",
            "Serves a disk held in memory, which starts as zeroes and is lost when
the server exits. Every client sees the same disk. With the default
sparse allocator only the pages that were written take memory, so a
disk much larger than the machine's memory can be served as long as
little of it is written. Trimming or zeroing a range gives its memory
back. C<allocator=zstd> is accepted and served by the sparse allocator,
uncompressed; C<allocator=malloc> takes the whole size at once.",
            "nbdkit memory 1G\nnbdkit -U - memory 64M --run 'nbdinfo \"$uri\"'",
        ),
    ),
    (
        "null",
        prose(
            "a disk that reads as zeroes and forgets every write",
            "Serves a disk of the given size (default 0) which reads as zeroes;
writes, trims and zero requests succeed and change nothing. It is
useful for measuring the server and clients without storage in the
way.",
            "nbdkit null 10G",
        ),
    ),
    (
        "zero",
        prose(
            "an empty disk",
            "Serves a disk of size 0. It exists for old scripts: a sized disk of
zeroes is the null plugin (L<nbdkit-null-plugin(1)>).",
            "nbdkit zero",
        ),
    ),
    (
        "full",
        prose(
            "a disk that is always full",
            "Serves a disk that reads as zeroes and refuses every write, trim and
zero request with C<ENOSPC>, as a full device would. It lets clients
test how they handle running out of space.",
            "nbdkit full 1M",
        ),
    ),
    (
        "pattern",
        prose(
            "a read-only disk whose content is its own offsets",
            "Serves a read-only disk in which each aligned 8-byte word holds its own
offset as a big-endian 64-bit number. Since every offset reads back a
different value, a client can check that it read from where it meant
to.",
            "nbdkit pattern 1G",
        ),
    ),
    (
        "random",
        prose(
            "a disk of random data",
            "Serves a disk filled with pseudo-random bytes, the same bytes as
nbdkit's random plugin gives for the same seed. The content depends
only on the seed and the offset, so the same seed gives the same disk
every time and on every connection. Writes of the bytes already there
succeed and other writes fail with C<EIO>, so copying the disk onto
itself checks a copying tool.",
            "nbdkit random 1G seed=42",
        ),
    ),
    (
        "sparse-random",
        prose(
            "a writable sparse disk with runs of random data",
            "Serves a disk in which runs of data alternate with holes that read as
zeroes. The layout (and, with C<random-content=true>, the bytes)
follow from the seed. It is meant for testing copying tools: block
status reports the holes, and a copy can be checked against a second
server started with the same seed. As with the random plugin, writes
of the bytes already there succeed and others fail with C<EIO>. The
layout is this implementation's own, not nbdkit's.",
            "nbdkit sparse-random 10G seed=1 percent=25",
        ),
    ),
    (
        "data",
        prose(
            "a disk given on the command line",
            "Serves a small disk whose content is written on the command line:
as literal bytes (C<raw=>), as base64 (C<base64=>) or in nbdkit's data
format (C<data=>), a list of bytes, C<@OFFSET> jumps, repeats with
C<*N>, strings and nested groups. The disk is held in memory and is
writable unless B<-r> is given.",
            "nbdkit data data='0x55 0xAA @510 0x55 0xaa'\nnbdkit data raw=hello size=1M",
        ),
    ),
    (
        "split",
        prose(
            "one disk from several files",
            "Serves the concatenation of the given files, in the order they are
named, as one disk. A request that crosses from one file into the next
is split between them. The sizes are read at start-up: do not resize
the files while they are served.",
            "nbdkit split file=part1 file=part2 file=part3",
        ),
    ),
    (
        "nbd",
        prose(
            "forward to another NBD server",
            "Serves an export of another NBD server: each client connection opens
its own connection to that server (or, with C<shared=true>, all
clients share one made at start-up), and requests are passed on.
The server is named by an NBD URI, or by C<socket=>, C<hostname=>
and C<port=>, or C<vsock=> and C<port=>. C<command=> (with an C<arg=>
for each argument) runs the server, handing it a listening socket by
systemd socket activation, and C<socket-fd=> uses a connection this
process inherited; both make one connection, shared by every client,
once the server is in its final process.",
            "nbdkit nbd uri=nbd://otherhost/disk\nnbdkit nbd socket=/tmp/sock export=foo\n\
             nbdkit nbd command=qemu-nbd arg=-f arg=qcow2 arg=/path/to/disk.qcow2",
        ),
    ),
    (
        "curl",
        prose(
            "serve a disk over HTTP, HTTPS or FTP",
            "Serves a remote file as a disk, reading it with range requests. The
web server must report the file's size and honour range requests.
Writes are uploads of the range written (for HTTP, a PUT with a
C<Content-Range> header), which most web servers refuse: use B<-r>
for them.

C<header-script=> and C<cookie-script=> are shell fragments whose
output gives the headers (one a line) or the cookie (the first line)
of the requests after them; C<$url> and C<$iteration> (0 on the first
run) are set. They run before the first request, and again once
C<header-script-renew=> or C<cookie-script-renew=> seconds have passed.
C<password=>, C<proxy-password=> and C<cookie=> take the value itself,
C<+FILE>, C<-FD> (an inherited descriptor) or C<-> (asked on the
terminal).",
            "nbdkit -r curl url=https://example.com/disk.img protocols=https",
        ),
    ),
    (
        "info",
        prose(
            "a disk that shows facts about the connection",
            "Serves a small read-only disk whose content is a fact about the
connection or the server, chosen by C<mode=>: the export name the
client asked for (C<exportname>, the default, or base64-decoded with
C<base64exportname>), the client's address as text (C<address>), or a
12-byte clock read afresh on every read, 8 bytes of seconds and 4 of
microseconds, big-endian: since the Epoch (C<time>), since the server
started (C<uptime>) or since the connection opened (C<conntime>). It
is meant for testing clients.",
            "nbdkit info mode=address",
        ),
    ),
    (
        "tmpdisk",
        prose(
            "a fresh temporary disk for each client",
            "Gives each client connection a new, empty disk of its own, made in a
temporary file, formatted by L<mkfs(8)> (or made by a shell command
of your own), and deleted when the client disconnects. Nothing a
client writes is seen by another.",
            "nbdkit tmpdisk 1G type=xfs\nnbdkit tmpdisk 1G command='truncate -s $size \"$disk\"'",
        ),
    ),
    (
        "ondemand",
        prose(
            "a disk created the first time its export name is asked for",
            "Serves one disk per export name from the directory C<dir=>. The first
time a client asks for a name, a disk of C<size=> is created and
formatted by L<mkfs(8)> (or a command of your own); later clients
asking for the same name get the same disk, which outlives the
server. A disk is used by one client at a time.",
            "nbdkit ondemand dir=/var/tmp/disks 10G",
        ),
    ),
    (
        "partitioning",
        prose(
            "a partitioned disk made of files",
            "Serves a disk with a partition table (MBR or GPT) whose partitions are
the given files, in order. The table and the gaps between partitions
are made up by the plugin; reads and writes to a partition reach its
file.",
            "nbdkit partitioning boot.img root.img partition-type=gpt",
        ),
    ),
    (
        "iso",
        prose(
            "a CD-ROM image made from directories",
            "Makes an ISO 9660 image from the given directories when the server
starts, with L<xorriso(1)>, L<genisoimage(1)> or L<mkisofs(8)> (the
first one installed, or C<prog=>), and serves it read-only. The files
of every directory go into the image's root. C<params=> passes more
options to the program; it is read by the shell, so quote with care.",
            "nbdkit iso /srv/cdrom-files params='-JrT'",
        ),
    ),
    (
        "linuxdisk",
        prose(
            "a disk with an ext2, ext3 or ext4 filesystem made from a directory",
            "Makes a disk with a GPT partition table and one partition holding an
ext2, ext3 or ext4 filesystem filled with the files of a directory,
using L<mke2fs(8)>, when the server starts, and serves it read-only.
Without C<size=> the filesystem is just large enough for the files;
C<size=+>I<N> leaves I<N> bytes free.",
            "nbdkit linuxdisk /srv/rootfs type=ext4 size=+100M",
        ),
    ),
    (
        "floppy",
        prose(
            "a disk with a FAT32 filesystem made from a directory",
            "Makes a disk with an MBR partition table and one FAT32 partition
holding the files of a directory, using L<mkfs.fat(8)> and
L<mcopy(1)>, when the server starts, and serves it read-only. Later
changes to the directory do not reach the disk.",
            "nbdkit floppy /srv/files label=FILES",
        ),
    ),
    (
        "ssh",
        prose(
            "serve a file on another host over SSH",
            "Serves a file (or device) on a remote host, read and written over
SFTP with the system's libssh. Each client connection opens its own
SSH session. The host key is checked against F<known_hosts>; the login
tries no password, then the password, then the keys of C<identity=>
and of the SSH agent. With C<create=true> the remote file is made
(or emptied) with C<create-size> bytes when the first client
connects.",
            "nbdkit ssh host=server.example.com /var/lib/disk.img\nnbdkit ssh host=h user=alice password=- disk.img",
        ),
    ),
    (
        "sh",
        prose(
            "a plugin written as a shell script or any executable",
            "Each plugin method runs the script as C<SCRIPT METHOD ARGS...>: the
method's arguments as words (a connection's handle first, as printed by
C<open>), the data of a write on its standard input, and what it prints
on standard output as the method's answer. Exit code 0 is success, 1
an error (standard error starts with the errno name, such as
C<ENOSPC>, then the message), 2 a method the script does not have, 3
\"false\" for the C<can_*> methods. C<can_fua> and C<can_cache> print
C<none>, C<emulate> or C<native>; C<extents> prints C<offset length
type> lines; C<list_exports> prints names in the forms C<NAMES>,
C<INTERLEAVED> or C<NAMES+DESCRIPTIONS>. The script finds a private
directory in C<$tmpdir>, removed when the server exits. Without a
C<thread_model> method the script runs one method at a time. The
script C<-> is read from standard input.",
            "nbdkit sh ./disk.sh\nnbdkit sh ./disk.sh file=disk.img",
        ),
    ),
    (
        "eval",
        prose(
            "a plugin written as shell fragments on the command line",
            "Each method is a fragment of /bin/sh given as C<METHOD=SCRIPT>, run
as a script of the sh plugin would be (same arguments, exit codes and
C<$tmpdir>). A method not given runs C<missing=> (by default C<exit
2>). A data method given without its C<can_*> gets one that says yes
(C<pwrite> makes C<can_write>, C<flush> C<can_flush>, C<trim>
C<can_trim>, C<zero> C<can_zero>). Keys that are not method names go
to C<config>.",
            "nbdkit eval get_size='echo 64M' pread='dd if=/dev/zero count=$3 iflag=count_bytes'",
        ),
    ),
];

const FILTERS: &[(&str, Prose)] = &[
    (
        "offset",
        prose(
            "serve part of a disk",
            "Serves only the range of the layer below that starts at C<offset=>
and is C<range=> bytes long; the client sees that range as the whole
disk.",
            "nbdkit --filter=offset file disk.img offset=1M range=100M",
        ),
    ),
    (
        "truncate",
        prose(
            "change the size of a disk",
            "Makes the disk look smaller or larger than the layer below: a set
size, or the size rounded up or down to a power of 2. Past the end of
the layer below the disk reads as zeroes, and only zeroes may be
written there (other data fails with C<ENOSPC>).",
            "nbdkit --filter=truncate file disk.img round-up=4K",
        ),
    ),
    (
        "partition",
        prose(
            "serve one partition of a disk",
            "Reads the MBR or GPT partition table of the layer below and serves
only the partition numbered C<partition=>. Logical MBR partitions
(5 and up) are found through the extended partition's chain.",
            "nbdkit --filter=partition file disk.img partition=1",
        ),
    ),
    (
        "tar",
        prose(
            "serve a file inside a tar archive",
            "Finds the file C<tar-entry=> in the tar archive served by the layer
below and serves that file alone. The file must be stored
uncompressed and in one piece; it can be written but not resized.",
            "nbdkit --filter=tar file archive.tar tar-entry=disk.img",
        ),
    ),
    (
        "cow",
        prose(
            "make a read-only disk writable with a throwaway overlay",
            "Keeps every write in a temporary overlay instead of passing it down,
so the layer below is only read. Reads come from the overlay where a
block was written, else from below. The overlay is shared by all
clients and discarded when the server exits.",
            "nbdkit --filter=cow file base.img",
        ),
    ),
    (
        "cache",
        prose(
            "cache the blocks of a slow disk in memory",
            "Keeps the blocks read and written in a cache in front of the layer
below. In C<writeback> mode writes stay in the cache until the client
flushes; in C<writethrough> mode they also go down at once; in
C<unsafe> mode flushes are ignored.",
            "nbdkit --filter=cache nbd uri=nbd://slowhost/",
        ),
    ),
    (
        "nozero",
        prose(
            "change how zero requests are served",
            "Hides, emulates or changes the handling of zero requests: with
C<zeromode=none> the client is not offered them, with C<emulate> they
become writes of zeroes, with C<notrim> the layer below is asked not
to punch holes. C<fastzeromode> does the same for fast zero requests.",
            "nbdkit --filter=nozero file disk.img zeromode=emulate",
        ),
    ),
    (
        "nocache",
        prose(
            "change how cache requests are served",
            "Hides cache (prefetch) requests from the client (C<none>), answers
them itself by reading and dropping the data (C<emulate>), or accepts
them and does nothing (C<nop>).",
            "nbdkit --filter=nocache file disk.img cachemode=nop",
        ),
    ),
    (
        "noextents",
        prose(
            "hide block status",
            "Tells clients that block status is not available, so every part of
the disk looks like data. Useful for testing clients and for hiding a
plugin's slow extent queries.",
            "nbdkit --filter=noextents file disk.img",
        ),
    ),
    (
        "noparallel",
        prose(
            "serve requests one at a time",
            "Makes the server handle one request at a time (C<requests>: per
connection; C<all-requests>: across connections) or one connection at
a time (C<connections>), for plugins or tests that need it.",
            "nbdkit --filter=noparallel memory 1G serialize=connections",
        ),
    ),
    (
        "multi-conn",
        prose(
            "decide whether clients are told that multi-conn is safe",
            "Changes whether the server advertises multi-conn, the promise that a
flush on one connection covers writes made on every connection.
C<auto> (the default) advertises it when the layer below does, or can
flush, or is read-only; C<emulate> always advertises it (with flush);
C<plugin> passes the layer below's answer on; C<unsafe> always
advertises it; C<disable> never does.",
            "nbdkit --filter=multi-conn file disk.img multi-conn-mode=emulate",
        ),
    ),
    (
        "fua",
        prose(
            "change how forced unit access is served",
            "Changes how the FUA (force unit access) flag of writes, trims and
zero requests reaches the layer below: hide it from clients, which
then flush instead (C<none>, the default); offer it and follow the
request with a flush where the layer below lacks it (C<emulate>);
offer it and pass it down (C<native>), on every request (C<force>);
pass the layer below's support on unchanged (C<pass>); or offer it
and drop it, flushes included (C<discard>, only for throwaway data).",
            "nbdkit --filter=fua file disk.img fuamode=force",
        ),
    ),
    (
        "blocksize",
        prose(
            "adapt requests to the block sizes the layer below needs",
            "Splits and aligns requests so that the layer below only sees requests
aligned to C<minblock> and no larger than C<maxdata> (reads and writes)
or C<maxlen> (trim, zero, cache). Unaligned writes become a read, a
change and a write of the whole blocks.",
            "nbdkit --filter=blocksize file /dev/sdb minblock=4K",
        ),
    ),
    (
        "blocksize-policy",
        prose(
            "set the block size constraints clients are told",
            "Sets the minimum, preferred and maximum block sizes the server
advertises, and whether requests that break them are refused with
C<EINVAL> (C<error>) or passed down (C<allow>).",
            "nbdkit --filter=blocksize-policy memory 1G \\\n    blocksize-preferred=64K blocksize-error-policy=error",
        ),
    ),
    (
        "protect",
        prose(
            "refuse writes to some ranges of a disk",
            "Refuses, with C<EPERM>, writes, trims and zero requests that would
change a protected range of bytes. Writes of the bytes already there
are allowed.",
            "nbdkit --filter=protect file disk.img protect=0-511",
        ),
    ),
    (
        "readahead",
        prose(
            "read ahead of sequential readers",
            "Reads more than the client asked for and keeps it, so that the
client's next reads are answered from memory. The window doubles
(from 64K up to 4M) while the reads follow one another, and starts
again small on any other read. Writes, trims and zero requests drop
what was kept.",
            "nbdkit --filter=readahead curl url=https://example.com/disk.img",
        ),
    ),
    (
        "error",
        prose(
            "inject errors",
            "Makes requests fail with a chosen error, at a chosen rate, for all
requests or per kind of request, and optionally only while a trigger
file exists. It is meant for testing how clients handle errors.",
            "nbdkit --filter=error memory 1G error-rate=10%\nnbdkit --filter=error file disk.img \\\n    error-pread-rate=1 error-pread-file=/tmp/fail",
        ),
    ),
    (
        "delay",
        prose(
            "slow requests down",
            "Waits a set time before each request of the chosen kinds, or when a
connection opens or closes, to imitate a slow disk or network.",
            "nbdkit --filter=delay memory 1G rdelay=100ms wdelay=1",
        ),
    ),
    (
        "retry",
        prose(
            "reopen the layers below and retry failed requests",
            "When a request fails, closes and reopens the layers below (for
example a new connection to a remote server) and tries the request
again, waiting longer each time, up to C<retries> times.",
            "nbdkit --filter=retry curl url=https://example.com/disk.img",
        ),
    ),
    (
        "retry-request",
        prose(
            "retry failed requests",
            "Tries a failed request again, up to C<retry-request-retries> times,
waiting between attempts, without reopening the layers below.",
            "nbdkit --filter=retry-request nbd uri=nbd://host/",
        ),
    ),
    (
        "log",
        prose(
            "log every request",
            "Writes a line for each connection, request and reply, with their
arguments and result, to a file or to a script of your own.",
            "nbdkit --filter=log file disk.img logfile=/tmp/nbd.log",
        ),
    ),
    (
        "stats",
        prose(
            "count the requests and bytes served",
            "Counts the requests of each kind, the bytes they moved and the time
they took, and writes the totals to a file when the last client goes
and when the server exits.",
            "nbdkit --filter=stats memory 1G statsfile=/tmp/stats.txt",
        ),
    ),
    (
        "limit",
        prose(
            "limit the number of clients",
            "Refuses new clients while the given number of clients (default 1) is
connected.",
            "nbdkit --filter=limit memory 1G limit=2",
        ),
    ),
    (
        "exitlast",
        prose(
            "exit when the last client disconnects",
            "Makes the server exit once the last client has disconnected, after
at least one client has connected.",
            "nbdkit --filter=exitlast memory 1G",
        ),
    ),
    (
        "exitwhen",
        prose(
            "exit when an event happens",
            "Makes the server exit gracefully, once no client is connected, when
one of the given events happens: a file appears or goes, a pipe closes,
a process exits, or a script says so. Events are checked every
C<exit-when-poll> seconds.",
            "nbdkit --filter=exitwhen memory 1G \\\n    exit-when-file-created=/tmp/stop",
        ),
    ),
    (
        "xnbd-cache",
        prose(
            "xnbd's persistent block cache",
            "Keeps the blocks of the layer below in a cache image of the same size,
with a bitmap file in xnbd's format recording which 4096-byte blocks
are cached. Writes go to the cache image only; the layer below is
never written. With C<fetch-on-read=true> blocks read from below are
kept (the proxy of L<xnbd-server(8)>); with C<false> only written
blocks are, which makes a copy-on-write overlay. This filter is ours;
nbdkit has no equivalent.",
            "nbdkit --filter=xnbd-cache nbd uri=nbd://remote/ \\\n    cache=disk.cache bitmap=disk.bitmap",
        ),
    ),
    (
        "ip",
        prose(
            "allow or deny clients by address",
            "Checks each client against the C<allow=> and C<deny=> rules before
the handshake: a client matching an allow rule is let in, else one
matching a deny rule is refused, else it is let in. Rules are
addresses, networks in CIDR form, C<all>, C<anyipv4>, C<anyipv6>,
C<anyunix> and C<anyvsock>, C<pid:N>, C<uid:N> and C<gid:N>
for clients on a Unix socket, and C<vsock-cid:N> and
C<vsock-port:N>.",
            "nbdkit --filter=ip memory 1G allow=127.0.0.1,::1 deny=all",
        ),
    ),
    (
        "tls-fallback",
        prose(
            "show a message to clients that did not start TLS",
            "With B<--tls=on>, gives clients that did not negotiate TLS a small
read-only disk holding a message instead of the real export. Clients
using TLS see the export. Put this filter first.",
            "nbdkit --tls=on --filter=tls-fallback file disk.img \\\n    tlsreadme='use TLS'",
        ),
    ),
    (
        "cacheextents",
        prose(
            "remember the last block status answer",
            "Remembers the last block status answer from the layer below and
answers queries that fall inside it without asking again. Writes
forget it.",
            "nbdkit --filter=cacheextents nbd uri=nbd://host/",
        ),
    ),
    (
        "checkwrite",
        prose(
            "check that writes match what is there",
            "Turns the disk into a checker: a write succeeds only if the data
written equals what the layer below already holds (and a zero or
trim only if the range reads as zeroes); otherwise it fails with
C<EIO>. Nothing is changed below. Useful for checking copying tools.",
            "nbdkit --filter=checkwrite file copy-source.img",
        ),
    ),
    (
        "ddrescue",
        prose(
            "serve only the recovered parts of a ddrescue image",
            "Reads a GNU ddrescue mapfile and lets the client read only the parts
of the image that ddrescue recovered; other reads fail with C<EIO>.
The disk is read-only.",
            "nbdkit --filter=ddrescue file disk.img \\\n    ddrescue-mapfile=disk.map",
        ),
    ),
    (
        "exportname",
        prose(
            "change the export names clients see",
            "Changes what clients see of export names: which name the empty name
means, which exports are listed and with what descriptions, and
whether only the listed names may be opened.",
            "nbdkit --filter=exportname memory 1G \\\n    exportname=a exportname=b exportname-strict=true",
        ),
    ),
    (
        "extentlist",
        prose(
            "block status from a file",
            "Answers block status from a file listing the extents of the disk, one
per line, instead of asking the layer below. Ranges the file does not
list are holes.",
            "nbdkit --filter=extentlist file disk.img extentlist=extents.txt",
        ),
    ),
    (
        "nofilter",
        prose(
            "a filter that changes nothing",
            "Passes every call down unchanged. It is used to test the server's
filter machinery.",
            "nbdkit --filter=nofilter memory 1G",
        ),
    ),
    (
        "pause",
        prose(
            "pause and resume requests from a control socket",
            "Listens on a Unix socket for commands: C<p> pauses the server (new
requests wait; the reply comes once the requests in flight are done)
and C<r> resumes it. Useful to take a consistent snapshot of the
storage below.",
            "nbdkit --filter=pause file disk.img pause-control=/tmp/ctl",
        ),
    ),
    (
        "rate",
        prose(
            "limit the bandwidth",
            "Limits the bandwidth of reads and writes, in bits per second, for
the whole server and for each connection, with token buckets. The
rates can be changed while the server runs through files holding
them (C<0> lifts the limit).",
            "nbdkit --filter=rate memory 1G rate=10M",
        ),
    ),
    (
        "scan",
        prose(
            "read the whole disk ahead of the clients",
            "Prefetches the whole disk from the start, in the background, by
sending cache requests to the layer below while clients work, so
that a later full read finds the data cached.",
            "nbdkit --filter=scan --filter=cache curl url=https://host/d.img",
        ),
    ),
    (
        "swab",
        prose(
            "swap the bytes of words",
            "Swaps the order of the bytes in each 16, 32 or 64-bit word read or
written, to serve a disk written on a machine of the other
endianness. Requests must be aligned to the word size.",
            "nbdkit --filter=swab file disk.img swab-bits=32",
        ),
    ),
    (
        "gzip",
        prose(
            "serve the uncompressed contents of a gzip file",
            "The layer below holds a gzip file; clients see its uncompressed
contents, read-only. The first connection decompresses the whole file
into a hidden temporary file under C<$TMPDIR> (default F</var/tmp>),
which later connections read.",
            "nbdkit --filter=gzip file disk.img.gz",
        ),
    ),
    (
        "xz",
        prose(
            "serve the uncompressed contents of an xz file",
            "The layer below holds an xz file; clients see its uncompressed
contents, read-only. Only the xz blocks that hold a read's range are
decompressed, found through the file's block index, so the file must
have been made with several blocks (C<xz --block-size>) to be served
quickly. Each connection keeps its last few decoded blocks.",
            "nbdkit --filter=xz file disk.img.xz",
        ),
    ),
    (
        "luks",
        prose(
            "decrypt a LUKS disk",
            "The layer below is a LUKSv1 encrypted disk, as cryptsetup and
qemu-img make them; clients see the decrypted disk, and what they write
is encrypted on its way down. C<passphrase=> opens a key slot; it may be
given as the secret itself, C<+FILE>, C<-FD> or C<-> to ask for it.",
            "nbdkit --filter=luks file disk.luks passphrase=+/tmp/pw",
        ),
    ),
    (
        "ext2",
        prose(
            "serve a file inside an ext2, ext3 or ext4 filesystem",
            "The layer below holds an ext2, ext3 or ext4 filesystem; clients see
one file inside it, named by C<ext2file=>, or by their export name with
C<ext2file=exportname>. Reads and writes go through the system's
libext2fs, whose block I/O is sent to the layer below; the filesystem's
metadata is written back when the connection closes.

Connections take turns: a second client waits in its handshake until
the first has gone, since two users of one filesystem would corrupt it.
The file is reported as all data, whatever holes the image below has.",
            "nbdkit --filter=ext2 file fs.img ext2file=/disks/disk.raw\nnbdkit --filter=ext2 --filter=partition file disk.img partition=1 ext2file=exportname",
        ),
    ),
];
