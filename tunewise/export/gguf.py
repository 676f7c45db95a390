"""Write a Hugging Face Llama-architecture model folder as one GGUF file (llama.cpp, Ollama, LM Studio).

Why tunewise writes the file itself with the ``gguf`` package (llama.cpp's own Python library) rather than running
llama.cpp's ``convert_hf_to_gguf.py``: that script is not published on any package registry (it ships only inside
the llama.cpp source tree and the ``llama-cpp-python`` source archive, which compiles llama.cpp on install), and
tunewise installs from registries only. The writer below follows that script's layout for the ``llama`` architecture:
the same tensor names (from ``gguf``'s own name map), the same Q/K row permutation for rotary embeddings, the same
metadata keys, 1-D tensors kept in float32, and a byte-level BPE vocabulary with merges, special-token ids and the
chat template. Quantization uses ``gguf.quants`` (bit-exact ports of ggml's reference quantizers), which implements
the legacy block types only: the k-quants (``q4_k_m``, ...) need llama.cpp's C++ ``llama-quantize``.

Nothing here trusts itself: :mod:`tunewise.export.gguf_run` loads the file back and checks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# file types this writer can produce honestly (gguf.quants quantizes them; transformers and llama.cpp read them)
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
ARCHITECTURES = ("llama",)  # config.json model_type values whose layout this writer knows


def _qtypes() -> dict[str, Any]:
    from gguf import GGMLQuantizationType as Q

    return {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q5_1": Q.Q5_1, "q5_0": Q.Q5_0,
            "q4_1": Q.Q4_1, "q4_0": Q.Q4_0}


def _file_type(name: str) -> int:
    from gguf import LlamaFileType as F

    return {"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0,
            "q5_1": F.MOSTLY_Q5_1, "q5_0": F.MOSTLY_Q5_0, "q4_1": F.MOSTLY_Q4_1, "q4_0": F.MOSTLY_Q4_0}[name]


def check_gguf_type(name: str) -> str:
    """``name`` lower-cased if this writer can produce it; ValueError naming the ones it can otherwise."""
    lowered = name.strip().lower()
    if lowered not in GGUF_TYPES:
        k_quant = " (k-quants like q4_k_m need llama.cpp's `llama-quantize` on the f16 file)" if "_k" in lowered else ""
        raise ValueError(f"--gguf {name!r} is not a type tunewise can write{k_quant}; choose from {', '.join(GGUF_TYPES)}")
    return lowered


def tensor_type(gguf_name: str, shape: tuple[int, ...], requested: str, tied_embeddings: bool) -> str:
    """The type a tensor is stored in: 1-D tensors (norms) stay f32 as in llama.cpp; a matrix whose rows are not a
    whole number of 32-value blocks falls back to f16 (as llama.cpp's converter does); with a 4-/5-bit type the token
    embedding that doubles as the output layer is kept at q8_0, as llama.cpp's own SmolLM2 Q4_1 file has it."""
    if len(shape) < 2 or requested == "f32":
        return "f32"
    if requested in ("f16", "bf16"):
        return requested
    if shape[-1] % 32:
        return "f16"
    if requested.startswith(("q4", "q5")) and gguf_name == "token_embd.weight" and tied_embeddings:
        return "q8_0"
    return requested


def encode_tensor(data: np.ndarray, kind: str) -> tuple[np.ndarray, Any]:
    """``data`` (float32) in storage type ``kind``: (array to write, raw ggml type or None for plain numpy types)."""
    from gguf import quants

    if kind == "f32":
        return data.astype(np.float32), None
    if kind == "f16":
        return data.astype(np.float16), None
    qtype = _qtypes()[kind]
    return quants.quantize(data.astype(np.float32), qtype), qtype


def round_trip(data: np.ndarray, kind: str) -> np.ndarray:
    """What a reader gets back for ``data`` stored as ``kind`` (float32): the reference the file is checked against."""
    from gguf import quants

    if kind == "f32":
        return data.astype(np.float32)
    if kind == "f16":
        return data.astype(np.float16).astype(np.float32)
    qtype = _qtypes()[kind]
    return quants.dequantize(quants.quantize(data.astype(np.float32), qtype), qtype).astype(np.float32).reshape(data.shape)


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's rotate-half layout to ggml's interleaved one (the permutation
    of llama.cpp's ``LlamaModel.permute``; transformers undoes it when it reads the file)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def model_facts(model_dir: Path) -> dict[str, Any]:
    """config.json, checked for what this writer supports (ValueError naming the unsupported field otherwise)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = config.get("model_type")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{model_dir}/config.json has model_type {arch!r}; tunewise writes GGUF for "
                         f"{', '.join(ARCHITECTURES)} models only (for others use llama.cpp's convert_hf_to_gguf.py "
                         "on RUN/export/merged)")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"{model_dir}/config.json uses rope_type {rope.get('rope_type')!r}; tunewise's GGUF writer "
                         "handles the default rotary embedding only")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise ValueError(f"{model_dir}/config.json sets {flag}: tunewise's GGUF writer handles bias-free llama only")
    heads = config["num_attention_heads"]
    return {
        **config,
        "rope_theta": rope.get("rope_theta", config.get("rope_theta", 10000.0)),
        "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
        "num_key_value_heads": config.get("num_key_value_heads") or heads,
    }


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for how this byte-level BPE tokenizer splits text before merging.

    A wrong name makes llama.cpp split text differently from training, so unknown splitters are refused."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE" or tokenizer_json.get("normalizer"):
        raise ValueError("tunewise writes GGUF vocabularies for byte-level BPE tokenizers without a normalizer "
                         "(GPT-2/Llama-3/Qwen/SmolLM style) only")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, split in GGUF_PRE_TOKENIZER_SPLITS.items():
            if split == pattern:
                return name
    raise ValueError(f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds))}) is not one tunewise can name for "
                     "llama.cpp; convert RUN/export/merged with llama.cpp's convert_hf_to_gguf.py instead")


def vocabulary(tokenizer: Any, tokenizer_json: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """Tokens (by id, padded to the model's vocabulary size), their llama.cpp types, and the merges."""
    from gguf import TokenType

    by_id: dict[int, str] = {i: t for t, i in tokenizer_json["model"]["vocab"].items()}
    special: dict[int, bool] = {}
    for added in tokenizer_json.get("added_tokens") or []:
        by_id[added["id"]] = added["content"]
        special[added["id"]] = bool(added.get("special"))
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL if i not in special else
                         TokenType.CONTROL if special[i] else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"].get("merges") or []]
    return {"tokens": tokens, "types": types, "merges": merges}


def adds_token(tokenizer: Any, which: str) -> bool:
    """Whether the tokenizer puts its bos/eos token around plain text on its own (llama.cpp's add_bos/add_eos)."""
    token_id = getattr(tokenizer, f"{which}_token_id")
    if token_id is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) == len(plain):
        return False
    return (with_special[0] if which == "bos" else with_special[-1]) == token_id


def write_gguf(model_dir: str | Path, out_file: str | Path, file_type: str, *, tokenizer: Any, name: str,
               stop_token_id: int, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``model_dir`` (a merged or full fine-tuned model, safetensors) as ``out_file`` in ``file_type``.

    ``tokenizer`` is the run's tokenizer (its chat template goes into the file); ``stop_token_id`` the token training
    ends every answer with (written as eos and end-of-turn, so llama.cpp and Ollama stop there). Returns the storage
    type of every tensor (``tensor_types``, by GGUF name) and its source name (``sources``)."""
    import gguf
    from safetensors import safe_open

    model_dir, out_file = Path(model_dir), Path(out_file)
    file_type = check_gguf_type(file_type)
    facts = model_facts(model_dir)
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = pre_tokenizer_name(tokenizer_json)
    if not tokenizer.chat_template:
        raise ValueError(f"the tokenizer in {model_dir} has no chat template to store in the GGUF file")
    n_head, n_kv, n_layers = facts["num_attention_heads"], facts["num_key_value_heads"], facts["num_hidden_layers"]
    tied = bool(facts.get("tie_word_embeddings"))

    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    for key, value in (metadata or {}).items():
        writer.add_string(key, value)
    writer.add_context_length(int(facts["max_position_embeddings"]))
    writer.add_embedding_length(int(facts["hidden_size"]))
    writer.add_block_count(int(n_layers))
    writer.add_feed_forward_length(int(facts["intermediate_size"]))
    writer.add_head_count(int(n_head))
    writer.add_head_count_kv(int(n_kv))
    writer.add_rope_freq_base(float(facts["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(facts["rms_norm_eps"]))
    writer.add_file_type(int(_file_type(file_type)))
    writer.add_vocab_size(int(facts["vocab_size"]))
    writer.add_rope_dimension_count(int(facts["head_dim"]))

    vocab = vocabulary(tokenizer, tokenizer_json, int(facts["vocab_size"]))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    writer.add_add_space_prefix(False)
    if tokenizer.bos_token_id is not None:
        writer.add_bos_token_id(int(tokenizer.bos_token_id))
    writer.add_eos_token_id(int(stop_token_id))
    writer.add_eot_token_id(int(stop_token_id))
    if tokenizer.unk_token_id is not None:
        writer.add_unk_token_id(int(tokenizer.unk_token_id))
    if tokenizer.pad_token_id is not None:
        writer.add_pad_token_id(int(tokenizer.pad_token_id))
    writer.add_add_bos_token(adds_token(tokenizer, "bos"))
    writer.add_add_eos_token(adds_token(tokenizer, "eos"))
    writer.add_chat_template(tokenizer.chat_template)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    types: dict[str, str] = {}
    sources: dict[str, str] = {}
    for shard in _shards(model_dir):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
                    continue  # recomputed from rope_theta / the output layer reuses token_embd
                target = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise ValueError(f"{shard.name} holds {key}, which has no place in a llama GGUF file")
                data = f.get_tensor(key).float().numpy()
                if key.endswith("q_proj.weight"):
                    data = permute_rotary(data, n_head)
                elif key.endswith("k_proj.weight"):
                    data = permute_rotary(data, n_kv)
                kind = tensor_type(target, data.shape, file_type, tied)
                encoded, raw = encode_tensor(data, kind)
                writer.add_tensor(target, encoded, raw_dtype=raw)
                types[target], sources[target] = kind, key
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensor_types": types, "sources": sources, "pre_tokenizer": pre, "tokens": len(vocab["tokens"])}


def _shards(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [model_dir / f for f in files]
    return [model_dir / "model.safetensors"]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The scalar and string metadata of a GGUF file (token lists left out), read back with ``gguf.GGUFReader``."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
            out[key + ".count"] = len(field.data)
            continue
        try:
            out[key] = field.contents()
        except Exception:  # noqa: BLE001 - a field type gguf cannot turn into Python: not ours to show
            continue
    out["tensor_types"] = {t.name: t.tensor_type.name.lower() for t in reader.tensors}
    return out


from tunewise.lm.loading import load_gguf  # noqa: E402,F401  (re-exported: the export's reader, one loader)
