#!/usr/bin/env python3
"""Golden tokens of transformers' repetition penalty, for tests/models.rs (`llama_repetition_penalty`).

Loads the committed tiny Llama fixture (tests/fixtures/models/llama: config.json + model.safetensors, made by
scripts/make_model_fixtures.py) and runs `model.generate` greedily with `repetition_penalty` = 1.3 and 0.7
(HF's RepetitionPenaltyLogitsProcessor: every distinct id of input_ids, prompt included, has its logit divided
by the penalty if positive, else multiplied), eos disabled as in the other goldens. Also regenerates the plain
greedy tokens and asserts they equal golden.json's, so the loaded checkpoint is the fixture's.

Writes tests/fixtures/models/llama/penalty.json: the tokens and each step's top-1 margin after the penalty.
Needs torch + transformers (fixture generation only; the Rust tests read the JSON).
"""
import json
import os
import sys

import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from make_model_fixtures import no_eos  # noqa: E402  (eos off, pure argmax: as the other goldens)

D = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models", "llama")
N_NEW = 20


def main():
    model = LlamaForCausalLM.from_pretrained(D, torch_dtype=torch.float32, attn_implementation="eager").eval()
    no_eos(model)
    golden = json.load(open(os.path.join(D, "golden.json")))
    ids = torch.tensor([golden["input_ids"]], dtype=torch.long)
    out = {"producer": "scripts/make_penalty_fixture.py", "input_ids": golden["input_ids"], "runs": []}
    for penalty in [1.0, 1.3, 0.7]:
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=N_NEW, repetition_penalty=penalty, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=0)
        new = gen.sequences[0, ids.shape[1]:].tolist()
        margins = []
        for s in gen.scores:  # the scores after the logits processors: the penalty applied
            top = torch.topk(s[0].float(), 2).values
            margins.append(float(top[0] - top[1]))
        if penalty == 1.0:
            assert new == golden["greedy_tokens"], (new, golden["greedy_tokens"])
            continue
        print(f"penalty {penalty}: {new}  min margin {min(margins):.4f}")
        out["runs"].append({"repetition_penalty": penalty, "tokens": new, "margins": margins,
                            "min_margin": min(margins)})
    import transformers
    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    with open(os.path.join(D, "penalty.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
