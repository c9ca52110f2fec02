#!/usr/bin/env python3
"""Generate the offline side-by-side benchmark (issue 7) in `webvlm eval`'s format, designed so that seeing the
image matters: fictional entities (guilds of an invented country, so no model can know them) identified by an
emblem image; one corpus document per entity holds its facts; near-duplicate distractor documents share its
visual attributes or a similar name. A question is answerable only by identifying the entity from the image and
retrieving its document.

    python scripts/make_entity_benchmark.py [--entities 60] [--seed 0] [--out data/entity-bench]

Writes (deterministic in --seed; Pillow only, its built-in font):
    <out>/images/<entity>-<condition>.png    128x128 emblems
    <out>/corpus.jsonl                       {id, title, url, text}: entity documents + distractors
    <out>/train.jsonl, <out>/test.jsonl      items {id, image, question, answers, gold_doc_ids, tags, ocr_text,
                                             condition}; split BY ENTITY (test entities never appear in train)
    <out>/easy_vqa_control.jsonl             perception-only control (easy-vqa test questions; images from
                                             data/easy-vqa/test, fetched by scripts/fetch_offline_vlm.sh)
    <out>/manifest.json                      counts, seed, conditions

Conditions (every test entity gets one item per condition, each with its own question):
- `name_in_image`: the emblem shows the guild's name; the legacy arm gets that text as `ocr_text` (what an OCR
  step would give it), so text reading suffices for both arms.
- `visual_only`: the emblem without the name; only its shape, color and pattern identify the guild. The legacy
  arm gets generic tags ("emblem", "badge") and the caption.
- `distractors`: visual only, and the corpus holds a distractor guild with the same shape and color but another
  pattern (and different facts), so a vague description retrieves the wrong document.
"""
import argparse
import json
import os
import random

from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

SHAPES = ["circle", "triangle", "square", "hexagon", "star", "diamond"]
COLORS = {"red": (200, 30, 40), "blue": (30, 70, 200), "green": (30, 150, 60), "yellow": (230, 190, 20),
          "purple": (120, 40, 160), "orange": (240, 120, 20), "black": (25, 25, 25), "teal": (20, 140, 140)}
PATTERNS = ["solid", "stripes", "dots", "ring"]
SYL = ["vel", "mor", "an", "tri", "ska", "lo", "ren", "dal", "qui", "bar", "sen", "ost", "ul", "fen", "cor", "id",
       "mar", "wyn", "tal", "eth", "rho", "gan", "pel", "zu"]
CRAFTS = ["glassblowers", "clockmakers", "rope makers", "beekeepers", "cartographers", "lamplighters", "weavers",
          "bell founders", "salt traders", "boat builders", "ink makers", "stonecutters"]
QUESTIONS = [
    ("In what year was the guild whose emblem is shown founded?", "founded"),
    ("In which town does the guild with this emblem meet?", "town"),
    ("What trade do the members of the guild with this emblem practice?", "craft"),
    ("Who leads the guild whose emblem this is?", "leader"),
]


def name(rng, used):
    while True:
        n = "".join(rng.choice(SYL) for _ in range(rng.choice([2, 3]))).capitalize()
        if n not in used and 4 <= len(n) <= 10:
            used.add(n)
            return n


def polygon(shape, cx, cy, r):
    import math
    if shape == "triangle":
        k, rot = 3, -math.pi / 2
    elif shape == "square":
        k, rot = 4, math.pi / 4
    elif shape == "diamond":
        k, rot = 4, 0.0
    elif shape == "hexagon":
        k, rot = 6, 0.0
    elif shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    else:
        return None
    return [(cx + r * math.cos(rot + 2 * math.pi * i / k), cy + r * math.sin(rot + 2 * math.pi * i / k)) for i in range(k)]


def draw_emblem(e, with_name, path):
    s = 128
    img = Image.new("RGB", (s, s), (245, 243, 236))
    d = ImageDraw.Draw(img)
    color = COLORS[e["color"]]
    cy = 52 if with_name else 64
    r = 38 if with_name else 48
    pts = polygon(e["shape"], 64, cy, r)
    box = (64 - r, cy - r, 64 + r, cy + r)
    if pts is None:
        d.ellipse(box, fill=color)
    else:
        d.polygon(pts, fill=color)
    # the pattern, clipped to the shape through a mask
    mask = Image.new("L", (s, s), 0)
    md = ImageDraw.Draw(mask)
    if pts is None:
        md.ellipse(box, fill=255)
    else:
        md.polygon(pts, fill=255)
    pat = Image.new("RGB", (s, s), (255, 255, 255))
    pm = Image.new("L", (s, s), 0)
    pd = ImageDraw.Draw(pm)
    if e["pattern"] == "stripes":
        for x in range(-s, s, 12):
            pd.line([(x, 0), (x + s, s)], fill=255, width=4)
    elif e["pattern"] == "dots":
        for x in range(6, s, 14):
            for y in range(6, s, 14):
                pd.ellipse((x - 3, y - 3, x + 3, y + 3), fill=255)
    elif e["pattern"] == "ring":
        rr = r * 0.45
        pd.ellipse((64 - rr, cy - rr, 64 + rr, cy + rr), outline=255, width=5)
    pm = Image.composite(pm, Image.new("L", (s, s), 0), mask)
    img = Image.composite(pat, img, pm)
    if with_name:
        d = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=18)
        w = d.textlength(e["name"].upper(), font=font)
        d.text(((s - w) / 2, 100), e["name"].upper(), fill=(20, 20, 20), font=font)
    img.save(path, optimize=True)


