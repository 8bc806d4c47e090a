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
-- ARGV: origin, channel suffix (`ev`, or `ev:<db>`), event mode of the entries whose
-- caches publish (1 or 2: the deployment's), then per entry: head, entry key, blob.
-- The head is the partition's channel when the entry's cache publishes, else its key
-- prefix: a prefix ends with `:` (layout.rs), a channel never does (it ends with the
-- suffix). Three arguments per entry, and no name built here for a common update:
-- every argument and every string made costs the server.
-- Result: per entry, fast_put's (a packed integer), or -1: not done, send it alone.
local origin, suffix, mode = ARGV[1], ARGV[2], tonumber(ARGV[3])
local COLON = 58
local channels = {}
for i = 4, #ARGV, 3 do
  local head = ARGV[i]
  if byte(head, -1) ~= COLON then channels[#channels + 1] = head end
end
begin_batch(mode, #channels, function() return channels end, true)
defaults()
-- The prefix and channel of a head.
local cut = -#suffix - 1
local function split(head)
  if byte(head, -1) == COLON then return head, 0, '' end
  return sub(head, 1, cut), mode, head
end
local out = {}
local n = 0
for i = 4, #ARGV, 3 do
  n = n + 1
  local head, k, blob = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if SUBS[head] then
    -- Someone listens: the message's number is a key of the partition.
    local prefix, m, channel = split(head)
    if served_here(prefix) then
      setup_prefix(prefix, m, origin, channel)
      out[n] = fast_put(k, nil, blob, true)
    else
      out[n] = -1
    end
  else
    -- Nobody listens (the common case): fast_put's update inline, with no state set
    -- up for it, as it announces nothing.
    local updated = rpcall('SET', k, blob, 'XX')
    if not updated then
      local prefix, m, channel = split(head)
      setup_prefix(prefix, m, origin, channel)
      out[n] = fast_create(k, nil, blob)
    elseif updated.err then
      out[n] = -1
    else
      -- write_reply(1, 1, false): existed, applied.
      out[n] = 3
    end
  end
end
return out
