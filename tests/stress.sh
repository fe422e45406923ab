#!/bin/sh
# Run the whole suite N times in a row with every CPU loaded by a background hog, and print the
# failures per test and a summary. Not part of CI: a check that no test fails by chance.
#
#   tests/stress.sh N [pytest args...]      (as root, from the checkout, after ./setup.sh)
#
# The hog is one niced busy loop per CPU, each under `timeout`, so it ends by itself even if this
# script is killed; it is also stopped when the runs end. Exit status: 0 when every run passed.
set -u
n=${1:?usage: tests/stress.sh N [pytest args...]}
shift
cd "$(dirname "$0")/.." || exit 2
py=.venv/bin/pytest                      # not `python -m pytest`: that imports the unbuilt source tree
[ -x "$py" ] || { echo "stress: no .venv here (run ./setup.sh first)" >&2; exit 2; }
ncpu=$(nproc)
hog_s=$((n * 1200))                      # bound: 20 min per run at most
log=$(mktemp -d /tmp/hftcap-stress.XXXXXX)
hogs=""
i=0
while [ "$i" -lt "$ncpu" ]; do
    timeout "$hog_s" nice -n 19 sh -c 'while :; do :; done' &
    hogs="$hogs $!"
    i=$((i + 1))
done
trap 'kill $hogs 2>/dev/null' EXIT INT TERM
echo "stress: $n runs, $ncpu CPU hogs (nice 19, at most ${hog_s} s), load now: $(cut -d' ' -f1-3 /proc/loadavg); logs in $log"
failed_runs=0
r=1
while [ "$r" -le "$n" ]; do
    start=$(date +%s)
    "$py" -p no:cacheprovider -q -rfE "$@" >"$log/run$r.txt" 2>&1
    rc=$?
    summary=$(tail -n 1 "$log/run$r.txt")
    echo "run $r/$n: rc=$rc $(($(date +%s) - start)) s: $summary"
    [ "$rc" -eq 0 ] || failed_runs=$((failed_runs + 1))
    r=$((r + 1))
done
echo "failures per test (over $n runs):"
cat "$log"/run*.txt | sed -n 's/^\(FAILED\|ERROR\) \([^ ]*\).*/\2/p' | sort | uniq -c | sort -rn \
    | sed 's/^/  /'
[ "$failed_runs" -eq 0 ] && echo "  none"
echo "summary: $((n - failed_runs))/$n runs passed; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$failed_runs" -eq 0 ]
