-- wrk script for bench/memory-bound.sh: PUT distinct keys until COUNT
-- responses per thread, then stop. Env: SIZE (value bytes), COUNT
-- (responses per thread), MIX=1 (4 in 10 PUTs with ?ttl=30s, 1 in 10
-- requests a DELETE of a key written earlier).
local size = tonumber(os.getenv("SIZE") or "100")
local count = tonumber(os.getenv("COUNT") or "1000")
local mix = os.getenv("MIX") == "1"
local body = string.rep("v", size)
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local counter = 0
local responses = 0

request = function()
  counter = counter + 1
  local path = "/v1/kv/m/t" .. id .. ":" .. counter
  if mix then
    local r = counter % 10
    if r == 0 then
      return wrk.format("DELETE", "/v1/kv/m/t" .. id .. ":" .. (counter - 5))
    elseif r < 5 then
      return wrk.format("PUT", path .. "?ttl=30s", nil, body)
    end
  end
  return wrk.format("PUT", path, nil, body)
end

response = function(status, headers, body)
  responses = responses + 1
  if responses >= count then
    wrk.thread:stop()
  end
end
