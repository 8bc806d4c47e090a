-- Records the cache's layout beside its data, or returns the one recorded.
-- KEYS[1] is `pc:{<h>.meta}:<cache>:ix` (see layout.rs), KEYS[2] its `meta` sibling, the
-- record. ARGV[8..11]: partitions, codec id, layout version, index (1: the cache keeps
-- the index `<P>ix`, 0: not; see common.lua).
-- Result: {partitions, codec id, layout version, index} as recorded (a record of an
-- older version may lack the last ones).
local M = KEYS[2]
local cur = rcall('HMGET', M, 'partitions', 'codec', 'layout', 'index')
if cur[1] then return reply(cur) end
rcall('HSET', M, 'partitions', ARGV[FIRST], 'codec', ARGV[FIRST + 1], 'layout', ARGV[FIRST + 2],
  'index', ARGV[FIRST + 3])
return reply({ARGV[FIRST], ARGV[FIRST + 1], ARGV[FIRST + 2], ARGV[FIRST + 3]})
