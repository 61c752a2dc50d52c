#!/usr/bin/env bash
# Runs Examples/east-west/README.md literally (Scripts/run-readme.sh: its ```sh blocks in one bash session, from
# the repository's root, background processes stopped on exit, bounded by WALKTHROUGH_TIMEOUT seconds).
#
#   bash Examples/east-west/walkthrough.sh            # as a user would, including `swift build`
#   bash Examples/east-west/walkthrough.sh --print    # print the script it would run, and exit
#   WALKTHROUGH_KEEP=1 bash Examples/east-west/walkthrough.sh   # keep the logs and files ($DEMO) after success
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../../Scripts/run-readme.sh" "$here/README.md" "$@"
