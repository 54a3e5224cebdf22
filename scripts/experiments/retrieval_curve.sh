#!/usr/bin/env bash
# Retrieval accuracy of every checkpoint of the two retrieval runs (N prompts each), as a
# table and a PNG (gnuplot).
# usage: retrieval_curve.sh DSV4_CLI OUT.png [N=100]   (PLOT_ONLY=1: only redraw from OUT.tsv)
set -euo pipefail
dsv4=$1; png=$2; n=${3:-100}
table=${png%.png}.tsv
if [ -z "${PLOT_ONLY:-}" ]; then  # PLOT_ONLY=1: redraw from the existing table
echo "# step csa_accuracy window_accuracy phase_of_csa" > "$table"
for ck in $(ls -d runs/exp-retrieval-csa/ckpt-* | sort -V); do
  step=${ck##*-}
  csa=$(scripts/experiments/retrieval_eval.sh "$dsv4" "$ck" data/retrieval/eval "$n" | awk '{print $3}')
  win=NaN
  if [ -d "runs/exp-retrieval-window/ckpt-$step" ]; then
    win=$(scripts/experiments/retrieval_eval.sh "$dsv4" "runs/exp-retrieval-window/ckpt-$step" data/retrieval/eval "$n" | awk '{print $3}')
  fi
  phase=$(grep "\"step\":$step," runs/exp-retrieval-csa/metrics.jsonl | grep -o '"phase":"[a-z_]*"' | head -1 | cut -d'"' -f4)
  echo "$step $csa $win $phase" >> "$table"
done
fi
gnuplot <<GP
set terminal pngcairo size 900,450 noenhanced font ',10'
set output '$png'
set title 'long-range retrieval: accuracy on $n held-out prompts (value 250 tokens back, W = 16)'
set xlabel 'step (2048 tokens each)'
set ylabel 'accuracy'
set yrange [0:1.05]
set grid
set key center right
set datafile missing 'NaN'
set arrow from 1000, graph 0 to 1000, graph 1 nohead dt 3
set arrow from 1100, graph 0 to 1100, graph 1 nohead dt 3
set label 'dense' at 500, 0.9 center
set label 'warm-up' at 1050, 0.97 center
set label 'sparse' at 1550, 0.9 center
plot '$table' u 1:2 w lp pt 7 lw 2 t 'CSA/HCA layers + curriculum', \
     '$table' u 1:3 w lp pt 5 lw 2 t 'window-only layers', \
     1.0/16 w l dt 2 lc rgb 'gray' t 'chance (1/16)'
GP
echo "wrote $table and $png"
