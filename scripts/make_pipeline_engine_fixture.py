#!/usr/bin/env python3
"""Writes tests/fixtures/models/idefics3_engine/: the files that turn the random-weight `idefics3` fixture into a
complete tiny VLM engine for the pipeline tests (tokenizer, chat template, image processor config). Standard
library only; deterministic (the word list comes from data/corpus.jsonl, so random generations are made of words
the sample corpus contains and a search for them finds documents).

    python3 scripts/make_pipeline_engine_fixture.py
"""
import collections
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "models", "idefics3_engine")
VOCAB = 320
SPECIAL = {300: "<fake_token_around_image>", 301: "<global-img>", 302: "<image>", 303: "<end_of_utterance>",
           304: "<|im_start|>"}
# SmolVLM-256M-Instruct's chat template (tokenizer_config.json `chat_template`).
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] "
    "== 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == "
    "'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def main():
    counts = collections.Counter()
    with open(os.path.join(ROOT, "data", "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            counts.update(w for w in re.findall(r"[a-z]+", (d["title"] + " " + d["text"]).lower()) if len(w) > 2)
    fixed = ["[UNK]", "<s>", "</s>", ":", ".", ",", "?", "[", "]"] + [str(i) for i in range(1, 10)]
    free = [i for i in range(VOCAB) if i not in SPECIAL]
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    tokens = fixed + [w for w in words if w not in fixed][: len(free) - len(fixed)]
    vocab = {t: i for t, i in zip(tokens, free)}
    vocab.update({t: i for i, t in SPECIAL.items()})
    assert len(vocab) == VOCAB and sorted(vocab.values()) == list(range(VOCAB))
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True}
            for i, t in sorted(SPECIAL.items())
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])),
                  "unk_token": "[UNK]"},
    }
    tokenizer_config = {
        "bos_token": "<|im_start|>",
        "eos_token": "<end_of_utterance>",
        "unk_token": "[UNK]",
        "chat_template": SMOLVLM_TEMPLATE,
    }
    # the tiny tower takes 32x32: no splitting beyond one tile
    preprocessor = {
        "image_processor_type": "Idefics3ImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"longest_edge": 32},
        "max_image_size": {"longest_edge": 32},
        "do_image_splitting": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": True,
        "resample": 1,
    }
    os.makedirs(OUT, exist_ok=True)
    for name, obj in [("tokenizer.json", tokenizer), ("tokenizer_config.json", tokenizer_config),
                      ("preprocessor_config.json", preprocessor)]:
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False)
            f.write("\n")
    # config.json: the idefics3 fixture's, with a longer context (the pipeline's prompts carry retrieved snippets)
    with open(os.path.join(ROOT, "tests", "fixtures", "models", "idefics3", "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["text_config"]["max_position_embeddings"] = 2048
    with open(os.path.join(OUT, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
