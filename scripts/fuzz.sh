#!/usr/bin/env bash
# Runs every fuzz target in the repository for the given -fuzztime each (usage: scripts/fuzz.sh 3s).
#
# A target fails when the fuzzer finds an input (it writes it under testdata/fuzz/<target>/) or
# reports any other error, with one exception: Go 1.26's fuzz coordinator can end a clean run with
# a bare "context deadline exceeded" when -fuzztime expires while a worker is busy (go.dev/issue/75804,
# fixed in Go 1.27). Such a run wrote no input; it is run once more for a number of inputs instead
# of a time (-fuzztime 1000x has no deadline to race), and fails if that fails.
set -uo pipefail
fuzztime=${1:?usage: scripts/fuzz.sh FUZZTIME}
go=${GO:-go}

corpus_files() { find "$1/testdata/fuzz/$2" -type f 2>/dev/null | sort; }

run_target() { # dir target fuzztime
	local dir=$1 f=$2 ft=$3 before out rc
	before=$(corpus_files "$dir" "$f")
	out=$(mktemp)
	"$go" test -run '^$' -fuzz "^$f\$" -fuzztime "$ft" "$dir" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [[ $rc -ne 0 && "$(corpus_files "$dir" "$f")" == "$before" ]] &&
		grep -q '^    context deadline exceeded$' "$out" && ! grep -q -e '^panic:' -e 'Failing input written' "$out"; then
		rc=75 # the coordinator's shutdown race, nothing found
	fi
	rm -f "$out"
	return $rc
}

for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for f in $("$go" test -list '^Fuzz' "$dir" | grep '^Fuzz'); do
		echo "== $dir $f"
		run_target "$dir" "$f" "$fuzztime"
		rc=$?
		if [[ $rc -eq 75 ]]; then
			echo "== $dir $f: ended by the fuzz coordinator's deadline race (go.dev/issue/75804) with no input found; once more, for 1000 inputs"
			run_target "$dir" "$f" 1000x
			rc=$?
		fi
		[[ $rc -eq 0 ]] || exit 1
	done
done
