# A 1 MiB disk in memory for nbdkit-tcl-plugin(3): the first half is
# 4 KiB blocks of letters, the second half zeroes. Every callback the
# Tcl plugin offers is here (it has no extents, FUA or cache).
set BLOCK 4096
set disk ""
for {set b 0} {$b < 128} {incr b} {
    append disk [string repeat [binary format c [expr {65 + $b % 26}]] $BLOCK]
}
append disk [binary format x[expr {128 * $BLOCK}]]

proc config {key value} {
    if {$key ne "label"} { error "unknown parameter $key" }
}

proc plugin_open {readonly} { return 1 }
proc plugin_close {h} {}
proc get_size {h} { global disk; return [string length $disk] }
proc can_write {h} { return 1 }
proc can_flush {h} { return 1 }
proc can_trim {h} { return 1 }
proc is_rotational {h} { return 0 }

proc pread {h count offset} {
    global disk
    return [string range $disk $offset [expr {$offset + $count - 1}]]
}

proc put {buf offset} {
    global disk
    set disk [string replace $disk $offset [expr {$offset + [string length $buf] - 1}] $buf]
}

proc pwrite {h buf offset} {
    global disk BLOCK
    if {$offset >= [string length $disk] - $BLOCK} {
        error "the last block is read-only"
    }
    put $buf $offset
}
proc plugin_flush {h} {}
proc trim {h count offset} { put [binary format x$count] $offset }
proc zero {h count offset may_trim} { put [binary format x$count] $offset }
