"""Where a running process's threads spend their time: run, wait for the disk, or sleep.

    python3 examples/support/thread_states.py <pid> <seconds>

Reads every thread's state and CPU time from /proc every 5 ms for <seconds>, then prints, per
thread (busiest first), the CPU it used and how often it was seen running or runnable (R), in
disk wait (D) or asleep (S). Used on `pipeline_pace` (see BENCHMARKS.md, "What 200 accounts
waits on"): a thread that is busy or syncing most of the time while the others sleep is the one
everything queues behind. Linux only; CPU time is in clock ticks (usually 1/100 s).
"""

import collections
import os
import sys
import time


def threads(pid):
    """{thread id: (name, state letter, user + system ticks)} for every live thread."""
    seen = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended between listing and reading
        # The name sits in parentheses and may itself hold spaces or parentheses.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seen[tid] = (name, fields[0], int(fields[11]) + int(fields[12]))
    return seen


def main():
    pid, seconds = sys.argv[1], float(sys.argv[2])
    states = collections.defaultdict(collections.Counter)
    first = threads(pid)
    end = time.time() + seconds
    samples = 0
    while time.time() < end:
        for tid, (_, state, _) in threads(pid).items():
            states[tid][state] += 1
        samples += 1
        time.sleep(0.005)
    last = threads(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    rows = sorted(
        ((cpu - first.get(tid, (name, state, cpu))[2], tid, name) for tid, (name, state, cpu) in last.items()),
        reverse=True,
    )
    print(f"{samples} samples over {seconds} s")
    print(f"{'thread':>8} {'name':<16} {'CPU s':>6} {'R':>5} {'D':>5} {'S':>5}")
    for used, tid, name in rows[:16]:
        seen = states[tid]
        total = max(sum(seen.values()), 1)
        share = {s: 100 * seen[s] / total for s in "RDS"}
        print(f"{tid:>8} {name:<16} {used / ticks:6.2f} {share['R']:4.0f}% {share['D']:4.0f}% {share['S']:4.0f}%")


if __name__ == "__main__":
    main()
