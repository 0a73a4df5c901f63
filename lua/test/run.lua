-- The LuaJIT module's tests: every function, bad arguments (`nil, message`, never a
-- crash), the non-blocking form, and a three-node cluster on the embedded sim that elects
-- a leader and fails over. Run by `cargo xtask lua` (CONSUL_HA_LIB, LUA_PATH set there):
--   luajit test/run.lua
-- Exits non-zero on the first failure; every wait is bounded.
--
-- With CONSUL_URL set, the same tests run against that agent instead of the embedded sim
-- (`cargo xtask lua` runs them on the sim in-process, on `consul-ha agent -dev` and on a
-- real Consul 1.8.7 dev agent, both with session_ttl_min 1s for the failover test).

local ffi = require("ffi")
local consul_ha = require("consul_ha")

ffi.cdef([[
    struct timespec_t { long tv_sec; long tv_nsec; };
    int clock_gettime(int clk_id, struct timespec_t *tp);
    int poll(void *fds, unsigned long nfds, int timeout);
]])

local function now()
    local t = ffi.new("struct timespec_t")
    ffi.C.clock_gettime(1, t) -- CLOCK_MONOTONIC
    return tonumber(t.tv_sec) + tonumber(t.tv_nsec) / 1e9
end

local function sleep(s)
    ffi.C.poll(nil, 0, math.floor(s * 1000))
end

local passed, current = 0, "?"

local function check(cond, what)
    if not cond then
        io.stderr:write(("FAIL [%s]: %s\n"):format(current, what))
        os.exit(1)
    end
    passed = passed + 1
end

