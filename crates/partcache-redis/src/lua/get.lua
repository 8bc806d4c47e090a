-- Reads the entries ARGV[8..] (texts) as accesses: slides the expiry of the policies
-- reads extend and refreshes the last use (the index score) when the cache has a
-- budget or a max-idle.
-- Result: the blobs, nil for misses, in order.
local out = {}
for i = FIRST, #ARGV do
  local text = ARGV[i]
  local k = ek(text)
  local v = redis.call('GET', k)
  if v then
    local alive = true
    if READS_EXTEND then
      local fp, ft, keyonly = fixed_of(text)
      local dl = minv(minv(fp, ft), sliding(false))
      if dl and dl <= NOW then
        -- A read whose expiry is zero returns the value one last time.
        redis.call('DEL', k)
        forget(text)
        emit('X', v)
        EXPIRED = EXPIRED + 1
        alive = false
      elseif dl then
        redis.call('PEXPIREAT', k, int(dl))
        -- An entry without records (lean, see store) keeps its deadline in the
        -- index score, which the next line moves.
        if keyonly then redis.call('ZADD', DL, int(dl), text) end
      end
    end
    -- The index score is the last use: LRU order, and the max-idle deadline.
    if alive and (BUDGET > 0 or IDLE >= 0) then redis.call('ZADD', IX, 'XX', int(TICK), text) end
    out[#out + 1] = v
  else
    out[#out + 1] = false
  end
end
return reply(out)
