#!/usr/bin/env python3
"""Chat-template goldens rendered by transformers' own Jinja setup (`utils/chat_template_utils.py`
`render_jinja_template`: trim_blocks, lstrip_blocks, loopcontrols, json.dumps `tojson`, `raise_exception`).

Templates:
  smolvlm   SmolVLM-256M-Instruct / Idefics3 chat template (the string transformers' Idefics3 processor tests use,
            tests/models/idefics3/test_processing_idefics3.py `prepare_processor_dict`; SmolVLM's processor
            DEFAULT_CHAT_TEMPLATE is the same plus a `video` branch).
  smollm2   SmolLM2-135M-Instruct (as stored in its GGUF `tokenizer.chat_template`).
  features  a synthetic template exercising what HF templates use: tojson, raise_exception, namespace,
            loop controls, string methods, trim/lstrip blocks.

Writes tests/fixtures/processor/chat_templates.json.  Usage: python scripts/make_chat_template_fixtures.py
"""
import json
import os

import transformers
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "processor", "chat_templates.json")

SMOLVLM = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == "
    "'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
    "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
FEATURES = """{%- set ns = namespace(n=0) -%}
{% for m in messages %}
    {% if m.role == 'system' and not loop.first %}{{ raise_exception('system must come first') }}{% endif %}
    {% if m.role == 'skip' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    [{{ ns.n }}] {{ m.role | upper }}: {{ m.content.strip() | tojson }}
    {% if m.content.startswith('stop') %}{% break %}{% endif %}
{% endfor %}
{{ messages | tojson }}
{{ messages[0] | tojson(indent=2) }}
{%- if add_generation_prompt %}
GEN{% endif %}"""


def case(template, messages, add_generation_prompt):
    rendered = render_jinja_template(
        conversations=[messages], chat_template=template, add_generation_prompt=add_generation_prompt
    )[0][0]
    return {"messages": messages, "add_generation_prompt": add_generation_prompt, "rendered": rendered}


def main():
    img = {"type": "image"}
    txt = lambda t: {"type": "text", "text": t}  # noqa: E731
    out = {
        "producer": "scripts/make_chat_template_fixtures.py",
        "transformers": transformers.__version__,
        "templates": {"smolvlm": SMOLVLM, "smollm2": SMOLLM2, "features": FEATURES},
        "cases": {
            "smolvlm": [
                case(SMOLVLM, [{"role": "user", "content": [img, txt("Describe this image.")]}], True),
                case(SMOLVLM, [
                    {"role": "system", "content": [txt("Answer briefly.")]},
                    {"role": "user", "content": [txt("What is in"), img, txt(" this picture?")]},
                    {"role": "assistant", "content": [txt("A cat.")]},
                    {"role": "user", "content": [img, img, txt("And these two?")]},
                ], True),
                case(SMOLVLM, [{"role": "user", "content": [txt("Hi")]}], False),
            ],
            "smollm2": [
                case(SMOLLM2, [{"role": "user", "content": "What is the capital of France?"}], True),
                case(SMOLLM2, [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Bye"},
                ], False),
            ],
            "features": [
                case(FEATURES, [
                    {"role": "system", "content": "  sys é \"quoted\" <tag> "},
                    {"role": "skip", "content": "ignored"},
                    {"role": "user", "content": "hello\nworld"},
                    {"role": "user", "content": "stop here"},
                    {"role": "user", "content": "never"},
                ], True),
            ],
        },
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for k, v in out["cases"].items():
        for c in v:
            print(k, repr(c["rendered"][:200]))


if __name__ == "__main__":
    main()
