"""A tiny Llama-architecture model + tokenizer built locally, for tests and demos (no network).

A randomly initialised tiny model is useless for fine-tuning demos: LoRA on it learns nothing. So the recipe
here trains a byte-level BPE tokenizer on offline text, builds a ~0.55 M parameter Llama, and pretrains it for
2-3 minutes of 2-core CPU on plain text (chatterbot-corpus dialogues + generic synthetic letter/copy/count text).
`scripts/build_tiny_model.py` runs the recipe once and ships the result in `tunewise/models/tiny_model/`;
`ensure_tiny_model()` returns that fixture (what `model: tiny` in a config resolves to).
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

FIXTURE_DIR = Path(__file__).with_name("tiny_model")

BOS_TOKEN = "<|endoftext|>"  # also unk; separates documents in pretraining
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # eos and pad, as in SmolLM2
SPECIAL_TOKENS = [BOS_TOKEN, IM_START, IM_END]

# ChatML in SmolLM2's shape, without its default system prompt. The {% generation %} block marks the supervised
# assistant span (content + <|im_end|>) for `return_assistant_tokens_mask` / TRL's assistant_only_loss; a plain
# render ignores it.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# The recipe that produced the committed fixture. Changing any of it changes the fixture: rebuild it with
# scripts/build_tiny_model.py and update tiny_model/README.md.
RECIPE: dict = {
    "seed": 0,
    "vocab_size": 1536,
    "model_max_length": 512,
    "hidden_size": 96,
    "layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "intermediate_size": 256,
    "steps": 900,
    "batch_size": 32,
    "seq_len": 64,
    "lr": 6e-3,
    "warmup_steps": 30,
    "n_plain": 20000,
    "n_tasks": 20000,
}

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


# --------------------------------------------------------------------------------------------- pretraining text


def chatterbot_conversations() -> list[list[str]]:
    """English dialogues of the installed `chatterbot-corpus` package (BSD licence); [] if it is not installed."""
    import yaml

    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0]) / "data" / "english"
    conversations: list[list[str]] = []
    for path in sorted(glob.glob(str(root / "*.yml"))):
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        for conv in doc.get("conversations") or []:
            turns = [str(t).strip() for t in conv if isinstance(t, (str, int, float)) and str(t).strip()]
            if turns:
                conversations.append(turns)
    return conversations


def _words_from(conversations: Sequence[Sequence[str]], rng: random.Random) -> list[str]:
    words = sorted({w for conv in conversations for t in conv for w in re.findall(r"[a-z]+", t.lower())})
    words = [w for w in words if 1 <= len(w) <= 12]
    if len(words) < 500:  # no corpus installed: pronounceable-ish pseudo-words keep the recipe working offline
        vowels, consonants = "aeiou", "bcdfghjklmnprstvwyz"
        extra = set()
        while len(extra) < 2000:
            n = rng.randint(2, 8)
            extra.add("".join(rng.choice(consonants if i % 2 == 0 else vowels) for i in range(n)))
        words = sorted(set(words) | extra)
    return words


def _spaced(word: str) -> str:
    return " ".join(word)


def pretraining_corpus(
    seed: int = 0, n_plain: int = RECIPE["n_plain"], n_tasks: int = RECIPE["n_tasks"]
) -> tuple[list[str], list[list[dict[str, str]]]]:
    """Return (plain documents, chat conversations) for pretraining.

    Plain text (`n_plain` documents): random letter strings written twice (half of them: this is what grows the
    copying ability LoRA builds on), words spelled letter by letter, alphabet runs, counting, word lists.
    Chats: the corpus dialogues as user/assistant turns, plus `n_tasks` generic letter tasks (spell, join, copy,
    first/last letter, length, uppercase, next letter, count up, repeat a sentence). Deliberately no reversal of
    any kind: tests check that LoRA learns reversal on top of this generic base.
    """
    rng = random.Random(seed)
    convs = chatterbot_conversations()
    words = _words_from(convs, rng)
    sentences = [t for conv in convs for t in conv if 10 <= len(t) <= 120] or [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(500)
    ]

    plain: list[str] = []
    for _ in range(n_plain):
        kind = rng.choices(range(6), weights=[1, 1, 1, 1, 1, 5])[0]
        if kind == 5:  # a random letter string, then again: pure copying, the fastest way to grow induction heads
            letters = _spaced("".join(rng.choice(_ALPHABET) for _ in range(rng.randint(3, 8))))
            plain.append(f"{letters} . {letters}")
        elif kind == 0:
            w = rng.choice(words)
            plain.append(rng.choice(["the word {w} is spelled {s}.", "{w}: {s}", "{s} spells {w}."]).format(
                w=w, s=_spaced(w)))
        elif kind == 1:
            start = rng.randrange(26)
            plain.append(" ".join(_ALPHABET[start:start + rng.randint(3, 26)]))
        elif kind == 2:
            start = rng.randint(0, 90)
            plain.append(" ".join(str(i) for i in range(start, start + rng.randint(3, 12))))
        elif kind == 3:
            plain.append(", ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + ".")
        else:
            ws = [rng.choice(words) for _ in range(rng.randint(2, 5))]
            plain.append(" | ".join(_spaced(w) for w in ws))

    chats: list[list[dict[str, str]]] = []
    for conv in convs:
        msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(conv)]
        if len(msgs) >= 2:
            chats.append(msgs[: len(msgs) - (len(msgs) % 2)])

    def task() -> tuple[str, str]:
        w = rng.choice(words)
        kind = rng.choices(range(10), weights=[2, 2, 3, 1, 1, 1, 1, 0.5, 0.5, 1])[0]
        if kind == 0:
            return f"spell: {w}", _spaced(w)
        if kind == 1:
            return f"join: {_spaced(w)}", w
        if kind == 2:
            return f"copy: {_spaced(w)}", _spaced(w)
        if kind == 3:
            return f"first letter: {_spaced(w)}", w[0]
        if kind == 4:
            return f"last letter: {_spaced(w)}", w[-1]
        if kind == 5:
            return f"length: {_spaced(w)}", str(len(w))
        if kind == 6:
            return f"uppercase: {_spaced(w)}", _spaced(w.upper())
        if kind == 7:
            i = rng.randrange(25)
            return f"next letter: {_ALPHABET[i]}", _ALPHABET[i + 1]
        if kind == 8:
            a = rng.randint(0, 50)
            b = a + rng.randint(2, 9)
            return f"count from {a} to {b}", " ".join(str(i) for i in range(a, b + 1))
        s = rng.choice(sentences)
        return f"repeat: {s}", s

    for _ in range(n_tasks):
        q, a = task()
        chats.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    rng.shuffle(plain)
    rng.shuffle(chats)
    return plain, chats


# ------------------------------------------------------------------------------------------- tokenizer / model


def build_tokenizer(
    texts: Iterable[str],
    vocab_size: int = RECIPE["vocab_size"],
    model_max_length: int = RECIPE["model_max_length"],
    padding_side: str = "left",
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it with ChatML special tokens and chat template.

    Raises ValueError if a lowercase letter or a space + letter does not come out as one token (the texts must
    contain letter-spaced words, as `pretraining_corpus` does), because character-level tasks rely on it.
    Left padding is the default: right for batched generation and harmless for training with RoPE.
    """
    special = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,  # ids 0, 1, 2 as in SmolLM2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((special.sub(" ", t) for t in texts), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        unk_token=BOS_TOKEN,
        eos_token=IM_END,
        pad_token=IM_END,
        padding_side=padding_side,  # saved only when given to the constructor (transformers 5)
        model_max_length=model_max_length,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    bad = [c for c in _ALPHABET for s in (c, " " + c) if len(hf.encode(s, add_special_tokens=False)) != 1]
    if bad:
        raise ValueError(f"letters not single tokens: {sorted(set(bad))}; train on letter-spaced text")
    return hf


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = RECIPE["hidden_size"],
    layers: int = RECIPE["layers"],
    heads: int = RECIPE["heads"],
    kv_heads: int | None = RECIPE["kv_heads"],
    intermediate_size: int | None = RECIPE["intermediate_size"],
    max_position_embeddings: int = RECIPE["model_max_length"],
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama with tied embeddings, sized for `tokenizer`, eos = pad = <|im_end|>."""
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    return model


def _lr_lambda(warmup: int, total: int, floor: float = 0.1):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    steps: int,
    seed: int = 0,
    batch_size: int = RECIPE["batch_size"],
    seq_len: int = RECIPE["seq_len"],
    lr: float = RECIPE["lr"],
    warmup_steps: int = RECIPE["warmup_steps"],
    log_every: int = 100,
) -> dict:
    """Causal-LM pretraining on `texts` packed into `seq_len` blocks (documents joined by <|endoftext|>).

    A plain torch AdamW loop rather than `transformers.Trainer`: the data is one pre-packed tensor, there is no
    eval, checkpointing or output directory to manage, and a loop this small is easy to keep bit-for-bit
    deterministic (fixed seed, one shuffled permutation per epoch). Returns losses and timings.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ids: list[int] = []
    sep = tokenizer.bos_token_id
    for enc in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(sep)
    n_blocks = len(ids) // seq_len
    data = torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)

    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup_steps, steps))
    order = torch.randperm(n_blocks, generator=g)
    pos, losses, log = 0, [], []
    t0 = time.perf_counter()
    for step in range(steps):
        if pos + batch_size > n_blocks:
            order, pos = torch.randperm(n_blocks, generator=g), 0
        batch = data[order[pos:pos + batch_size]]
        pos += batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            log.append({"step": step + 1, "loss": round(recent, 4), "seconds": round(time.perf_counter() - t0, 1)})
            print(f"step {step + 1}/{steps} loss {recent:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    model.eval()
    tail = losses[-min(50, len(losses)):]
    return {
        "steps": steps,
        "tokens_in_corpus": len(ids),
        "tokens_seen": steps * batch_size * seq_len,
        "epochs": round(steps * batch_size / n_blocks, 2),
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),  # mean of the last 50 steps
        "seconds": round(time.perf_counter() - t0, 1),
        "log": log,
    }


