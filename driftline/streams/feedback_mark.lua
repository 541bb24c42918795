-- Record published performance windows; marks only move forward.
--
-- KEYS[1] marks hash    "closed" -> last closed window end, "r:<end>" -> "<revision>:<digest>"
--                       (the last claimed revision, feedback_claim.lua)
-- KEYS[2] dirty hash    bucket start -> changes since the last close
-- KEYS[3] bucket index  sorted set: bucket key -> bucket start
-- KEYS[4] pending zset  labels waiting for their prediction
-- KEYS[5] counters hash
-- KEYS[6] unpublished   hash "<end>:<revision>" -> body of claimed revisions not yet confirmed
-- KEYS[7] versions hash bucket start -> changes applied
-- ARGV[1] JSON {closed: end|nil, r: [[end, revision]...] (published), clean: [[start, n]...],
--               cut: start|nil, gone: [member...], keyprefix: "<base>:k:",
--               alerts: [[name, state JSON]...]}  (stored as "a:<name>" in the marks hash)
--
-- Published revisions leave the unpublished hash. Buckets starting before cut (older than
-- every window still revisable) are deleted, with their versions and revision marks; pending
-- labels in gone were published as unmatched and are dropped.
-- Returns the number of revisions recorded as published.
local doc = cjson.decode(ARGV[1])
if doc.closed then
  local cur = redis.call('HGET', KEYS[1], 'closed')
  if (not cur) or tonumber(cur) < tonumber(doc.closed) then
    redis.call('HSET', KEYS[1], 'closed', doc.closed)
  end
end
for _, a in ipairs(doc.alerts) do
  redis.call('HSET', KEYS[1], 'a:' .. a[1], a[2])
end
local n = 0
for _, r in ipairs(doc.r) do
  n = n + redis.call('HDEL', KEYS[6], r[1] .. ':' .. r[2])
end
-- changes counted while the caller was closing stay dirty for the next close
for _, c in ipairs(doc.clean) do
  if redis.call('HINCRBY', KEYS[2], c[1], -tonumber(c[2])) <= 0 then
    redis.call('HDEL', KEYS[2], c[1])
  end
end
if doc.cut then
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. doc.cut, 'WITHSCORES')
  for i = 1, #old, 2 do
    redis.call('DEL', old[i])
    redis.call('HDEL', KEYS[2], old[i + 1])
    redis.call('HDEL', KEYS[7], old[i + 1])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. doc.cut)
  local marks = redis.call('HKEYS', KEYS[1])
  for _, f in ipairs(marks) do
    local e = string.match(f, '^r:(%d+)$')
    if e and tonumber(e) < tonumber(doc.cut) then
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
for _, m in ipairs(doc.gone) do
  if redis.call('ZREM', KEYS[4], m) == 1 then
    local row, id = string.match(m, '^(%d+):(.*)$')
    redis.call('DEL', doc.keyprefix .. id .. ':' .. row)
    redis.call('HINCRBY', KEYS[5], 'unmatched', 1)
  end
end
return n
