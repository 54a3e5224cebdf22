#!/usr/bin/env bash
# Broken model folders: each gives a clear error, a non-zero exit and no crash
# (an exit status >= 128 would be a signal). Copies of a fixture are broken in scratch.
set -uo pipefail
dsv4=$1 fixtures=$2 scratch=$3
rm -rf "$scratch"; mkdir -p "$scratch"
src=$fixtures/tiny-fp32
fail=0

expect_error() {  # name, pattern, command...
  local name=$1 pattern=$2; shift 2
  "$@" >"$scratch/out" 2>"$scratch/err"
  local rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then
    echo "FAIL $name: exit $rc"; cat "$scratch/err"; fail=1; return
  fi
  if ! grep -qiE "$pattern" "$scratch/err"; then
    echo "FAIL $name: message does not match '$pattern':"; cat "$scratch/err"; fail=1; return
  fi
  echo "ok   $name: $(head -c 200 "$scratch/err")"
}

fresh() { rm -rf "$scratch/m"; mkdir -p "$scratch/m"; cp "$src"/{config.json,model.safetensors,cases.json,expected.safetensors} "$scratch/m/"; chmod -R u+w "$scratch/m"; }

fresh; truncate -s 5000000 "$scratch/m/model.safetensors"
expect_error "truncated file" "exceed|truncat|size" "$dsv4" parity "$scratch/m"

fresh; printf '\xff\xff\xff\xff\xff\x00\x00\x00' | dd of="$scratch/m/model.safetensors" conv=notrunc 2>/dev/null
expect_error "header length past the end" "header" "$dsv4" parity "$scratch/m"

fresh; python3 - "$scratch/m/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8+n])
h['layers.1.hc_attn_fn']['data_offsets'] = h['layers.0.hc_attn_fn']['data_offsets']  # same size, overlapping
s = json.dumps(h).encode()
open(p, 'wb').write(struct.pack('<Q', len(s)) + s + b[8+n:])
PY
expect_error "overlapping offsets" "overlap" "$dsv4" parity "$scratch/m"

fresh; python3 - "$scratch/m/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8+n]); k = 'layers.0.attn.wq_a.weight'
h[k]['shape'] = [h[k]['shape'][1], h[k]['shape'][0]]    # shape mismatch, same byte count
s = json.dumps(h).encode()
open(p, 'wb').write(struct.pack('<Q', len(s)) + s + b[8+n:])
PY
expect_error "shape mismatch" "wq_a" "$dsv4" parity "$scratch/m"

fresh; python3 - "$scratch/m/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8+n]); h['layers.2.attn.wkv.weight_renamed'] = h.pop('layers.2.attn.wkv.weight')
s = json.dumps(h).encode()
open(p, 'wb').write(struct.pack('<Q', len(s)) + s + b[8+n:])
PY
expect_error "missing tensor" "layers.2.attn.wkv.weight" "$dsv4" parity "$scratch/m"

fresh; python3 - "$scratch/m" <<'PY'
import json, sys
d = sys.argv[1]
import struct
b = open(d + '/model.safetensors', 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8+n])
json.dump({"weight_map": {k: "model-00001-of-00002.safetensors" for k in h if k != '__metadata__'}}, open(d + '/model.safetensors.index.json', 'w'))
import os; os.remove(d + '/model.safetensors')
PY
expect_error "index naming a missing shard" "model-00001-of-00002" "$dsv4" parity "$scratch/m"

fresh; sed -i 's/"o_groups": 2/"o_groups": 3/' "$scratch/m/config.json"
expect_error "bad config (o_groups)" "o_groups" "$dsv4" parity "$scratch/m"

fresh; sed -i 's/"sqrtsoftplus"/"tanh"/' "$scratch/m/config.json"
expect_error "bad config (scoring_func)" "scoring_func" "$dsv4" info -m "$scratch/m"

fresh; sed -i '/"hidden_size"/d' "$scratch/m/config.json"
expect_error "bad config (missing key)" "hidden_size" "$dsv4" info -m "$scratch/m"

fresh; echo '{"cases": [' > "$scratch/m/cases.json"
expect_error "broken cases.json" "cases.json" "$dsv4" parity "$scratch/m"

exit $fail
