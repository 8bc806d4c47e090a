-- partcache: the shared part of the function library (scripts.rs): every function
-- calls setup(KEYS, ARGV) first, but put's, which needs only setup_partition.
--
-- KEYS[1] is the partition's index key `<P>ix`; every other key of the partition is
-- `<P>` plus a suffix, and <P> holds the partition's hash tag, so all of them share
-- one slot: the script is a legal, atomic single-slot cluster command. KEYS[2..4] are
-- `<P>dl`, `<P>fx` and `<P>sq`, and KEYS[5..] the entry keys of the texts the script is given:
-- declared so that Redis refuses (TRYAGAIN) a script whose keys a slot migration has
-- split between two nodes, instead of letting it write on the wrong one (layout.rs).
--   <P>e:<text>  string: the entry's blob; Redis PEXPIREAT holds its hard deadline
--   <P>ix        zset text -> last use (server time, microseconds): index and LRU order;
--                only on an indexed cache (a budget or a max-idle: INDEXED). Without
--                one, the entry keys alone are the entries (found by SCAN, store/scan.rs).
--   <P>dl        zset text -> deadline (ms): what the reaper visits
--   <P>l:<text>  string: the lease of an absent entry (lease.lua): `<token>@<tick>`,
--                the token of the caller loading its value and when it got it (µs);
--                `x<token>@<tick>` after a write voided an earlier lease, `x` when
--                voided, `r` for a short while after its holder ended it without
--                a value (lease_release.lua); Redis PEXPIRE holds the lease's end
--   <P>fx        hash text -> "<policy deadline>,<ttl deadline>,<key-only blob>", for
--                entries with a deadline (reads and updates need the fixed deadlines;
--                the key-only blob announces an expiry after Redis dropped the value).
--                `dl` and `fx` records always come together; they may outlive the
--                deadline of an entry that put.lua made eternal, until the reaper
--                reaches them and finds the value without one (reap.lua).
--                An entry whose only deadline is max-idle (an eternal policy, no TTL)
--                has neither when it was written while nobody listened (lean(),
--                store): its index score, the last use, then stands for its deadline
--                (last use + max-idle), and the reaper finds it through the index.
--                On a cache without an index no entry needs records while nobody
--                listens, unless a later call reads a deadline back that its value's
--                own PXAT does not give (lean()).
-- ARGV[1..7] are the cache's settings and event arguments (arguments.rs), ARGV[8..] the
-- operation's.

-- The server's functions and Lua's that the library calls, as upvalues: Redis guards
-- a library's globals with a metatable, so that reading a global costs about ten times
-- what reading an upvalue does, and a write reads a dozen. Read once, at the start of
-- the first call after the library was loaded (bind: its top level, which runs at
-- loading, may not read them), by globals(), which is declared before the upvalues
-- and so sees the globals of the same names.
local function globals()
  return redis.call, redis.pcall, tonumber, type, unpack, string.format, string.sub,
    string.find, string.byte, math.floor, math.min
end
local rcall, rpcall, tonumber, type, unpack, format, sub, find, byte, floor, min
-- Called first by every function of the library (scripts.rs).
local function bind()
  if rcall then return end
  rcall, rpcall, tonumber, type, unpack, format, sub, find, byte, floor, min = globals()
end

-- Per-call state, set by setup() at the start of every call (the library's top level
-- runs once, when the library is loaded: scripts.rs).
local P, IX, DL, FX, SQ
local KIND, D, IDLE, BUDGET, PUBMODE, ORIGIN, CHANNEL, READS_EXTEND
-- The last rank within the budget, counted from the end (`-<BUDGET + 1>`), for evict().
local OVER
-- A custom policy's durations (ms; -1: none; nil: not asked, see need()): creation,
-- access, update.
local CC, CA, CU
local NOW, TICK
-- The settings' arguments that KIND .. OVER were last read from (settings()).
local SETTINGS_KIND, SETTINGS_D, SETTINGS_IDLE, SETTINGS_BUDGET
-- TICK as Redis takes it (a string), made when first needed: formatting a number costs
-- the server more than most of a write's logic.
local TICK_ARG
-- put_blind's deadline of an entry without a TTL (the policy's and max-idle's), the
-- same for every entry of a call: BLIND_KNOWN once worked out.
local BLIND, BLIND_KNOWN
local EVENTS, EVICTED, EXPIRED
local SUBSCRIBED
-- Whether the current call (or batch entry) is known to announce nothing: no events,
-- or a batch's entry whose channel nobody subscribes to. Spares emit() and announced()
-- their calls on the common path.
local QUIET
-- Whether the cache keeps the index `<P>ix`: it has a budget (LRU order) or a
-- max-idle (the last use). Set with the settings.
local INDEXED = false
-- Per batch call (put_batch.lua, upsert_batch.lua): whether each channel has a
-- subscriber (asked once for all the batch's channels), and per partition (by key
-- prefix) whether its slot is served here and whether its `<P>fx` exists. nil outside
-- a batch.
local SUBS, SERVED, RECORDS
-- Per batch call (and put_many.lua): the partitions (by key prefix) whose index grew
-- and that are still to evict: a batch evicts once per partition, after its last
-- entry of the partition, instead of after every creation. nil outside a batch: a
-- creation evicts at once. LATER: whether the batch has more entries of the current
-- entry's partition after it.
local GROWN, LATER
-- Whether the current partition's `<P>fx` exists: false spares the calls that read or
-- drop an entry's records (most caches have none: lean()); nil when not known.
local HAS_FX
-- Whether the current entry is known to have no lease (entry_served_here): spares
-- void_lease its call.
local LEASE_FREE = false
local FIRST = 8
-- EVENTS of a call that returns none (the usual case): never appended to, so one
-- table serves every such call instead of a new one each.
local NO_EVENTS = {}

