-- consul_ha: the original "Consul FFI" API for LuaJIT, on consul-ha's engine.
--
--   local consul_ha = require("consul_ha")
--   local client = assert(consul_ha.ConsulClient:new({ consul_url = "http://127.0.0.1:8500" }))
--   assert(client:kv_put("app/config", "v1"))
--   print(client:kv_get("app/config"))            --> v1
--
-- The library is libconsul_ha.so (crates/consul-ha-ffi), loaded from $CONSUL_HA_LIB when
-- set, else by name through the system's library search path. Every function returns
-- `nil, message` on failure and never raises. `simulate = true` runs the embedded sim in
-- this process (one store shared by every handle made with it).
--
-- Blocking calls wait at most `timeout` seconds (default 10). In an event loop that must
-- not block (OpenResty), use `client:submit(op, ...)` and `client:wait(ticket, sleep)`,
-- or poll `client:poll(ticket)` when `client:fd()` is readable. In OpenResty:
--
--   local client = consul_ha.ConsulClient:new({ consul_url = "http://127.0.0.1:8500" })
--   local ticket, err = client:submit("kv_get", "app/config")
--   if not ticket then return ngx.say("error: ", err) end
--   local value, err = client:wait(ticket, ngx.sleep)   -- yields to nginx between polls
--   ngx.say(value or err or "absent")

local ffi = require("ffi")

ffi.cdef(require("consul_ha_cdef"))

local C
do
    local path = os.getenv("CONSUL_HA_LIB")
    local ok, lib = pcall(ffi.load, path or "consul_ha")
    if not ok then
        error("consul_ha: cannot load " .. (path or "libconsul_ha.so") .. ": " .. tostring(lib), 0)
    end
    C = lib
end

local M = {}

M.ABI_VERSION = tonumber(C.CONSUL_HA_ABI_VERSION)
if tonumber(C.consul_ha_abi_version()) ~= M.ABI_VERSION then
    error(("consul_ha: library ABI %d, module expects %d"):format(
        tonumber(C.consul_ha_abi_version()), M.ABI_VERSION), 0)
end

local OK, NOT_FOUND, PENDING = 0, 1, 2

------------------------------------------------------------------------------------------
-- Small helpers.

local function status_name(st)
    return ffi.string(C.consul_ha_status_name(st))
end

-- The message of a failed call: the handle's error, or the status name.
local function failure(st, err_fn, handle)
    local msg = ""
    if handle ~= nil then
        local p = err_fn(handle)
        if p ~= nil then msg = ffi.string(p) end
    end
    if msg == "" then msg = status_name(st) end
    return nil, msg
end

local function check_string(v, name, allow_nul)
    if type(v) == "number" then v = tostring(v) end
    if type(v) ~= "string" then
        return nil, ("%s must be a string, not %s"):format(name, type(v))
    end
    if not allow_nul and v:find("\0", 1, true) then
        return nil, name .. " contains a NUL byte"
    end
    return v
end

local function check_number(v, name, min, max)
    if type(v) ~= "number" or v ~= v then
        return nil, ("%s must be a number, not %s"):format(name, type(v))
    end
    if v < min or v > max then
        return nil, ("%s %s is not in %s..%s"):format(name, tostring(v), tostring(min), tostring(max))
    end
    return v
end

-- Seconds (a Lua number, or nil for the default) to whole ms for the C ABI (0: default).
local function seconds_ms(v, name)
    if v == nil then return 0 end
    local n, err = check_number(v, name, 0.001, 3600)
    if not n then return nil, err end
    return math.floor(n * 1000 + 0.5)
end

local function check_opts(opts, name)
    if opts == nil then return {} end
    if type(opts) ~= "table" then
        return nil, ("%s options must be a table, not %s"):format(name, type(opts))
    end
    return opts
end

-- Calls f(...) and turns any raised error (a bad cdata conversion, a bug) into nil, msg.
local function protect(f)
    return function(...)
        local r = { pcall(f, ...) }
        if not r[1] then return nil, tostring(r[2]) end
        return unpack(r, 2, table.maxn(r))
    end
