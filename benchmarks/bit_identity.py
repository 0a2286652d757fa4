"""Are two conversions of the same model bit-identical? (issue 27: the redesign changes no value)

Compares two SNN files tensor by tensor (``torch.equal`` on every entry of the SNN's and the
reference ANN's state_dict), their graphs (the code fx generates), and, when given, the two
``--json`` conversion reports (every per-layer scale and note). Exit status 0 when all agree.

Reproduce (issue 27's check, the shared ResNet-20 at N = 16)::

    annsnn convert ../shared/models/cifar10-resnet/resnet20-12fca82f.th --arch resnet20 --T 16 \\
        --data imagefolder:../shared/data/CIFAR10-jpeg --calib-samples 1024 --out before.snn.pt --json before.json
    # ... change the code, convert again to after.snn.pt / after.json, then:
    python benchmarks/bit_identity.py before.snn.pt after.snn.pt --json before.json after.json
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from annsnn.artifact import load_snn


def compare_states(name: str, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Differences between two state_dicts: missing keys, dtype/shape, or any differing element."""
    problems = [f"{name}: key {k} only in the first" for k in sorted(set(a) - set(b))]
    problems += [f"{name}: key {k} only in the second" for k in sorted(set(b) - set(a))]
    for key in sorted(set(a) & set(b)):
        x, y = a[key], b[key]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            problems.append(f"{name}: {key} differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--json", nargs=2, metavar=("FIRST", "SECOND"), help="the two conversion reports (annsnn convert --json)")
    args = parser.parse_args(argv)
    one, two = load_snn(args.first), load_snn(args.second)
    problems: list[str] = []
    tensors = 0
    for name, a, b in (("snn", one.graph, two.graph), ("ann", one.ann, two.ann)):
        sa, sb = a.state_dict(), b.state_dict()
        tensors += len(sa)
        problems += compare_states(name, sa, sb)
        if a.code != b.code:
            problems.append(f"{name}: the graphs differ")
    if args.json:
        reports = [json.loads(open(path).read()) for path in args.json]
        for report in reports:  # where the file went, and its bytes' hash, are not values of the conversion
            report.pop("out", None)
            report.pop("snn", None)
            report.pop("snn_sha256", None)  # the file format changed to version 2 (issue 25); its tensors are compared above
            for layer in report.get("report", {}).get("layers", []):
                if "label" in layer:  # since issue 27: kind (IF|analog), ceiling, op, and the old string as label
                    layer["kind"] = layer.pop("label")
                    layer.pop("ceiling", None)
                    layer.pop("op", None)
        if reports[0] != reports[1]:
            keys = sorted(k for k in set(reports[0]) | set(reports[1]) if reports[0].get(k) != reports[1].get(k))
            problems.append(f"reports differ in {', '.join(keys)}")
    for line in problems:
        print(line)
    print(f"{tensors} tensors compared (torch.equal), 2 graphs{', 2 reports' if args.json else ''}: "
          + ("bit-identical" if not problems else f"{len(problems)} difference(s)"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
