#!/usr/bin/env bash
# Makes the generated learning-curve tables in bench/tables/, one after the other
# (each trains on one CPU thread; see bench/tables/README.md for what each is).
# Resumes a table cut short. Usage: bench/make-tables.sh [table-name ...] (default: all)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../.venv/bin/python}
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q dataset-fashion-mnist
fi
declare -A TABLES=(
  [breast_cancer_mlp_s3]="--dataset breast_cancer --model mlp --configs 300 --epochs 27 --seed 3 --train-size 400 --val-size 169"
  [digits_mlp_sched_s1]="--dataset digits --model mlp --space mlp-schedule --configs 200 --epochs 27 --seed 1 --train-size 1200 --val-size 500"
  [fashion_cnn_sched_s2]="--dataset fashion_mnist --model cnn --space cnn-schedule --configs 100 --epochs 27 --seed 2 --train-size 600 --val-size 400 --image-side 14"
  [fashion_mlp_s4]="--dataset fashion_mnist --model mlp --configs 150 --epochs 27 --seed 4 --train-size 1000 --val-size 500 --image-side 14"
  [fashion_mlp_capacity_s6]="--dataset fashion_mnist --model mlp --space mlp-capacity --configs 200 --epochs 27 --seed 6 --train-size 3000 --val-size 1000 --image-side 14"
  [fashion_mlp_capacity_s7]="--dataset fashion_mnist --model mlp --space mlp-capacity --configs 500 --epochs 27 --seed 7 --train-size 3000 --val-size 1000 --image-side 14"
  [digits_mlp_capacity_s8]="--dataset digits --model mlp --space mlp-capacity --configs 300 --epochs 27 --seed 8 --train-size 1200 --val-size 500"
  [fashion_cnn_s9]="--dataset fashion_mnist --model cnn --configs 150 --epochs 27 --seed 9 --train-size 600 --val-size 400 --image-side 14"
  [fashion_mlp_sched_s10]="--dataset fashion_mnist --model mlp --space mlp-schedule --configs 300 --epochs 27 --seed 10 --train-size 1000 --val-size 500 --image-side 14"
  [digits_mlp_s11]="--dataset digits --model mlp --configs 300 --epochs 27 --seed 11 --train-size 1200 --val-size 500"
  [fashion_mlp_capacity_s12]="--dataset fashion_mnist --model mlp --space mlp-capacity --configs 300 --epochs 27 --seed 12 --train-size 3000 --val-size 1000 --image-side 14"
  [digits_mlp_sched_s13]="--dataset digits --model mlp --space mlp-schedule --configs 200 --epochs 27 --seed 13 --train-size 1200 --val-size 500"
  [fashion_cnn_sched_s14]="--dataset fashion_mnist --model cnn --space cnn-schedule --configs 100 --epochs 27 --seed 14 --train-size 600 --val-size 400 --image-side 14"
  [fashion_mlp_s15]="--dataset fashion_mnist --model mlp --configs 150 --epochs 27 --seed 15 --train-size 1000 --val-size 500 --image-side 14"
  [breast_cancer_mlp_s16]="--dataset breast_cancer --model mlp --configs 300 --epochs 27 --seed 16 --train-size 400 --val-size 169"
  [fashion_mlp_capacity_s17]="--dataset fashion_mnist --model mlp --space mlp-capacity --configs 300 --epochs 81 --seed 17 --train-size 3000 --val-size 1000 --image-side 14"
  [fashion_mlp_sched_s5]="--dataset fashion_mnist --model mlp --space mlp-schedule --configs 200 --epochs 27 --seed 5 --train-size 1000 --val-size 500 --image-side 14"
)
ORDER=(breast_cancer_mlp_s3 fashion_mlp_sched_s5 digits_mlp_sched_s1 fashion_mlp_s4 fashion_cnn_sched_s2 fashion_mlp_capacity_s6 fashion_mlp_capacity_s7
       digits_mlp_capacity_s8 fashion_cnn_s9 fashion_mlp_sched_s10
       digits_mlp_s11 fashion_mlp_capacity_s12
       digits_mlp_sched_s13 fashion_cnn_sched_s14 fashion_mlp_s15 breast_cancer_mlp_s16
       fashion_mlp_capacity_s17)
for name in "${@:-${ORDER[@]}}"; do
  args=${TABLES[$name]:?unknown table $name; known: ${ORDER[*]}}
  if [ -e "tables/$name.json" ]; then
    echo "tables/$name.json exists; skipped (delete it to make it again)"
    continue
  fi
  # shellcheck disable=SC2086  # the arguments are words
  "$PY" make_table.py $args --out "tables/$name.json"
done
