-- Records the cache's layout beside its data, or returns the one recorded.
-- KEYS[1] is `pc:{<h>.meta}:<cache>:ix` (see layout.rs), KEYS[2] its `meta` sibling, the record. ARGV[8..10]: partitions, codec id, layout version.
-- Result: {partitions, codec id, layout version} as recorded.
local M = KEYS[2]
local cur = redis.call('HMGET', M, 'partitions', 'codec', 'layout')
if cur[1] then return reply(cur) end
redis.call('HSET', M, 'partitions', ARGV[FIRST], 'codec', ARGV[FIRST + 1], 'layout', ARGV[FIRST + 2])
return reply({ARGV[FIRST], ARGV[FIRST + 1], ARGV[FIRST + 2]})