def describe(e):
    pat = {"solid": "plain", "stripes": "with white diagonal stripes", "dots": "with white dots",
           "ring": "with a white ring in the middle"}[e["pattern"]]
    return f"a {e['color']} {e['shape']} {pat}" if e["pattern"] != "solid" else f"a plain {e['color']} {e['shape']}"


def document(e):
    return {
        "id": e["id"],
        "title": f"{e['name']} Guild",
        "url": f"https://example.org/guilds/{e['id']}",
        "text": (f"The {e['name']} Guild is a guild of {e['craft']} in the Free Province of Ostmark (a fictional "
                 f"country). Its emblem is {describe(e)}. The guild was founded in {e['founded']} and meets in the "
                 f"town of {e['town']}. It is led by {e['leader']}. Members of the {e['name']} Guild are known for "
                 f"their {e['craft']} work and an annual fair in {e['town']}."),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=60)
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "entity-bench"))
    ap.add_argument("--easy-vqa", type=int, default=60, help="control items from the easy-vqa test split")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)

    used_names, used_looks = set(), set()
    towns = [name(rng, used_names) + rng.choice(["field", "ford", "haven", "mere", "stead"]) for _ in range(40)]
    people = [f"{name(rng, used_names)} {name(rng, used_names)}" for _ in range(80)]

    def entity(i, look=None):
        while look is None:
            cand = (rng.choice(SHAPES), rng.choice(sorted(COLORS)), rng.choice(PATTERNS))
            if cand not in used_looks:
                look = cand
        used_looks.add(look)
        n = name(rng, used_names)
        return {"id": f"guild-{i:03d}", "name": n, "shape": look[0], "color": look[1], "pattern": look[2],
                "craft": rng.choice(CRAFTS), "founded": str(rng.randint(1402, 1899)), "town": rng.choice(towns),
                "leader": rng.choice(people)}

    entities = [entity(i) for i in range(args.entities)]
    order = list(range(args.entities))
    rng.shuffle(order)
    n_test = max(1, round(args.entities * args.test_fraction))
    test_ids = set(order[:n_test])

    # distractors: for each entity, a guild with the same shape and color and another pattern (its own facts)
    distractors = []
    for k, e in enumerate(entities):
        other = [p for p in PATTERNS if p != e["pattern"] and (e["shape"], e["color"], p) not in used_looks]
        if other:
            distractors.append(entity(1000 + k, (e["shape"], e["color"], rng.choice(other))))
            distractors[-1]["id"] = f"guild-d{k:03d}"
            distractors[-1]["distractor_of"] = e["id"]

    corpus = [document(e) for e in entities + distractors]
    rng.shuffle(corpus)
    with open(os.path.join(args.out, "corpus.jsonl"), "w") as f:
        for d in corpus:
            f.write(json.dumps(d) + "\n")

    splits = {"train": [], "test": []}
    for i, e in enumerate(entities):
        split = "test" if i in test_ids else "train"
        draw_emblem(e, True, os.path.join(args.out, "images", f"{e['id']}-name.png"))
        draw_emblem(e, False, os.path.join(args.out, "images", f"{e['id']}-plain.png"))
        qs = rng.sample(QUESTIONS, 3)
        for cond, (q, key) in zip(["name_in_image", "visual_only", "distractors"], qs):
            if cond == "distractors" and not any(d.get("distractor_of") == e["id"] for d in distractors):
                continue
            item = {"id": f"{e['id']}-{cond}", "image": f"images/{e['id']}-{'name' if cond == 'name_in_image' else 'plain'}.png",
                    "question": q, "answers": [e[key]], "gold_doc_ids": [e["id"]], "condition": cond,
                    "tags": ["emblem", "badge"]}
            if cond == "name_in_image":
                item["ocr_text"] = e["name"].upper()
            splits[split].append(item)
    for split, items in splits.items():
        with open(os.path.join(args.out, f"{split}.jsonl"), "w") as f:
            for it in items:
                f.write(json.dumps(it) + "\n")

    # perception-only control: easy-vqa test questions (no documents matter)
    n_ctrl = 0
    qfile = os.path.join(ROOT, "data", "easy-vqa", "test", "test.jsonl")
    if os.path.exists(qfile) and args.easy_vqa > 0:
        rel = os.path.relpath(os.path.join(ROOT, "data", "easy-vqa", "test"), args.out)
        with open(qfile) as src, open(os.path.join(args.out, "easy_vqa_control.jsonl"), "w") as f:
            for k, line in enumerate(src):
                if k >= args.easy_vqa:
                    break
                q = json.loads(line)
                f.write(json.dumps({"id": f"easy-vqa-{k}", "image": f"{rel}/{q['image']}", "question": q["question"],
                                    "answers": [q["answer"]], "gold_doc_ids": [], "condition": "easy_vqa_control"}) + "\n")
                n_ctrl += 1
    manifest = {"seed": args.seed, "entities": len(entities), "test_entities": n_test, "distractor_docs": len(distractors),
                "corpus_docs": len(corpus), "train_items": len(splits["train"]), "test_items": len(splits["test"]),
                "easy_vqa_control_items": n_ctrl, "conditions": ["name_in_image", "visual_only", "distractors"],
                "split": "by entity", "generator": "scripts/make_entity_benchmark.py"}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