-- The partition's keys and the event arguments: all that put.lua needs.
-- `mode`: events 0 none, 1 PUBLISH, 2 SPUBLISH; +3: also in the reply. `origin`: the
-- calling client's id, in published messages. `prefix`: the partition's key prefix,
-- nil to take it from the index key when needed.
local function begin(prefix, ix, dl, fx, sq, mode, origin, channel)
  P = prefix
  IX, DL, FX, SQ = ix, dl, fx, sq
  PUBMODE, ORIGIN, CHANNEL = mode, origin, channel
  EVENTS, EVICTED, EXPIRED = NO_EVENTS, 0, 0
  if mode >= 3 then EVENTS = {} end
  SUBSCRIBED = nil
  QUIET = mode == 0 or (mode < 3 and SUBS ~= nil and not SUBS[channel])
  HAS_FX = nil
  LEASE_FREE = false
  if RECORDS then HAS_FX = RECORDS[prefix] end
end

-- The settings of put.lua's cache, which does not pass them: eternal, no max-idle, no
-- budget. Set at the start of every call that does not read settings, because the
-- library's state outlives a call: a value left by another cache's call must not leak.
local function defaults()
  KIND, D, IDLE, BUDGET, INDEXED = 0, 0, -1, 0, false
  SETTINGS_KIND = nil
end

-- A call of one partition, whose keys are KEYS[1..4] (setup_partition and setup).
local function one_partition(KEYS, mode, origin, channel)
  SUBS, SERVED, RECORDS = nil, nil, nil
  GROWN = nil
  begin(nil, KEYS[1], KEYS[2], KEYS[3], KEYS[4], mode, origin, channel)
end

local function setup_partition(KEYS, mode, origin, channel)
  one_partition(KEYS, mode, origin, channel)
  defaults()
end

-- As setup_partition, for the partition whose keys start with `prefix` and whose
-- channel is `channel` (the batches, which are given prefixes, not keys). The
-- partition's keys are named when first needed (partition_keys): a common put needs
-- none of them.
local function setup_prefix(prefix, mode, origin, channel)
  begin(prefix, nil, nil, nil, nil, mode, origin, channel)
end

-- Names the current partition's keys if setup_prefix (or entry_served_here, which
-- names only the index and the records) left them to this.
local function partition_keys()
  if not SQ then
    IX, DL, FX, SQ = P .. 'ix', P .. 'dl', P .. 'fx', P .. 'sq'
  end
end
-- The deadlines key `<P>dl`, for the writes of deadline records, the one key a
-- batch's write may need that entry_served_here does not name.
local function deadlines()
  partition_keys()
  return DL
end

