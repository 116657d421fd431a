#!/bin/bash
# Checks installed manual pages: every page under MANDIR (man1 ... man9)
# renders without a single warning at 80 columns, as `man --warnings`
# reports them (groff's warnings, e.g. an unknown macro or a line that
# cannot be broken), and the library's pages are all there: libnbd(3) and
# one nbd_NAME(3) per libnbd 1.24 call. Prints one line per problem.
#
#   scripts/check-man.sh MANDIR      (e.g. build/stage/usr/share/man)
set -uo pipefail
mandir=${1:?usage: check-man.sh MANDIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
status=0

pages=("$mandir"/man[1-9]/*.[1-9])
if [[ ! -e ${pages[0]} ]]; then
  echo "no manual pages under $mandir"; exit 1
fi

# Every call of the reference list has its page, and the overview exists.
missing=()
[[ -f $mandir/man3/libnbd.3 ]] || missing+=(libnbd.3)
while IFS=$'\t' read -r sym _; do
  [[ $sym == \#* || -z $sym ]] && continue
  [[ -f $mandir/man3/$sym.3 ]] || missing+=("$sym.3")
done <"$repo/nbd-capi/gen/libnbd-1.24-symbols.tsv"
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "${#missing[@]} pages missing: ${missing[*]:0:10}"; status=1
fi

# No warnings. man(1) sends groff's warnings to stderr; the page to stdout.
for page in "${pages[@]}"; do
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
  if [[ -n $warnings ]]; then
    echo "${page#"$mandir"/}: $warnings"; status=1
  fi
done
echo "checked ${#pages[@]} pages under $mandir"
exit $status
