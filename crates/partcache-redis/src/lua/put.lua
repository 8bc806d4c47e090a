-- The common put, without the prelude: unconditional, no TTL, no previous value, on a
-- cache with no expiry, no max-idle and no budget (store.rs picks it). Its effects are
-- those of write.lua for that case, in about a third of the server time (measured on
-- Redis 7.0: the prelude alone costs about what SET, ZADD and the rest cost together).
-- KEYS: the partition's index, deadlines, fixed-deadline and sequence keys, and the entry key
-- (all declared: see common.lua); ARGV: event mode, origin, channel (see common.lua),
-- text, blob. Result: packed as common.lua's write_reply when there are no events to
-- return, else
-- as write.lua's, {{existed, 1, nil}, 0, expired, events}.
local IX, DL, FX, SQ, E = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local PUBMODE, ORIGIN, CHANNEL, text, blob = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local events, expired = {}, 0
-- Published (and numbered) only while a process listens, as in common.lua.
local subscribed = nil
local function emit(kind, b)
  local publish = PUBMODE % 3
  if publish ~= 0 then
    if subscribed == nil then
      local n
      if publish == 2 then
        n = redis.call('PUBSUB', 'SHARDNUMSUB', CHANNEL)[2]
      else
        n = redis.call('PUBSUB', 'NUMSUB', CHANNEL)[2]
      end
      subscribed = n > 0
    end
    if subscribed then
      local message = kind .. redis.call('INCR', SQ) .. ':' .. ORIGIN .. ':' .. b
      if publish == 1 then
        redis.call('PUBLISH', CHANNEL, message)
      else
        redis.call('SPUBLISH', CHANNEL, message)
      end
    end
  end
  if PUBMODE >= 3 then events[#events + 1] = kind .. b end
end
-- SET without PXAT also drops any deadline the entry had (an eternal cache).
local cur = redis.call('SET', E, blob, 'GET')
local existed = 0
if cur then
  -- A live entry is indexed already (every write indexes what it stores). Should it
  -- have had a deadline (a put with a TTL before), its deadline records are now stale:
  -- the reaper drops them when they fall due and it finds the value without a
  -- deadline (reap.lua), which saves every update a call here.
  existed = 1
  emit('U', blob)
else
  -- No budget, so the index's scores (last use, for LRU) are never read: 0 saves a TIME.
  local added = redis.call('ZADD', IX, 0, text)
  if added == 0 then
    -- Indexed but no value: Redis expired it; announce it as common.lua's gone() does.
    local fixed = redis.call('HGET', FX, text)
    if fixed and redis.call('ZREM', DL, text) == 1 then
      local a = string.find(fixed, ',', 1, true)
      local b = string.find(fixed, ',', a + 1, true)
      emit('X', string.sub(fixed, b + 1))
      expired = 1
    end
    redis.call('HDEL', FX, text)
  end
  emit('C', blob)
end
-- Without events to return (the usual case): one integer, cheaper to build and parse
-- than write.lua's nested reply (common.lua, write_reply).
if #events == 0 then return existed + 2 + 4 * 65536 * expired end
return {{existed, 1, false}, 0, expired, events}
