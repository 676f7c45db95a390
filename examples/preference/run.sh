#!/usr/bin/env bash
# The preference example end to end (README.md here): SFT -> merge -> DPO, then base, SFT and DPO scored on the same
# 120 held-out pairs and compared with paired-bootstrap intervals. Offline, CPU, a few minutes.
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
tunewise data prepare sft.yaml
tunewise train runs/pref-sft
tunewise export runs/pref-sft --merge
# on-policy pairs: the SFT model's own wrong answers on the training prompts are the rejected sides
tunewise eval --model runs/pref-sft/export/merged --data sft.jsonl --out runs/pref-sft-on-train --name sft --max-new-tokens 16
python3 build.py --rejected-from runs/pref-sft-on-train/predictions_sft.jsonl --pairs-out runs/pairs_on_policy.jsonl
tunewise data prepare dpo.yaml
tunewise train runs/pref-dpo
tunewise eval --model tiny --data test_pairs.jsonl --out runs/pref-eval --name base --max-new-tokens 16
tunewise eval --model runs/pref-sft/export/merged --data test_pairs.jsonl --out runs/pref-eval --name sft --max-new-tokens 16
tunewise eval --model runs/pref-dpo --data test_pairs.jsonl --out runs/pref-eval --name dpo --max-new-tokens 16
tunewise compare runs/pref-eval
