-- The common put (fast_put in common.lua) of several entries of several partitions
-- that one node serves, in one call (batching/puts.rs gathers the puts that wait while
-- another is on its way to the same node). Declares no keys: it is registered with
-- the `allow-cross-slot-keys` flag, and each entry's write must show that its keys are
-- served here right now. Its `SET` goes first, as a `pcall`, which Redis refuses for a
-- slot this node does not serve (MOVED) and, for a slot being migrated away, when the
-- entry key is not here (ASK). When it succeeds, the put's other keys are here too: a
-- creation (the key was not here) means the slot is not migrating; an update touches
-- no other key, unless someone listens (`<P>sq` for the message): such an entry's
-- partition is checked first (served_here).
-- An entry that Redis refused is left alone, for the caller to send by itself,
-- with its keys declared (put.lua), which the router follows through redirections.
-- ARGV: origin, channel suffix (`ev`, or `ev:<db>`), then per entry: partition key
-- prefix, event mode (0..2, no events in the reply), text, blob.
-- Result: per entry, fast_put's (a packed integer), or -1: not done, send it alone.
local origin, suffix = ARGV[1], ARGV[2]
local channels, modes = {}, {}
for i = 3, #ARGV, 4 do
  local mode = tonumber(ARGV[i + 1])
  modes[#modes + 1] = mode
  -- Only entries that publish need their channel.
  if mode ~= 0 then channels[#modes] = ARGV[i] .. suffix else channels[#modes] = '' end
end
begin_batch(channels, modes)
defaults()
local out = {}
for i = 3, #ARGV, 4 do
  local n = #out + 1
  local prefix, text = ARGV[i], ARGV[i + 2]
  local mode, channel = modes[n], channels[n]
  if mode ~= 0 and SUBS[channel] and not served_here(prefix) then
    out[n] = -1
  else
    setup_prefix(prefix, mode, origin, channel)
    out[n] = fast_put(prefix .. 'e:' .. text, text, ARGV[i + 3], true)
  end
end
return out
