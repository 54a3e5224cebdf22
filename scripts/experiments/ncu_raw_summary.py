#!/usr/bin/env python3
"""One line per kernel of an ncu `--page raw --csv` file (expert_profile.sh): grid, time, SM clock,
warp-instructions, issue use, warps a scheduler, DRAM read rate, the busiest pipes and the largest
stall reasons (warps per issued instruction)."""
import csv
import sys


def num(v):
    try:
        return float(str(v).replace(',', ''))
    except ValueError:
        return None


rows = list(csv.reader(open(sys.argv[1], errors='replace')))
hi = next(i for i, r in enumerate(rows) if 'Kernel Name' in r)
hdr = rows[hi]
print(sys.argv[1])
for r in rows[hi + 2:]:
    if len(r) != len(hdr):
        continue
    d = dict(zip(hdr, r))
    g = lambda k: num(d.get(k, ''))
    pipes = sorted(((g(h), h.split('__')[1].split('.')[0].replace('pipe_', '').replace('_cycles_active', ''))
                    for h in hdr if h.startswith('sm__pipe_') and h.endswith('cycles_active.avg.pct_of_peak_sustained_active')
                    and g(h)), reverse=True)[:4]
    stalls = sorted(((g(h), h.replace('smsp__average_warps_issue_stalled_', '').replace('_per_issue_active.ratio', ''))
                     for h in hdr if h.startswith('smsp__average_warps_issue_stalled_') and g(h)), reverse=True)[:5]
    print(f"  grid {d.get('launch__grid_size')} {g('gpu__time_duration.sum') / 1e3:.2f} us "
          f"clock {g('sm__cycles_elapsed.avg.per_second') / 1e9:.2f} GHz inst {g('smsp__inst_executed.sum') / 1e6:.2f}M "
          f"issue {g('smsp__issue_active.avg.pct_of_peak_sustained_active'):.0f}% "
          f"warps/sched {g('smsp__warps_active.avg.per_cycle_active'):.2f} "
          f"dram {g('dram__bytes_read.sum.per_second') / 1e12:.2f} TB/s regs {d.get('launch__registers_per_thread')}")
    print('    pipes ' + ', '.join(f'{n} {v:.0f}%' for v, n in pipes) + ' | stalls ' +
          ', '.join(f'{n} {v:.2f}' for v, n in stalls))
