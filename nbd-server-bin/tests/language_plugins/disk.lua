-- A 1 MiB disk in memory for nbdkit-lua-plugin(3): the first half is
-- 4 KiB blocks of letters, the second half zeroes. Every callback the
-- Lua plugin offers is here (it has no extents, FUA or cache).
local BLOCK = 4096
local parts = {}
for b = 0, 127 do
   parts[#parts + 1] = string.rep(string.char(65 + b % 26), BLOCK)
end
parts[#parts + 1] = string.rep("\0", 128 * BLOCK)
local disk = table.concat(parts)

function config (key, value)
   if key ~= "label" then
      error ("unknown parameter " .. key)
   end
end

function open (readonly) return { readonly = readonly } end
function close (h) end
function get_size (h) return #disk end
function can_write (h) return true end
function can_flush (h) return true end
function can_trim (h) return true end
function is_rotational (h) return false end

function pread (h, count, offset)
   return disk:sub (offset + 1, offset + count)
end

local function put (buf, offset)
   disk = disk:sub (1, offset) .. buf .. disk:sub (offset + #buf + 1)
end

function pwrite (h, buf, offset)
   if offset >= #disk - BLOCK then
      error ("the last block is read-only")
   end
   put (buf, offset)
end
function flush (h) end
function trim (h, count, offset) put (string.rep ("\0", count), offset) end
function zero (h, count, offset, may_trim) put (string.rep ("\0", count), offset) end
