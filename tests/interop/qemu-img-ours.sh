#!/bin/bash
# qemu-img reading from and writing into OUR nbdkit (file plugin):
# byte-identical copies of a 64 MiB image with random data and holes.
# The same runs on Debian's nbdkit are the reference (they validate the
# script itself).
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

require_file "$OUR_NBDKIT" "qemu-img-ours: our nbdkit" || script_exit
command -v qemu-img >/dev/null || { fail "qemu-img-ours" "qemu-img not installed (qemu-utils)"; script_exit; }

# 64 MiB with random data, holes, an unaligned run and allocated zeroes.
src=$TMP/src.img
truncate -s 64M "$src"
for spec in 0:2 7:1 20:4 33:1 48:3 63:1; do
  dd if=/dev/urandom of="$src" bs=1M seek="${spec%%:*}" count="${spec##*:}" \
     conv=notrunc status=none
done
dd if=/dev/urandom of="$src" bs=1 seek=$((26 * 1048576 + 777)) count=3333 \
   conv=notrunc status=none
dd if=/dev/zero of="$src" bs=1M seek=40 count=1 conv=notrunc status=none

for side in ours theirs; do
  if [[ $side == ours ]]; then nbdkit=$OUR_NBDKIT; tag="our nbdkit"
  else nbdkit=$DEBIAN_NBDKIT; tag="Debian's nbdkit (reference)"; fi

  # Size as qemu sees it.
  if out=$(to "$nbdkit" -U - -r file "$src" --run 'qemu-img info --output=json "$nbd"' 2>&1) &&
     [[ $(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])' <<<"$out" 2>/dev/null) == 67108864 ]]; then
    pass "qemu-img info on $tag: virtual-size 67108864"
  else
    fail "qemu-img info on $tag" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
  fi

  # Read: server exports src.img, qemu-img copies it out.
  out_img=$TMP/out-$side.img
  if out=$(to "$nbdkit" -U - file "$src" --run \
        "qemu-img convert -f raw -O raw \"\$nbd\" $out_img" 2>&1); then
    if cmp -s "$src" "$out_img"; then
      pass "qemu-img convert from $tag: byte-identical"
    else
      fail "qemu-img convert from $tag" "output differs: $(cmp "$src" "$out_img" 2>&1 | head -n 1)"
    fi
  else
    fail "qemu-img convert from $tag" "exit status non-zero"; echo "$out" | tail -n 10 | indent
  fi

  # Write: server exports an empty target, qemu-img writes into it.
  tgt=$TMP/target-$side.img
  truncate -s 64M "$tgt"
  # Something non-zero where src has holes, to prove holes are written too.
  dd if=/dev/urandom of="$tgt" bs=1M seek=10 count=2 conv=notrunc status=none
  if out=$(to "$nbdkit" -U - file "$tgt" --run \
        "qemu-img convert -n -f raw -O raw $src \"\$nbd\"" 2>&1); then
    if cmp -s "$src" "$tgt"; then
      pass "qemu-img convert -n into $tag: byte-identical"
    else
      fail "qemu-img convert -n into $tag" "target differs: $(cmp "$src" "$tgt" 2>&1 | head -n 1)"
    fi
  else
    fail "qemu-img convert -n into $tag" "exit status non-zero"; echo "$out" | tail -n 10 | indent
  fi

  # nbdkit-captive(1)'s examples word for word: an unquoted $nbd, the
  # image named relative to the working directory, the default formats.
  mkdir -p "$TMP/captive-$side"
  if out=$(cd "$TMP/captive-$side" && cp "$src" src.img &&
        to "$nbdkit" -U - file src.img --run 'qemu-img convert $nbd disk.img' 2>&1 &&
        cmp -s src.img disk.img); then
    pass "captive example 'qemu-img convert \$nbd disk.img' on $tag"
  else
    fail "captive example 'qemu-img convert \$nbd disk.img' on $tag" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
  fi
  if out=$(cd "$TMP/captive-$side" && truncate -s 64M target.img &&
        to "$nbdkit" -U - file target.img --run 'qemu-img convert -n disk.img $nbd' 2>&1 &&
        cmp -s "$src" target.img); then
    pass "captive example 'qemu-img convert -n disk.img \$nbd' on $tag"
  else
    fail "captive example 'qemu-img convert -n disk.img \$nbd' on $tag" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
  fi
done

script_exit
