-- Apply one micro-batch of a performance join atomically, at most once.
--
-- KEYS[1] offsets hash   "<topic>:<partition>" -> last applied offset (the guard)
-- KEYS[2] maxtime hash   "<partition>" -> largest prediction event time seen
-- KEYS[3] bucket index   sorted set: bucket key -> bucket start
-- KEYS[4] counters hash  predictions, labels, joined, relabeled, ... -> count
-- KEYS[5] dirty hash     bucket start -> changes since the last close
-- KEYS[6] pending zset   "<row>:<id>" of labels waiting for their prediction -> label time
-- KEYS[7] versions hash  bucket start -> changes applied (only grows: feedback_claim.lua
--                        refuses a window computed from buckets that changed since)
-- KEYS[8..] join records (doc.r) then bucket hashes (doc.b), addressed by index
-- ARGV[1] JSON {g: [[field, first, last, partition (-1: feedback), maxtime, prev]...],
--               r: [[key index, expected ("" = absent), new ("" = delete)]...],
--               b: [[key index, start, [field, value, ...]]...],
--               pa: [[member, score]...], pr: [member...], c: [[name, n]...],
--               ttl_r: seconds, ttl_b: seconds}
--
-- Returns {status, offsets (flat)}: 1 applied; 0 refused (an offset of the batch is already
-- applied, or Redis applied further than the caller knows: it drops applied events and
-- retries with the offsets returned); 2 conflict (a record changed since the caller read it,
-- e.g. another monitor joined the same id from another partition: read again and retry);
-- -1 state lost (Redis holds less than the caller applied).
local doc = cjson.decode(ARGV[1])

for _, g in ipairs(doc.g) do
  local cur = redis.call('HGET', KEYS[1], g[1])
  local prev = tonumber(g[6])
  if cur then
    cur = tonumber(cur)
    if cur < prev then
      return {-1, redis.call('HGETALL', KEYS[1])}
    elseif cur >= tonumber(g[2]) or cur > prev then
      return {0, redis.call('HGETALL', KEYS[1])}
    end
  elseif prev >= 0 then
    return {-1, redis.call('HGETALL', KEYS[1])}
  end
end

-- compare-and-set: every record must still be what the caller computed from
for _, r in ipairs(doc.r) do
  local cur = redis.call('GET', KEYS[r[1]]) or ''
  if cur ~= r[2] then
    return {2, redis.call('HGETALL', KEYS[1])}
  end
end

for _, r in ipairs(doc.r) do
  if r[3] == '' then
    redis.call('DEL', KEYS[r[1]])
  else
    redis.call('SET', KEYS[r[1]], r[3], 'EX', doc.ttl_r)
  end
end

for _, b in ipairs(doc.b) do
  local key = KEYS[b[1]]
  local f = b[3]
  for j = 1, #f, 2 do
    redis.call('HINCRBYFLOAT', key, f[j], f[j + 1])
  end
  redis.call('EXPIRE', key, doc.ttl_b)
  redis.call('ZADD', KEYS[3], b[2], key)
  redis.call('HINCRBY', KEYS[5], b[2], 1)
  redis.call('HINCRBY', KEYS[7], b[2], 1)
end

for _, p in ipairs(doc.pa) do
  redis.call('ZADD', KEYS[6], p[2], p[1])
end
for _, m in ipairs(doc.pr) do
  redis.call('ZREM', KEYS[6], m)
end
for _, c in ipairs(doc.c) do
  redis.call('HINCRBY', KEYS[4], c[1], c[2])
end

for _, g in ipairs(doc.g) do
  redis.call('HSET', KEYS[1], g[1], g[3])
  if tonumber(g[4]) >= 0 then
    local cur = redis.call('HGET', KEYS[2], g[4])
    if (not cur) or tonumber(cur) < tonumber(g[5]) then
      redis.call('HSET', KEYS[2], g[4], g[5])
    end
  end
end
return {1, redis.call('HGETALL', KEYS[1])}