end

-- A method of `class` (named `name`): checks `self` first, then runs `f` protected.
local function method(class, name, f)
    return protect(function(self, ...)
        if getmetatable(self) ~= class or self.handle == nil then
            return nil, ("not an open %s (call it as x:method(...))"):format(name)
        end
        return f(self, ...)
    end)
end

local function take_buffer(out, len)
    if out[0] == nil then return nil end
    local s = len and ffi.string(out[0], len[0]) or ffi.string(out[0])
    C.consul_ha_free(out[0])
    out[0] = nil
    return s
end

------------------------------------------------------------------------------------------
-- JSON (what the library returns for structured answers).

local json_decode
do
    local escapes = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

    local function utf8_char(c)
        if c < 0x80 then return string.char(c) end
        if c < 0x800 then return string.char(0xC0 + math.floor(c / 64), 0x80 + c % 64) end
        if c < 0x10000 then
            return string.char(0xE0 + math.floor(c / 4096), 0x80 + math.floor(c / 64) % 64, 0x80 + c % 64)
        end
        return string.char(0xF0 + math.floor(c / 262144), 0x80 + math.floor(c / 4096) % 64,
            0x80 + math.floor(c / 64) % 64, 0x80 + c % 64)
    end

    local value

    local function skip(s, i)
        return (s:find("[^ \t\r\n]", i)) or #s + 1
    end

    local function str(s, i)
        local out, j = {}, i + 1
        while true do
            local c = s:sub(j, j)
            if c == "" then error("unterminated string") end
            if c == '"' then return table.concat(out), j + 1 end
            if c == "\\" then
                local e = s:sub(j + 1, j + 1)
                if e == "u" then
                    local cp = tonumber(s:sub(j + 2, j + 5), 16)
                    j = j + 6
                    if cp >= 0xD800 and cp < 0xDC00 and s:sub(j, j + 1) == "\\u" then
                        local lo = tonumber(s:sub(j + 2, j + 5), 16)
                        cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
                        j = j + 6
                    end
                    out[#out + 1] = utf8_char(cp)
                else
                    out[#out + 1] = escapes[e] or error("bad escape")
                    j = j + 2
                end
            else
                local k = s:find('["\\]', j) or #s + 1
                out[#out + 1] = s:sub(j, k - 1)
                j = k
            end
        end
    end

    value = function(s, i)
        i = skip(s, i)
        local c = s:sub(i, i)
        if c == "{" then
            local t = {}
            i = skip(s, i + 1)
            if s:sub(i, i) == "}" then return t, i + 1 end
            while true do
                local k
                k, i = str(s, skip(s, i))
                i = skip(s, i)
                if s:sub(i, i) ~= ":" then error("expected ':'") end
                t[k], i = value(s, i + 1)
                i = skip(s, i)
                local d = s:sub(i, i)
                if d == "}" then return t, i + 1 end
                if d ~= "," then error("expected ',' or '}'") end
                i = i + 1
            end
        elseif c == "[" then
            local t, n = {}, 0
            i = skip(s, i + 1)
            if s:sub(i, i) == "]" then return t, i + 1 end
            while true do
                n = n + 1
                t[n], i = value(s, i)
                i = skip(s, i)
                local d = s:sub(i, i)
                if d == "]" then return t, i + 1 end
                if d ~= "," then error("expected ',' or ']'") end
                i = i + 1
            end
        elseif c == '"' then
            return str(s, i)
        elseif s:sub(i, i + 3) == "true" then
            return true, i + 4
        elseif s:sub(i, i + 4) == "false" then
            return false, i + 5
        elseif s:sub(i, i + 3) == "null" then
            return nil, i + 4
        else
            local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
            if not num or num == "" then error("unexpected character at " .. i) end
            return tonumber(num), i + #num
        end
    end

    json_decode = function(s)
        local ok, v = pcall(value, s, 1)
        if not ok then return nil, "bad JSON from the library: " .. tostring(v) end
        return v
    end
end
M.json_decode = json_decode

------------------------------------------------------------------------------------------
-- ConsulClient

local ConsulClient = {}
ConsulClient.__index = ConsulClient
M.ConsulClient = ConsulClient

--- ConsulClient:new({consul_url=, timeout=, simulate=}) -> client | nil, message
ConsulClient.new = protect(function(_, opts)
    local o, err = check_opts(opts, "ConsulClient")
    if not o then return nil, err end
    local url = o.consul_url or "http://127.0.0.1:8500"
    url, err = check_string(url, "consul_url")
    if not url then return nil, err end
    local timeout_ms
    timeout_ms, err = seconds_ms(o.timeout, "timeout")
    if not timeout_ms then return nil, err end
    local out = ffi.new("ConsulHaClient *[1]")
    local eout = ffi.new("char *[1]")
    local st = C.consul_ha_client_new(url, timeout_ms, o.simulate == true, out, eout)
    if st ~= OK then
        return nil, take_buffer(eout) or status_name(st)
    end
    local self = setmetatable({}, ConsulClient)
    self.handle = ffi.gc(out[0], C.consul_ha_client_free)
    return self
end)

-- Runs a call on the client; `f(handle)` returns the status.
local function client_call(self, f)
    if getmetatable(self) ~= ConsulClient or self.handle == nil then
        return nil, "not an open ConsulClient (call it as client:method(...))"
    end
    local st = f(self.handle)
    if st == OK or st == NOT_FOUND then return st end
    return failure(st, C.consul_ha_client_error, self.handle)
end

--- client:kv_get(key) -> value | nil (absent) | nil, message
ConsulClient.kv_get = method(ConsulClient, "ConsulClient", function(self, key)
    local k, err = check_string(key, "key")
    if not k then return nil, err end
    local out, len = ffi.new("char *[1]"), ffi.new("size_t[1]")
    local st
    st, err = client_call(self, function(h) return C.consul_ha_kv_get(h, k, 0, out, len) end)
    if not st then return nil, err end
    if st == NOT_FOUND then return nil end
    return take_buffer(out, len)
end)

--- client:kv_put(key, value) -> true | nil, message
ConsulClient.kv_put = method(ConsulClient, "ConsulClient", function(self, key, value)
    local k, err = check_string(key, "key")
    if not k then return nil, err end
    local v
    v, err = check_string(value, "value", true)
    if not v then return nil, err end
    local st
    st, err = client_call(self, function(h) return C.consul_ha_kv_put(h, k, v, #v, 0) end)
    if not st then return nil, err end
    return true
end)

--- client:kv_delete(key) -> true | nil, message
ConsulClient.kv_delete = method(ConsulClient, "ConsulClient", function(self, key)
    local k, err = check_string(key, "key")
    if not k then return nil, err end
    local st
    st, err = client_call(self, function(h) return C.consul_ha_kv_delete(h, k, 0) end)
    if not st then return nil, err end
    return true
end)

--- client:register_service(name, address, port, tags) -> service id | nil, message
ConsulClient.register_service = method(ConsulClient, "ConsulClient", function(self, name, address, port, tags)
    local n, err = check_string(name, "name")
    if not n then return nil, err end
    local a
    a, err = check_string(address, "address")
    if not a then return nil, err end
    local p
    p, err = check_number(port, "port", 0, 65535)
    if not p then return nil, err end
    if p ~= math.floor(p) then return nil, "port must be a whole number" end
    tags = tags or {}
    if type(tags) ~= "table" then return nil, "tags must be a table of strings, not " .. type(tags) end
    local list = {}
    for i, t in ipairs(tags) do
        list[i], err = check_string(t, ("tags[%d]"):format(i))
        if not list[i] then return nil, err end
    end
    local ctags = ffi.new("const char *[?]", #list + 1)
    for i, t in ipairs(list) do ctags[i - 1] = t end
    local out = ffi.new("char *[1]")
    local st
    st, err = client_call(self, function(h)
        return C.consul_ha_register_service(h, n, a, p, ctags, #list, 0, out)
    end)
    if not st then return nil, err end
    return take_buffer(out)
end)

--- client:deregister_service(service_id) -> true | nil, message
ConsulClient.deregister_service = method(ConsulClient, "ConsulClient", function(self, service_id)
    local id, err = check_string(service_id, "service_id")
    if not id then return nil, err end
    local st
    st, err = client_call(self, function(h) return C.consul_ha_deregister_service(h, id, 0) end)
    if not st then return nil, err end
    return true
end)

--- client:discover_service(name) -> { {id=, name=, address=, port=, tags=, node=}, ... }
ConsulClient.discover_service = method(ConsulClient, "ConsulClient", function(self, name)
    local n, err = check_string(name, "name")
    if not n then return nil, err end
    local out = ffi.new("char *[1]")
    local st
    st, err = client_call(self, function(h) return C.consul_ha_discover_service(h, n, 0, out) end)
    if not st then return nil, err end
    return json_decode(take_buffer(out))
end)

--- client:create_session(name, ttl) -> session id | nil, message (ttl in seconds, optional)
ConsulClient.create_session = method(ConsulClient, "ConsulClient", function(self, name, ttl)
    local n, err = "", nil
    if name ~= nil then
        n, err = check_string(name, "name")
        if not n then return nil, err end
    end
    local t = 0
    if ttl ~= nil then
        t, err = check_number(ttl, "ttl", 0, 86400)
        if not t then return nil, err end
    end
    local out = ffi.new("char *[1]")
    local st
    st, err = client_call(self, function(h) return C.consul_ha_create_session(h, n, t, 0, out) end)
    if not st then return nil, err end
    return take_buffer(out)
end)

--- client:acquire_lock(key, session_id, value) -> true (held) | false (taken) | nil, message
ConsulClient.acquire_lock = method(ConsulClient, "ConsulClient", function(self, key, session_id, value)
    local k, err = check_string(key, "key")
    if not k then return nil, err end
    local s
    s, err = check_string(session_id, "session_id")
    if not s then return nil, err end
    local v = ""
    if value ~= nil then
        v, err = check_string(value, "value", true)
        if not v then return nil, err end
    end
    local got = ffi.new("bool[1]")
    local st
    st, err = client_call(self, function(h)
        return C.consul_ha_acquire_lock(h, k, s, v, #v, 0, got)
    end)
    if not st then return nil, err end
    return got[0] == true
end)

--- client:release_lock(key, session_id) -> true | false (not held by it) | nil, message
ConsulClient.release_lock = method(ConsulClient, "ConsulClient", function(self, key, session_id)
    local k, err = check_string(key, "key")
    if not k then return nil, err end
    local s
    s, err = check_string(session_id, "session_id")
    if not s then return nil, err end
    local done = ffi.new("bool[1]")
    local st
    st, err = client_call(self, function(h) return C.consul_ha_release_lock(h, k, s, 0, done) end)
    if not st then return nil, err end
    return done[0] == true
end)

--- client:submit(op, ...) -> ticket | nil, message. Starts the call in the background;
--- `op` is a method name above ("kv_get", "kv_put", ...), the arguments as for it (tags
--- as trailing arguments).
ConsulClient.submit = method(ConsulClient, "ConsulClient", function(self, op, ...)
    local name, err = check_string(op, "op")
    if not name then return nil, err end
    local args = { ... }
    local n = select("#", ...)
    local cargs = ffi.new("const uint8_t *[?]", n + 1)
    local lens = ffi.new("size_t[?]", n + 1)
    for i = 1, n do
        local a = args[i]
        if type(a) == "number" then a = tostring(a) end
        if type(a) ~= "string" then
            return nil, ("argument %d must be a string or number, not %s"):format(i, type(a))
        end
        args[i] = a
        cargs[i - 1] = ffi.cast("const uint8_t *", a)
        lens[i - 1] = #a
    end
    local ticket = ffi.new("uint64_t[1]")
    local st
    st, err = client_call(self, function(h)
        return C.consul_ha_client_submit(h, name, cargs, lens, n, ticket)
    end)
    if not st then return nil, err end
    self.ops = self.ops or {}
    self.ops[tonumber(ticket[0])] = name
    return ticket[0]
end)

--- client:poll(ticket) -> false (still running) | true, result | nil, message.
--- `result` is what the blocking form returns (value, id, decoded list, boolean; nil for
--- an absent key).
ConsulClient.poll = method(ConsulClient, "ConsulClient", function(self, ticket)
    if type(ticket) ~= "cdata" and type(ticket) ~= "number" then
        return nil, "ticket must be what submit returned, not " .. type(ticket)
    end
    local out, len = ffi.new("char *[1]"), ffi.new("size_t[1]")
    if getmetatable(self) ~= ConsulClient or self.handle == nil then
        return nil, "not an open ConsulClient"
    end
    local st = C.consul_ha_client_poll(self.handle, ticket, out, len)
    if st == PENDING then return false end
    local op = self.ops and self.ops[tonumber(ticket)]
    if op then self.ops[tonumber(ticket)] = nil end
    if st == NOT_FOUND then return true, nil end
    if st ~= OK then return failure(st, C.consul_ha_client_error, self.handle) end
    local s = take_buffer(out, len)
    if op == "acquire_lock" or op == "release_lock" then return true, s == "true" end
    if op == "discover_service" then return true, json_decode(s) end
    if op == "kv_put" or op == "kv_delete" or op == "deregister_service" then return true, true end
    return true, s
end)

--- client:wait(ticket, sleep, limit) -> result | nil, message. Polls until done,
--- calling `sleep(0.005)` between polls (pass `ngx.sleep` in OpenResty so the worker
--- keeps serving); gives up after `limit` seconds (default: 30).
ConsulClient.wait = method(ConsulClient, "ConsulClient", function(self, ticket, sleep, limit)
    if type(sleep) ~= "function" then return nil, "sleep must be a function" end
    limit = limit or 30
    local waited = 0
    while true do
        local done, result = self:poll(ticket)
        if done == nil then return nil, result end
        if done then return result end
        if waited >= limit then return nil, "wait: not done within " .. limit .. " s" end
        sleep(0.005)
        waited = waited + 0.005
    end
end)

--- client:fd() -> a file descriptor readable while a submitted call waits to be polled.
function ConsulClient:fd()
    if getmetatable(self) ~= ConsulClient or self.handle == nil then
        return nil, "not an open ConsulClient"
    end
    return tonumber(C.consul_ha_client_fd(self.handle))
end

--- client:close(): frees the client now (calls still submitted are cancelled).
function ConsulClient:close()
    if getmetatable(self) == ConsulClient and self.handle ~= nil then
        C.consul_ha_client_free(ffi.gc(self.handle, nil))
        self.handle = nil
    end
    return true
end

------------------------------------------------------------------------------------------
-- ConsulHACluster

local ConsulHACluster = {}
ConsulHACluster.__index = ConsulHACluster
M.ConsulHACluster = ConsulHACluster

--- ConsulHACluster:new({consul_url=, node_id=, node_address=, heartbeat_interval=,
---   simulate=, service=, zone=, session_ttl=, lock_delay=, timeout=}) -> cluster | nil, message
--- Times in seconds. Not started yet: call start().
ConsulHACluster.new = protect(function(_, opts)
    local o, err = check_opts(opts, "ConsulHACluster")
    if not o then return nil, err end
    local strings = {}
    for _, f in ipairs({ "consul_url", "service", "node_id", "node_address", "zone" }) do
        if o[f] ~= nil then
            strings[f], err = check_string(o[f], f)
            if not strings[f] then return nil, err end
        end
    end
    local times = {}
    for _, f in ipairs({ "heartbeat_interval", "session_ttl", "lock_delay", "timeout" }) do
        times[f], err = seconds_ms(o[f], f)
        if not times[f] then return nil, err end
    end
    local copts = ffi.new("ConsulHaClusterOptions")
    copts.consul_url = strings.consul_url
    copts.service = strings.service
    copts.node_id = strings.node_id
    copts.node_address = strings.node_address
    copts.zone = strings.zone
    copts.heartbeat_interval_ms = times.heartbeat_interval
    copts.session_ttl_ms = times.session_ttl
    copts.lock_delay_ms = times.lock_delay
    copts.timeout_ms = times.timeout
    copts.simulate = o.simulate == true
    local out, eout = ffi.new("ConsulHaCluster *[1]"), ffi.new("char *[1]")
    local st = C.consul_ha_cluster_new(copts, out, eout)
    if st ~= OK then return nil, take_buffer(eout) or status_name(st) end
    local self = setmetatable({ node_id = strings.node_id }, ConsulHACluster)
    self.handle = ffi.gc(out[0], C.consul_ha_cluster_free)
    return self
end)

local function cluster_call(self, f)
    if getmetatable(self) ~= ConsulHACluster or self.handle == nil then
        return nil, "not an open ConsulHACluster (call it as cluster:method(...))"
    end
    local st = f(self.handle)
    if st == OK or st == NOT_FOUND then return st end
    return failure(st, C.consul_ha_cluster_error, self.handle)
end

--- cluster:start() -> true | nil, message: joins and starts heartbeat, election, membership.
ConsulHACluster.start = method(ConsulHACluster, "ConsulHACluster", function(self)
    local st, err = cluster_call(self, function(h) return C.consul_ha_cluster_start(h, 0) end)
    if not st then return nil, err end
    return true
end)

--- cluster:stop() -> true | nil, message: leaves gracefully (leadership moves at once).
ConsulHACluster.stop = method(ConsulHACluster, "ConsulHACluster", function(self)
    local st, err = cluster_call(self, function(h) return C.consul_ha_cluster_stop(h, 0) end)
    if not st then return nil, err end
    return true
end)

--- cluster:is_leader() -> boolean | nil, message
ConsulHACluster.is_leader = method(ConsulHACluster, "ConsulHACluster", function(self)
    local out = ffi.new("bool[1]")
    local st, err = cluster_call(self, function(h) return C.consul_ha_cluster_is_leader(h, out) end)
    if not st then return nil, err end
    return out[0] == true
end)

local function cluster_json(self, f)
    local out = ffi.new("char *[1]")
    local st, err = cluster_call(self, function(h) return f(h, out) end)
    if not st then return nil, err end
    if st == NOT_FOUND then return nil end
    return json_decode(take_buffer(out))
end

--- cluster:get_leader_info() -> {node_id=, address=, fencing_token=, session=} | nil (none yet)
ConsulHACluster.get_leader_info = method(ConsulHACluster, "ConsulHACluster", function(self)
    return cluster_json(self, C.consul_ha_cluster_leader_info)
end)

--- cluster:get_node_for_key(key) -> {id=, address=, zone=, weight=, health=} | nil (empty ring)
ConsulHACluster.get_node_for_key = method(ConsulHACluster, "ConsulHACluster", function(self, key)
    local k, err = check_string(key, "key", true)
    if not k then return nil, err end
    return cluster_json(self, function(h, out)
        return C.consul_ha_cluster_node_for_key(h, k, #k, out)
    end)
end)

--- cluster:get_nodes() -> { {id=, address=, zone=, weight=, health=}, ... }
ConsulHACluster.get_nodes = method(ConsulHACluster, "ConsulHACluster", function(self)
    return cluster_json(self, C.consul_ha_cluster_nodes)
end)

--- cluster:destroy(): frees the handle now. A started member that was not stopped is
--- abandoned like a crashed process: Consul fails it after its TTL.
function ConsulHACluster:destroy()
    if getmetatable(self) == ConsulHACluster and self.handle ~= nil then
        C.consul_ha_cluster_free(ffi.gc(self.handle, nil))
        self.handle = nil
    end
    return true
end

------------------------------------------------------------------------------------------
-- ProductionManager: a cluster member plus shards, replicas and routing.

local ProductionManager = {}
ProductionManager.__index = ProductionManager
M.ProductionManager = ProductionManager

--- ProductionManager:new({ <ConsulHACluster options>, shards=, replicas=,
---   rebalance_delay=, copy_time= }) -> manager | nil, message. Not started yet.
ProductionManager.new = protect(function(_, opts)
    local o, err = check_opts(opts, "ProductionManager")
    if not o then return nil, err end
    local mopts = ffi.new("ConsulHaManagerOptions")
    for _, f in ipairs({ "shards", "replicas" }) do
        if o[f] ~= nil then
            local n
            n, err = check_number(o[f], f, 1, 4096)
            if not n then return nil, err end
            mopts[f] = n
        end
    end
    local ms
    ms, err = seconds_ms(o.rebalance_delay, "rebalance_delay")
    if not ms then return nil, err end
    mopts.rebalance_delay_ms = ms
    ms, err = seconds_ms(o.copy_time, "copy_time")
    if not ms then return nil, err end
    mopts.copy_time_ms = ms
    local cluster
    cluster, err = ConsulHACluster:new(o)
    if not cluster then return nil, err end
    return setmetatable({ cluster = cluster, options = mopts }, ProductionManager)
end)

local function manager_of(self)
    if getmetatable(self) ~= ProductionManager then
        return nil, "not a ProductionManager (call it as manager:method(...))"
    end
    if self.handle == nil then return nil, "the manager is not started" end
    return self.handle
end

--- manager:start() -> true | nil, message: joins the cluster, then manages shards.
ProductionManager.start = protect(function(self)
    if getmetatable(self) ~= ProductionManager then return nil, "not a ProductionManager" end
    if self.handle ~= nil then return nil, "the manager is already started" end
    local ok, err = self.cluster:start()
    if not ok then return nil, err end
    local out, eout = ffi.new("ConsulHaManager *[1]"), ffi.new("char *[1]")
    local st = C.consul_ha_manager_start(self.cluster.handle, self.options, out, eout)
    if st ~= OK then
        local msg = take_buffer(eout) or status_name(st)
        self.cluster:stop()
        return nil, msg
    end
    self.handle = ffi.gc(out[0], C.consul_ha_manager_free)
    return true
end)

--- manager:stop() -> true | nil, message: stops managing and leaves the cluster.
ProductionManager.stop = protect(function(self)
    local h, err = manager_of(self)
    if not h then return nil, err end
    C.consul_ha_manager_free(ffi.gc(h, nil))
    self.handle = nil
    return self.cluster:stop()
end)

local function manager_json(self, f)
    local h, err = manager_of(self)
    if not h then return nil, err end
    local out = ffi.new("char *[1]")
    local st = f(h, out)
    if st == NOT_FOUND then return nil end
    if st ~= OK then return failure(st, C.consul_ha_manager_error, h) end
    return json_decode(take_buffer(out))
end

--- manager:route(key) -> {shard=, primary=, replicas={{node, in_sync}...}, epoch=, version=}
--- | nil (no placement yet) | nil, message
ProductionManager.route = protect(function(self, key)
    local k, err = check_string(key, "key", true)
    if not k then return nil, err end
    return manager_json(self, function(h, out) return C.consul_ha_manager_route(h, k, #k, out) end)
end)

--- manager:health() -> {table_version=, healthy=, under_replicated=, unavailable=, shards=, nodes=}
ProductionManager.health = protect(function(self)
    return manager_json(self, C.consul_ha_manager_health)
end)

--- manager:is_leader(), manager:get_leader_info(), manager:get_nodes(): of its member.
function ProductionManager:is_leader() return self.cluster:is_leader() end
function ProductionManager:get_leader_info() return self.cluster:get_leader_info() end
function ProductionManager:get_nodes() return self.cluster:get_nodes() end

--- consul_ha.shutdown(): stops the library's runtime (free every handle first).
function M.shutdown()
    C.consul_ha_shutdown()
end

return M
