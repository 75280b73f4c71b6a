"""Where one training step's time goes, from the libtorch profiler trace SizeSweepBenchmark --trace writes (operators
with their input shapes): self time and operator calls per phase (forward, backward, optimizer) and per part of the
model, and the native calls Java made (operators not called by another operator or by autograd).

    python3 bench/trace_phases.py TRACE.json --vocab 32000 --rank 16 --intermediate 896 --experts 8

The part of an operator is told from its input shapes, so it is a heuristic, good enough to rank the parts:
  loss      a dimension of the vocabulary size (the lm_head, the softmax and its gradient)
  LoRA      a dimension of the LoRA rank (both matmuls, their backward, the scale)
  experts   a dimension of the intermediate size (the MLP / experts' matmuls, SiLU and the gating product)
  attention batched matmuls and 4-d arrays ([batch, heads, T, T or head_dim]: scores, softmax, rotary)
  router    a last dimension of the expert count (router logits, top-k), and the dispatch's gathers and scatters
  other     norms, residual adds, embedding, the optimizer's arrays, and what nothing above matched
Phases by time: forward until autograd starts, backward until it ends, then clipping, AdamW and zeroing.
"""

from __future__ import annotations

import argparse
import collections
import json


def load(path: str) -> list[dict]:
    trace = json.load(open(path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    events = [e for e in events if e.get("ph") == "X"]
    events.sort(key=lambda e: (str(e.get("tid")), e["ts"], -e["dur"]))
    return events


def part(event: dict, args) -> str:
    name = event["name"]
    shapes = [s for s in (event.get("shape") or []) if isinstance(s, list)]
    dims = {d for s in shapes for d in s}
    if args.vocab in dims:
        return "loss"
    if args.rank in dims:
        return "LoRA"
    if args.intermediate in dims:
        return "experts"
    if name in ("aten::bmm", "aten::_softmax", "aten::_softmax_backward_data") or any(len(s) == 4 for s in shapes):
        return "attention"
    if (args.experts and any(s and s[-1] == args.experts for s in shapes)) or name in (
            "aten::topk", "aten::index", "aten::_index_put_impl_", "aten::index_put_", "aten::cat",
            "aten::slice_backward", "aten::index_select"):
        return "router"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--intermediate", type=int, required=True)
    parser.add_argument("--experts", type=int, default=0)
    args = parser.parse_args()

    events = load(args.trace)
    autograd = [e for e in events if e["name"].startswith("autograd::")]
    backward_start = min(e["ts"] for e in autograd)
    backward_end = max(e["ts"] + e["dur"] for e in autograd)
    self_time = [e["dur"] for e in events]
    depth = [0] * len(events)
    stack: list[int] = []
    for i, e in enumerate(events):
        while stack and (events[stack[-1]]["ts"] + events[stack[-1]]["dur"] <= e["ts"]
                         or events[stack[-1]].get("tid") != e.get("tid")):
            stack.pop()
        if stack:
            self_time[stack[-1]] -= e["dur"]
        depth[i] = len(stack)
        stack.append(i)

    table = collections.defaultdict(lambda: [0.0, 0])
    native_calls = collections.Counter()
    for i, e in enumerate(events):
        phase = "forward" if e["ts"] < backward_start else "backward" if e["ts"] < backward_end else "optimizer"
        if depth[i] == 0 and e["name"].startswith("aten::"):
            native_calls[phase] += 1
        if not e["name"].startswith("aten::"):
            continue
        key = (phase, "other" if phase == "optimizer" else part(e, args))
        table[key][0] += self_time[i] / 1e3
        table[key][1] += 1
    total = sum(v[0] for v in table.values())
    print(f"{args.trace}: {total:.1f} ms inside operators, {sum(v[1] for v in table.values())} operator calls, "
          f"{sum(native_calls.values())} called from Java ("
          + ", ".join(f"{p} {native_calls[p]}" for p in ("forward", "backward", "optimizer")) + ")")
    for phase in ("forward", "backward", "optimizer"):
        rows = sorted(((k[1], v) for k, v in table.items() if k[0] == phase), key=lambda r: -r[1][0])
        phase_total = sum(v[0] for _, v in rows)
        print(f"  {phase:9s} {phase_total:8.1f} ms ({100 * phase_total / total:4.1f}%): " + ", ".join(
            f"{name} {v[0]:.1f} ms / {v[1]} calls" for name, v in rows))


if __name__ == "__main__":
    main()