def save_tiny(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """Save model (safetensors) and tokenizer to `out_dir`; returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for f in out.iterdir():  # safetensors writes 0600; a file shipped in a wheel must be world-readable
        if f.is_file():
            f.chmod(0o644)
    return out


# ----------------------------------------------------------------------------------------------------- recipe


def build_tiny_model(out_dir: str | Path, steps: int | None = None, seed: int | None = None) -> dict:
    """Run the whole recipe (corpus -> tokenizer -> model -> pretrain -> save) into `out_dir`; returns stats."""
    seed = RECIPE["seed"] if seed is None else seed
    steps = RECIPE["steps"] if steps is None else steps
    random.seed(seed)
    torch.manual_seed(seed)
    r = RECIPE
    plain, chats = pretraining_corpus(seed, n_plain=r["n_plain"], n_tasks=r["n_tasks"])
    chat_contents = [m["content"] for c in chats for m in c]
    tokenizer = build_tokenizer(plain + chat_contents, vocab_size=r["vocab_size"], model_max_length=r["model_max_length"])
    texts = plain + [tokenizer.apply_chat_template(c, tokenize=False) for c in chats]
    random.Random(seed).shuffle(texts)
    model = build_model(
        tokenizer, hidden_size=r["hidden_size"], layers=r["layers"], heads=r["heads"], kv_heads=r["kv_heads"],
        intermediate_size=r["intermediate_size"], max_position_embeddings=r["model_max_length"], seed=seed,
    )
    stats = pretrain(
        model, tokenizer, texts, steps=steps, seed=seed, batch_size=r["batch_size"], seq_len=r["seq_len"],
        lr=r["lr"], warmup_steps=r["warmup_steps"],
    )
    save_tiny(model, tokenizer, out_dir)
    stats.update(
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=len(tokenizer),
        documents={"plain": len(plain), "chats": len(chats)},
    )
    return stats


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file() and (
        path / "tokenizer.json"
    ).is_file()


def ensure_tiny_model(cache_dir: str | Path | None = None) -> Path:
    """Path of the tiny model: the fixture shipped in the package, else built once into a cache directory.

    The cache defaults to $TUNEWISE_CACHE or ~/.cache/tunewise; building takes 2-3 minutes on a 2-core CPU. The
    build goes to a temporary directory that is renamed into place, so a half-built model is never returned.
    """
    if _is_model_dir(FIXTURE_DIR):
        return FIXTURE_DIR
    root = Path(cache_dir or os.environ.get("TUNEWISE_CACHE") or Path.home() / ".cache" / "tunewise")
    target = root / "tiny_model"
    if _is_model_dir(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny_model-", dir=root))
    try:
        build_tiny_model(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_model_dir(target):  # another process won the race only if it left a complete model
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
