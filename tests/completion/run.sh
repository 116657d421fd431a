#!/bin/bash
# nbdkit's bash completion as installed by `make install`
# ($STAGE/usr/share/bash-completion/completions/nbdkit), driven the way
# bash drives it on TAB: COMP_WORDS/COMP_CWORD set, _nbdkit called, and
# COMPREPLY compared with what must be offered. The nbdkit it asks is the
# staged one (first word of the line).
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"

script=$STAGE/usr/share/bash-completion/completions/nbdkit
require_file "$script" "staged bash completion for nbdkit (make stage)" || script_exit
if [[ ! -f /usr/share/bash-completion/bash_completion ]]; then
  skip "nbdkit bash completion" "bash-completion not installed"; script_exit
fi

# complete LINE...: the words offered for the last word of LINE (which may
# be empty), one a line, sorted.
complete_line() {
  bash -c '
    source /usr/share/bash-completion/bash_completion
    source "$1"; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    _nbdkit
    printf "%s\n" "${COMPREPLY[@]}" | sort' _ "$script" "$STAGE/usr/sbin/nbdkit" "$@"
}

# expect WHAT LINE... -- WORD...: each WORD is offered (and nothing when no
# WORD is given).
expect() {
  local what=$1 got w missing=(); shift
  local line=()
  while [[ $1 != -- ]]; do line+=("$1"); shift; done; shift
  got=$(complete_line "${line[@]}")
  for w in "$@"; do grep -qxF -- "$w" <<<"$got" || missing+=("$w"); done
  if [[ $# -eq 0 && -n $got ]]; then missing+=("(nothing), got: $(echo $got)"); fi
  if [[ ${#missing[@]} -eq 0 ]]; then pass "completion: $what"
  else fail "completion: $what" "line 'nbdkit ${line[*]}', missing ${missing[*]}; offered: $(echo $got | head -c 300)"; fi
}

expect "plugin names"              me            -- memory
expect "all plugins on an empty word" ""         -- memory file null pattern data
expect "long options"              --re          -- --readonly
expect "short options"             -r            -- -r
expect "--filter values"           --filter co   -- cow
expect "--tls values"              --tls ""      -- off on require
expect "--log values"              --log s       -- stderr syslog
expect "plugin parameters"         memory ""     -- size= allocator=
expect "a filter's parameters too" --filter cow memory c -- cow-block-size=
expect "parameters by prefix"      -r memory al  -- allocator=
expect "no plugin names after the plugin" memory nu --

script_exit
