#!/usr/bin/env python3
"""The last decode step of a kernel_trace.cpp timeline: where the step's time goes.

usage: kernel_trace.py TRACE [--nodes N] [--list]
TRACE lines: start_ns end_ns stream graph_id gx gy gz name. The step is the last N kernels of
graph launches (N = the graph's node count, printed by `dsv4 bench`; default: all kernels of the
last graph launch, told apart by a gap of more than 20 us). Prints the span, each stream's busy
time, the main stream's idle gaps by the kernel that follows them, and with --list every kernel.
A development aid (docs/cuda.md), not part of dsv4.
"""
import collections
import re
import sys


def short(name):
    name = re.sub(r'\(.*', '', name)
    name = name.replace('(anonymous namespace)::', '').replace('dsv4::cuda::', '').replace('void ', '')
    return re.sub(r'<.*', lambda m: m.group(0)[:12], name)[:48]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    nodes = int(sys.argv[sys.argv.index('--nodes') + 1]) if '--nodes' in sys.argv else 0
    ks = []
    for line in open(sys.argv[1]):
        p = line.split(' ', 7)
        if len(p) < 8:
            continue
        ks.append((int(p[0]), int(p[1]), int(p[2]), int(p[3]), (int(p[4]), int(p[5]), int(p[6])), p[7].strip()))
    ks = [k for k in ks if k[3] != 0]  # graph launches only
    ks.sort()
    if nodes:
        step = ks[-nodes:]
    else:
        i = len(ks) - 1
        while i > 0 and ks[i][0] - max(k[1] for k in ks[max(0, i - 64):i]) < 20000:
            i -= 1
        step = ks[i:]
    t0, t1 = step[0][0], max(k[1] for k in step)
    print(f'step: {len(step)} kernels, {(t1 - t0) / 1e3:.1f} us')
    busy = collections.Counter()
    for k in step:
        busy[k[2]] += k[1] - k[0]
    main_stream = collections.Counter(k[2] for k in step).most_common(1)[0][0]
    for s, b in busy.most_common():
        print(f'  stream {s}{" (main)" if s == main_stream else ""}: busy {b / 1e3:.1f} us')
    # Each main-stream kernel's share of the step: how far it moves the stream's finish frontier
    # (with PDL a kernel starts before its predecessor ends and waits, so durations overlap), and
    # the idle time before it (no main kernel resident: a join waiting for a side stream).
    main = [k for k in step if k[2] == main_stream]
    adds, idle, count = collections.Counter(), collections.Counter(), collections.Counter()
    frontier = main[0][0]
    for k in main:
        name = short(k[5])
        idle[name] += max(0, k[0] - frontier)
        adds[name] += max(0, k[1] - max(frontier, k[0]))
        count[name] += 1
        frontier = max(frontier, k[1])
    print(f'main stream: {sum(adds.values()) / 1e3:.1f} us of kernels on its finish frontier, '
          f'{sum(idle.values()) / 1e3:.1f} us idle (joins)')
    print('  kernel                                              n  frontier us  idle before us')
    for name, d in sorted(adds.items(), key=lambda kv: -(kv[1] + idle[kv[0]])):
        print(f'  {name:48s} {count[name]:4d} {d / 1e3:10.1f} {idle[name] / 1e3:10.1f}')
    # Over all streams: how far each kernel (by name and grid) moves the step's finish frontier,
    # the kernels that make the step long; and the time with no kernel running at all.
    gadds, gcount, gap, frontier = collections.Counter(), collections.Counter(), 0, step[0][0]
    for k in step:
        key = f'{short(k[5])[:40]} {k[4]}'
        gap += max(0, k[0] - frontier)
        gadds[key] += max(0, k[1] - max(frontier, k[0]))
        gcount[key] += 1
        frontier = max(frontier, k[1])
    print(f'all streams: {sum(gadds.values()) / 1e3:.1f} us of kernels on the frontier, {gap / 1e3:.1f} us with none')
    for key, d in gadds.most_common(40):
        print(f'  {key:62s} {gcount[key]:4d} {d / 1e3:10.1f}')
    if '--list' in sys.argv:
        for k in step:
            print(f'{(k[0] - t0) / 1e3:9.2f} {(k[1] - k[0]) / 1e3:8.2f} s{k[2]:<3d} {str(k[4]):>14s} {short(k[5])}')


if __name__ == '__main__':
    main()
