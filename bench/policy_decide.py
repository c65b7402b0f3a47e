#!/usr/bin/env python3
"""Cost of one policy decision (idp/policy.py ``Policy.decide``), in microseconds.

Runs the shipped example policies (examples/policies) and the built-in permit-all on a request
of 1 and of 4 capabilities with a catalogue of 3 tools; "cold" is a decision Cedar evaluates
(the subject changes every call, so the decision cache never hits), "cached" the repeat of the
same request — what the client credentials grant pays per token once its request was seen.
Timing: median of 5 rounds of n calls each, on one core.

Run: .venv/bin/python bench/policy_decide.py [--n N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "idp"))

from idp.oauth2.subject import Subject  # noqa: E402
from idp.policy import Policy  # noqa: E402
from policy_testing import EXAMPLES, SERVER, Catalogues, client  # noqa: E402
from sdk.capabilities import CapabilitySet  # noqa: E402

CATALOGUE = {"tools": [{"name": "deploy-prod", "annotations": {"destructiveHint": True}}, {"name": "deploy-staging"},
                       {"name": "status", "annotations": {"readOnlyHint": True}}]}


def _time(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    store = Catalogues({SERVER: CATALOGUE})
    rows = []
    for label, policy in (("examples/policies", Policy(EXAMPLES, store)), ("built-in permit-all", Policy(None, store))):
        for scope in ("tools/call:deploy-prod",
                      "tools/call:deploy-prod tools/call:status tools/call:deploy-* resources/read:file:///docs/a.md"):
            caps = CapabilitySet.parse(scope)
            rec = client()
            claims = {"groups": ["ops"], "email": "alice@example.com"}
            fresh = itertools.count()
            cold = _time(lambda i: policy.decide(Subject(f"u{next(fresh)}", claims=claims), rec, SERVER, caps),
                         args.n)
            warm = _time(lambda i: policy.decide(Subject("u", claims=claims), rec, SERVER, caps), args.n * 10)
            rows.append((label, len(caps), cold, warm))
    print("| policies | capabilities | cold µs | cached µs |\n|---|---|---|---|")
    for label, n, cold, warm in rows:
        print(f"| {label} | {n} | {cold:.0f} | {warm:.1f} |")


if __name__ == "__main__":
    main()
