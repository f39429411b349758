#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs each test program; prints one closing line "N passed, N failed".
pass=0
fail=0
failed=""
for t in "$@"; do
	echo "=== $t"
	if "$t"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		failed="$failed $t"
	fi
done
[ -n "$failed" ] && echo "failed:$failed"
echo "test programs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
