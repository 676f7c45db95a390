#!/usr/bin/env bash
# The message catalogue (tunewise/catalog.py, docs: README "Language"): collect every _() / N_() / ngettext() message
# of tunewise/ into each language's tunewise/locale/<lang>/LC_MESSAGES/tunewise.po (new messages arrive untranslated,
# messages nothing uses any more are dropped), then compile the .mo files Python's gettext reads at run time.
# Translate the empty msgstr entries in the .po, run this again, commit .po and .mo. Needs babel (the test extra).
#   bash scripts/i18n.sh            update and compile
#   bash scripts/i18n.sh --init xx  start a new language xx (then add it to LANGUAGES in tunewise/catalog.py)
set -euo pipefail
cd "$(dirname "$0")/.."
pot=$(mktemp --suffix=.pot)
trap 'rm -f "$pot"' EXIT
pybabel extract -F tunewise/locale/babel.cfg --no-location --sort-output --width 120 --project tunewise -o "$pot" tunewise
if [[ "${1:-}" == "--init" ]]; then
  pybabel init -i "$pot" -d tunewise/locale -D tunewise -l "$2" --width 120
fi
for po in tunewise/locale/*/LC_MESSAGES/tunewise.po; do
  lang=$(basename "$(dirname "$(dirname "$po")")")
  pybabel update -i "$pot" -d tunewise/locale -D tunewise -l "$lang" --no-fuzzy-matching --ignore-obsolete \
    --ignore-pot-creation-date --width 120
done
pybabel compile -d tunewise/locale -D tunewise --statistics
