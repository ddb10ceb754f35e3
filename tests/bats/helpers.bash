# Shared set-up for the bats suites: paths to the built programs, the model and the data.
ROOT=${MTBERT_ROOT:-$(cd "$(dirname "${BATS_TEST_FILENAME}")/../.." && pwd)}
BIN=${MTBERT_BIN:-$ROOT/bin}
MODEL=${MTBERT_MODEL:-$ROOT/models/all-MiniLM-L6-v2}
DATA=$ROOT/data
# the test tools (tests/tools/*.c), built beside the unit tests
TINY_BERT=${MTBERT_BUILD:-$ROOT/build}/tests/tools/tiny-bert  # a tiny random BERT checkpoint
SYNTH=${MTBERT_BUILD:-$ROOT/build}/tests/tools/synth-emb      # synthetic embedding streams
set -o pipefail
