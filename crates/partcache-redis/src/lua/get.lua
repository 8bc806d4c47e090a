-- Reads the entries ARGV[8..] (texts) as accesses (access() in common.lua).
-- Result: the blobs, nil for misses, in order. A read whose expiry is zero returns the
-- value one last time.
local out = {}
for i = FIRST, #ARGV do
  local text = ARGV[i]
  local k = ek(text)
  local v = rcall('GET', k)
  if v then
    access(text, k, v)
    out[#out + 1] = v
  else
    out[#out + 1] = false
  end
end
return reply(out)
