-- Cursor paging over sorted sets (standalone).

-- The rank in sorted set `key` of the first entry after the cursor (`score`, `member`) in
-- the set's order (by score then member; `rev`: both descending), for cursor paging. The
-- cursor's own entry gives it at once; if that entry left or moved since, the count of
-- entries before the cursor's score plus those of the same score (jobs of the same
-- millisecond) that come before its member.
local function rank_after(key, score, member, rev)
  local s = redis.call('ZSCORE', key, member)
  if s and tonumber(s) == score then
    if rev then
      return redis.call('ZREVRANK', key, member) + 1
    end
    return redis.call('ZRANK', key, member) + 1
  end
  local rank
  if rev then
    rank = redis.call('ZCOUNT', key, '(' .. score, '+inf')
  else
    rank = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  end
  local offset = 0
  while true do
    local group
    if rev then
      group = redis.call('ZREVRANGEBYSCORE', key, score, score, 'LIMIT', offset, 500)
    else
      group = redis.call('ZRANGEBYSCORE', key, score, score, 'LIMIT', offset, 500)
    end
    for _, m in ipairs(group) do
      if (rev and m < member) or (not rev and m > member) then
        return rank
      end
      rank = rank + 1
    end
    if #group < 500 then
      return rank
    end
    offset = offset + 500
  end
end
