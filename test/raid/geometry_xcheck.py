#!/usr/bin/env python3
"""Cross-check driver for test/raid/geometry.test.ts.

Reads one JSON request on stdin, answers it with the project's reference restatement of the
md layouts (shared/reference/md_layouts.py, directory given as argv[1]) and writes JSON to
stdout. Request: {"r456": [{level, layout, n, stripes}], "r10": [{layout, n, chunk, size,
lbas}], "r0": [{devs, chunk, layout, lbas}]}.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import md_layouts as ref  # noqa: E402


def r456(case):
    level, layout, n = case["level"], case["layout"], case["n"]
    data = n - (2 if level == 6 else 1)
    rows = []
    for stripe in range(case["stripes"]):
        disks = []
        p = q = None
        for dd in range(data):
            d, p, q, _ = ref.r456_stripe_map(level, layout, n, stripe, dd)
            disks.append(d)
        slots = []
        if level == 6:
            coef = ref.raid6_q_coefficients(layout, n, stripe)
            slots = [coef[d] for d in disks]
        rows.append([p, -1 if q is None else q, disks, slots])
    return rows


def r10(case):
    g = ref.r10_geometry(case["layout"], case["n"], case["chunk"], case["size"])
    maps = [ref.r10_map(case["layout"], case["n"], case["chunk"], case["size"], lba)
            for lba in case["lbas"]]
    return {"array": g["array_sectors"], "dev": g["dev_sectors"], "stride": g["stride"],
            "maps": [[list(c) for c in m] for m in maps]}


def r0(case):
    zones = ref.r0_zones(case["devs"], case["chunk"])
    maps = [list(ref.r0_map(case["devs"], case["chunk"], lba, case["layout"]))
            for lba in case["lbas"]]
    return {"zones": [[e, s, m] for e, s, m in zones], "maps": maps}


req = json.load(sys.stdin)
json.dump({"r456": [r456(c) for c in req.get("r456", [])],
           "r10": [r10(c) for c in req.get("r10", [])],
           "r0": [r0(c) for c in req.get("r0", [])]}, sys.stdout)
