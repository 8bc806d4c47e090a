-- The common put (fast_put in common.lua) of one entry.
-- KEYS: the partition's index, deadlines, fixed-deadline and sequence keys, and the
-- entry key (all declared: see common.lua); ARGV: event mode, origin, channel (see
-- common.lua), text, blob. Result: as write.lua's (write_reply).
setup_partition(KEYS, tonumber(ARGV[1]), ARGV[2], ARGV[3])
return fast_put(KEYS[5], ARGV[4], ARGV[5])
