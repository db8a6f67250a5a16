"""Writes tftransfer/demo_data/fortunes_target/: 300 short quotes, 50 on each of 6 topics.

Source: the Debian package `fortunes` (`apt-get install fortunes`), fortune
files computers, food, law, love, politics and science, distributed under
the BSD licence of fortune-mod (its notice is copied beside the data). The
quotes are drawn with a fixed seed among those of at most 200 characters that
are filed under one topic only, so running this again writes the same files.

Run: python scripts/make_text_demo_data.py
"""

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tftransfer.data.text import FORTUNES_DIR, read_fortunes  # noqa: E402

TOPICS = ("computers", "food", "law", "love", "politics", "science")
PER_TOPIC = 50
TARGET = os.path.join(ROOT, "tftransfer", "demo_data", "fortunes_target")
COPYRIGHT = "/usr/share/doc/fortunes/copyright"


def main():
    texts, labels = read_fortunes(list(TOPICS), max_characters=200)
    rng = np.random.default_rng(0)
    rows = []
    for topic in TOPICS:
        mine = [t for t, label in zip(texts, labels) if label == topic]
        for index in sorted(rng.choice(len(mine), PER_TOPIC, replace=False)):
            rows.append({"text": mine[index], "label": topic})
    os.makedirs(TARGET, exist_ok=True)
    with open(os.path.join(TARGET, "quotes.jsonl"), "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(COPYRIGHT, encoding="utf-8", errors="replace") as handle:
        notice = handle.read().split("Atheism cookie file copyright information")[0]
    with open(os.path.join(TARGET, "NOTICE"), "w", encoding="utf-8") as handle:
        handle.write(f"quotes.jsonl: {len(rows)} quotes from the fortune files "
                     f"{', '.join(TOPICS)} of the Debian package `fortunes` "
                     f"({FORTUNES_DIR}), drawn by scripts/make_text_demo_data.py.\n"
                     "Their copyright notice (from /usr/share/doc/fortunes/copyright):\n\n"
                     + notice.rstrip().rstrip("-").rstrip() + "\n")
    print(f"wrote {len(rows)} quotes to {TARGET}")


if __name__ == "__main__":
    main()
