-- Drops up to ARGV[8] entries of the partition; ARGV[9] = 1 announces each live one
-- with a Removed event and counts it. Result: {removed, entries left}.
local announce = ARGV[FIRST + 1] == '1'
local removed = 0
for _, text in ipairs(redis.call('ZRANGE', IX, 0, tonumber(ARGV[FIRST]) - 1)) do
  local k = ek(text)
  if announce then
    local v = redis.call('GET', k)
    if v then
      emit('R', v)
      removed = removed + 1
    end
  end
  redis.call('DEL', k)
  forget(text)
end
-- Tells near caches to drop the partition (listeners ignore this kind: clear has no
-- events in JCache).
emit('Z', '')
return reply({removed, redis.call('ZCARD', IX)})