-- The cache's settings, from their arguments (strings). The arguments last read are
-- kept (SETTINGS_*), and the same ones again (a cache's calls repeat theirs) are not
-- read again: each number read (`strtod`) or formatted costs the server about 1,000
-- instructions, and comparing Lua strings compares pointers. defaults() forgets them.
local function settings(kind_arg, d, idle_arg, budget_arg)
  if kind_arg == SETTINGS_KIND and d == SETTINGS_D and idle_arg == SETTINGS_IDLE
    and budget_arg == SETTINGS_BUDGET then
    return
  end
  SETTINGS_KIND = nil
  -- 0 eternal, 1 created, 2 modified, 3 accessed, 4 touched, 5 custom
  KIND = tonumber(kind_arg)
  IDLE = tonumber(idle_arg)     -- max-idle, ms; -1: none
  BUDGET = tonumber(budget_arg) -- max entries of this partition; 0: unbounded
  if KIND == 5 then
    -- `<creation>:<access>:<update>`, which the client asked the policy for just now;
    -- a blank one it did not ask (nil), as the call may not need it (need()).
    local a = find(d, ':', 1, true)
    local b = find(d, ':', a + 1, true)
    CC = tonumber(sub(d, 1, a - 1))
    CA = tonumber(sub(d, a + 1, b - 1))
    CU = tonumber(sub(d, b + 1))
    D = 0
  else
    D = tonumber(d) -- the policy's duration, ms
  end
  READS_EXTEND = IDLE >= 0 or KIND == 3 or KIND == 4 or (KIND == 5 and CA ~= -1)
  INDEXED = BUDGET > 0 or IDLE >= 0
  if BUDGET > 0 then OVER = '-' .. format('%d', BUDGET + 1) end
  SETTINGS_KIND, SETTINGS_D, SETTINGS_IDLE, SETTINGS_BUDGET = kind_arg, d, idle_arg, budget_arg
end

-- The server time: NOW in ms, TICK in µs.
local function clock()
  local T = rcall('TIME')
  local seconds, micros = tonumber(T[1]), tonumber(T[2])
  NOW = seconds * 1000 + floor(micros / 1000)
  TICK = seconds * 1000000 + micros
  TICK_ARG = nil
  BLIND_KNOWN = false
end

local function setup(KEYS, ARGV)
  one_partition(KEYS, tonumber(ARGV[5]), ARGV[6], ARGV[7])
  settings(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
  clock()
end

-- Lua would print large numbers in exponent form; Redis wants integers.
local function int(n) return format('%d', n) end
-- TICK as an argument.
local function tick()
  if not TICK_ARG then TICK_ARG = int(TICK) end
  return TICK_ARG
end
-- A deadline as an argument: the last one formatted is kept, as the entries of a batch
-- usually share theirs (NOW plus the same duration).
local DL_NUMBER, DL_ARG
local function deadline(dl)
  if dl ~= DL_NUMBER then DL_NUMBER, DL_ARG = dl, int(dl) end
  return DL_ARG
end
-- The partition's key prefix, taken from the index key when first needed (put.lua's
-- update never needs it).
local function prefix()
  if not P then P = sub(IX, 1, -3) end
  return P
end
-- (P first: a Lua function call costs the server more than the rest of these.)
local function ek(text) return (P or prefix()) .. 'e:' .. text end
local function lease_key(text) return (P or prefix()) .. 'l:' .. text end
-- `<P>lv`: present while a lease of the partition may live (lease.lua keeps it as
-- long as its longest). `<P>cv`: when the partition was last cleared (TICK, µs) while
-- leases lived, for as long as they may: a lease granted at or before it is void
-- (lease_put.lua), as a write of its key voids it. A partition nobody loads keeps
-- neither.
local function leases_key() return (P or prefix()) .. 'lv' end
local function cleared_key() return (P or prefix()) .. 'cv' end

-- Voids a live lease of `text` (lease.lua) on a write that finds the entry absent:
-- the holder's put is then refused (a load that read the system of record before
-- this write must not be stored after it). A present entry has no lease (one is
-- taken only while the entry is absent, and creating the entry voids it), so updates
-- pay nothing. A `pcall`: the lease key is not among the declared keys, and while
-- the slot migrates Redis may refuse it, which must not fail the write itself.
local function void_lease(text)
  if LEASE_FREE then return end
  rpcall('SET', lease_key(text), 'x', 'XX', 'KEEPTTL')
end

