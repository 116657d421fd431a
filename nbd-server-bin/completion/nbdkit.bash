# Bash completion for nbdkit (the Rust NBD stack's nbdkit). -*- shell-script -*-
#
# Installed as /usr/share/bash-completion/completions/nbdkit, where
# nbdkit installs its own. It completes what nbdkit's does:
#   - options (from `nbdkit --help`), and the values of --filter, --tls
#     and --log;
#   - the plugin name, the first bare word;
#   - after the plugin, its KEY= parameters.
# Our plugins and filters are built into the binary, so their names and
# parameters are listed below (written at build time from the manual
# pages by scripts/gen-nbdkit-completion.sh); plugins and filters found in
# the plugin and filter directories that `nbdkit --dump-config` names, if
# any, are offered too.

# @BUILTIN_TABLES@

# The words of `nbdkit --dump-config`'s line KEY=...
_nbdkit_config_dir ()
{
    "${1:-nbdkit}" --dump-config 2>/dev/null | sed -n "s/^$2=//p"
}

# Plugin (or filter) names: the built-in ones, and the .so files of the
# directory nbdkit reports, named as nbdkit names them.
_nbdkit_layers ()
{
    local kind=$1 dir
    if [[ $kind == plugin ]]; then
        echo "$_nbdkit_builtin_plugins"
    else
        echo "$_nbdkit_builtin_filters"
    fi
    dir=$(_nbdkit_config_dir "$2" "${kind}dir")
    if [[ -n $dir && -d $dir ]]; then
        ls -1 "$dir" 2>/dev/null | sed -n "s/^nbdkit-\(.*\)-$kind\.so$/\1/p"
    fi
}

# Every long and short option that `nbdkit --help` shows.
_nbdkit_options ()
{
    "${1:-nbdkit}" --help 2>/dev/null |
        grep -oE -- '(^|[[ |])--?[a-zA-Z][-a-zA-Z0-9]*' |
        sed 's/^[[ |]//' | sort -u
}

_nbdkit ()
{
    local cur prev words cword split
    local i plugin filters nbdkit=${COMP_WORDS[0]}

    _init_completion -s || return

    # The plugin is the first bare word (a heuristic, as in nbdkit's own
    # script: an option's argument given as a separate word may look like
    # one).
    plugin=
    for (( i=1; i < cword; ++i )); do
        if [[ ${words[i]} =~ ^[a-zA-Z0-9]+$ ]] &&
           [[ ${words[i-1]} != @(--filter|-U|--unix|-p|--port|-i|--ipaddr|-P|--pidfile|-e|--exportname|-t|--threads|-D|--debug|--run|--log|--tls-certificates|--tls-psk|-u|--user|-g|--group|--mask-handshake) ]]; then
            plugin=${words[i]}
            break
        fi
    done

    # The filters given so far: their parameters are valid too.
    filters=
    for (( i=1; i < cword; ++i )); do
        [[ ${words[i-1]} == --filter ]] && filters+=" ${words[i]}"
        [[ ${words[i]} == --filter=* ]] && filters+=" ${words[i]#--filter=}"
    done

    case $prev in
        --filter)
            COMPREPLY=( $(compgen -W "$(_nbdkit_layers filter "$nbdkit")" -- "$cur") )
            return ;;
        --tls)
            COMPREPLY=( $(compgen -W "off on require" -- "$cur") )
            return ;;
        --log)
            COMPREPLY=( $(compgen -W "stderr syslog null" -- "$cur") )
            return ;;
        -U|--unix|-P|--pidfile|--tls-psk)
            _filedir
            return ;;
        --tls-certificates)
            _filedir -d
            return ;;
    esac

    case $cur in
        -*)
            COMPREPLY=( $(compgen -W "$(_nbdkit_options "$nbdkit")" -- "$cur") )
            return ;;
    esac

    if [[ -z $plugin ]]; then
        COMPREPLY=( $(compgen -W "$(_nbdkit_layers plugin "$nbdkit")" -- "$cur") )
        return
    fi

    # A plugin's parameters: the built-in table, or what a loadable
    # plugin's --help lists; and the filters'.
    local params f
    params=$(_nbdkit_builtin_params "$plugin")
    if [[ -z $params ]]; then
        params=$("$nbdkit" "$plugin" --help 2>/dev/null |
                 grep -E '^[-a-z0-9_.]+=' | sed 's/=.*/=/')
    fi
    for f in $filters; do
        params+=" $(_nbdkit_builtin_params "$f")"
    done
    compopt -o nospace 2>/dev/null
    COMPREPLY=( $(compgen -W "$params" -- "$cur") )
    [[ ${#COMPREPLY[@]} -eq 0 ]] && compopt +o nospace 2>/dev/null
    return 0
}

complete -o default -F _nbdkit nbdkit
