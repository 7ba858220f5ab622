"""The cluster's run slots in Redis: the scripts that take, hold, queue and refresh them.

A slot is a member of the `active` sorted set (and, with `--max-active-runs-per-owner`, of its
owner's set), scored by when it lapses on Redis's clock. Whoever has the run in hand keeps its
slot from lapsing, so a slot whose holder dies is given back without anyone's help:

- the API node that admits a run, while it stores it (its heartbeat, SLOT_LEASES leases);
- the queue, once the run's entry is added (QUEUED_SLOT_S, renewed when it is queued again);
- the executor that claimed it (its heartbeat, SLOT_LEASES leases), until the run ends.
"""

from __future__ import annotations

from typing import Final

#: A run held by a node (admitting or executing it) keeps its slot this many leases after
#: the node's last heartbeat.
SLOT_LEASES: Final = 3
#: A queued run holds its slot this long unless an executor claims it (and refreshes it).
QUEUED_SLOT_S: Final = 120.0
#: What the admission script answers when the cluster, or the run's owner, is full.
CLUSTER_FULL: Final = -1
OWNER_FULL: Final = -2

# Redis's clock, not ours: every node's slots lapse by the same one.
_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# An owner's set lives as long as its latest slot (a node that died leaves nothing behind).
_KEEP_OWNER_SET: Final = """
local function keep(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, math.floor(tonumber(last[2]))) end
end
"""
# Atomic: drop lapsed slots, refuse past a limit, take one. KEYS: the active set, then the
# owner's set when its runs are counted. ARGV: the limit, how long from now, the run, the
# owner's limit. Returns {1, taken}, or {-1, active} when the cluster is full, or {-2, active}
# when the owner is.
ADMIT: Final = (
    _NOW
    + _KEEP_OWNER_SET
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local active = redis.call('ZCARD', KEYS[1])
if active >= tonumber(ARGV[1]) then return {-1, active} end
local lapses = now + tonumber(ARGV[2])
if KEYS[2] then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local mine = redis.call('ZCARD', KEYS[2])
  if mine >= tonumber(ARGV[4]) then return {-2, mine} end
  redis.call('ZADD', KEYS[2], lapses, ARGV[3])
  keep(KEYS[2])
end
redis.call('ZADD', KEYS[1], lapses, ARGV[3])
return {1, active + 1}
"""
)
# ARGV: how long from now, whether only to lengthen slots still there ('held', for runs being
# admitted: a slot given back stays so, a queued one is not shortened) or to set them
# ('executing': they come back after Redis lost them), then the runs. KEYS: the active set,
# then the owner's set of each of the first #KEYS - 1 runs.
REFRESH: Final = (
    _NOW
    + _KEEP_OWNER_SET
    + """
local lapses = now + tonumber(ARGV[1])
local function add(key, run)
  if ARGV[2] == 'held' then
    redis.call('ZADD', key, 'XX', 'GT', lapses, run)
  else
    redis.call('ZADD', key, lapses, run)
  end
end
for i = 3, #ARGV do
  add(KEYS[1], ARGV[i])
  if KEYS[i - 1] then
    add(KEYS[i - 1], ARGV[i])
    keep(KEYS[i - 1])
  end
end
return #ARGV - 2
"""
)
# Atomic: the run's slot (and its owner's) held for the queue, then its entry. KEYS: the
# active set, the queue, then the owner's set when its runs are counted. ARGV: the run, how
# long from now. Returns the entry's id.
QUEUE: Final = (
    _NOW
    + _KEEP_OWNER_SET
    + """
local lapses = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], lapses, ARGV[1])
if KEYS[3] then
  redis.call('ZADD', KEYS[3], lapses, ARGV[1])
  keep(KEYS[3])
end
return redis.call('XADD', KEYS[2], '*', 'run', ARGV[1])
"""
)
