#!/usr/bin/env python3
"""Times two commands in turn, A B A B ..., as whole processes, and prints the median of the
pair-by-pair ratios A/B of wall and CPU time (and their minimum and maximum).

A ratio taken pair by pair holds when the machine's speed drifts during a run, which single
medians of each command taken minutes apart do not.

usage: pairwise.py [-n RUNS] [--warmup N] [--quiet] [--prepare 'COMMAND P']
                   --vs 'COMMAND B' -- COMMAND A [ARG ...]
       (COMMAND B and P are split as a shell splits words; no command gets a shell; P, if
       given, runs untimed before every run of A and of B, with the last word of that
       command appended: A's last word before A, B's before B)
"""
import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time


def run(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=30)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--vs", required=True)
    p.add_argument("--quiet", action="store_true", help="print only the median wall ratio")
    p.add_argument("--prepare", default=None)
    p.add_argument("a", nargs=argparse.REMAINDER)
    args = p.parse_args()
    a = args.a[1:] if args.a[:1] == ["--"] else args.a
    if not a:
        p.error("no command A")
    b = shlex.split(args.vs)
    prep = shlex.split(args.prepare) if args.prepare else None

    def timed(cmd):
        if prep:
            run(prep + cmd[-1:])
        return run(cmd)

    for _ in range(args.warmup):
        timed(a)
        timed(b)
    walls, cpus, wa, wb = [], [], [], []
    for _ in range(args.n):
        (aw, ac), (bw, bc) = timed(a), timed(b)
        wa.append(aw)
        wb.append(bw)
        walls.append(aw / bw)
        if bc > 0:
            cpus.append(ac / bc)
    if args.quiet:
        print(f"{statistics.median(walls):.3f}")
        return
    row = lambda name, v: print(f"{name:10} {min(v):8.4f} {statistics.median(v):8.4f} {max(v):8.4f}")
    print(f"{'':10} {'min':>8} {'median':>8} {'max':>8}   ({args.n} pairs)")
    row("A wall s", wa)
    row("B wall s", wb)
    row("A/B wall", walls)
    if cpus:
        row("A/B cpu", cpus)


if __name__ == "__main__":
    sys.exit(main())
