-- wrk script: signed Standard Webhooks POSTs, each with its own webhook-id.
-- Signatures cannot be computed in wrk's Lua, so benches/webhooks.sh
-- precomputes them (python3 hmac) into $SIGNED_FILE:
--   line 1: the webhook-timestamp used for every request
--   line 2: the JSON body (the same for every request)
--   then:   "<webhook-id> <webhook-signature>" per request
-- Each wrk thread takes every Nth line ($WRK_THREADS), so ids never repeat
-- across threads; a thread that runs out starts over (duplicates, 200).

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  ids, sigs = {}, {}
  local i = 0
  for line in io.lines(os.getenv("SIGNED_FILE")) do
    if i == 0 then
      ts = line
    elseif i == 1 then
      body = line
    elseif (i - 2) % n == tid then
      local sp = line:find(" ", 1, true)
      ids[#ids + 1] = line:sub(1, sp - 1)
      sigs[#sigs + 1] = line:sub(sp + 1)
    end
    i = i + 1
  end
  idx = 0
end

function request()
  idx = idx + 1
  if idx > #ids then idx = 1 end
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = ids[idx],
    ["webhook-timestamp"] = ts,
    ["webhook-signature"] = sigs[idx],
  }, body)
end
