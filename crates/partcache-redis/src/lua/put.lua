-- The common put: unconditional, no TTL, no previous value, on a cache with no
-- expiry, no max-idle and no budget (store.rs picks it). Its effects are those of
-- write.lua for that case with less server work: no `setup` (no `TIME`, no settings),
-- and no reading before writing.
-- KEYS: the partition's index, deadlines, fixed-deadline and sequence keys, and the
-- entry key (all declared: see common.lua); ARGV: event mode, origin, channel (see
-- common.lua), text, blob. Result: as write.lua's (write_reply).
setup_partition(KEYS, tonumber(ARGV[1]), ARGV[2], ARGV[3])
local text, blob = ARGV[4], ARGV[5]
-- SET without PXAT also drops any deadline the entry had (an eternal cache).
local cur = redis.call('SET', KEYS[5], blob, 'GET')
if cur then
  -- A live entry is indexed already (every write indexes what it stores). Should it
  -- have had a deadline (a put with a TTL before), its deadline records are now stale:
  -- the reaper drops them when they fall due and it finds the value without a
  -- deadline (reap.lua), which saves every update a call here.
  emit('U', blob)
  return write_reply(1, 1, false)
end
-- No budget, so the index's scores (last use, for LRU) are never read: 0 saves a TIME.
if redis.call('ZADD', IX, 0, text) == 0 then
  -- Indexed but no value: Redis expired it. gone() announces it and drops its
  -- records, the index entry among them.
  gone(text)
  redis.call('ZADD', IX, 0, text)
end
emit('C', blob)
return write_reply(0, 1, false)
