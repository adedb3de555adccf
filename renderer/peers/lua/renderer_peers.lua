-- The renderer's peer table in nginx (dynamic_peers): each upstream's servers, changed without a reload.
--
-- Written by the renderer into its peers_dir, with the table (peers.txt); the
-- default http template loads it (lua_package_path), fills the shared dict
-- from the file when nginx starts or reloads (init_by_lua), takes pushes of
-- a new table on a local-only socket (serve), and picks each request's peer
-- (balance), so an instance coming, going, failing its checks or changing
-- weight reaches nginx without a reload; and splits a service's clients
-- between its stable and canary pools (balance_split), so a change of the
-- canary's share needs no reload either.
--
-- The table, as text (what the renderer sends and writes):
--   renderer-peers 2 <version> <digest>      (1 when it has no split line)
--   pool <name>
--   peer <ip> <port> <weight>
--   ...
--   split <service id> <stable pool> <canary pool> <percent>
-- Each pool is stored under "pool:<name>" as its peer lines, each split
-- under "split:<service id>", the version and digest under "version" and
-- "digest"; a pool or split missing from a new table is deleted. The shared
-- dict survives reloads; the file covers restarts.
--
-- A patch changes only what changed, and only the table it was made from:
--   renderer-peers-patch <version> <digest> <base digest>
--   pool <name> + its peer lines     (the pool's whole new list)
--   drop <name>                      (a pool gone)
--   split ... / unsplit <service id>
-- It is refused (409) unless the dict holds <base digest>; the renderer then
-- pushes the whole table. At 5,000 services a whole table is 15,000 lines.
--
-- The split is sticky per client, as the static template's split_clients
-- is: the canary_id cookie when the client has one, else its address and
-- user agent, hashed with the service (CRC32, so every nginx node puts a
-- client on the same side); raising the share only moves stable clients to
-- the canary. "X-Canary: always" picks the canary pool (also at 0 %: a dark
-- launch), "never" the stable one.
--
-- Balancing is nginx's: smooth weighted round robin, and the passive health
-- of "max_fails=3 fail_timeout=60": a peer that failed 3 times within 60 s
-- is skipped for 60 s, and a failed try goes to another peer (as
-- proxy_next_upstream does). The counts are per worker process (nginx's are
-- shared through the upstream zone).

local balancer = require "ngx.balancer"

local dict = ngx.shared.renderer_peers
local MAX_FAILS, FAIL_TIMEOUT = 3, 60

local _M = {}

-- Per worker: pool name -> {text = the stored lines, peers = parsed, with their balancing state}
local pools = {}

local function parse(text)
    local lines = {}
    for line in text:gmatch("[^\n]+") do
        lines[#lines + 1] = line
    end
    local first = lines[1] or ""
    local base
    local version, digest = first:match("^renderer%-peers [12] (%d+) (%x+)$")
    if not version then
        version, digest, base = first:match("^renderer%-peers%-patch (%d+) (%x+) (%x+)$")
    end
    if not version then
        return nil, "not a renderer peer table (first line: " .. first .. ")"
    end
    local result, splits, drops, unsplits, current = {}, {}, {}, {}, nil
    for i = 2, #lines do
        local line = lines[i]
        local name = line:match("^pool ([%w_%.%-]+)$")
        local id, stable, canary, percent = line:match("^split (%x+) ([%w_%.%-]+) ([%w_%.%-]+) (%d+)$")
        local dropped = base and line:match("^drop ([%w_%.%-]+)$")
        local unsplit = base and line:match("^unsplit (%x+)$")
        if name then
            current = {}
            result[name] = current
        elseif id then
            splits[id] = stable .. " " .. canary .. " " .. percent
        elseif dropped then
            drops[#drops + 1] = dropped
        elseif unsplit then
            unsplits[#unsplits + 1] = unsplit
        else
            local host, port, weight = line:match("^peer ([%x%.:]+) (%d+) (%d+)$")
            if not host or not current then
                return nil, "line " .. i .. " is not 'pool NAME', 'peer IP PORT WEIGHT' or "
                    .. "'split ID STABLE CANARY PERCENT'" .. (base and ", 'drop NAME' or 'unsplit ID'" or "")
                    .. ": " .. line
            end
            current[#current + 1] = host .. " " .. port .. " " .. weight
        end
    end
    return {version = tonumber(version), digest = digest, base = base, pools = result, splits = splits,
            drops = drops, unsplits = unsplits}
end

-- The table (or a patch onto the one held) into the shared dict; returns its version, or nil, why not and
-- whether it was a patch made from another table than the one held.
function _M.store(text)
    local table_, err = parse(text)
    if not table_ then
        return nil, err
    end
    if table_.base and dict:get("digest") ~= table_.base then
        return nil, "a patch onto table " .. table_.base .. ", and nginx holds " .. (dict:get("digest") or "none"),
            true
    end
    -- Until the table is whole, it is no table a patch can apply to (a store that fails half-way stays so).
    dict:set("digest", "changing")
    -- safe_set: a full dict refuses, where set would evict other pools' peers without a word.
    for name, peers in pairs(table_.pools) do
        local ok, set_err = dict:safe_set("pool:" .. name, table.concat(peers, "\n"))
        if not ok then
            return nil, "storing pool " .. name .. ": " .. tostring(set_err) .. " (lua_shared_dict too small?)"
        end
    end
    for id, split in pairs(table_.splits) do
        local ok, set_err = dict:safe_set("split:" .. id, split)
        if not ok then
            return nil, "storing split " .. id .. ": " .. tostring(set_err) .. " (lua_shared_dict too small?)"
        end
    end
    if table_.base then
        for _, name in ipairs(table_.drops) do
            dict:delete("pool:" .. name)
        end
        for _, id in ipairs(table_.unsplits) do
            dict:delete("split:" .. id)
        end
    else
        for _, key in ipairs(dict:get_keys(0)) do
            local name = key:match("^pool:(.+)$")
            local id = key:match("^split:(.+)$")
            if (name and not table_.pools[name]) or (id and not table_.splits[id]) then
                dict:delete(key)
            end
        end
    end
    dict:set("digest", table_.digest)
    dict:set("version", table_.version)
    return table_.version
end

-- init_by_lua: the table the renderer last wrote, so nginx serves the right peers from its first request.
function _M.load(path)
    local file = io.open(path, "r")
    if not file then
        return  -- the renderer has not written one yet: pools stay as the dict has them
    end
    local text = file:read("*a")
    file:close()
    local version, err = _M.store(text)
    if not version then
        ngx.log(ngx.ERR, "renderer peers: ", path, ": ", err)
    end
end

-- The push endpoint: GET says what nginx holds, PUT replaces or patches it; both answer "version V digest D".
function _M.serve()
    local method = ngx.req.get_method()
    if method == "PUT" then
        ngx.req.read_body()
        local text = ngx.req.get_body_data()
        if not text then
            local path = ngx.req.get_body_file()
            if path then
                local file = io.open(path, "r")
                text = file and file:read("*a")
                if file then file:close() end
            end
        end
        local version, err, other_base = _M.store(text or "")
        if not version then
            ngx.status = other_base and 409 or 400
            ngx.say("refused: ", err)
            return
        end
    elseif method ~= "GET" then
        ngx.status = 405
        ngx.say("GET or PUT")
        return
    end
    ngx.say("version ", dict:get("version") or 0, " digest ", dict:get("digest") or "none")
end

local function peers_of(name)
    local text = dict:get("pool:" .. name)
    if not text then
        return nil
    end
    local known = pools[name]
    if known and known.text == text then
        return known.peers
    end
    local peers, before = {}, {}
    for _, peer in ipairs(known and known.peers or {}) do
        before[peer.key] = peer
    end
    for line in text:gmatch("[^\n]+") do
        local host, port, weight = line:match("^(%S+) (%d+) (%d+)$")
        local key = host .. ":" .. port
        local old = before[key]
        peers[#peers + 1] = {key = key, host = host, port = tonumber(port), weight = tonumber(weight),
                             current = old and old.current or 0, fails = old and old.fails or 0,
                             checked = old and old.checked or 0, down_until = old and old.down_until or 0}
    end
    pools[name] = {text = text, peers = peers}
    return peers
end

local function failed(peer, now)
    if now - peer.checked > FAIL_TIMEOUT then
        peer.fails = 0
    end
    peer.fails = peer.fails + 1
    peer.checked = now
    if peer.fails >= MAX_FAILS then
        peer.down_until = now + FAIL_TIMEOUT
    end
end

local function pick(peers, tried, now)
    local best, total = nil, 0
    for _, peer in ipairs(peers) do
        if not tried[peer.key] and peer.down_until <= now then
            peer.current = peer.current + peer.weight
            total = total + peer.weight
            if not best or peer.current > best.current then
                best = peer
            end
        end
    end
    if best then
        best.current = best.current - total
        return best
    end
    -- Every untried peer is down: as nginx does, try one anyway rather than fail outright.
    for _, peer in ipairs(peers) do
        if not tried[peer.key] then
            return peer
        end
    end
    return nil
end

-- balancer_by_lua: the peer for this try of this request.
function _M.balance(name)
    local ctx = ngx.ctx
    local peers = peers_of(name)
    if not peers or #peers == 0 then
        ngx.log(ngx.ERR, "renderer peers: no peer for upstream ", name)
        return ngx.exit(502)
    end
    local now = ngx.now()
    local tried = ctx.renderer_tried
    if not tried then
        tried = {}
        ctx.renderer_tried = tried
        if #peers > 1 then
            balancer.set_more_tries(#peers - 1)
        end
    elseif ctx.renderer_peer then
        local state = balancer.get_last_failure()
        if state == "failed" then
            failed(ctx.renderer_peer, now)
        end
    end
    local peer = pick(peers, tried, now)
    if not peer then
        return ngx.exit(502)
    end
    tried[peer.key] = true
    ctx.renderer_peer = peer
    local ok, err = balancer.set_current_peer(peer.host, peer.port)
    if not ok then
        ngx.log(ngx.ERR, "renderer peers: ", name, " ", peer.key, ": ", err)
        return ngx.exit(502)
    end
end

-- Which pool of service <id>'s split this client is on (see the top of this file).
local function side(id)
    local split = dict:get("split:" .. id)
    if not split then
        return nil
    end
    local stable, canary, percent = split:match("^(%S+) (%S+) (%d+)$")
    local choice = ngx.var.http_x_canary
    if choice == "always" then
        return canary
    elseif choice == "never" then
        return stable
    end
    local key = ngx.var.cookie_canary_id
    if not key or key == "" then
        key = ngx.var.remote_addr .. (ngx.var.http_user_agent or "")
    end
    if ngx.crc32_long(key .. id) % 10000 < tonumber(percent) * 100 then
        return canary
    end
    return stable
end

-- balancer_by_lua of upstream _split_<id>: this client's side of the split, then a peer of that pool.
function _M.balance_split(id)
    local ctx = ngx.ctx
    local name = ctx.renderer_side
    if not name then
        name = side(id)
        if not name then
            ngx.log(ngx.ERR, "renderer peers: no split for service ", id)
            return ngx.exit(502)
        end
        ctx.renderer_side = name  -- a retry stays on the same side
    end
    return _M.balance(name)
end

return _M
