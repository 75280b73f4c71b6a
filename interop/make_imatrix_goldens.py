"""Regenerates the `mixtune imatrix` goldens from llama.cpp's own llama-imatrix (see interop/GOLDENS.md):

trainer/src/test/resources/golden/gguf/imatrix/llama-imatrix/: for each CASE, llama-imatrix's output on `mixtune export-gguf --type
f32` of a seeded tiny preset over calibration.txt (committed, hand-written), and cases.json with each case's options,
the perplexity llama-imatrix printed, and llama-tokenize's ids of the text (the BOS in front, the trailing newline
dropped as llama-imatrix's -f drops it), which mixtune's tokenizer must give too (ImatrixCommandTest).

llama-imatrix runs in trainer/ with the calibration text's path relative to it, as the Java test passes it, since it
writes the -f path as given into imatrix.datasets.

Run: interop/.venv/bin/python interop/make_imatrix_goldens.py
Needs llama.cpp built in $LLAMA_CPP_BUILD with bin/llama-imatrix and bin/llama-tokenize
(interop/build_llama_quantize.sh). Deterministic: the presets are seeded, llama.cpp's CPU forward is.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from make_gguf_kquant_goldens import LLAMA_CPP_BUILD, MIXTUNE, REPO

RUN_DIR = REPO / "trainer"
GOLDEN = RUN_DIR / "src" / "test" / "resources" / "golden" / "gguf" / "imatrix" / "llama-imatrix"
TEXT = "src/test/resources/golden/gguf/imatrix/llama-imatrix/calibration.txt"  # relative to RUN_DIR
IMATRIX = LLAMA_CPP_BUILD / "bin" / "llama-imatrix"
TOKENIZE = LLAMA_CPP_BUILD / "bin" / "llama-tokenize"
# (file name, preset, llama-imatrix options): 3 chunks of 32 tokens; the Mixtral's experts and output.weight; a
# chunk of 40 in batches of 30 (micro-batches of 30 and 10: llama-imatrix skips the dense matmuls over the 10), as
# the legacy .dat; the first chunk skipped and one run; two chunks of 24 per batch of 48 (n_seq 2) in micro-batches
# of 20, split_equal's 10 + 10 then 4 + 4 tokens (the 8 skipped), with a copy every 2 chunks
CASES = [
    ("tiny-mistral.imatrix.gguf", "tiny-mistral", ["-c", "32"]),
    ("tiny-mixtral.imatrix.gguf", "tiny-mixtral", ["-c", "32", "--process-output"]),
    ("tiny-mistral-b30.imatrix.dat", "tiny-mistral", ["-c", "40", "-b", "30", "--output-format", "dat"]),
    ("tiny-mistral-from1.imatrix.gguf", "tiny-mistral", ["-c", "32", "--chunk", "1", "--chunks", "1"]),
    ("tiny-mistral-ub20.imatrix.gguf", "tiny-mistral",
     ["-c", "24", "-b", "48", "-ub", "20", "--save-frequency", "2"]),
]


def run(*args, cwd=RUN_DIR) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed: {proc.stdout}{proc.stderr}")
    return proc


def export(preset: str, work: Path) -> Path:
    run(MIXTUNE, "init-model", "--preset", preset, "--out", work / preset, "--dtype", "fp32")
    run(MIXTUNE, "export-gguf", "--model", work / preset, "--out", work / f"{preset}-f32.gguf", "--type", "f32")
    return work / f"{preset}-f32.gguf"


def llama_imatrix(gguf: Path, out: Path, options: list[str]) -> float:
    """Runs llama-imatrix; returns the final perplexity it printed."""
    # common/log.cpp logs from a worker thread, which can lose the last lines at exit when the output is a pipe
    # (measured: 1 run in 5 here): run again until the line is there
    for _ in range(10):
        proc = run(IMATRIX, "-m", gguf, "-f", TEXT, "-o", out, *options)
        found = re.search(r"Final estimate: PPL = ([0-9.]+)", proc.stdout + proc.stderr)
        if found:
            return float(found.group(1))
    sys.exit(f"llama-imatrix printed no final perplexity: {proc.stdout}{proc.stderr}")


def copies(out: Path) -> list[str]:
    """The suffixes of the --save-frequency copies llama-imatrix wrote next to out (".at_2")."""
    return sorted(p.name[len(out.name):] for p in out.parent.glob(out.name + ".at_*"))


def token_ids(gguf: Path) -> list[int]:
    text = (RUN_DIR / TEXT).read_text()
    text = text[:-1] if text.endswith("\n") else text
    proc = subprocess.run([str(TOKENIZE), "-m", str(gguf), "--stdin", "--ids", "--log-disable", "--no-escape"],
                          input=text, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    for binary in (IMATRIX, TOKENIZE):
        if not binary.is_file():
            sys.exit(f"{binary} not found: build llama.cpp with interop/build_llama_quantize.sh (or set LLAMA_CPP_BUILD)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exports = {preset: export(preset, work) for preset in sorted({case[1] for case in CASES})}
        cases = []
        for name, preset, options in CASES:
            out = work / name
            ppl = llama_imatrix(exports[preset], out, options)
            shutil.copyfile(out, GOLDEN / name)
            cases.append({"file": name, "preset": preset, "options": options, "perplexity": ppl,
                          "copies": copies(out)})
        golden = {"text": TEXT, "tokens": token_ids(exports["tiny-mistral"]),
                  "tokens_mixtral": token_ids(exports["tiny-mixtral"]), "cases": cases}
        (GOLDEN / "cases.json").write_text(json.dumps(golden) + "\n")
    print(f"wrote {len(CASES)} cases to {GOLDEN}")


if __name__ == "__main__":
    main()
