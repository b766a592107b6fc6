-- strata.text: plain-text tables for the command line (check, status).
local M = {}

-- rows: a list of lists of strings, the first row the header. Columns are
-- padded to their widest cell; the last column is not padded.
function M.table(rows)
  local w = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do w[i] = math.max(w[i] or 0, #c) end
  end
  local lines = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      cells[i] = i < #r and (c .. string.rep(" ", w[i] - #c)) or c
    end
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  return table.concat(lines, "\n") .. "\n"
end

return M
