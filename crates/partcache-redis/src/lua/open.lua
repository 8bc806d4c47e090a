-- Records the cache's layout beside its data, or returns the one recorded.
-- KEYS[1] is `pc:{<h>.meta}:<cache>:ix` (see layout.rs), KEYS[2] its `meta` sibling, the
-- record. ARGV[8..14]: partitions, codec id, layout version, index (1: the cache keeps
-- the index `<P>ix`, 0: not; see common.lua), events (1: the cache's processes publish
-- them, 0: not), the hashing rules' fingerprint and their description.
-- Result: {partitions, codec id, layout version, index, events, hashing fingerprint,
-- hashing description} as recorded (a record of an older version may lack index).
local M = KEYS[2]
local cur = rcall('HMGET', M, 'partitions', 'codec', 'layout', 'index', 'events', 'hashing',
  'hashing_rules')
if cur[1] then
  -- A record written before events and hashing were recorded: the first process that
  -- opens it as it was created records its own (processes of an older release neither
  -- read nor write these fields). One that is refused anyway records nothing.
  local same = cur[1] == ARGV[FIRST] and cur[2] == ARGV[FIRST + 1]
    and cur[3] == ARGV[FIRST + 2] and cur[4] == ARGV[FIRST + 3]
  if same and not cur[5] then
    rcall('HSET', M, 'events', ARGV[FIRST + 4])
    cur[5] = ARGV[FIRST + 4]
  end
  if same and not cur[6] then
    rcall('HSET', M, 'hashing', ARGV[FIRST + 5], 'hashing_rules', ARGV[FIRST + 6])
    cur[6] = ARGV[FIRST + 5]
    cur[7] = ARGV[FIRST + 6]
  end
  return reply(cur)
end
rcall('HSET', M, 'partitions', ARGV[FIRST], 'codec', ARGV[FIRST + 1], 'layout', ARGV[FIRST + 2],
  'index', ARGV[FIRST + 3], 'events', ARGV[FIRST + 4], 'hashing', ARGV[FIRST + 5],
  'hashing_rules', ARGV[FIRST + 6])
return reply({ARGV[FIRST], ARGV[FIRST + 1], ARGV[FIRST + 2], ARGV[FIRST + 3], ARGV[FIRST + 4],
  ARGV[FIRST + 5], ARGV[FIRST + 6]})
