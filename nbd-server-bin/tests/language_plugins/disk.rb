# A 1 MiB disk in memory for nbdkit-ruby-plugin(3): the first half is
# 4 KiB blocks of letters, the second half zeroes. Every callback the
# Ruby plugin offers is here (it has no extents, FUA or cache).
BLOCK = 4096
$disk = String.new(encoding: Encoding::BINARY)
(0..127).each { |b| $disk << ((65 + b % 26).chr * BLOCK) }
$disk << ("\0" * (128 * BLOCK))

def config(key, value)
  raise "unknown parameter #{key}" unless key == "label"
end

def open(readonly)
  { readonly: readonly }
end

def close(h)
end

def get_size(h)
  $disk.bytesize
end

def can_write(h)
  true
end

def can_flush(h)
  true
end

def can_trim(h)
  true
end

def is_rotational(h)
  false
end

def pread(h, count, offset)
  $disk.byteslice(offset, count)
end

def pwrite(h, buf, offset)
  raise "the last block is read-only" if offset >= $disk.bytesize - BLOCK
  $disk[offset, buf.bytesize] = buf.b
end

def flush(h)
end

def trim(h, count, offset)
  $disk[offset, count] = "\0".b * count
end

def zero(h, count, offset, may_trim)
  $disk[offset, count] = "\0".b * count
end
