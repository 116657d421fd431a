#!/bin/bash
# gen-nbdkit-completion.sh MAN_OUT TEMPLATE: print nbdkit's bash completion,
# TEMPLATE (nbd-server-bin/completion/nbdkit.bash) with its
# "# @BUILTIN_TABLES@" line replaced by the built-in plugins, filters and
# each one's KEY= parameters, read from the generated manual pages
# (MAN_OUT/nbdkit-NAME-plugin.1.pod, nbdkit-NAME-filter.1.pod: the
# "=item B<KEY=>" lines of their PARAMETERS section).
set -euo pipefail
man_out=$1 template=$2

names() { # KIND
  local f n
  for f in "$man_out"/nbdkit-*-"$1".1.pod; do
    n=${f##*/nbdkit-}; echo "${n%-"$1".1.pod}"
  done | sort | tr '\n' ' ' | sed 's/ $//'
}
params() { # POD
  sed -n '/^=head1 PARAMETERS/,/^=head1 /s/^=item B<\([-a-zA-Z0-9_.]*=\)>.*/\1/p' "$1" |
    sort -u | tr '\n' ' ' | sed 's/ $//'
}

tables() {
  echo "_nbdkit_builtin_plugins='$(names plugin)'"
  echo "_nbdkit_builtin_filters='$(names filter)'"
  echo "# The KEY= parameters of a built-in plugin or filter."
  echo "_nbdkit_builtin_params ()"
  echo "{"
  echo "    case \$1 in"
  local f n
  for f in "$man_out"/nbdkit-*-plugin.1.pod "$man_out"/nbdkit-*-filter.1.pod; do
    n=${f##*/nbdkit-}; n=${n%-*.1.pod}
    echo "        $n) echo '$(params "$f")' ;;"
  done
  echo "    esac"
  echo "}"
}

while IFS= read -r line; do
  if [[ $line == "# @BUILTIN_TABLES@" ]]; then tables; else printf '%s\n' "$line"; fi
done <"$template"
