"""Benchmark: prepare 100,000 generated chat rows (parse, validate, tokenize, statistics, exact + near dedup, split).

    python benchmarks/data_prepare.py [--rows 100000] [--model smollm2-135m] [--near 0.85] [--lang en|zh]

The target is at most 60 s on a 2-core CPU machine. The rows are generated here (seeded): varied questions and
answers (English words, or Chinese words written without spaces with --lang zh), with 2% exact duplicates, 2%
near-duplicates (one word changed) and 0.5% broken rows mixed in.

It also times the near-duplicate signatures of the same texts alone, against the word-trigram shingles tunewise used
before CJK text was split into characters (the baseline, defined here), and prints the ratio.

Measured on a shared 2-core machine (load 5-8, so the absolute times are 4-5x an idle machine's), before -> after the
CJK-aware shingles: English 287 -> 274 s, near-duplicates found 1700 -> 1949 (of ~2000 made), signatures ratio 0.99;
Chinese 307 -> 343 s, near-duplicates found 0 -> 1965, signatures 5.1x the old ones (which saw each Chinese sentence
as one word: one shingle, cheap and useless; a Chinese row has ~3x as many characters as an English row has words).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a model data train learn token answer question label value time people year way day thing man world life hand "
    "part child eye woman place work week case point government company number group problem fact be have do say get "
    "make go know take see come think look want give use find tell ask work seem feel try leave call good new first last "
    "long great little own other old right big high different small large next early young important few public bad "
    "same able to of in for on with at by from up about into over after city river mountain paris france capital red "
    "green blue colour music book write read code python function error file system memory fast slow cheap price"
).split()
WORDS_ZH = (
    "模型 数据 训练 学习 标记 答案 问题 标签 数值 时间 人们 年份 方法 今天 事情 男人 世界 生活 手 部分 孩子 眼睛 女人 地方 "
    "工作 星期 情况 要点 政府 公司 数字 小组 事实 是 有 做 说 得到 制作 去 知道 拿 看 来 想 看看 要 给 用 找到 告诉 问 似乎 "
    "感觉 尝试 离开 打电话 好 新 第一 最后 长 伟大 小 自己 其他 旧 正确 大 高 不同 下一个 早 年轻 重要 少 公共 坏 相同 能够 "
    "的 了 在 和 对 从 关于 城市 河流 山脉 巴黎 法国 首都 红色 绿色 蓝色 颜色 音乐 书 写 读 代码 函数 错误 文件 系统 内存 "
    "快 慢 便宜 价格"
).split()
LABELS = ["billing", "technical", "account", "sales", "other"]


def sentence(rng: random.Random, lo: int, hi: int, lang: str = "en") -> str:
    if lang == "zh":
        return "".join(rng.choices(WORDS_ZH, k=rng.randint(lo, hi))) + "。"
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi))).capitalize() + "."


def generate(path: Path, rows: int, seed: int = 0, lang: str = "en") -> None:
    rng = random.Random(seed)
    made: list[dict] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            r = rng.random()
            if made and r < 0.02:
                row = rng.choice(made)
            elif made and r < 0.04:
                row = json.loads(json.dumps(rng.choice(made)))
                if lang == "zh":  # one word changed: a character (Chinese words are 1-3 of them) replaced by 变
                    text = row["messages"][-1]["content"]
                    i = rng.randrange(len(text) - 1)
                    row["messages"][-1]["content"] = text[:i] + "变" + text[i + 1 :]
                else:
                    words = row["messages"][-1]["content"].split()
                    words[rng.randrange(len(words))] = "changed"
                    row["messages"][-1]["content"] = " ".join(words)
            elif r < 0.045:
                f.write('{"messages": [broken\n')
                continue
            else:
                row = {
                    "messages": [
                        {"role": "system", "content": "You are a helpful support assistant."},
                        {"role": "user", "content": sentence(rng, 10, 40, lang)},
                        {"role": "assistant", "content": sentence(rng, 15, 60, lang)},
                    ],
                    "label": rng.choice(LABELS),
                }
                if len(made) < 5000:
                    made.append(row)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def word_trigram_hashes(text: str) -> "np.ndarray":
    """The baseline: shingles as tunewise made them before (trigrams of ``\\w+`` runs, a Chinese sentence one "word")."""
    import numpy as np

    from tunewise.data.dedup import _WORDS

    words = re.findall(r"\w+", text.lower())
    if not words:
        return np.zeros(1, dtype=np.uint64)
    hashes = np.fromiter(map(_WORDS.__getitem__, words), dtype=np.uint64, count=len(words))
    size = min(3, len(hashes))
    n = len(hashes) - size + 1
    h = np.zeros(n, dtype=np.uint64)
    for j in range(size):
        h = h * np.uint64(0x100000001B3) + hashes[j : j + n]
    return h


def time_signatures(path: Path) -> dict[str, float]:
    """Seconds to compute the near-duplicate signatures of every row's text: now and with the baseline shingles."""
    from tunewise.data import dedup
    from tunewise.example import Example

    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                texts.append(dedup.example_text(Example(json.loads(line)["messages"])))
            except (ValueError, KeyError):
                continue
    out = {}
    current = dedup.shingle_hashes
    for name, fn in (("baseline_word_trigrams", word_trigram_hashes), ("now", current), ("baseline_word_trigrams_2", word_trigram_hashes), ("now_2", current)):
        dedup.shingle_hashes = fn  # signatures() looks the function up at call time
        start = time.perf_counter()
        dedup.signatures(texts)
        out[name] = time.perf_counter() - start
    dedup.shingle_hashes = current
    base, now = min(out.pop("baseline_word_trigrams"), out.pop("baseline_word_trigrams_2")), min(out.pop("now"), out.pop("now_2"))
    return {"signatures_s": round(now, 2), "baseline_signatures_s": round(base, 2), "ratio": round(now / base, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", default="smollm2-135m", help="tokenizer to measure with")
    parser.add_argument("--near", type=float, default=0.85, help="near-duplicate Jaccard threshold")
    parser.add_argument("--lang", choices=("en", "zh"), default="en", help="language of the generated rows")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tunewise.config import DataConfig
    from tunewise.data.prepare import prepare_data
    from tunewise.lm.loading import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        generate(data, args.rows, lang=args.lang)
        size = data.stat().st_size
        config = DataConfig(path=str(data), stratify_by="label", near_dedup_threshold=args.near, max_tokens=2048)
        start = time.perf_counter()
        report = prepare_data(config, tokenizer, Path(tmp) / "out", progress=False)
        seconds = time.perf_counter() - start
        signature_times = time_signatures(data)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": args.rows, "lang": args.lang, "file_mb": round(size / 2**20, 1), "model": args.model, "seconds": round(seconds, 2),
                      "rows_per_s": round(args.rows / seconds), "peak_rss_mb": round(peak_mb), "counts": report.counts,
                      "total_tokens_p50": report.tokens["train"]["total"]["p50"], "near_duplicate_signatures": signature_times},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
