"""The same forward as ForwardBenchmark, in transformers: batch x length float32, eager attention, no grad."""
import statistics
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

checkpoint, batch, length, iterations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager").eval()
ids = torch.from_numpy(np.random.default_rng(0).integers(0, model.config.vocab_size, (batch, length)))
seconds = []
with torch.no_grad():
    for i in range(iterations + 2):
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        if i >= 2:
            seconds.append(time.perf_counter() - start)
median = statistics.median(seconds)
print(f"transformers forward: batch {batch} x {length} fp32 ({torch.get_num_threads()} threads): "
      f"median {median * 1e3:.1f} ms, {batch * length / median:.0f} tokens/s ({iterations} runs, best {min(seconds) * 1e3:.1f} ms)")
