-- Apply one micro-batch of a pipeline's monitor state atomically, at most once.
--
-- KEYS[1] offsets hash   "<topic>:<partition>" -> last applied offset
-- KEYS[2] maxtime hash   "<partition>" -> largest event time seen
-- KEYS[3] bucket index   sorted set: bucket key -> bucket start
-- KEYS[4] meta hash      "floor" (idle watermark floor), "first" (oldest accepted time)
-- KEYS[5..] bucket hashes, in the order of doc.inc
-- ARGV[1] JSON {g: [[field, first, last, partition, maxtime, expected_prev]...],
--               min: time|nil, inc: [[start, [f, v, ...] ints, [f, v, ...] floats]...],
--               ttl: seconds, cut: start|nil}
-- Numbers that may exceed a double's exact range travel as strings.
--
-- Returns {status, offsets (flat), maxtimes (flat), floor|false, first|false}
-- status 1 applied; 0 refused because an offset in the batch was already applied or the
-- caller's last applied offset (expected_prev, -1 for none) is behind Redis's (the caller
-- drops applied events, refreshes its view and retries); -1 state lost (the caller had
-- applied offsets that Redis no longer holds: rebuild).
local doc = cjson.decode(ARGV[1])

local function result(status)
  return {status, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
          redis.call('HGET', KEYS[4], 'floor'), redis.call('HGET', KEYS[4], 'first')}
end

for _, g in ipairs(doc.g) do
  local cur = redis.call('HGET', KEYS[1], g[1])
  local prev = tonumber(g[6])
  if cur then
    cur = tonumber(cur)
    if cur < prev then
      -- Redis holds less than the caller applied: it restarted from an older snapshot
      return result(-1)
    elseif cur >= tonumber(g[2]) or cur > prev then
      -- Already applied, or applied further than the caller knows (another monitor had
      -- the partition): the caller takes the offsets, max times and floor returned here,
      -- judges lateness again with them and retries.
      return result(0)
    end
  elseif prev >= 0 then
    return result(-1)
  end
end

for i, inc in ipairs(doc.inc) do
  local key = KEYS[4 + i]
  local ints = inc[2]
  for j = 1, #ints, 2 do
    redis.call('HINCRBY', key, ints[j], ints[j + 1])
  end
  local floats = inc[3]
  for j = 1, #floats, 2 do
    redis.call('HINCRBYFLOAT', key, floats[j], floats[j + 1])
  end
  redis.call('EXPIRE', key, doc.ttl)
  redis.call('ZADD', KEYS[3], inc[1], key)
end

for _, g in ipairs(doc.g) do
  redis.call('HSET', KEYS[1], g[1], g[3])
  local cur = redis.call('HGET', KEYS[2], g[4])
  if (not cur) or tonumber(cur) < tonumber(g[5]) then
    redis.call('HSET', KEYS[2], g[4], g[5])
  end
end

if doc.min then
  local first = redis.call('HGET', KEYS[4], 'first')
  if (not first) or tonumber(first) > tonumber(doc.min) then
    redis.call('HSET', KEYS[4], 'first', doc.min)
  end
end

-- Buckets older than every open window can go: memory stays flat in the number of events.
if doc.cut then
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. doc.cut)
  for _, k in ipairs(old) do
    redis.call('DEL', k)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. doc.cut)
end

return result(1)
