# as call 1 (stream kernel on by default); expert_profile.sh with KREGEX (kept)
KREGEX="moe_(gemv|stream)" PROBE_DEFS="-DDSV4_EXPERT_STREAM=0" OUT=/tmp/p bash scripts/experiments/expert_profile.sh > $OUT/p/prof.txt 2>&1
# raw-build-dev.csv: the stream kernel (grid 396) and W2; raw-build-probe.csv: the register kernel (grid 768) and W2
