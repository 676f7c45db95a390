"""Build examples/topics-zh/topics-zh.jsonl from the chatterbot-corpus Chinese files (BSD licence).

The same task as examples/topics (scripts/build_topics_dataset.py), in Chinese: "which topic is this message from?"
The first utterance of each conversation is the input, its corpus file's topic (a Chinese label, :data:`LABELS`) is the
answer. Identical utterances are kept once (compared with full-width and half-width forms folded, so "你好吗?" and
"你好吗？" are one); an utterance found under two topics is dropped as ambiguous. The rows carry no system prompt:
examples/topics-zh/config.yaml adds one that lists the labels.

Run: pip install --no-deps chatterbot-corpus==1.3.3 && python scripts/build_topics_zh_dataset.py [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "examples" / "topics-zh" / "topics-zh.jsonl"

# corpus file -> the topic's name in Chinese (the answer the model learns)
LABELS = {
    "ai": "人工智能",
    "botprofile": "机器人",
    "conversations": "闲聊",
    "emotion": "情感",
    "food": "饮食",
    "gossip": "八卦",
    "greetings": "问候",
    "history": "历史",
    "humor": "幽默",
    "literature": "文学",
    "money": "金钱",
    "movies": "电影",
    "politics": "政治",
    "psychology": "心理",
    "science": "科学",
    "sports": "体育",
    "trivia": "常识",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"file to write (default: {OUT.relative_to(ROOT)})")
    out = parser.parse_args().out
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None:
        raise SystemExit("install the source first: pip install --no-deps chatterbot-corpus==1.3.3")
    sys.path.insert(0, str(ROOT))
    from tunewise.data.dedup import fold_width

    folder = Path(spec.submodule_search_locations[0]) / "data" / "chinese"
    found = sorted(p.stem for p in folder.glob("*.yml"))
    if found != sorted(LABELS):
        raise SystemExit(f"expected the 17 topic files {sorted(LABELS)} in {folder}, found {found}")
    topics: dict[str, set[str]] = defaultdict(set)
    first: dict[str, str] = {}  # folded text -> the utterance as first seen
    for path in sorted(folder.glob("*.yml")):
        label = LABELS[path.stem]
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8"))["conversations"]:
            if not conversation or not isinstance(conversation[0], str) or not conversation[0].strip():
                continue
            text = " ".join(conversation[0].split())
            key = fold_width(text)
            first.setdefault(key, text)
            topics[key].add(label)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = 0
    with out.open("w", encoding="utf-8") as f:
        for key, text in first.items():
            if len(topics[key]) != 1:
                continue
            (label,) = topics[key]
            record = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}], "meta": {"label": label}}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            kept += 1
    print(f"wrote {kept} examples over {len(set(LABELS.values()))} topics to {out}")


if __name__ == "__main__":
    main()
