-- wrk script of bench.speed: POSTs compounds as JSON and prints one line of JSON with the
-- figures when the run (bounded by wrk's -d duration) ends.
--
--   wrk -t1 -c8 -d5s -s bench/wrk_post.lua http://127.0.0.1:8000 -- PATH MODE OFFSET
--
-- PATH   the endpoint, e.g. /predict
-- MODE   "known": cycle through 24 common compounds (the service's parse cache holds them);
--        "new":   a formula never sent before on every request (ternaries such as Fe2Co3S4)
-- OFFSET number of the first request; in "new" mode give each run its own range

local known = {
  "Fe2O3", "NiO", "NaCl", "MnO", "BaTiO3", "Ca(OH)2", "Gd2O3", "CoFe2O4",
  "LiFePO4", "SrTiO3", "Cr2O3", "CuO", "ZnS", "GaAs", "Fe3O4", "MnFe2O4",
  "YBa2Cu3O7", "LaMnO3", "NiFe2O4", "TiO2", "Al2O3", "MgO", "CoO", "FeS2",
}
local metals = {
  "Li", "Na", "Mg", "Ca", "Sr", "Ba", "Y", "La", "Ti", "V",
  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Zr", "Nb", "Mo",
}
local anions = { "O", "S", "Se", "N", "F", "Cl" }
local headers = { ["Content-Type"] = "application/json" }

local path, mode, number = "/predict", "known", 0

function init(args)
  path = args[1] or path
  mode = args[2] or mode
  number = tonumber(args[3] or "0")
end

-- The n-th ternary formula: distinct for n below NEW_FORMULAS = 20 * 19 * 6 * 4 * 4 * 12.
local function new_formula(n)
  local first = n % 20; n = math.floor(n / 20)
  local second = (first + 1 + n % 19) % 20; n = math.floor(n / 19)
  local anion = n % 6; n = math.floor(n / 6)
  local a = n % 4 + 1; n = math.floor(n / 4)
  local b = n % 4 + 1; n = math.floor(n / 4)
  local x = n % 12 + 1
  return metals[first + 1] .. a .. metals[second + 1] .. b .. anions[anion + 1] .. x
end

function request()
  local formula
  if mode == "new" then
    formula = new_formula(number)
  else
    formula = known[number % #known + 1]
  end
  local density = 1 + (number % 997) / 100
  number = number + 1
  local body = string.format('{"formula": "%s", "density": %.2f}', formula, density)
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, errors.connect + errors.read + errors.write + errors.status + errors.timeout
  ))
end
