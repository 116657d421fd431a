#!/bin/bash
# Debian's nbdinfo (on Debian's libnbd) against OUR nbdkit, compared with
# what it reports for Debian's nbdkit serving the same thing.
#
# Compared exactly: --size; --json with two fields removed; --map.
# Fields ignored in --json, because they legitimately differ:
#   uri           contains the per-run socket path
#   description   free text chosen by the server (nbdkit plugins differ)
#   block_size_*  a deliberate difference: our nbdkit advertises the limits
#                 it enforces (minimum 1, preferred 4 KiB, maximum 32 MiB,
#                 the default proto.md sets for servers that say nothing),
#                 where Debian's nbdkit 1.32.5 advertises none for these
#                 plugins yet accepts requests up to 64 MiB. Clients such as
#                 nbdcopy and qemu size their requests from what we say.
# Everything else (protocol, TLS, structured, export-name, content, contexts,
# export-size, is_rotational, is_read_only, can_*) must match: our nbdkit is
# a drop-in.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
# nbdinfo must run on Debian's libnbd, whatever the caller's environment.
unset LD_LIBRARY_PATH EXPECT_LIBNBD

require_file "$OUR_NBDKIT" "nbdinfo-ours: our nbdkit" || script_exit
command -v nbdinfo >/dev/null || { fail "nbdinfo-ours" "nbdinfo not installed (libnbd-bin)"; script_exit; }

normalize_json() {
  /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
for e in d.get("exports", []):
    for k in ("uri", "description", "block_size_minimum",
              "block_size_preferred", "block_size_maximum"):
        e.pop(k, None)
print(json.dumps(d, indent=1, sort_keys=True))'
}

# run_both NAME SERVER-ARGS -- RUN-COMMAND: runs RUN-COMMAND under both
# servers, saving output to $TMP/NAME.{ours,theirs}; returns non-zero if
# either run failed (after reporting it).
run_both() {
  local name=$1; shift
  local args=() cmd
  while [[ $1 != -- ]]; do args+=("$1"); shift; done
  shift; cmd=$1
  local ok=true
  if ! to "$OUR_NBDKIT" -U - "${args[@]}" --run "$cmd" >"$TMP/$name.ours" 2>"$TMP/$name.ours.err"; then
    fail "$name: our nbdkit ${args[*]} --run '$cmd'" "exit $?"
    indent "$TMP/$name.ours.err" | tail -n 15; ok=false
  fi
  if ! to "$DEBIAN_NBDKIT" -U - "${args[@]}" --run "$cmd" >"$TMP/$name.theirs" 2>"$TMP/$name.theirs.err"; then
    fail "$name: Debian's nbdkit ${args[*]} --run '$cmd' (reference)" "exit $?"
    indent "$TMP/$name.theirs.err" | tail -n 15; ok=false
  fi
  $ok
}

compare() {
  local name=$1 what=$2
  if cmp -s "$TMP/$name.ours" "$TMP/$name.theirs"; then
    pass "$what: ours matches Debian's nbdkit"
  else
    fail "$what" "differs from Debian's nbdkit (- Debian's, + ours)"
    diff -u "$TMP/$name.theirs" "$TMP/$name.ours" | indent | head -n 40
  fi
}

# --- --size on a memory disk
if run_both size memory 64M -- 'nbdinfo --size "$uri"'; then
  if [[ $(cat "$TMP/size.ours") == 67108864 ]]; then
    pass "nbdinfo --size on our nbdkit memory 64M = 67108864"
  else
    fail "nbdinfo --size on our nbdkit memory 64M" "got '$(cat "$TMP/size.ours")'"
  fi
  compare size "nbdinfo --size"
fi

# --- --json, writable and read-only
for ro in "" "-r"; do
  name=json${ro:+-ro}
  # shellcheck disable=SC2086
  if run_both "$name" $ro memory 64M -- 'nbdinfo --json "$uri"'; then
    for side in ours theirs; do
      normalize_json <"$TMP/$name.$side" >"$TMP/$name.$side.n" 2>"$TMP/$name.$side.nerr" ||
        fail "nbdinfo --json${ro:+ $ro} ($side): not valid JSON" "$(head -c 300 "$TMP/$name.$side")"
    done
    # Explicit checks of what the memory plugin advertises.
    expect='{"export-size": 67108864, "is_read_only": false, "can_flush": true, "can_trim": true, "can_zero": true, "can_multi_conn": true}'
    [[ -n $ro ]] && expect='{"export-size": 67108864, "is_read_only": true, "can_flush": true, "can_multi_conn": true}'
    if /usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); want = json.loads(sys.argv[2])
e = d["exports"][0]
bad = {k: e.get(k) for k in want if e.get(k) != want[k]}
if d.get("protocol") != "newstyle-fixed": bad["protocol"] = d.get("protocol")
if bad: print("unexpected:", bad); sys.exit(1)' "$TMP/$name.ours" "$expect"; then
      pass "nbdinfo --json${ro:+ $ro} on our nbdkit: size, read-only, flush/trim/zero, multi-conn as expected"
    else
      fail "nbdinfo --json${ro:+ $ro} on our nbdkit" "flags not as expected"
    fi
    mv "$TMP/$name.ours.n" "$TMP/$name.ours"; mv "$TMP/$name.theirs.n" "$TMP/$name.theirs"
    compare "$name" "nbdinfo --json${ro:+ $ro} (without uri, description, block sizes)"
  fi
done

# --- --map on a sparse file (file plugin)
img=$TMP/sparse.img
truncate -s 64M "$img"
for spec in 0:1 5:2 17:1 40:3 63:1; do
  dd if=/dev/urandom of="$img" bs=1M seek="${spec%%:*}" count="${spec##*:}" \
     conv=notrunc status=none
done
# An unaligned few bytes in a hole, and a block of zero bytes written as
# data (allocated zeroes).
printf 'hello' | dd of="$img" bs=1 seek=$((30 * 1048576 + 12345)) conv=notrunc status=none
dd if=/dev/zero of="$img" bs=1M seek=50 count=2 conv=notrunc status=none
if run_both map-file file "$img" -- 'nbdinfo --map "$uri"'; then
  if [[ -s $TMP/map-file.ours ]]; then
    compare map-file "nbdinfo --map on a sparse file (file plugin)"
  else
    fail "nbdinfo --map on a sparse file" "no output from our nbdkit"
  fi
fi

# --- --map on a memory disk with data written into it (by nbdcopy, which
# writes data regions and zeroes holes: the memory plugin deallocates zeroes)
if run_both map-mem memory 64M -- "nbdcopy $img \"\$uri\" && nbdinfo --map \"\$uri\""; then
  compare map-mem "nbdinfo --map on a memory disk after nbdcopy"
fi

script_exit
