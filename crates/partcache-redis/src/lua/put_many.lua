-- Unconditional puts. ARGV[8] = ttl ms (-1 none), then (text, blob, key-only blob)
-- triples. Result: how many were stored.
local ttl = tonumber(ARGV[FIRST])
local stored = 0
for i = FIRST + 1, #ARGV, 3 do
  local text = ARGV[i]
  stored = stored + put(text, ARGV[i + 1], ARGV[i + 2], ttl, current(text))
end
return reply(stored)
