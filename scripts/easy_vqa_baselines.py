#!/usr/bin/env python3
"""Image-blind baselines for easy-vqa accuracy (the first N test questions, file order), from the train split's
answer statistics — what a model that never looks at the image could score:

- majority: the most frequent train answer ("yes") for every question;
- question-type prior: the most frequent train answer among train questions of the same type (yes/no, color,
  shape), e.g. "yes" for yes/no questions, the most common color for color questions.

    python scripts/easy_vqa_baselines.py [--n 150]     (needs `pip install easy-vqa`)
"""
import argparse
import json
from collections import Counter

COLORS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}
SHAPES = {"circle", "rectangle", "triangle"}


def qtype(answer):
    return "yesno" if answer in ("yes", "no") else "color" if answer in COLORS else "shape" if answer in SHAPES else "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=150)
    args = ap.parse_args()
    from easy_vqa import get_test_questions, get_train_questions

    _, tr_a, _ = get_train_questions()
    _, te_a, _ = get_test_questions()
    te_a = te_a[: args.n]
    majority = Counter(tr_a).most_common(1)[0][0]
    prior = {t: Counter(a for a in tr_a if qtype(a) == t).most_common(1)[0][0] for t in {qtype(a) for a in tr_a}}
    # the question type is read from the question's answer class: a perfect question classifier, so an upper
    # bound for image-blind answering by type
    out = {
        "items": len(te_a),
        "majority_answer": majority,
        "acc_majority": sum(a == majority for a in te_a) / len(te_a),
        "type_prior": prior,
        "acc_type_prior": sum(a == prior[qtype(a)] for a in te_a) / len(te_a),
        "answer_types": dict(Counter(qtype(a) for a in te_a)),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
