-- Reads the entries ARGV[8..] (texts) as accesses (access() in common.lua).
-- Result: the blobs, nil for misses, in order. A read whose expiry is zero returns the
-- value one last time. Under a custom policy not asked for its access duration, a hit
-- replies need('access') before any entry is read as an access (the client sends one
-- text a call, so that each hit has the policy's own answer).
if KIND == 5 and access_lacks() then
  for i = FIRST, #ARGV do
    if rcall('EXISTS', ek(ARGV[i])) == 1 then return need('access') end
  end
end
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
