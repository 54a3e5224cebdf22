#!/usr/bin/env bash
# Where a kernel's warps stall, by SASS line: ncu source counters of one launch, the 40 lines with
# the most stall samples (and every line in order: src-NAME-all.txt). Device machine only, after scripts/device.sh build.
#   scripts/experiments/ncu_source.sh NAME KERNEL_REGEX SKIP [bench options]  -> $OUT/src-NAME.txt
# (NCU_CMD="program args" profiles that program instead of dsv4 bench, e.g. expert_stream.cu's binary.)
set -uo pipefail
OUT=${OUT:-out}
NAME=$1 K=$2 SKIP=$3
shift 3
ncu --clock-control none --set full --warp-sampling-interval 0 --import-source no --page source --csv -k "regex:$K" --launch-skip "$SKIP" \
  --launch-count 1 ${NCU_CMD:-build-dev/dsv4 bench --no-prefill "$@"} >/tmp/src-$NAME.csv 2>/tmp/src-$NAME.err
python3 - "$NAME" "$OUT" <<'PY' >"$OUT/src-$NAME.txt" 2>&1
import csv, sys
name = sys.argv[1]
rows = [r for r in csv.reader(open(f'/tmp/src-{name}.csv', errors='replace'))]
hdr_i = next(i for i, r in enumerate(rows) if any('Source' == c for c in r))
hdr = rows[hdr_i]
data = [dict(zip(hdr, r)) for r in rows[hdr_i + 1:] if len(r) == len(hdr)]
def num(v):
    try: return float(str(v).replace(',', ''))
    except ValueError: return 0.0
stall_col = next(c for c in hdr if c.startswith('Warp Stall Sampling (All'))
total = sum(num(d[stall_col]) for d in data)
print(f'{len(data)} SASS lines, {total:.0f} stall samples; columns: {hdr}')
for i, d in enumerate(data):
    d['_i'] = i
for d in sorted(data, key=lambda d: -num(d[stall_col]))[:40]:
    print(f"{d['_i']:5d} {num(d[stall_col]):7.0f} {100 * num(d[stall_col]) / max(total, 1):5.1f}%  {d['Source'][:90]}")
print('--- in order, lines with >= 0.5% of the samples')
for d in data:
    if num(d[stall_col]) >= 0.005 * total:
        print(f"{d['_i']:5d} {num(d[stall_col]):7.0f}  {d['Source'][:100]}")
# The stall reasons over the whole kernel.
reasons = [c for c in hdr if c.startswith('stall_') and not c.endswith('(Not Issued)')]
totals = sorted(((sum(num(d[c]) for d in data), c) for c in reasons), reverse=True)
print('--- stall reasons: ' + ', '.join(f'{c[6:]} {100 * v / max(total, 1):.1f}%' for v, c in totals if v > 0))
# Every line in order (stall samples, warp-instructions executed, its two main stall reasons) for
# reading a loop whole.
def top2(d):
    r = sorted(((num(d[c]), c[6:]) for c in reasons), reverse=True)[:2]
    return ' '.join(f'{n}:{v:.0f}' for v, n in r if v > 0)
with open(f'{sys.argv[2]}/src-{name}-all.txt', 'w') as f:
    for d in data:
        f.write(f"{d['_i']:5d} {num(d[stall_col]):7.0f} {num(d.get('Instructions Executed', 0)):10.0f}  {d['Source'][:60]:60s} {top2(d)}\n")
PY
tail -3 /tmp/src-$NAME.err >>"$OUT/src-$NAME.txt"
