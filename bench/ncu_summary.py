#!/usr/bin/env python3
"""Per-kernel GPU time of an `ncu --csv --metrics gpu__time_duration.sum` log, summed by kernel name.

usage: python3 bench/ncu_summary.py NCU.csv [--sequence N]
Prints the total, then kernels by total time (count, mean), then optionally the first N launches
in order. A development aid for the decode step (scripts/device.sh profile), not part of dsv4.
"""
import collections
import csv
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    seq_n = int(sys.argv[sys.argv.index('--sequence') + 1]) if '--sequence' in sys.argv else 0
    header, launches = None, []
    for r in csv.reader(open(sys.argv[1], errors='replace')):
        if 'Kernel Name' in r:
            header = r
            continue
        if header is None or len(r) != len(header):
            continue
        d = dict(zip(header, r))
        if d.get('Metric Name') != 'gpu__time_duration.sum':
            continue
        scale = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3}[d['Metric Unit']]
        name = d['Kernel Name'].split('(')[0].replace('void ', '').replace('(anonymous namespace)::', '')
        name = name.replace('unnamed>::', '')
        launches.append((name, d.get('Grid Size', ''), float(d['Metric Value'].replace(',', '')) * scale))
    if not launches:
        sys.exit('no gpu__time_duration.sum rows in ' + sys.argv[1])
    agg = collections.defaultdict(lambda: [0, 0.0])
    for name, _, us in launches:
        agg[name][0] += 1
        agg[name][1] += us
    print(f'{sum(us for *_, us in launches):.1f} us in {len(launches)} kernels')
    for name, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f'{us:9.1f} us {n:4d}x {us / n:7.2f} us  {name}')
    for name, grid, us in launches[:seq_n]:
        print(f'{us:8.2f} us  {grid:>14}  {name}')


if __name__ == '__main__':
    main()
