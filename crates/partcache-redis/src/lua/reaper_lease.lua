-- The lease on a cache's reaping (store/reaper.rs): one process of all those that
-- opened the cache reaps it, so that the background work does not grow with their
-- number. KEYS[1]: the lease; ARGV[1]: the caller's id; ARGV[2]: the lease time (ms),
-- 0 to give the lease up.
-- Result: {1, ms the caller holds it} when the caller holds it now, else {0, ms left
-- of the holder's lease}.
local ms = tonumber(ARGV[2])
local holder = redis.call('GET', KEYS[1])
if ms == 0 then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return {0, 0}
end
if holder and holder ~= ARGV[1] then
  local left = redis.call('PTTL', KEYS[1])
  -- A value without a deadline is no lease this function wrote: taken over.
  if left >= 0 then return {0, left} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
return {1, ms}
