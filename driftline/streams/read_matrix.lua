-- Read chosen counters of one interval's buckets whose start is in [lo, hi), in one call.
--
-- KEYS[1] bucket index   sorted set: bucket key -> bucket start
-- ARGV[1] key prefix of the interval's buckets, "<prefix>:{<pipeline>}:b:<interval>:"
-- ARGV[2] lo, ARGV[3] hi (exclusive)
-- ARGV[4..] the counter fields wanted
--
-- Bucket keys share the pipeline's hash tag with the index, so they live in its slot.
-- Returns {keys, values}: values is flat, one entry per (key, field) in that order, with
-- "0" for a counter the bucket does not hold.
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '(' .. ARGV[3])
local prefix = ARGV[1]
local n = #prefix
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local keys, values = {}, {}
for _, k in ipairs(members) do
  if string.sub(k, 1, n) == prefix then
    keys[#keys + 1] = k
    local row = redis.call('HMGET', k, unpack(fields))
    for j = 1, #fields do
      values[#values + 1] = row[j] or '0'
    end
  end
end
return {keys, values}