-- `nil, message` with a non-empty message (optionally containing `part`).
local function fails(what, part, v, msg)
    check(v == nil, what .. ": returned " .. tostring(v) .. " instead of nil")
    check(type(msg) == "string" and #msg > 0, what .. ": no message")
    if part then
        check(msg:find(part, 1, true) ~= nil, what .. ": message " .. msg .. " lacks " .. part)
    end
end

local function wait_until(limit, what, cond)
    local t0 = now()
    while not cond() do
        check(now() - t0 < limit, what .. " within " .. limit .. " s")
        sleep(0.05)
    end
    return now() - t0
end

local function test(name, f)
    current = name
    local t0 = now()
    f()
    io.write(("ok   %-44s %.2f s\n"):format(name, now() - t0))
end

local ConsulClient = consul_ha.ConsulClient
local ConsulHACluster = consul_ha.ConsulHACluster

-- Where the tests run: an agent at CONSUL_URL, or the embedded sim.
local URL = os.getenv("CONSUL_URL")
local SIMULATE = URL == nil
io.write("backend: " .. (URL or "embedded sim") .. "\n")

test("abi version", function()
    check(consul_ha.ABI_VERSION == 1, "ABI 1")
end)

local client

test("ConsulClient:new", function()
    client = ConsulClient:new({ consul_url = URL, simulate = SIMULATE, timeout = 5 })
    check(client ~= nil, "a client")
    fails("options not a table", "must be a table", ConsulClient:new("x"))
    fails("timeout a string", "timeout must be a number", ConsulClient:new({ timeout = "5" }))
    fails("timeout negative", "not in", ConsulClient:new({ timeout = -1 }))
    fails("url a table", "consul_url must be a string", ConsulClient:new({ consul_url = {} }))
    fails("url not a url", nil, ConsulClient:new({ consul_url = "not a url" }))
    local nobody = ConsulClient:new({ consul_url = "http://127.0.0.1:1", timeout = 0.5 })
    check(nobody ~= nil, "a client of nothing is made")
    local t0 = now()
    fails("kv_get of nothing", nil, nobody:kv_get("k"))
    check(now() - t0 < 3, "fails within its timeout")
    nobody:close()
    fails("a closed client", "not an open ConsulClient", nobody:kv_get("k"))
end)

test("kv_get kv_put kv_delete", function()
    check(client:kv_put("lua/k", "v1") == true, "put")
    check(client:kv_get("lua/k") == "v1", "get")
    check(client:kv_put("lua/bin", "a\0b") == true, "put with NUL")
    check(client:kv_get("lua/bin") == "a\0b", "NUL survives")
    check(client:kv_put("lua/n", 42) == true, "a number value")
    check(client:kv_get("lua/n") == "42", "as its string")
    check(client:kv_put("lua/empty", "") == true, "empty value")
    check(client:kv_get("lua/empty") == "", "empty back")
    check(client:kv_delete("lua/k") == true, "delete")
    local v, err = client:kv_get("lua/k")
    check(v == nil and err == nil, "absent: nil without a message")
    check(client:kv_delete("lua/never") == true, "deleting an absent key succeeds")
end)

test("kv bad arguments", function()
    fails("nil key", "key must be a string", client:kv_get(nil))
    fails("table key", "key must be a string", client:kv_get({}))
    fails("function key", "key must be a string", client:kv_put(print, "v"))
    fails("NUL in key", "NUL", client:kv_get("a\0b"))
    fails("nil value", "value must be a string", client:kv_put("k", nil))
    fails("boolean value", "value must be a string", client:kv_put("k", true))
    fails("huge value", "", client:kv_put("lua/huge", string.rep("x", 600 * 1024)))
    local huge_key = string.rep("k", 2 * 1024 * 1024)
    local v, err = client:kv_get(huge_key)
    check(v == nil, "a 2 MiB key finds nothing")
    check(err == nil or type(err) == "string", "and may fail with a message")
    fails("not a method call", "not an open ConsulClient", ConsulClient.kv_get("k"))
    fails("key with bad UTF-8", "UTF-8", client:kv_get("\255\254"))
end)

test("register discover deregister", function()
    local id = client:register_service("lua-web", "10.1.0.5", 8080, { "primary", "v1" })
    check(id == "lua-web-10.1.0.5-8080", "the id: " .. tostring(id))
    local list
    wait_until(5, "one instance", function()
        list = client:discover_service("lua-web")
        return type(list) == "table" and #list == 1
    end)
    check(list[1].address == "10.1.0.5" and list[1].port == 8080, "address and port")
    check(list[1].tags[1] == "primary" and list[1].tags[2] == "v1", "tags")
    check(client:register_service("lua-web", "10.1.0.6", 8080) ~= nil, "no tags")
    wait_until(5, "two instances", function() return #client:discover_service("lua-web") == 2 end)
    check(client:deregister_service(id) == true, "deregister")
    check(client:deregister_service("lua-web-10.1.0.6-8080") == true, "deregister the other")
    wait_until(5, "none left", function() return #client:discover_service("lua-web") == 0 end)
    fails("port a string", "port must be a number", client:register_service("s", "a", "80"))
    fails("port too big", "not in", client:register_service("s", "a", 70000))
    fails("port fractional", "whole", client:register_service("s", "a", 80.5))
    fails("tags a string", "tags must be a table", client:register_service("s", "a", 80, "t"))
    fails("a tag a table", "tags[1]", client:register_service("s", "a", 80, { {} }))
    fails("nil name", "name must be a string", client:register_service(nil, "a", 80))
    fails("nil address", "address must be a string", client:register_service("s", nil, 80))
    fails("nil id", "service_id", client:deregister_service(nil))
    fails("discover nil", "name", client:discover_service(nil))
end)

test("create_session acquire_lock release_lock", function()
    local s1 = client:create_session("lua-a", 15)
    local s2 = client:create_session("lua-b")
    check(type(s1) == "string" and #s1 == 36, "a session id")
    check(type(s2) == "string" and s1 ~= s2, "another one")
    check(client:acquire_lock("lua/lock", s1, "a") == true, "s1 takes it")
    check(client:acquire_lock("lua/lock", s2, "b") == false, "s2 cannot")
    check(client:kv_get("lua/lock") == "a", "the holder's value")
    check(client:release_lock("lua/lock", s2) == false, "s2 does not hold it")
    check(client:release_lock("lua/lock", s1) == true, "s1 releases")
    check(client:acquire_lock("lua/lock", s2) == true, "then s2 takes it")
    fails("ttl a string", "ttl must be a number", client:create_session("x", "10"))
    fails("ttl too long", "not in", client:create_session("x", 100000))
    fails("name a table", "name must be a string", client:create_session({}))
    fails("no session", "session_id", client:acquire_lock("lua/lock", nil))
    fails("unknown session", nil, client:acquire_lock("lua/lock", "not-a-session"))
    fails("release nil key", "key", client:release_lock(nil, s1))
end)

test("submit poll wait fd", function()
    local t = client:submit("kv_put", "lua/nb", "v")
    check(t ~= nil, "submitted")
    check(client:wait(t, sleep) == true, "put done")
    t = client:submit("kv_get", "lua/nb")
    local fd = client:fd()
    check(type(fd) == "number" and fd >= 0, "an fd")
    local done, value
    wait_until(5, "the get", function()
        done, value = client:poll(t)
        return done
    end)
    check(value == "v", "the value")
    fails("polled twice", "not pending", client:poll(t))
    t = client:submit("acquire_lock", "lua/nb-lock", client:create_session("nb"))
    check(client:wait(t, sleep) == true, "a lock over submit")
    t = client:submit("discover_service", "nothing-here")
    local list = client:wait(t, sleep)
    check(type(list) == "table" and #list == 0, "an empty list")
    t = client:submit("kv_get", "lua/absent")
    local v, err = client:wait(t, sleep)
    check(v == nil and err == nil, "absent over submit")
    fails("unknown op", "unknown call", client:submit("drop_everything"))
    fails("wrong arity", "arguments", client:submit("kv_get"))
    fails("bad arg type", "argument 2", client:submit("kv_put", "k", {}))
    fails("bad ticket", "ticket", client:poll("x"))
    fails("wait without sleep", "sleep", client:wait(t, nil))
    t = client:submit("kv_put", "lua/huge", string.rep("x", 600 * 1024))
    fails("a failing submitted call", nil, client:wait(t, sleep))
end)

test("ConsulHACluster bad arguments", function()
    fails("no node_id", "node_id is NULL", ConsulHACluster:new({ node_address = "h:1", simulate = true }))
    fails("bad node_id", "node_id", ConsulHACluster:new({ node_id = "a b", node_address = "h:1", simulate = true }))
    fails("bad address", "node_address", ConsulHACluster:new({ node_id = "a", node_address = "nohost", simulate = true }))
    fails("heartbeat a string", "heartbeat_interval", ConsulHACluster:new({ node_id = "a", node_address = "h:1", heartbeat_interval = "1" }))
    fails("options a number", "must be a table", ConsulHACluster:new(5))
    fails("huge node_id", "node_id", ConsulHACluster:new({ node_id = string.rep("n", 1024 * 1024), node_address = "h:1", simulate = true }))
    fails("huge service", "service", ConsulHACluster:new({ service = string.rep("s", 1024 * 1024), node_id = "a", node_address = "h:1", simulate = true }))
    local c = ConsulHACluster:new({ node_id = "idle", node_address = "h:1", consul_url = URL, simulate = SIMULATE })
    check(c ~= nil, "made")
    fails("not started: is_leader", "not started", c:is_leader())
    fails("not started: stop", "not started", c:stop())
    fails("node_for_key nil", "key must be a string", c:get_node_for_key(nil))
    c:destroy()
    fails("destroyed", "not an open ConsulHACluster", c:is_leader())
end)

local function member(id, i)
    local c, err = ConsulHACluster:new({
        consul_url = URL,
        simulate = SIMULATE,
        service = "lua-test",
        node_id = id,
        node_address = "10.0.0." .. i .. ":7000",
        heartbeat_interval = 0.2,
        session_ttl = 1,
        lock_delay = 0.2,
    })
    check(c ~= nil, "member " .. id .. ": " .. tostring(err))
    local ok, serr = c:start()
    check(ok == true, "start " .. id .. ": " .. tostring(serr))
    return c
end

local function leader_of(members)
    for i, m in pairs(members) do
        if m and m:is_leader() then return i end
    end
end

test("three nodes: election, ring, failover", function()
    local m = { member("n1", 1), member("n2", 2), member("n3", 3) }
    fails("start twice", "already started", m[1]:start())
    local first
    local took = wait_until(10, "a leader", function()
        first = leader_of(m)
        return first ~= nil
    end)
    io.write(("     leader %s elected after %.2f s\n"):format(m[first].node_id, took))
    local info
    wait_until(5, "every member knows the leader", function()
        for _, x in ipairs(m) do
            info = x:get_leader_info()
            if not info or info.node_id ~= m[first].node_id then return false end
        end
        return true
    end)
    check(info.fencing_token > 0, "a fencing token")
    wait_until(10, "three passing members", function()
        local n = 0
        for _, x in ipairs(m[1]:get_nodes()) do
            if x.health == "passing" then n = n + 1 end
        end
        return n == 3
    end)
    wait_until(10, "every member places keys alike", function()
        for k = 1, 20 do
            local a = m[1]:get_node_for_key("key-" .. k)
            local b = m[3]:get_node_for_key("key-" .. k)
            if not a or not b or a.id ~= b.id then return false end
        end
        return true
    end)

    -- The leader crashes: destroyed without stop, so only its TTL ends it.
    local old_token = info.fencing_token
    m[first]:destroy()
    m[first] = false
    local second
    took = wait_until(15, "a new leader after the crash", function()
        second = leader_of(m)
        return second ~= nil and second ~= first
    end)
    io.write(("     leader crashed; %s took over after %.2f s\n"):format(m[second].node_id, took))
    local newinfo = m[second]:get_leader_info()
    check(newinfo.fencing_token > old_token, "the fencing token grew")
    wait_until(10, "the crashed member leaves the ring", function()
        for k = 1, 20 do
            local owner = m[second]:get_node_for_key("key-" .. k)
            if not owner or owner.id == "n" .. first then return false end
        end
        return true
    end)

    -- Graceful: the new leader stops; the last member takes over at once.
    check(m[second]:stop() == true, "stop")
    local last
    took = wait_until(5, "the last member leads", function()
        last = leader_of(m) -- a stopped member answers nil, "not started"
        return last ~= nil and last ~= second
    end)
    io.write(("     leader stopped; %s took over after %.2f s\n"):format(m[last].node_id, took))
    check(m[last]:stop() == true, "stop the last")
    m[second]:destroy()
    m[last]:destroy()
end)

test("ProductionManager route health", function()
    local ms = {}
    for i = 1, 3 do
        local pm, err = consul_ha.ProductionManager:new({
            consul_url = URL, simulate = SIMULATE, service = "lua-prod", node_id = "p" .. i,
            node_address = "10.2.0." .. i .. ":7000", heartbeat_interval = 0.2,
            session_ttl = 1, lock_delay = 0.2, shards = 8, replicas = 2, copy_time = 0.1,
        })
        check(pm ~= nil, "manager " .. i .. ": " .. tostring(err))
        check(pm:start() == true, "start " .. i)
        ms[i] = pm
    end
    fails("start twice", "already started", ms[1]:start())
    local route
    wait_until(15, "a route", function()
        route = ms[1]:route("order:42")
        return route ~= nil
    end)
    check(type(route.shard) == "number" and route.primary ~= nil, "shard and primary")
    check(#route.replicas >= 1, "replicas")
    local h
    wait_until(15, "all shards healthy", function()
        h = ms[2]:health()
        return h and h.healthy == 8
    end)
    check(#h.nodes == 3, "three nodes in health")
    local leaders = 0
    for _, pm in ipairs(ms) do
        if pm:is_leader() then leaders = leaders + 1 end
        check(#pm:get_nodes() == 3, "three members from each manager")
    end
    check(leaders == 1, "one leader among the managers")
    local li = ms[3]:get_leader_info()
    check(li and li.node_id:match("^p%d$"), "the managers' leader")
    fails("route nil", "key must be a string", ms[1]:route(nil))
    fails("shards zero", "shards", consul_ha.ProductionManager:new({ shards = 0, node_id = "x", node_address = "h:1" }))
    for _, pm in ipairs(ms) do check(pm:stop() == true, "stop") end
    fails("stopped", "not started", ms[1]:route("k"))
end)

test("json_decode", function()
    local v = consul_ha.json_decode('{"a":[1,2.5,-3e2,true,false,null],"b":"x\\u00e9\\n\\"","c":{}}')
    check(v.a[1] == 1 and v.a[2] == 2.5 and v.a[3] == -300 and v.a[4] == true and v.a[5] == false, "values")
    check(v.b == "x\195\169\n\"", "escapes")
    fails("bad JSON", "bad JSON", consul_ha.json_decode("{"))
end)

client:close()
collectgarbage()
consul_ha.shutdown()
io.write(("lua tests: %d checks passed\n"):format(passed))