-- Whether the lease value `held` is the one granted to `token`, and when it was
-- granted (µs).
local function lease_of(held, token)
  if not held then return false, nil end
  local at = find(held, token .. '@', 1, true)
  if at ~= 1 and not (at == 2 and sub(held, 1, 1) == 'x') then return false, nil end
  return true, tonumber(sub(held, at + #token + 1))
end
local function minv(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if a < b then return a end
  return b
end

-- Whether any process listens on the partition's channel (asked once per call): a
-- message nobody receives is not published, and not numbered either (as Redisson's
-- scripts do). A subscriber reads the numbers after its subscription is in place
-- (events.rs, reseed), and the script and the subscription are atomic against each
-- other, so it misses nothing it could have been sent.
local function subscribed(publish)
  if SUBSCRIBED == nil and SUBS then
    SUBSCRIBED = SUBS[CHANNEL] or false
  elseif SUBSCRIBED == nil then
    local n
    if publish == 2 then
      n = rcall('PUBSUB', 'SHARDNUMSUB', CHANNEL)[2]
    else
      n = rcall('PUBSUB', 'NUMSUB', CHANNEL)[2]
    end
    SUBSCRIBED = n > 0
  end
  return SUBSCRIBED
end

-- An event is numbered (`<P>sq`, in the same atomic step as the change it reports)
-- when it is published or returned: a published message is
-- `<kind><number>:<origin>:<blob>`, so a near cache can tell a lost message, and a
-- returned one `<kind><number>:<blob>`, so the client delivers the events of a
-- partition in the order they were made (events.rs, delivery.rs).
local function emit(kind, blob)
  local publish = PUBMODE % 3
  local published = publish ~= 0 and SUBSCRIBED
  if published == nil then published = subscribed(publish) end
  if not published and PUBMODE < 3 then return end
  partition_keys()
  local n = rcall('INCR', SQ)
  if published then
    local message = kind .. n .. ':' .. ORIGIN .. ':' .. blob
    if publish == 1 then
      rcall('PUBLISH', CHANNEL, message)
    else
      rcall('SPUBLISH', CHANNEL, message)
    end
  end
  if PUBMODE >= 3 then EVENTS[#EVENTS + 1] = kind .. n .. ':' .. blob end
end

-- Whether this call's events reach anyone: a listener in this process (they come back
-- in the reply) or a subscribed process.
local function announced()
  if QUIET then return false end
  if PUBMODE >= 3 then return true end
  local publish = PUBMODE % 3
  return publish ~= 0 and subscribed(publish)
end

-- Whether an entry written now with fixed deadlines `fp` (policy) and `ft` (TTL) goes
-- without deadline and fixed-deadline records. Only while nobody listens, so that its
-- expiry will not need announcing with the key-only blob, and:
-- * on an indexed cache, when its only deadline is max-idle, which the index score
--   (last use) gives: saves two calls per write (and one per eviction) on max-idle
--   caches; the reaper finds such entries through the index;
-- * on a cache without an index, whenever no later call needs a deadline back that
--   the value's own PXAT does not give: reads extend (Accessed, Touched) only up to a
--   TTL; a Created entry's updates keep the policy deadline, which is the value's
--   PXAT when there is no TTL (put() reads it back with PTTL); a custom policy's
--   accesses keep theirs. Redis drops such an entry at its deadline with nothing left
--   behind: no reaper visit, and only the value in memory.
local function lean(fp, ft)
  if INDEXED then
    return KIND == 0 and IDLE >= 0 and not fp and not ft and (QUIET or not announced())
  end
  if KIND == 5 then return false end
  if ft and (KIND == 1 or KIND == 3 or KIND == 4) then return false end
  return QUIET or not announced()
end

-- Writes the fixed-deadline record of `text`.
local function set_records(text, record)
  rcall('HSET', FX, text, record)
  HAS_FX = true
  if RECORDS then RECORDS[P] = true end
end

-- The fixed deadlines and key-only blob recorded for `text` (nils when none).
local function fixed_of(text)
  if HAS_FX == false then return nil, nil, nil end
  local v = rcall('HGET', FX, text)
  if not v then return nil, nil, nil end
  local a = find(v, ',', 1, true)
  local b = find(v, ',', a + 1, true)
  return tonumber(sub(v, 1, a - 1)), tonumber(sub(v, a + 1, b - 1)), sub(v, b + 1)
end

-- The deadline reads (on_update false) or writes (true) slide forward (expiry.rs).
local function sliding(on_update)
  local s = nil
  if KIND == 4 or (KIND == 3 and not on_update) then s = NOW + D end
  if IDLE >= 0 then s = minv(s, NOW + IDLE) end
  return s
end

-- Drops the deadline and fixed-deadline records of `text`; whether it had any (a
-- deadline record exists only beside a fixed-deadline record).
local function drop_records(text)
  if HAS_FX == false then return false end
  if rcall('HDEL', FX, text) == 0 then return false end
  rcall('ZREM', DL or deadlines(), text)
  return true
end

local function forget(text)
  if INDEXED then rcall('ZREM', IX, text) end
  drop_records(text)
end

-- `text` has bookkeeping but no value: Redis expired it. Announce it (with the
-- key-only blob) when it had a deadline, and drop the bookkeeping. On a max-idle cache
-- every entry has a deadline; one without records (lean) expired unannounced, as
-- nobody listened when it was written, but it is counted.
local function gone(text)
  local _, _, keyonly = fixed_of(text)
  if keyonly and rcall('ZSCORE', DL or deadlines(), text) then
    emit('X', keyonly)
    EXPIRED = EXPIRED + 1
  elseif IDLE >= 0 then
    EXPIRED = EXPIRED + 1
  end
  forget(text)
end

-- `fresh`: a new entry, which has no deadline records to drop.
local function store(text, blob, keyonly, dl, fp, ft, fresh)
  local k = ek(text)
  if dl and lean(fp, ft) then
    rcall('SET', k, blob, 'PXAT', deadline(dl))
    if not fresh then drop_records(text) end
  elseif dl then
    rcall('SET', k, blob, 'PXAT', deadline(dl))
    rcall('ZADD', DL or deadlines(), deadline(dl), text)
    local a, b = '', ''
    if fp then a = int(fp) end
    if ft then b = int(ft) end
    set_records(text, a .. ',' .. b .. ',' .. keyonly)
  else
    rcall('SET', k, blob)
    if not fresh then drop_records(text) end
  end
  -- 1 when the index grew (only then can the partition be over its budget).
  if not INDEXED then return 0 end
  return rcall('ZADD', IX, tick(), text)
end

-- Keeps the partition within BUDGET by evicting its least recently used entries.
-- Called after a write that grew the index (in a batch, after the partition's last
-- write: defer_evictions). The victims are read by rank, without their scores
-- (`ZPOPMIN` would format each score as a decimal for the reply, which cost more than
-- the rest of the eviction), and taken out of the index once gone. Returns whether
-- `watch` (a text, or nil) was among the evicted.
local function evict(watch)
  if BUDGET <= 0 then return false end
  -- Ranks 0 .. card - BUDGET - 1: the least recently used beyond the budget, oldest
  -- first; none when within it.
  local victims = rcall('ZRANGE', IX, '0', OVER)
  local done = 0
  local told = #victims > 0 and not QUIET and announced()
  local watched = false
  local p = P or prefix()
  local count = #victims
  -- Several victims and nobody to tell: when the partition has no fixed-deadline
  -- records (asked with one `EXISTS` when not known), one `DEL` takes them all (in
  -- slices, as below), instead of one call each: a victim whose value is already gone
  -- (Redis expired it) then has nothing to announce or drop, and the count `DEL`
  -- answers tells the evicted from those (which gone() counts as expired on a
  -- max-idle cache, and not at all otherwise).
  if count > 1 and not told and HAS_FX == nil then
    HAS_FX = rcall('EXISTS', FX or (p .. 'fx')) == 1
  end
  if count > 1 and not told and HAS_FX == false then
    local keys = {}
    for i = 1, count do keys[i] = p .. 'e:' .. victims[i] end
    for i = 1, count, 1000 do
      local last = i + 999
      if last > count then last = count end
      local n = rpcall('DEL', unpack(keys, i, last))
      -- Refused (the slot migrates): stop, as below.
      if type(n) == 'table' then break end
      EVICTED = EVICTED + n
      if IDLE >= 0 then EXPIRED = EXPIRED + (last - i + 1 - n) end
      done = last
    end
    if watch then
      for i = 1, done do
        if victims[i] == watch then watched = true end
      end
    end
    count = 0
  end
  for i = 1, count do
    local text = victims[i]
    -- A victim is not among the script's declared keys: while the slot migrates it
    -- may already live on the other node, and Redis refuses to touch it here. Stop
    -- evicting then, leaving the victims left in the index (the partition is over
    -- budget until a write after the migration), rather than fail a write that is
    -- already done.
    local blob
    if told then
      blob = rpcall('GETDEL', p .. 'e:' .. text)
      if type(blob) == 'table' and blob.err then break end
    else
      -- Nobody to tell: whether it was there is all that counts (no copy of it).
      local n = rpcall('DEL', p .. 'e:' .. text)
      if n == 1 then
        blob = true
      elseif n == 0 then
        blob = false
      else
        break
      end
    end
    done = i
    if text == watch then watched = true end
    if blob then
      if HAS_FX ~= false then drop_records(text) end
      if told then emit('V', blob) end
      EVICTED = EVICTED + 1
    else
      gone(text)
    end
  end
  if done == 1 then
    rcall('ZREM', IX, victims[1])
    return watched
  end
  -- In slices: Lua unpacks at most a few thousand values at once, and a partition may
  -- be far over a budget that a reopening with a smaller `max_entries` lowered.
  for i = 1, done, 1000 do
    local last = i + 999
    if last > done then last = done end
    rcall('ZREM', IX, unpack(victims, i, last))
  end
  return watched
end

-- After a write that grew the index (only then can the partition be over its budget):
-- evicts, unless a batch has more entries of the partition to write (see
-- defer_evictions).
local function grown()
  if BUDGET <= 0 then return end
  if GROWN then
    local p = P or prefix()
    if LATER then
      GROWN[p] = true
      return
    end
    GROWN[p] = nil
  end
  evict()
end

-- Before a write of a batch takes an entry out of the index (an update whose expiry is
-- zero): evicts now what the partition's creations so far in the call would have
-- evicted one write at a time, so that the room the removal frees is not given back
-- to an entry they evicted. Counted on the current entry (of the same partition).
-- Returns whether `text` was among the evicted.
local function settle(text)
  if not GROWN then return false end
  local p = P or prefix()
  if not GROWN[p] then return false end
  GROWN[p] = nil
  return evict(text)
end

-- `r`, a write's result (write_reply's), with the current EVICTED and EXPIRED added.
local function add_counts(r)
  if type(r) == 'table' then
    r[2], r[3] = r[2] + EVICTED, r[3] + EXPIRED
    return r
  end
  local evicted = floor(r / 4) % 65536 + EVICTED
  if evicted < 65536 then return r + 4 * (EVICTED + 65536 * EXPIRED) end
  -- Beyond the packed form: write_reply's other form.
  local expired = floor(r / 262144) + EXPIRED
  return {{r % 2, floor(r / 2) % 2, false}, evicted, expired, EVENTS}
end

-- Starts a call whose writes of a partition evict once, after the last of them, rather
-- than after every creation (a batch's entries usually have a partition each, and
-- then nothing changes; put_many.lua's all share one). Such a call sets LATER before
-- each write, and after a partition's last write evicts what is left (evict_rest).
-- The end state is the one the same writes would leave one at a time: each creation
-- evicted then the least recently used entries beyond the budget, and the entries
-- left are the same as those the last write's eviction leaves (an entry's last use
-- only moves forward, and within the call in the order of its writes; a write that
-- takes an entry out of the index evicts first, settle), apart from an entry that a
-- later write of the call updates where one at a time it would have re-created it
-- (it was evicted in between): the same entries remain, with one eviction fewer
-- counted and announced, and that write reported as an update. A partition's Evicted
-- events then follow its Created events of the call.
local function defer_evictions()
  GROWN, LATER = {}, true
end

-- After the last write of a partition in such a call, which did not itself evict:
-- evicts for the call's earlier creations in the partition, and returns `r` (the
-- write's result) with those evictions added (so that the results' totals are the
-- call's).
local function evict_rest(r)
  local p = P or prefix()
  if not GROWN[p] then return r end
  GROWN[p] = nil
  EVICTED, EXPIRED = 0, 0
  evict()
  if EVICTED == 0 and EXPIRED == 0 then return r end
  return add_counts(r)
end

-- Stores `blob` under `text` as JCache does for a put; `cur` is the current blob or
-- false. Returns 1 when applied, 0 when a zero expiry kept a new entry out.
local function put(text, blob, keyonly, ttl, cur)
  local ft = nil
  if ttl >= 0 then ft = NOW + ttl end
  if not cur then
    void_lease(text)
    local fp = nil
    if KIND == 1 or KIND == 2 then fp = NOW + D end
    if KIND == 5 and CC and CC >= 0 then fp = NOW + CC end
    local dl = minv(minv(fp, ft), sliding(false))
    -- JSR-107: an entry whose creation expiry is zero is never stored.
    if dl and dl <= NOW then return 0 end
    local grew = store(text, blob, keyonly, dl, fp, ft, true)
    emit('C', blob)
    if grew == 1 then grown() end
    return 1
  end
  local oldfp = fixed_of(text)
  if not oldfp and KIND == 1 and not INDEXED then
    -- A Created entry without records (lean): its deadline is the policy's.
    local r = rcall('PTTL', ek(text))
    if r >= 0 then oldfp = NOW + r end
  end
  local fp = nil
  if KIND == 1 then fp = oldfp elseif KIND == 2 then fp = NOW + D end
  if KIND == 5 then
    -- The policy's deadline (which accesses may have moved) unless the update sets one.
    if CU and CU >= 0 then fp = NOW + CU else fp = oldfp end
  end
  local kept = nil
  if KIND == 3 then
    -- Accessed: an update keeps the access deadline (the entry's remaining time).
    local r = rcall('PTTL', ek(text))
    if r >= 0 then kept = NOW + r end
  end
  local dl = minv(minv(minv(fp, ft), sliding(true)), kept)
  -- One write at a time, an earlier creation of the batch would have evicted it: then
  -- this is a creation whose expiry is zero, which is never stored.
  if dl and dl <= NOW and settle(text) then return 0 end
  emit('U', blob)
  if dl and dl <= NOW then
    -- An update whose expiry is zero removes the entry.
    rcall('DEL', ek(text))
    forget(text)
    emit('X', blob)
    EXPIRED = EXPIRED + 1
  else
    store(text, blob, keyonly, dl, fp, ft, false)
  end
  return 1
end

-- An unconditional put whose deadline does not depend on the entry it replaces
-- (policies eternal, modified and touched: everything but created and accessed), and
-- is not zero: writes first (`SET ... GET`) and learns from that write whether an
-- entry existed, instead of reading it first. Effects as put(text, blob, keyonly, ttl,
-- current(text)). Returns 1 when an entry existed, 0 when not, nil when the caller
-- must use put() instead.
local function put_blind(text, blob, keyonly, ttl)
  if KIND == 1 or KIND == 3 or KIND == 5 then return nil end
  local ft = nil
  if ttl >= 0 then ft = NOW + ttl end
  local fp = nil
  if KIND == 2 then fp = NOW + D end
  -- For these policies a read's and a write's sliding deadlines are the same.
  if not BLIND_KNOWN then BLIND, BLIND_KNOWN = minv(fp, sliding(true)), true end
  local dl = BLIND
  if ft and not (dl and dl <= ft) then dl = ft end
  if dl and dl <= NOW then return nil end
  local k = (P or prefix()) .. 'e:' .. text
  -- Where this write keeps no records, a former write's would be read as this
  -- entry's (fixed_of): an update drops them. A text outside the index has none
  -- (whatever takes a text out of the index drops them), so a creation drops them only
  -- when the index write below finds the text indexed (`recheck`).
  local cur, had_deadline, recheck
  if dl and lean(fp, ft) then
    if dl ~= DL_NUMBER then DL_NUMBER, DL_ARG = dl, int(dl) end
    cur = rcall('SET', k, blob, 'PXAT', DL_ARG, 'GET')
    if cur then had_deadline = drop_records(text) else recheck = true end
  elseif dl then
    cur = rcall('SET', k, blob, 'PXAT', deadline(dl), 'GET')
    had_deadline = rcall('ZADD', DL or deadlines(), deadline(dl), text) == 0
    local a, b = '', ''
    if fp then a = int(fp) end
    if ft then b = int(ft) end
    set_records(text, a .. ',' .. b .. ',' .. keyonly)
  else
    cur = rcall('SET', k, blob, 'GET')
    if cur then had_deadline = drop_records(text) else recheck = true end
  end
  if cur then
    -- A live entry is indexed already; its score (last use) matters to LRU and
    -- max-idle only.
    if BUDGET > 0 or IDLE >= 0 then rcall('ZADD', IX, TICK_ARG or tick(), text) end
    if not QUIET then emit('U', blob) end
    return 1
  end
  if not LEASE_FREE then void_lease(text) end
  local grew
  if INDEXED then
    grew = rcall('ZADD', IX, TICK_ARG or tick(), text)
    if grew == 0 and recheck then had_deadline = drop_records(text) end
  else
    -- No index: records without a value are an entry Redis expired.
    if recheck then had_deadline = drop_records(text) end
    grew = 1
    if had_deadline then grew = 0 end
  end
  if grew == 0 and had_deadline then
    -- Indexed with a deadline but no value: Redis expired it; announce it as gone()
    -- does (the key-only blob of the same key is the one just written).
    emit('X', keyonly)
    EXPIRED = EXPIRED + 1
  elseif grew == 0 and IDLE >= 0 then
    -- The same, for an entry without records (lean): nobody to announce it to.
    EXPIRED = EXPIRED + 1
  end
  if not QUIET then emit('C', blob) end
  if grew == 1 then grown() end
  return 0
end

-- The current blob of `text`, or false; cleans up after an entry Redis expired.
local function current(text)
  local cur = rcall('GET', ek(text))
  if not cur then
    if INDEXED then
      if rcall('ZSCORE', IX, text) then gone(text) end
    elseif HAS_FX ~= false and rcall('HEXISTS', FX, text) == 1 then
      gone(text)
    end
  end
  return cur
end

local function remove(text, cur)
  if not cur then
    void_lease(text)
    return 0
  end
  rcall('DEL', ek(text))
  forget(text)
  emit('R', cur)
  return 1
end

-- A read of the live entry `text` (entry key `k`, blob `v`) as an access: slides the
-- expiry of the policies reads extend and refreshes the last use (the index score)
-- when the cache has a budget or a max-idle. Returns false when the access's expiry
-- is zero: the entry is removed (an `Expired` event), its value read one last time.
local function access(text, k, v)
  if READS_EXTEND then
    local fp, ft, keyonly = fixed_of(text)
    if KIND == 5 and CA and CA >= 0 then
      -- A custom policy's access sets the policy deadline, kept in the entry's
      -- fixed-deadline record (recorded for the next update). An entry without one (no
      -- deadline so far) announces its expiry with its whole blob.
      fp = NOW + CA
      keyonly = keyonly or v
      local b = ''
      if ft then b = int(ft) end
      set_records(text, int(fp) .. ',' .. b .. ',' .. keyonly)
    end
    local dl = minv(minv(fp, ft), sliding(false))
    if dl and dl <= NOW then
      rcall('DEL', k)
      forget(text)
      emit('X', v)
      EXPIRED = EXPIRED + 1
      return false
    elseif dl then
      rcall('PEXPIREAT', k, deadline(dl))
      -- An entry without records (lean, see store) keeps its deadline in the
      -- index score, which the next line moves.
      if keyonly then rcall('ZADD', DL or deadlines(), deadline(dl), text) end
    end
  end
  -- The index score is the last use: LRU order, and the max-idle deadline.
  if BUDGET > 0 or IDLE >= 0 then rcall('ZADD', IX, 'XX', tick(), text) end
  return true
end

local function reply(result)
  return {result, EVICTED, EXPIRED, EVENTS}
end

-- A custom policy is asked only for the durations a call applies (JSR-107 §6.4), and
-- only the client can ask it: a call first carries none, and one that needs a duration
-- it was not given replies `need <kind>` having changed nothing (but clean-up of an
-- entry Redis expired), and the client calls again with it (store/asking.rs). These
-- name the duration a call lacks, or nil; callers ask them only under a custom policy
-- (KIND 5), so that other caches' calls pay nothing for them.
-- An access of a live entry:
local function access_lacks()
  if not CA then return 'access' end
  return nil
end
-- A put (put()) of an entry whose current blob is `cur`: a creation or an update.
local function put_lacks(cur)
  if cur then
    if not CU then return 'update' end
  elseif not CC then
    return 'creation'
  end
  return nil
end
local function need(kind)
  return reply('need ' .. kind)
end

-- A write's reply as one integer when there are no events to return and no previous
-- value (the usual case): existed + 2 * applied + 4 * (evicted + 65536 * expired),
-- cheaper to build and to parse than reply()'s nested arrays (store/replies.rs, write_outcome).
local function write_reply(existed, applied, prev)
  if #EVENTS == 0 and not prev and EVICTED < 65536 then
    return existed + 2 * applied + 4 * (EVICTED + 65536 * EXPIRED)
  end
  return reply({existed, applied, prev})
end

-- fast_put's creation, after its `SET … XX` found no entry `k` (for a batch, that
-- answer proves the partition's keys are here, as put_batch.lua explains).
local function fast_create(k, text, blob)
  rcall('SET', k, blob)
  if not text then text = sub(k, #prefix() + 3) end
  void_lease(text)
  -- Records but no value: Redis expired it. gone() announces it and drops them.
  partition_keys()
  if HAS_FX ~= false and rcall('HEXISTS', FX, text) == 1 then gone(text) end
  emit('C', blob)
  return write_reply(0, 1, false)
end

-- The common put: unconditional, no TTL, no previous value, on a cache with no
-- expiry, no max-idle and no budget, so without an index (put.lua, put_batch.lua). Its
-- effects are those of write.lua for that case with less server work: no `setup` (no
-- `TIME`, no settings), and no reading before writing. `k` is the entry key of `text`
-- (nil: taken from `k`, as put_batch.lua passes no texts).
-- `guarded`: for a batch, which declares no keys: the write goes first, as a
-- `pcall`, and its success proves that every key the put touches is here (see
-- put_batch.lua); -1 when Redis refused it (nothing done).
-- The write is `SET … XX`, which answers whether the entry existed without a copy of
-- its old value (`SET … GET` would copy it into a Lua string); a creation, which it
-- leaves undone, then pays a second `SET` (fast_create).
-- Result: as write.lua's (write_reply).
local function fast_put(k, text, blob, guarded)
  -- SET without PXAT or KEEPTTL also drops any deadline the entry had (an eternal cache).
  local updated
  if guarded then
    updated = rpcall('SET', k, blob, 'XX')
    if type(updated) == 'table' and updated.err then return -1 end
  else
    updated = rcall('SET', k, blob, 'XX')
  end
  if updated then
    -- Should the entry have had a deadline (a put with a TTL before, while someone
    -- listened), its deadline records are now stale: the reaper drops them when they
    -- fall due and it finds the value without a deadline (reap.lua), which saves
    -- every update a call here.
    emit('U', blob)
    return write_reply(1, 1, false)
  end
  return fast_create(k, text, blob)
end

-- An unconditional put that wants no previous value (upsert.lua, upsert_batch.lua).
-- Result: as write.lua's (write_reply).
local function upsert(text, blob, ttl, keyonly)
  local existed = put_blind(text, blob, keyonly, ttl)
  if existed then return write_reply(existed, 1, false) end
  local cur = current(text)
  existed = 0
  if cur then existed = 1 end
  return write_reply(existed, put(text, blob, keyonly, ttl, cur), false)
end

-- Starts a batch call (put_batch.lua, upsert_batch.lua) whose entries that publish
-- go to the channels `channels()` lists (duplicates allowed; named only when needed)
-- with event mode `mode` (0..2: one per batch, as a deployment is a cluster or not):
-- asks once, for all those channels, which have subscribers, instead of once per
-- entry. First which partcache channels have any subscriber on this node at all
-- (`PUBSUB (SHARD)CHANNELS pc:*`, layout.rs): usually none, or a few, which answers
-- for the whole batch in one short reply; only when there are more than the batch
-- has entries, which of the batch's channels (`PUBSUB (SHARD)NUMSUB`, whose
-- arguments and reply cost the server per channel). `served`: whether the call
-- checks its partitions with served_here (put_batch.lua), which keeps per partition
-- what it found.
local function begin_batch(mode, entries, channels, served)
  SUBS, SERVED, RECORDS = {}, nil, nil
  if served then SERVED, RECORDS = {}, {} end
  GROWN = nil
  if mode == 0 or entries == 0 then return end
  local live
  if mode == 1 then
    live = rcall('PUBSUB', 'CHANNELS', 'pc:*')
  else
    live = rcall('PUBSUB', 'SHARDCHANNELS', 'pc:*')
  end
  if #live == 0 then return end
  channels = channels()
  if #live <= entries then
    for i = 1, #live do SUBS[live[i]] = true end
    return
  end
  local list, seen = {}, {}
  for i = 1, #channels do
    local channel = channels[i]
    if not seen[channel] then
      seen[channel] = true
      list[#list + 1] = channel
    end
  end
  local r
  if mode == 1 then
    r = rcall('PUBSUB', 'NUMSUB', unpack(list))
  else
    r = rcall('PUBSUB', 'SHARDNUMSUB', unpack(list))
  end
  for i = 1, #r, 2 do SUBS[r[i]] = r[i + 1] > 0 end
end

-- Whether every key of the partition with key prefix `prefix` is served here right
-- now, for the batch functions, which declare no keys (put_batch.lua,
-- upsert_batch.lua). Asked once per partition and call, with an `EXISTS` of a key of
-- the partition that never exists (`<prefix>~`) and of its `<prefix>fx`: Redis refuses
-- it for a slot this node does not serve (MOVED) and for one being migrated away (ASK
-- or TRYAGAIN, as a key is missing), and answers only for a slot that is wholly here,
-- which it stays until the call ends. The answer also tells whether the partition has
-- any fixed-deadline records (HAS_FX).
local function served_here(prefix)
  local served = SERVED[prefix]
  if served == nil then
    local here = rpcall('EXISTS', prefix .. '~', prefix .. 'fx')
    served = not (type(here) == 'table' and here.err)
    SERVED[prefix] = served
    if served then RECORDS[prefix] = here == 1 end
  end
  return served
end

-- The names of a partition's index, fixed-deadline records and never-present key
-- (served_here), by key prefix, kept across calls: a batch's entries usually have a
-- partition each, so a call rarely names one twice, but the calls of a node name the
-- same few hundred again and again, and a concatenation costs the server about 750
-- instructions (and as much again to collect), a lookup about 50. Forgotten all at
-- once when NAMES_MAX prefixes are named (a node that serves many caches).
local NAMES_MAX = 2048
local IX_OF, FX_OF, NONE_OF, NAMED = {}, {}, {}, 0
local function name_partition(p)
  if NAMED >= NAMES_MAX then IX_OF, FX_OF, NONE_OF, NAMED = {}, {}, {}, 0 end
  NAMED = NAMED + 1
  local ix = p .. 'ix'
  IX_OF[p], FX_OF[p], NONE_OF[p] = ix, p .. 'fx', p .. '~'
  return ix
end

-- served_here for one entry `text` of an upsert batch, after setup_prefix: the same
-- check, with the entry's lease key added to the `EXISTS`. A count of 0, the common
-- case, then also says that the partition has no fixed-deadline records and the
-- entry no lease, which spares a creation's void_lease its call; any other count says
-- nothing more (records, a lease, or both). One call per entry instead of one per
-- partition, but entries of a batch rarely share a partition, and a creation saves one.
local function entry_served_here(text)
  local p = P
  IX = IX_OF[p] or name_partition(p)
  FX = FX_OF[p]
  local here = rpcall('EXISTS', NONE_OF[p], FX, p .. 'l:' .. text)
  if here == 0 then
    HAS_FX = false
    LEASE_FREE = true
    return true
  end
  return not (type(here) == 'table' and here.err)
end
