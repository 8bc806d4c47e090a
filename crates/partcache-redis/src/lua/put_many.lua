-- Unconditional puts. ARGV[8] = ttl ms (-1 none), then (text, blob, key-only blob)
-- triples. Result: how many were stored. Evicts once, after the last write
-- (defer_evictions in common.lua). A custom policy's puts go through write.lua instead,
-- one entry a call, each asked for the duration it applies (store/asking.rs).
local ttl = tonumber(ARGV[FIRST])
local stored = 0
defer_evictions()
for i = FIRST + 1, #ARGV, 3 do
  local text = ARGV[i]
  stored = stored + put(text, ARGV[i + 1], ARGV[i + 2], ttl, current(text))
end
if GROWN[prefix()] then evict() end
GROWN = nil
return reply(stored)
