-- wrk script: streaming chat completion (stream=true + stream_options.include_usage, model gpt-5.2, max_tokens 64).
-- Extra headers (Authorization, Portkey routing) are given on the wrk command line with -H.
-- The response hook counts non-2xx answers and 2xx streams that do not end in "data: [DONE]" or carry no usage object;
-- done() prints one machine-readable line "WRKJSON {...}" that bench/run.py parses.
wrk.method = "POST"
-- BENCH_BODY_FILE: a whole request body instead (the prompt-size runs); BENCH_MODEL: another model.
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
else
  wrk.body = string.format('{"model":"%s","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}}', os.getenv("BENCH_MODEL") or "gpt-5.2")
end
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  bad = 0
  first_bad = ""
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
  elseif not (body and string.find(body, "data: [DONE]", math.max(1, #body - 40), true)
              and string.find(body, '"usage":%s*{')) then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
  end
end

function done(summary, latency, requests)
  local n2, b, fb = 0, 0, ""
  for _, t in ipairs(threads) do
    n2 = n2 + (t:get("non2xx") or 0)
    b = b + (t:get("bad") or 0)
    local f = t:get("first_bad")
    if fb == "" and f then fb = f end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,' ..
    '"err_status":%d,"non2xx":%d,"bad_body":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.timeout, e.status, n2, b))
  if fb ~= "" then io.write("WRKFIRSTBAD " .. string.gsub(fb, "[\r\n]", " ") .. "\n") end
end
