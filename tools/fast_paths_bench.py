"""Per-message cost of each fast path in one process, as a multiple of offer + receive measured
in the same run (best of 7 rounds, rounds interleaved so load hits every path alike).

Run: LOCKSTEP_DIR=$(mktemp -d) python tools/fast_paths_bench.py [calls per round]
"""

import os
import sys
import timeit

from lockstep import Publication, Subscription, OneToOneRing, ManyToOneRing
sub = Subscription(5); pub = Publication(5, exclusive=True); sub.discover()
d=os.environ["LOCKSTEP_DIR"]
r1 = OneToOneRing(d+"/r1", 1<<16); r2 = ManyToOneRing(d+"/r2", 1<<16)
P = bytes(32)
def noop(d, h): pass
offer, receive, poll, try_claim = pub.offer, sub.receive, sub.poll, pub.try_claim
def claim_send():
    c = try_claim(32); c.buffer[:] = P; c.commit()
tests = [("offer+receive", "offer(P); receive()"), ("offer+poll(noop,1)", "offer(P); poll(noop, 1)"),
         ("offer+sub.poll(noop,1)", "offer(P); sub.poll(noop, 1)"),
         ("1to1 write+read", "r1.write(1, P); r1.read(noop)"), ("mto1 write+read", "r2.write(1, P); r2.read(noop)"),
         ("try_claim+commit+receive", "c = try_claim(32); c.buffer[:] = P; c.commit(); receive()"),
         ("claim_send()+receive", "claim_send(); receive()"),
         ("try_claim+abort+receive", "c = try_claim(32); c.abort(); receive()"),
         ("ring try_claim+commit+read", "c = r1.try_claim(1, 32); c.buffer[:] = P; c.commit(); r1.read(noop)")]
n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
best = {k: 1e9 for k, _ in tests}
for _ in range(7):
    for name, stmt in tests:
        best[name] = min(best[name], timeit.timeit(stmt, globals=globals(), number=n) / n * 1e9)
base = best["offer+receive"]
for name, _ in tests:
    print(f"{name:32} {best[name]:7.1f} ns  {best[name]/base:5.2f}x")
