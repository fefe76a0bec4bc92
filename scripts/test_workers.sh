#!/bin/sh
# How many pytest workers `make test` runs: one more than the cores, at most eight. The cores are
# nproc's, or fewer where a container's CPU quota (cgroup v2 cpu.max) says so: nproc does not read it,
# and a runner given two CPUs of a 64-core host would otherwise start 65 workers (found in review).
n=$(nproc 2>/dev/null || echo 2)
CPU_MAX=${CPU_MAX:-/sys/fs/cgroup/cpu.max}
if [ -r "$CPU_MAX" ] && read -r quota period < "$CPU_MAX"; then
    case "$quota" in
        ''|*[!0-9]*) ;;  # "max": no quota
        *) [ "${period:-0}" -gt 0 ] 2>/dev/null && c=$(( (quota + period - 1) / period )) && [ "$c" -lt "$n" ] && n=$c ;;
    esac
fi
[ "$n" -ge 1 ] 2>/dev/null || n=2
[ "$n" -lt 7 ] && echo $((n + 1)) || echo 8
